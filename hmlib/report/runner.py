"""Run the report: execute the step notebooks with papermill, render, assemble.

``hmreport run PARAMS`` checks the params and the data (fast, before any
work), then executes ``notebooks/01_diagnose.ipynb`` ... in order, renders
each with nbconvert and joins them into ``reports/<name>/report.html``.

A run works in a staging folder (``reports/<name>/.run-<id>/``, holding a
copy of the earlier results) and moves its outputs into ``reports/<name>/``
only when every step and the report are done, so the folder always holds one
consistent report:

- when a notebook fails, the run stops, the failed notebook is rendered with
  its code and error (``FAILED-<step>.html``), ``run-status.json`` says
  ``failed`` and nothing else in the folder changes;
- when the run is interrupted (Ctrl-C), ``run-status.json`` says
  ``interrupted`` and nothing else changes;
- while it runs, ``run-status.json`` says ``running`` with the seconds of
  each step done so far (rewritten after each step), so a run watched from
  outside, or stopped, shows how far it got;
- every artifact records the SHA-256 of the data file and of the params it
  was made from. A step whose artifact was made from other inputs is rerun
  when a step of this run needs it, and otherwise left out of the report
  (its outputs are removed and the terminal says so): one report never mixes
  two data files or two sets of params.

Notebook kernels run with their own stderr silenced (kernel start-up
chatter is not for the terminal; errors reach the executed notebook). What
happens inside a long step reaches the terminal through the staging folder's
progress channel (:mod:`hmlib.progress`): a live line on a terminal, plain
lines in a log.

A step run on its own (JupyterLab, papermill) since the last report is
marked in the report folder (:mod:`hmlib.report.staleness`); a run reruns it
even under ``--only``, so that its section agrees with its results, and
clears the mark when the new report is in place.

Parallel work. Steps that hand tasks to :mod:`hmlib.parallel` (imputation
chains, sensitivity scenarios) get one Dask cluster for the whole run: the
scheduler of ``--scheduler`` / ``$HMLIB_SCHEDULER`` (checked before any
work: one clear line when it does not answer), else a ``LocalCluster`` of
one worker process per core started here (none on a single core). Its
address reaches the notebook kernels as ``$HMLIB_SCHEDULER``. Several params
files run side by side (one at a time per core of this machine, each with
its own kernels; their lines in the terminal start with the report's name),
and all their tasks share that cluster. Reports are written here, so a
remote cluster needs no shared file system; its workers need hmlib.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from hmlib import __version__
from hmlib.artifacts import ARTIFACTS_DIR
from hmlib.data import load_registry
from hmlib.exceptions import ArtifactError, HmlibError, StepFailed
from hmlib.methods import base_method
from hmlib.parallel import SCHEDULER_ENV, check_scheduler, local_cores, scheduler_address, start_local_cluster
from hmlib.params import load_params
from hmlib.progress import CHANNEL_NAME, ChannelTail, TerminalPrinter
from hmlib.report.assemble import assemble_report, render_notebook, write_index
from hmlib.report.staleness import clear_stale_mark, steps_run_alone
from hmlib.results import atomic_write_text, read_estimates
from hmlib.steps import STEPS, get_step, step_keys
from hmlib.steps.base import Step
from hmlib.steps.handoff import HANDOFF_DIR
from hmlib.wording import plural, row_noun

__all__ = ["RunResult", "run_report", "run_many", "resolve_steps", "stale_steps", "QuietKernelManager",
           "parallel_engine"]

#: The report name that starts this thread's terminal lines when several reports run side by side.
_LINE_PREFIX = threading.local()


class QuietKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel process writes nothing to the terminal.

    ipykernel logs start-up warnings (e.g. "Kernel is running over TCP
    without encryption") to the process's stderr; cell output, errors
    included, still reaches the notebook.
    """

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = subprocess.DEVNULL
        return await super()._async_launch_kernel(kernel_cmd, **kw)


def stale_steps(output_dir: Path, inputs: dict) -> list[Step]:
    """Steps whose artifact in ``output_dir`` was made from other inputs (data file or params), or is unreadable."""
    stale = []
    for step in STEPS:
        recorded = step.artifact.read_inputs(output_dir)
        if recorded is not None and recorded != inputs:
            stale.append(step)
    return stale


