"""The ``hmreport`` command.

``hmreport validate PARAMS``  check a params file and its data, then exit
``hmreport demo``             write the demo registry, its truth and params/demo.yaml
``hmreport run PARAMS ...``   produce reports/<name>/report.html for each params file
``hmreport status``           each report folder's last run, and steps run on their own since (stale)

Errors the user can act on (bad params, bad data, a failed step) are printed
as one line without a traceback, and the exit code is non-zero (2 for bad
input, 1 for a failed step).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hmlib import __version__
from hmlib.exceptions import HmlibError, StepFailed
from hmlib.steps import step_keys

__all__ = ["main"]


def _validate(args) -> int:
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.wording import plural, row_noun

    for path in args.params:
        registry = load_registry(load_params(path))
        p = registry.params
        print(f"{path}: OK: {registry.n_patients} {plural(row_noun(p.time))} in {registry.n_clusters} clusters "
              f"('{p.cluster}'); outcome '{p.outcome}' ({p.outcome_family}); "
              f"{len(p.predictors)} predictors; focus '{p.focus}'.")
        incomplete = registry.incomplete_variables
        print(f"  incomplete variables: {', '.join(incomplete) if incomplete else 'none'}")
        for notice in registry.notices:
            print(f"  note: {notice.message}")
    return 0


def _demo(args) -> int:
    from hmlib.simulate.demo import write_demo

    paths = write_demo(Path(args.root), seed=args.seed)
    for label, path in vars(paths).items():
        print(f"wrote {label}: {path}")
    return 0


def _run(args) -> int:
    from hmlib.report.runner import run_many

    run_many(args.params, only=args.only, fast=True if args.fast else None,
             show_code=args.show_code, reports_root=args.out, scheduler=args.scheduler)
    return 0


def _status(args) -> int:
    from hmlib.report.staleness import report_state

    root = Path(args.out)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if not folders:
        print(f"no report folders in {root}")
    for folder in folders:
        print(report_state(folder))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hmreport", description="Missing-data audit reports for hierarchical clinical models.")
    parser.add_argument("--version", action="version", version=f"hmlib {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    validate = sub.add_parser("validate", help="check params files and their data, then exit")
    validate.add_argument("params", nargs="+", help="params YAML file(s)")
    validate.set_defaults(func=_validate)

    demo = sub.add_parser("demo", help="write the demo registry, its truth and params/demo.yaml")
    demo.add_argument("--root", default=".", help="project folder to write data/demo/ and params/ into")
    demo.add_argument("--seed", type=int, default=20261127, help="simulation seed")
    demo.set_defaults(func=_demo)

    run = sub.add_parser("run", help="produce reports/<name>/report.html")
    run.add_argument("params", nargs="+", help="params YAML file(s)")
    run.add_argument("--only", help=f"comma-separated steps: {', '.join(step_keys())}")
    run.add_argument("--fast", action="store_true", help="small settings (tests, quick looks)")
    run.add_argument("--show-code", action="store_true", help="keep the code in the HTML")
    run.add_argument("--out", default="reports", help="folder for reports (default: reports)")
    run.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="a running Dask scheduler (tcp://host:8786) for the parallel work; default "
                          "$HMLIB_SCHEDULER, else worker processes on this machine's cores")
    run.set_defaults(func=_run)

    status = sub.add_parser("status", help="each report's last run, and steps run on their own since (stale)")
    status.add_argument("--out", default="reports", help="folder of the reports (default: reports)")
    status.set_defaults(func=_status)
    return parser


def main(argv=None) -> int:
    """Entry point of ``hmreport``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StepFailed as exc:
        print(f"hmreport: {exc}", file=sys.stderr)
        return 1
    except HmlibError as exc:
        print(f"hmreport: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hmreport: interrupted; report.html was not updated.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
