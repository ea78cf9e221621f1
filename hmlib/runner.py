"""Run the report: execute the step notebooks with papermill, render, assemble.

``hmreport run PARAMS`` checks the params and the data (fast, before any
work), then executes ``notebooks/01_diagnose.ipynb`` ... in order into
``reports/<name>/notebooks/``, renders each with nbconvert and joins them into
``reports/<name>/report.html``.

Failure rules: when a notebook fails the run stops, the failed notebook is
rendered with its code and error visible (``FAILED-<step>.html``), the run
status says ``failed`` and the previous ``report.html`` is left as it was: a
failed run never writes a report that looks complete.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hmlib import __version__
from hmlib.data import load_registry
from hmlib.exceptions import HmlibError, StepFailed
from hmlib.params import load_params
from hmlib.results import atomic_write_text

__all__ = ["Step", "STEPS", "RunResult", "run_report", "run_many", "notebook_dir", "resolve_steps"]


@dataclass(frozen=True)
class Step:
    """One step of the report.

    Attributes
    ----------
    key : str
        Name used by ``--only`` and for ``artifacts/<key>.json``.
    number : int
    title : str
    notebook : str
        File name in ``notebooks/``.
    needs : tuple of str
        Steps whose artifacts this step reads.
    issue : int
        The issue that builds it (named in the report while it is not built).
    """

    key: str
    number: int
    title: str
    notebook: str
    needs: tuple = ()
    issue: int = 0

    @property
    def anchor(self) -> str:
        return f"step-{self.number}-{self.key.replace('_', '-')}"


STEPS: tuple[Step, ...] = (
    Step("diagnose", 1, "Diagnose: where and how data are missing", "01_diagnose.ipynb", (), 2),
    Step("complete_case", 2, "Complete-case check: who drops out", "02_complete_case.ipynb", (), 3),
    Step("imputation", 3, "Flat vs hierarchical multiple imputation", "03_imputation.ipynb", ("diagnose",), 4),
    Step("joint_model", 4, "Joint Bayesian model with partial pooling", "04_joint_model.ipynb",
         ("diagnose",), 5),
    Step("sensitivity", 5, "Group-aware sensitivity analysis", "05_sensitivity.ipynb",
         ("diagnose", "imputation", "joint_model"), 6),
)
_BY_KEY = {s.key: s for s in STEPS}


def notebook_dir() -> Path:
    """Folder of the step notebooks (``$HMLIB_NOTEBOOKS`` or the repository's ``notebooks/``)."""
    env = os.environ.get("HMLIB_NOTEBOOKS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "notebooks"


def is_built(step: Step) -> bool:
    """A step is built when its notebook exists."""
    return (notebook_dir() / step.notebook).is_file()


def resolve_steps(only: str | None, output_dir: Path) -> list[Step]:
    """The steps to execute, in order.

    With ``only`` (comma-separated step keys), the named steps run, preceded
    by any step they need whose artifact is not present yet. Steps not built
    are skipped (the report says so).
    """
    if not only:
        return [s for s in STEPS if is_built(s)]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in _BY_KEY]
    if unknown:
        raise HmlibError(
            f"unknown step '{unknown[0]}' in --only; steps are: {', '.join(_BY_KEY)}."
        )
    chosen: set[str] = set()

    def add(key: str) -> None:
        step = _BY_KEY[key]
        for need in step.needs:
            if need not in chosen and not (output_dir / "artifacts" / f"{need}.json").is_file():
                add(need)
        chosen.add(key)

    for key in wanted:
        if not is_built(_BY_KEY[key]):
            raise HmlibError(
                f"step '{key}' is not built yet in hmlib {__version__} (see issue #{_BY_KEY[key].issue}); "
                f"built steps: {', '.join(s.key for s in STEPS if is_built(s))}."
            )
        add(key)
    return [s for s in STEPS if s.key in chosen and is_built(s)]


@dataclass
class RunResult:
    """What one ``hmreport run`` of one params file produced."""

    name: str
    output_dir: Path
    report: Path | None
    status: str
    step_seconds: dict = field(default_factory=dict)
    message: str = ""


def _write_status(output_dir: Path, payload: dict) -> None:
    atomic_write_text(output_dir / "run-status.json", json.dumps(payload, indent=1, sort_keys=True) + "\n")


def _say(text: str, stream=None) -> None:
    print(text, file=stream or sys.stderr, flush=True)


def _warn_if_not_converged(output_dir: Path, step: Step) -> None:
    """Say loudly in the terminal when a step's artifact reports a failed convergence gate."""
    path = output_dir / "artifacts" / f"{step.key}.json"
    if not path.is_file():
        return
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(payload, dict) and payload.get("converged") is False:
        _say(f"WARNING: {step.key} NOT CONVERGED: {payload.get('convergence_message', '')} "
             "Its estimates are flagged ':not_converged' in estimates.csv.")


def run_report(params_path: str | Path, *, only: str | None = None, fast: bool | None = None,
               show_code: bool = False, reports_root: str | Path = "reports",
               kernel_name: str = "python3", registry=None) -> RunResult:
    """Check inputs, execute the steps, render ``report.html``.

    Parameters
    ----------
    params_path : str or pathlib.Path
        The params YAML.
    only : str, optional
        Comma-separated step keys (``diagnose,complete_case``).
    fast : bool, optional
        Small settings (overrides the params file's ``fast``).
    show_code : bool
        Keep the notebooks' code in the rendered HTML.
    reports_root : str or pathlib.Path
        Output goes to ``<reports_root>/<name>/``.
    kernel_name : str
        Jupyter kernel to execute the notebooks with.
    registry : hmlib.data.Registry, optional
        Already checked inputs (from :func:`run_many`); read afresh when omitted.

    Returns
    -------
    RunResult

    Raises
    ------
    ParamsError, DataError
        Before any work, when the inputs are wrong.
    StepFailed
        When a notebook fails (after writing ``FAILED-<step>.html``).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from hmlib.report import assemble_report, render_notebook

    if registry is None:  # every data check, before any expensive work
        registry = load_registry(load_params(params_path, fast=fast))
    params = registry.params
    output_dir = Path(reports_root).resolve() / params.name
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "notebooks").mkdir(exist_ok=True)
    steps = resolve_steps(only, output_dir)
    for stale in output_dir.glob("FAILED-*.html"):
        stale.unlink()

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    status = {"status": "running", "started": started, "params": str(params.source),
              "hmlib": __version__, "steps": {}}
    _write_status(output_dir, status)
    _say(f"hmreport: {params.name}: {registry.n_patients} patients in {registry.n_clusters} clusters; "
         f"output in {output_dir}")
    seconds: dict[str, float] = {}
    for index, step in enumerate(steps, start=1):
        executed = output_dir / "notebooks" / step.notebook
        _say(f"[{index}/{len(steps)}] {step.key}: running {step.notebook} ...")
        t0 = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(notebook_dir() / step.notebook), str(executed),
                parameters={"params_path": str(params.source), "output_dir": str(output_dir),
                            "fast": bool(params.fast)},
                kernel_name=kernel_name, progress_bar=False, log_output=False, cwd=str(output_dir),
            )
        except PapermillExecutionError as exc:
            elapsed = time.perf_counter() - t0
            failed_html = output_dir / f"FAILED-{step.key}.html"
            if executed.is_file():
                render_notebook(executed, failed_html, show_code=True)
            status.update(status="failed", failed_step=step.key, cell=exc.exec_count,
                          error=f"{exc.ename}: {exc.evalue}")
            status["steps"][step.key] = round(elapsed, 2)
            _write_status(output_dir, status)
            raise StepFailed(
                f"step '{step.key}' failed in notebooks/{step.notebook}, cell [{exc.exec_count}]: "
                f"{exc.ename}: {exc.evalue}. The notebook with the error is rendered in {failed_html}; "
                "report.html was not updated."
            ) from None
        seconds[step.key] = time.perf_counter() - t0
        status["steps"][step.key] = round(seconds[step.key], 2)
        _say(f"[{index}/{len(steps)}] {step.key}: done in {seconds[step.key]:.1f} s")
        _warn_if_not_converged(output_dir, step)

    for step in STEPS:
        executed = output_dir / "notebooks" / step.notebook
        if executed.is_file():
            render_notebook(executed, output_dir / f"{step.number:02d}_{step.key}.html", show_code=show_code)
    report = assemble_report(registry, output_dir, show_code=show_code, step_seconds=seconds)
    status.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _write_status(output_dir, status)
    _say(f"hmreport: wrote {report}")
    return RunResult(params.name, output_dir, report, "complete", seconds)


def run_many(params_paths, **kwargs) -> list[RunResult]:
    """Run several params files; with more than one, write ``<reports_root>/index.html``.

    Inputs of every file are checked before the first notebook runs.
    """
    from hmlib.report import write_index

    paths = list(params_paths)
    # Check every input before the first notebook runs: fail fast, not after hours.
    registries = [load_registry(load_params(p, fast=kwargs.get("fast"))) for p in paths]
    results = [run_report(p, registry=r, **kwargs) for p, r in zip(paths, registries)]
    if len(results) > 1:
        write_index(Path(kwargs.get("reports_root", "reports")).resolve(), results)
    return results