def resolve_steps(only: str | None, output_dir: Path, inputs: dict | None = None) -> list[Step]:
    """The steps to execute, in order.

    With ``only`` (comma-separated step keys), the named steps run, preceded
    by any step they need whose artifact is absent or (with ``inputs``) was
    made from other inputs, and followed by the steps run on their own since
    the last report (:func:`hmlib.report.staleness.steps_run_alone`). Steps
    not built are skipped (the report says so).
    """
    if only is None:
        return [s for s in STEPS if s.is_built]
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    if not wanted:
        raise HmlibError(f"--only names no step; give one or more of: {', '.join(step_keys())}.")
    unknown = [w for w in wanted if w not in step_keys()]
    if unknown:
        raise HmlibError(
            f"unknown step '{unknown[0]}' in --only; steps are: {', '.join(step_keys())}."
        )
    stale = {s.key for s in stale_steps(output_dir, inputs)} if inputs is not None else set()
    chosen: set[str] = set()

    def add(key: str) -> None:
        step = get_step(key)
        for need in step.needs:
            if need not in chosen and (step_absent(need) or need in stale):
                add(need)
        chosen.add(key)

    def step_absent(key: str) -> bool:
        return get_step(key).artifact.read_inputs(output_dir) is None

    for key in wanted:
        if not get_step(key).is_built:
            raise HmlibError(
                f"step '{key}' is not built yet in hmlib {__version__} (its notebook "
                f"{get_step(key).notebook} is absent); built steps: {', '.join(s.key for s in STEPS if s.is_built)}."
            )
        add(key)
    for key in steps_run_alone(output_dir):
        if key in step_keys() and get_step(key).is_built:
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
    prefix = getattr(_LINE_PREFIX, "text", "")
    print(f"{prefix}{text}", file=stream or sys.stderr, flush=True)


def _progress_printer() -> TerminalPrinter:
    """Progress lines under the step's line; plain lines, name first, for reports run side by side."""
    prefix = getattr(_LINE_PREFIX, "text", "")
    return TerminalPrinter(sys.stderr, indent=f"{prefix}  ", live=False if prefix else None)


def _say_alert(output_dir: Path, step: Step) -> None:
    """Say in the terminal what a step did by itself, and loudly what its artifact flags (a failed gate)."""
    try:
        record = step.read_artifact(output_dir)
    except ArtifactError as exc:
        _say(f"WARNING: {exc}")
        return
    if record is None:
        return
    if record.notice():
        _say(f"note: {record.notice()}")
    if record.alert():
        _say(f"WARNING: {record.alert()}")


def prepare_output_dir(reports_root: str | Path, name: str) -> Path:
    """``<reports_root>/<name>/``, created; one clear error when it cannot be written."""
    root = Path(reports_root).expanduser().resolve()
    output_dir = root / name
    for path in (root, output_dir):
        if path.exists() and not path.is_dir():
            raise HmlibError(f"the output folder {path} is a file; choose another folder with --out "
                             "(e.g. --out reports).")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HmlibError(f"cannot write to the output folder {output_dir} ({exc.strerror or exc}); choose a "
                         "folder you can write to with --out, or fix its permissions.") from None
    return output_dir


def _stage(output_dir: Path) -> Path:
    """A staging folder holding a copy of the current results (artifacts, estimates, executed notebooks)."""
    staging = output_dir / f".run-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    for name in (ARTIFACTS_DIR, "notebooks"):
        if (output_dir / name).is_dir():
            shutil.copytree(output_dir / name, staging / name)
    (staging / "notebooks").mkdir(exist_ok=True)
    if (output_dir / "estimates.csv").is_file():
        shutil.copy2(output_dir / "estimates.csv", staging / "estimates.csv")
    return staging


def _drop_step_outputs(folder: Path, step: Step) -> None:
    """Remove a step's artifact, executed and rendered notebook and estimates rows from ``folder``."""
    step.artifact_path(folder).unlink(missing_ok=True)
    for extra in step.extra_files:
        (folder / ARTIFACTS_DIR / extra).unlink(missing_ok=True)
    (folder / "notebooks" / step.notebook).unlink(missing_ok=True)
    (folder / step.rendered_name).unlink(missing_ok=True)
    path = folder / "estimates.csv"
    if path.is_file() and step.methods:
        current = read_estimates(path)
        keep = ~current["method"].map(base_method).isin(step.methods)
        atomic_write_text(path, current.loc[keep].to_csv(index=False))


def _commit(staging: Path, output_dir: Path, dropped: list[Step]) -> None:
    """Move the staged outputs into the report folder, file by file (each move is atomic)."""
    for step in dropped:
        _drop_step_outputs(output_dir, step)
    for path in sorted(staging.rglob("*")):
        if path.is_file() and HANDOFF_DIR not in path.relative_to(staging).parts:   # step 3 -> 5 only
            dest = output_dir / path.relative_to(staging)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)


