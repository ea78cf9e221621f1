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
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hmlib import __version__
from hmlib.artifacts import artifact_path
from hmlib.data import load_registry
from hmlib.exceptions import ArtifactError, HmlibError, StepFailed
from hmlib.params import load_params
from hmlib.report.assemble import assemble_report, render_notebook, write_index
from hmlib.results import atomic_write_text
from hmlib.steps import STEPS, get_step, step_keys
from hmlib.steps.base import Step

__all__ = ["RunResult", "run_report", "run_many", "resolve_steps"]


def resolve_steps(only: str | None, output_dir: Path) -> list[Step]:
    """The steps to execute, in order.

    With ``only`` (comma-separated step keys), the named steps run, preceded
    by any step they need whose artifact is not present yet. Steps not built
    are skipped (the report says so).
    """
    if not only:
        return [s for s in STEPS if s.is_built]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in step_keys()]
    if unknown:
        raise HmlibError(
            f"unknown step '{unknown[0]}' in --only; steps are: {', '.join(step_keys())}."
        )
    chosen: set[str] = set()

    def add(key: str) -> None:
        step = get_step(key)
        for need in step.needs:
            if need not in chosen and not artifact_path(output_dir, need).is_file():
                add(need)
        chosen.add(key)

    for key in wanted:
        if not get_step(key).is_built:
            raise HmlibError(
                f"step '{key}' is not built yet in hmlib {__version__} (its notebook "
                f"{get_step(key).notebook} is absent); built steps: {', '.join(s.key for s in STEPS if s.is_built)}."
            )
        add(key)
    return [s for s in STEPS if s.key in chosen and s.is_built]


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


def _say_alert(output_dir: Path, step: Step) -> None:
    """Say loudly in the terminal what a step's artifact flags (e.g. a failed convergence gate)."""
    try:
        record = step.read_artifact(output_dir)
    except ArtifactError as exc:
        _say(f"WARNING: {exc}")
        return
    alert = record.alert() if record is not None else None
    if alert:
        _say(f"WARNING: {alert}")


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
    import papermill  # heavy (jupyter client): imported when a run starts, not for --help
    from papermill.exceptions import PapermillExecutionError

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
                str(step.notebook_path), str(executed),
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
        _say_alert(output_dir, step)

    for step in STEPS:
        executed = output_dir / "notebooks" / step.notebook
        if executed.is_file():
            render_notebook(executed, output_dir / step.rendered_name, show_code=show_code)
    report = assemble_report(registry, output_dir, show_code=show_code, step_seconds=seconds)
    status.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _write_status(output_dir, status)
    _say(f"hmreport: wrote {report}")
    return RunResult(params.name, output_dir, report, "complete", seconds)


def run_many(params_paths, **kwargs) -> list[RunResult]:
    """Run several params files; with more than one, write ``<reports_root>/index.html``.

    Inputs of every file are checked before the first notebook runs.
    """
    paths = list(params_paths)
    # Check every input before the first notebook runs: fail fast, not after hours.
    registries = [load_registry(load_params(p, fast=kwargs.get("fast"))) for p in paths]
    results = [run_report(p, registry=r, **kwargs) for p, r in zip(paths, registries)]
    if len(results) > 1:
        write_index(Path(kwargs.get("reports_root", "reports")).resolve(), results)
    return results
