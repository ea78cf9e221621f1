"""The full default report at registry scale: time and peak memory of every step, ``hmreport run`` itself.

Cases (simulated, :mod:`hmlib.simulate.scale`; each written as CSV with its
truth and params into ``--root``):

``trial``
    19,435 patients in 466 hospitals in 36 countries, shaped like the
    International Stroke Trial: 7 predictors (4 categorical), atrial
    fibrillation incomplete (binary), outcome partly missing
    (:func:`~hmlib.simulate.scale.trial_registry`). Target: the full report
    within 10 minutes on 2 cores.
``scale10k``, ``scale100k``, ``scale1m``
    10,000, 100,000 and 1,000,000 patients in 400 sites, three predictors,
    lactate incomplete (:func:`~hmlib.simulate.scale.scale_registry`).
    Targets: 100,000 within 20 minutes, and cost at most linear in patients
    (100k / 10k time ratio at most 12, both measured in the same run).

Each case is run by the command a user runs, ``hmreport run PARAMS``
(every step, the notebooks executed by papermill, the report assembled),
in a subprocess of this script. Step times are the runner's own
(``run-status.json``). Memory: the process tree of ``hmreport`` is sampled
every 0.2 s with psutil; each step's notebook runs in its own kernel
process, so a step's peak is the largest sum of the resident set sizes of
its kernel and the kernel's descendants (worker processes) at one sample,
and the run's peak the largest sum over the whole tree (the runner
included). Sampling can miss a peak shorter than 0.2 s.

A case is recorded as it goes, not only when it ends: every
:data:`RECORD_EVERY_S` seconds its entry in the results file is rewritten
with the steps done so far (the runner's ``run-status.json``, rewritten
after each step), the running step's seconds and memory peak so far, and
the progress of every long task (the run's progress channel,
:mod:`hmlib.progress`: units done every 10 minutes of the task and the
last event). So a run stopped at ``--time-limit``, by Ctrl-C or by the end
of a session leaves an entry that says how far it got (``status``:
``running`` until it ends; ``stopped at the time limit``, ``stopped by
hand``).

Usage::

    .venv/bin/python bench/bench_scale.py                       # trial, scale10k, scale100k
    .venv/bin/python bench/bench_scale.py --cases scale1m       # the million (long)
    .venv/bin/python bench/bench_scale.py --cases scale1m --time-limit 150   # stopped after 150 minutes
    .venv/bin/python bench/bench_scale.py --cases scale1m --only diagnose,complete_case,imputation
    .venv/bin/python bench/bench_scale.py --cases smoke --fast --out /tmp/x.json   # check the script

writes ``bench/results/bench_scale.json`` (merged with earlier cases) and
prints the table of the README.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hmlib.simulate.scale import (SCALE_PARAMS, TRIAL_PARAMS, scale_registry, scale_registry_truth,  # noqa: E402
                                  trial_registry, trial_registry_truth)
from hmlib.progress import CHANNEL_NAME  # noqa: E402
from hmlib.steps import STEPS  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "bench_scale.json"
TARGETS = {"trial": 600.0, "scale100k": 1200.0}
MAX_RATIO_100K_10K = 12.0
#: Seconds between two rewrites of a running case's entry.
RECORD_EVERY_S = 60.0
#: A long task's progress is kept at every multiple of this many seconds of it.
PROGRESS_EVERY_S = 600.0
CASES = {
    "trial": (lambda: trial_registry(), trial_registry_truth, TRIAL_PARAMS),
    "scale10k": (lambda: scale_registry(14, n_patients=10_000), scale_registry_truth, SCALE_PARAMS),
    "scale100k": (lambda: scale_registry(14, n_patients=100_000), scale_registry_truth, SCALE_PARAMS),
    "scale1m": (lambda: scale_registry(14, n_patients=1_000_000), scale_registry_truth, SCALE_PARAMS),
    "smoke": (lambda: scale_registry(14, n_patients=2_000, n_sites=40), scale_registry_truth, SCALE_PARAMS),
}


def write_case(name: str, root: Path) -> Path:
    """Write the case's data, truth and params under ``root/name``; returns the params file."""
    generate, truth, template = CASES[name]
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    frame = generate()
    frame.to_csv(folder / "data.csv", index=False, float_format="%.10g", lineterminator="\n")
    (folder / "truth.json").write_text(json.dumps(truth(), indent=1) + "\n")
    params = folder / "params.yaml"
    params.write_text(template.format(name=name, data="data.csv", truth="truth.json"))
    return params