def _execute(step: Step, staging: Path, params, kernel_name: str) -> None:
    import papermill  # heavy (jupyter client): imported when a run starts, not for --help

    papermill.execute_notebook(
        str(step.notebook_path), str(staging / "notebooks" / step.notebook),
        parameters={"params_path": str(params.source), "output_dir": str(staging), "fast": bool(params.fast)},
        kernel_name=kernel_name, progress_bar=False, log_output=False, cwd=str(staging),
        kernel_manager_class=QuietKernelManager,
    )


def _run_steps(steps, staging: Path, output_dir: Path, params, kernel_name: str, status: dict) -> dict:
    """Execute the steps in the staging folder; on failure render FAILED-<step>.html into the report folder."""
    from papermill.exceptions import PapermillExecutionError

    seconds: dict[str, float] = {}
    for index, step in enumerate(steps, start=1):
        _say(f"[{index}/{len(steps)}] {step.key}: running {step.notebook} ...")
        t0 = time.perf_counter()
        try:
            with ChannelTail(staging / CHANNEL_NAME, _progress_printer()):
                _execute(step, staging, params, kernel_name)
        except PapermillExecutionError as exc:
            executed = staging / "notebooks" / step.notebook
            for earlier in output_dir.glob("FAILED-*.html"):
                earlier.unlink()
            failed_html = output_dir / f"FAILED-{step.key}.html"
            if executed.is_file():
                render_notebook(executed, failed_html, show_code=True)
            status.update(status="failed", failed_step=step.key, cell=exc.exec_count,
                          error=f"{exc.ename}: {exc.evalue}")
            status["steps"][step.key] = round(time.perf_counter() - t0, 2)
            _write_status(output_dir, status)
            raise StepFailed(
                f"step '{step.key}' failed in notebooks/{step.notebook}, cell [{exc.exec_count}]: "
                f"{exc.ename}: {exc.evalue}. The notebook with the error is rendered in {failed_html}; "
                "nothing else in the report folder was changed."
            ) from None
        seconds[step.key] = time.perf_counter() - t0
        status["steps"][step.key] = round(seconds[step.key], 2)
        _write_status(output_dir, status)          # still "running": the steps done so far, for whoever watches
        _say(f"[{index}/{len(steps)}] {step.key}: done in {seconds[step.key]:.1f} s")
        _say_alert(staging, step)
    return seconds


def run_report(params_path: str | Path, *, only: str | None = None, fast: bool | None = None,
               show_code: bool = False, reports_root: str | Path = "reports",
               kernel_name: str = "python3", registry=None) -> RunResult:
    """Check inputs, execute the steps, render ``report.html`` (module docstring for the failure rules).

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
    ParamsError, DataError, HmlibError
        Before any work, when the inputs or the output folder are wrong.
    StepFailed
        When a notebook fails (after writing ``FAILED-<step>.html``).
    KeyboardInterrupt
        After marking the run ``interrupted``; the report folder is unchanged.
    """
    if registry is None:  # every data check, before any expensive work
        registry = load_registry(load_params(params_path, fast=fast))
    params = registry.params
    output_dir = prepare_output_dir(reports_root, params.name)
    inputs = {"data_sha256": registry.data_sha256, "params_sha256": params.fingerprint}
    steps = resolve_steps(only, output_dir, inputs)
    dropped = [s for s in stale_steps(output_dir, inputs) if s not in steps]
    status = {"status": "running", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "params": str(params.source), "hmlib": __version__, "steps": {}}
    _write_status(output_dir, status)
    _say(f"hmreport: {params.name}: {registry.n_patients} {plural(row_noun(params.time))} in "
         f"{registry.n_clusters} clusters; "
         f"output in {output_dir}")
    for step in dropped:
        _say(f"hmreport: {step.key}: its earlier results were made from another data file or other params; "
             f"they are left out of this report (run it with --only {step.key}).")
    for key in steps_run_alone(output_dir):
        _say(f"hmreport: {key}: run on its own since the last report (STALE); it runs again so that its "
             "section agrees with its results.")
    staging = _stage(output_dir)
    try:
        for step in dropped:
            _drop_step_outputs(staging, step)
        seconds = _run_steps(steps, staging, output_dir, params, kernel_name, status)
        for step in STEPS:
            executed = staging / "notebooks" / step.notebook
            if executed.is_file():
                render_notebook(executed, staging / step.rendered_name, show_code=show_code)
        assemble_report(registry, staging, show_code=show_code, step_seconds=seconds)
        for failed in output_dir.glob("FAILED-*.html"):
            failed.unlink()
        _commit(staging, output_dir, dropped)
        clear_stale_mark(output_dir)
    except KeyboardInterrupt:
        status.update(status="interrupted", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_status(output_dir, status)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = output_dir / "report.html"
    status.update(status="complete", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    _write_status(output_dir, status)
    _say(f"hmreport: wrote {report}")
    return RunResult(params.name, output_dir, report, "complete", seconds)


@contextlib.contextmanager
def parallel_engine(scheduler: str | None = None, needed: bool = True):
    """The Dask cluster of a run, handed to the notebook kernels as ``$HMLIB_SCHEDULER``; yields its address.

    Parameters
    ----------
    scheduler : str, optional
        A running scheduler's address (default ``$HMLIB_SCHEDULER``): checked
        here, before any work.
    needed : bool
        Some step of the run hands tasks out; without a scheduler, a local
        cluster (one worker process per core) is started only then, and only
        on more than one core (else None: the tasks run in the kernels).

    Raises
    ------
    hmlib.parallel.SchedulerUnavailable
        The scheduler does not answer or has no worker.
    """
    address = scheduler_address(scheduler)
    previous = os.environ.get(SCHEDULER_ENV)
    with contextlib.ExitStack() as stack:
        if address:
            n = check_scheduler(address)
            _say(f"hmreport: parallel work goes to the Dask scheduler at {address} ({n} worker(s)).")
        elif needed and local_cores() > 1:
            t0 = time.perf_counter()
            cluster = stack.enter_context(start_local_cluster())
            address = cluster.scheduler_address
            _say(f"hmreport: parallel work on a local Dask cluster of {len(cluster.workers)} worker processes "
                 f"(started in {time.perf_counter() - t0:.1f} s).")
        try:
            if address:
                os.environ[SCHEDULER_ENV] = address
            yield address
        finally:
            if previous is None:
                os.environ.pop(SCHEDULER_ENV, None)
            else:
                os.environ[SCHEDULER_ENV] = previous


def _run_labelled(path, registry, kwargs: dict) -> RunResult:
    """One report of several run side by side: its terminal lines start with its name."""
    _LINE_PREFIX.text = f"[{registry.params.name}] "
    try:
        return run_report(path, registry=registry, **kwargs)
    finally:
        _LINE_PREFIX.text = ""


def _run_side_by_side(paths: list, registries: list, kwargs: dict) -> list[RunResult]:
    """Run the reports concurrently (one per local core at a time); the first failure is raised after all end."""
    with ThreadPoolExecutor(max_workers=min(len(paths), local_cores())) as executor:
        futures = [executor.submit(_run_labelled, p, r, kwargs) for p, r in zip(paths, registries)]
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except HmlibError as exc:
                outcomes.append(exc)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    if failures:
        done = [o.name for o in outcomes if isinstance(o, RunResult)]
        if done:
            failures[0].add_note(f"Reports completed: {', '.join(done)}.")
        raise failures[0]
    return outcomes


def run_many(params_paths, *, scheduler: str | None = None, **kwargs) -> list[RunResult]:
    """Run several params files; with more than one, write ``<reports_root>/index.html``.

    Inputs of every file are checked before the first notebook runs, and two
    files with the same ``name`` (one output folder) are refused. Then the
    run's Dask cluster is set up (:func:`parallel_engine`; a scheduler that
    does not answer is an error here, before any work) and the reports run,
    several side by side (module docstring).

    Parameters
    ----------
    params_paths : sequence of paths
    scheduler : str, optional
        Address of a running Dask scheduler (default ``$HMLIB_SCHEDULER``,
        else a local cluster).
    **kwargs
        As :func:`run_report`.
    """
    paths = list(params_paths)
    # Check every input before the first notebook runs: fail fast, not after hours.
    registries = [load_registry(load_params(p, fast=kwargs.get("fast"))) for p in paths]
    names: dict[str, Path] = {}
    for reg in registries:
        name = reg.params.name
        if name in names:
            raise HmlibError(f"{names[name]} and {reg.params.source} both have name: {name}; their reports would "
                             "overwrite each other in one folder. Give each params file its own 'name'.")
        names[name] = reg.params.source
    needed = False
    for reg in registries:
        output_dir = prepare_output_dir(kwargs.get("reports_root", "reports"), reg.params.name)
        inputs = {"data_sha256": reg.data_sha256, "params_sha256": reg.params.fingerprint}
        needed |= any(s.uses_workers for s in resolve_steps(kwargs.get("only"), output_dir, inputs))
    with parallel_engine(scheduler, needed):
        if len(paths) == 1:
            results = [run_report(paths[0], registry=registries[0], **kwargs)]
        else:
            results = _run_side_by_side(paths, registries, kwargs)
    if len(results) > 1:
        write_index(Path(kwargs.get("reports_root", "reports")).resolve(), results)
    return results