class TreeSampler(threading.Thread):
    """Samples the resident memory of a process tree; kernels (one per step) in order of appearance."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.stop = threading.Event()
        self.kernels: list[int] = []          # pids of the notebook kernels, in start order
        self.kernel_peak: dict[int, int] = {}
        self.total_peak = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            rss, kids = {}, {}
            for proc in tree:
                try:
                    rss[proc.pid] = proc.memory_info().rss
                    if proc.pid not in self.kernel_peak and "ipykernel" in " ".join(proc.cmdline()):
                        self.kernels.append(proc.pid)
                        self.kernel_peak[proc.pid] = 0
                    if proc.pid in self.kernel_peak:
                        kids[proc.pid] = [c.pid for c in proc.children(recursive=True)]
                except psutil.Error:
                    continue
            self.total_peak = max(self.total_peak, sum(rss.values()))
            for pid, children in kids.items():
                now = rss.get(pid, 0) + sum(rss.get(c, 0) for c in children)
                self.kernel_peak[pid] = max(self.kernel_peak[pid], now)
            time.sleep(self.interval)


class ProgressTrail:
    """Reads a run's progress channel as it grows: per task, its units done every :data:`PROGRESS_EVERY_S`
    seconds of the task and its last event."""

    def __init__(self, reports: Path):
        self.reports = reports
        self.tasks: dict[str, dict] = {}
        self._file: Path | None = None
        self._offset = 0

    def poll(self) -> None:
        """Read the events written since the last call (the newest staging folder's channel)."""
        channels = sorted(self.reports.glob(".run-*/" + CHANNEL_NAME), key=lambda p: p.stat().st_mtime)
        if not channels:
            return
        if channels[-1] != self._file:
            self._file, self._offset = channels[-1], 0
        try:
            with self._file.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
        except OSError:
            return
        complete = chunk[:chunk.rfind(b"\n") + 1]     # a line being written is read next time
        self._offset += len(complete)
        for line in complete.decode("utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            task = self.tasks.setdefault(event["task"], {"every_10_min": {}})
            mark = f"{int(event['elapsed'] // PROGRESS_EVERY_S) * int(PROGRESS_EVERY_S // 60)} min"
            task["every_10_min"].setdefault(mark, {k: event.get(k) for k in ("done", "total", "detail")})
            task["last"] = {k: event.get(k) for k in ("done", "total", "unit", "detail", "elapsed", "eta")}


def _stop_tree(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Interrupt the runner (Ctrl-C: it marks the run interrupted), then kill what is left of its tree."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.Error:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    for member in tree:
        try:
            member.kill()
        except psutil.Error:
            pass


def run_case(name: str, root: Path, fast: bool = False, only: str | None = None,
             time_limit_min: float | None = None, record=None) -> dict:
    """``hmreport run`` on the case (``--only`` those steps if given): wall time, the runner's step times, peak
    memory per step; ``record(entry)`` is called with the entry so far every :data:`RECORD_EVERY_S` seconds
    and the run is stopped after ``time_limit_min`` minutes (module docstring)."""
    params = write_case(name, root)
    reports = root / "reports"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "hmlib.cli", "run", str(params), "--out", str(reports),
               *(["--fast"] if fast else []), *(["--only", only] if only else [])]
    log = (root / f"{name}.log").open("w")
    started = time.perf_counter()
    status_file = reports / name / "run-status.json"
    status_file.unlink(missing_ok=True)                 # an earlier run's status is not this one's
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    trail = ProgressTrail(reports / name)
    stopped, last_record = None, started
    try:
        while True:
            try:
                code = proc.wait(timeout=10.0)
                break
            except subprocess.TimeoutExpired:
                pass
            trail.poll()
            now = time.perf_counter()
            if time_limit_min is not None and now - started > 60.0 * time_limit_min:
                stopped = f"stopped at the time limit ({time_limit_min:g} min)"
                _stop_tree(proc)
                code = proc.wait()
                break
            if record is not None and now - last_record >= RECORD_EVERY_S:
                record(_entry(name, root, status_file, sampler, trail, now - started, None, "running", fast, only))
                last_record = now
    except KeyboardInterrupt:
        stopped = "stopped by hand"
        _stop_tree(proc)
        code = proc.wait()
    wall = time.perf_counter() - started
    sampler.stop.set()
    sampler.join()
    log.close()
    trail.poll()
    entry = _entry(name, root, status_file, sampler, trail, wall, code, stopped, fast, only)
    if record is not None:
        record(entry)
    if stopped == "stopped by hand":
        raise KeyboardInterrupt
    return entry


def _entry(name, root, status_file, sampler, trail, wall, code, stopped, fast, only) -> dict:
    """A case's entry from what the run has written so far (see :func:`run_case`).

    A run not ended normally (running, or stopped) gets ``step_under_way``:
    the first step without a time, the run's seconds outside the finished
    steps (that step's time so far plus the runner's checks and kernel
    starts) and its kernel's memory peak so far; and ``progress``
    (:class:`ProgressTrail`).
    """
    reports = root / "reports"
    try:
        status = json.loads(status_file.read_text())
    except (OSError, ValueError):
        status = {}
    # the runner's status file has its keys sorted; the kernels started in the steps' order
    done = status.get("steps", {})
    steps = {step.key: done[step.key] for step in STEPS if step.key in done}
    peaks = [sampler.kernel_peak.get(pid, 0) for pid in list(sampler.kernels)]
    frame_rows = sum(1 for _ in (root / name / "data.csv").open()) - 1
    joint_file = reports / name / "artifacts" / "joint_model.json"
    # only this run's fit: the folder may hold an earlier run's (a run with --only and no step 4)
    ran_joint = code == 0 and "joint_model" in steps and joint_file.is_file()
    joint = json.loads(joint_file.read_text())["record"] if ran_joint else {}
    entry = {
        "case": name, "patients": frame_rows, "exit_code": code,
        "status": stopped or status.get("status"), "wall_seconds": round(wall, 1),
        "steps": {key: {"seconds": seconds, "peak_mb": round(peaks[i] / 2**20) if i < len(peaks) else None}
                  for i, (key, seconds) in enumerate(steps.items())},
        "other_seconds": round(wall - sum(steps.values()), 1),
        "peak_mb_run": round(sampler.total_peak / 2**20), "fast": fast, "only": only,
        "joint_converged": joint.get("converged"), "joint_message": joint.get("convergence_message"),
        "joint_runs": (joint.get("settings") or {}).get("attempts"),
        "log": str(root / f"{name}.log"),
    }
    if stopped or code is None:
        # the step under way when the entry was written: its seconds so far, its kernel's peak, the tasks' progress
        index = len(steps)
        entry["step_under_way"] = {
            "step": next((s.key for s in STEPS if s.key not in steps and (only is None or s.key in only)), None),
            "seconds_outside_finished_steps": round(wall - sum(steps.values()), 1),
            "peak_mb_so_far": round(peaks[index] / 2**20) if index < len(peaks) else None}
        entry["progress"] = trail.tasks
    return entry


def table(results: dict) -> str:
    """The README's table: one row per step and case (seconds, peak MB), and the totals."""
    cases = [c for c in CASES if c in results]
    steps = []
    for c in cases:
        steps.extend(k for k in results[c]["steps"] if k not in steps)
    head = "| step | " + " | ".join(f"{c} ({results[c]['patients']:,} patients)" for c in cases) + " |"
    lines = [head, "|---|" + "---|" * len(cases)]
    for step in steps:
        cells = []
        for c in cases:
            s = results[c]["steps"].get(step)
            cells.append("" if s is None else f"{s['seconds']:.0f} s, {s['peak_mb']} MB")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines.append("| checks, kernels, rendering, assembly | " + " | ".join(
        f"{results[c]['other_seconds']:.0f} s" for c in cases) + " |")
    lines.append("| **full report (wall)** | " + " | ".join(
        f"**{results[c]['wall_seconds']:.0f} s**, {results[c]['peak_mb_run']} MB" for c in cases) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["trial", "scale10k", "scale100k"], choices=list(CASES))
    parser.add_argument("--root", type=Path, default=Path("/tmp/hmlib_bench_scale"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--fast", action="store_true", help="hmreport run --fast (checking this script, not timing)")
    parser.add_argument("--only", help="hmreport run --only STEPS (e.g. the first steps of the million)")
    parser.add_argument("--time-limit", type=float, metavar="MINUTES",
                        help="stop each case after this many minutes (its entry says how far it got)")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    # earlier cases, their checks and notes stay: a run of some cases replaces only what it measured
    payload = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results = payload.get("cases", {})
    payload["cases"] = results

    def record(entry: dict) -> None:
        results[entry["case"]] = entry
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=1) + "\n")

    run = {}
    for name in args.cases:
        print(f"{name}: hmreport run ...", flush=True)
        run[name] = run_case(name, args.root, fast=args.fast, only=args.only, time_limit_min=args.time_limit,
                             record=record)
        r = run[name]
        print(f"{name}: {r['status']} in {r['wall_seconds']:.0f} s, peak {r['peak_mb_run']} MB; "
              + ", ".join(f"{k} {v['seconds']:.0f} s / {v['peak_mb']} MB" for k, v in r["steps"].items()), flush=True)
    results.update(run)
    checks = {}
    complete = {name: r["status"] == "complete" for name, r in run.items()}
    for name, limit in TARGETS.items():
        if name in run:
            checks[f"{name} within {limit:.0f} s"] = complete[name] and run[name]["wall_seconds"] <= limit
    if "trial" in run:
        checks["trial: joint model converged with the defaults"] = run["trial"]["joint_converged"] is True
    if complete.get("scale10k") and complete.get("scale100k"):
        ratio = run["scale100k"]["wall_seconds"] / run["scale10k"]["wall_seconds"]
        checks[f"100k/10k time ratio {ratio:.2f} <= {MAX_RATIO_100K_10K:g} (same run)"] = ratio <= MAX_RATIO_100K_10K
    payload["cases"] = results
    payload.setdefault("checks", {})[" + ".join(run)] = {
        "measured": time.strftime("%Y-%m-%d"), "checks": checks, "cores": psutil.cpu_count(),
        "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    print(table(results))
    for text, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}: {text}")


if __name__ == "__main__":
    main()
