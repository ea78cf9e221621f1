"""Progress inside long steps (issue #13, "Terminal"): reported where the work is, shown where someone watches.

PROGRESS-001  an event's line: units, phase, elapsed time, time left from the average rate; start and end lines
PROGRESS-002  report() is silent without a sink, reaches the installed one, restarts a task's clock at 0
PROGRESS-003  a counting loop owns the line: other tasks' reports and counts inside it are dropped (muted too)
PROGRESS-004  a terminal gets one live line (carriage returns, cleared at the end); a log gets plain lines:
              start, phase changes, at most one per interval, and the end
PROGRESS-005  the channel: FileSink lines are read back by ChannelTail in order and the file is removed
PROGRESS-006  TaskPool.map reports each task as it finishes (in any order), on the serial, process-pool and Dask
              engines, chunked or not
PROGRESS-007  the hooks: the imputation loop reports k of m; nutpie's callback records become draws in
              warm-up then sampling, time left from the slowest chain's phase rate (and a real nutpie run; slow)
PROGRESS-008  a fast `hmreport run` log (stderr not a terminal) shows the progress lines between a step's
              "running" and "done", and no kernel or library noise (slow)
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import yaml

from conftest import REPO
from hmlib import progress
from hmlib.parallel import TaskPool
from hmlib.progress import (ChannelTail, FileSink, ProgressEvent, TerminalPrinter, counting, listening, muted,
                            report, reporter)


def test_progress_001_event_lines():
    """PROGRESS-001: the line of an event in progress, at the start and at the end."""
    event = ProgressEvent("joint model", 812, 4000, unit="draws", detail="warm-up", elapsed=14.2, eta=55.8)
    assert event.text() == "joint model, warm-up: 812 of 4,000 draws, 14 s, about 56 s left"
    assert ProgressEvent("sensitivity", 0, 14, unit="scenarios").text() == "sensitivity: 14 scenarios to do"
    assert ProgressEvent("imputation (flat)", 20, 20, unit="imputed data sets", elapsed=130).text() == (
        "imputation (flat): 20 of 20 imputed data sets, done in 2 min")
    assert ProgressEvent.from_json(event.to_json()) == event
    assert progress.format_seconds(5300) == "88 min" and progress.format_seconds(5500) == "1 h 31 min"


def test_progress_002_report_reaches_the_installed_sink(monkeypatch):
    """PROGRESS-002: no sink, no event; with one, every event; the time left is the average time per unit so
    far times the units left; 0 done restarts the clock."""
    report("x", 1, 2)  # nobody listens: nothing happens, no error
    clock = iter([0.0, 10.0, 20.0, 100.0, 101.0])
    monkeypatch.setattr(progress, "clock", lambda: next(clock))
    events = []
    with listening(events.append):
        report("t", 0, 4)
        report("t", 1, 4)   # 10 s for one unit: 30 s left
        report("t", 2, 4)   # 20 s for two: 20 s left
        report("t", 0, 4)   # restarted at 100
        report("t", 1, 4)   # 1 s for one: 3 s left
    assert [(e.done, e.elapsed, e.eta) for e in events] == [(0, 0.0, None), (1, 10.0, 30.0), (2, 20.0, 20.0),
                                                             (0, 0.0, None), (1, 1.0, 3.0)]
    report("t", 2, 4)
    assert len(events) == 5  # the sink is gone after the block


def test_progress_003_a_counting_loop_owns_the_line():
    """PROGRESS-003: inside counting('sensitivity') only 'sensitivity' reports are shown (the imputations
    inside a scenario are not, nor their own counted chains); inside muted() nothing is; after the block
    everything is again."""
    events = []
    with listening(events.append):
        with counting(reporter("sensitivity", unit="scenarios"), 2) as tick:
            for _ in range(2):
                report("imputation (flat)", 1, 5)
                with counting(reporter("imputation (flat)"), 5) as chain:
                    chain()
                tick()
        with muted():
            report("imputation (flat)", 1, 5)
        report("imputation (flat)", 5, 5)
    assert [(e.task, e.done) for e in events] == [("sensitivity", 0), ("sensitivity", 1), ("sensitivity", 2),
                                                  ("imputation (flat)", 5)]
    with counting(None, 3) as tick:
        assert tick("value") == "value"


def test_progress_004_live_line_on_a_terminal_plain_lines_in_a_log(monkeypatch):
    """PROGRESS-004: live: carriage-return redraws, no newline, blanked by close(); log: one line at the start,
    at a change of phase, after LOG_INTERVAL seconds and at the end, nothing in between."""
    clock = iter(range(0, 1000, 1))
    monkeypatch.setattr(progress, "clock", lambda: float(next(clock)))
    terminal = io.StringIO()
    live = TerminalPrinter(terminal, live=True)
    live(ProgressEvent("joint model", 0, 100, unit="draws", detail="warm-up"))
    live(ProgressEvent("joint model", 50, 100, unit="draws", detail="sampling", elapsed=5, eta=5))
    assert terminal.getvalue().count("\r") == 2 and "\n" not in terminal.getvalue()
    live.close()
    assert terminal.getvalue().endswith("\r") and "\n" not in terminal.getvalue()
    log = io.StringIO()
    plain = TerminalPrinter(log, live=False)
    events = [ProgressEvent("joint model", 0, 100, unit="draws", detail="compiling the sampler"),
              ProgressEvent("joint model", 0, 100, unit="draws", detail="warm-up"),
              *[ProgressEvent("joint model", k, 100, unit="draws", detail="warm-up", elapsed=k) for k in range(1, 30)],
              ProgressEvent("joint model", 60, 100, unit="draws", detail="sampling", elapsed=60),
              ProgressEvent("joint model", 100, 100, unit="draws", detail="sampling", elapsed=80)]
    for event in events:
        plain(event)
    lines = log.getvalue().splitlines()
    assert lines[0] == "  joint model, compiling the sampler: 100 draws to do"
    assert lines[1] == "  joint model, warm-up: 100 draws to do"
    assert lines[-2].startswith("  joint model, sampling: 60 of 100") and lines[-1].endswith("done in 80 s")
    assert 4 < len(lines) < 8  # one line per LOG_INTERVAL (10 s here) of the 29 warm-up events
    assert not TerminalPrinter(io.StringIO()).live  # a StringIO is not a terminal


def test_progress_005_channel_file_and_tail(tmp_path):
    """PROGRESS-005: what a kernel's FileSink appends, the runner's ChannelTail reads in order (a line
    written in two pieces is read once whole); leaving the block removes the channel."""
    channel = tmp_path / progress.CHANNEL_NAME
    seen = []
    with ChannelTail(channel, seen.append, poll=0.01):
        sink = FileSink(channel)
        with listening(sink):
            for k in range(4):
                report("imputation (flat)", k, 3)
        with channel.open("a") as handle:
            half = ProgressEvent("sensitivity", 1, 2).to_json()
            handle.write(half[:10])
            handle.flush()
            handle.write(half[10:] + "\nnot json\n")
    assert [(e.task, e.done) for e in seen] == [("imputation (flat)", k) for k in range(4)] + [("sensitivity", 1)]
    assert not channel.exists()


def _double(x):
    return 2 * x


def _add(x, shared):
    return x + shared


@pytest.mark.parametrize("engine", ["serial", "processes", "dask"])
def test_progress_006_task_pool_reports_results_as_they_come_back(engine):
    """PROGRESS-006: TaskPool.map(..., progress=reporter) gives 0 of n, then 1..n of n, results unchanged, on
    every engine; with chunks_per_worker a chunk counts each of its tasks (0..5 of 5 for 5 tasks in 2-4
    chunks); with a shared object too."""
    events = []
    with listening(events.append), TaskPool(2, engine=engine) as pool:
        assert pool.map(_double, [1, 2, 3], progress=reporter("sensitivity", unit="scenarios")) == [2, 4, 6]
        assert pool.map(_double, [4]) == [8]
        assert pool.map(_double, [], progress=reporter("tipping points")) == []  # nothing to count: no line
        assert pool.map(_add, [1, 2, 3, 4, 5], 10, chunks_per_worker=1,
                        progress=reporter("imputation (flat)")) == [11, 12, 13, 14, 15]
    assert [(e.task, e.done, e.total) for e in events] == ([("sensitivity", k, 3) for k in range(4)]
                                                           + [("imputation (flat)", k, 5) for k in range(6)])


def _nap(seconds):
    import time

    time.sleep(seconds)
    return seconds


def test_progress_006b_tasks_are_counted_as_they_finish():
    """PROGRESS-006: with two workers, a slow first task does not hold back the count: two of three are
    reported done before it ends (the results still come back in task order)."""
    events = []
    with listening(events.append), TaskPool(2) as pool:
        assert pool.map(_nap, [5.0, 0.0, 0.0], progress=reporter("sensitivity", unit="scenarios")) == [5.0, 0.0, 0.0]
    two = next(e for e in events if e.done == 2)
    assert [e.done for e in events] == [0, 1, 2, 3] and events[-1].elapsed - two.elapsed > 2.0


def test_progress_007_imputation_and_sampler_hooks():
    """PROGRESS-007: impute() reports 0..m of m for its method; DrawProgress turns nutpie's chain records
    into draws over all chains, 'warm-up' while any chain tunes, then 'sampling', and the time left is the
    slowest chain's at its rate in its current phase (the overall rate in a phase's first second); its seconds per
    gradient are the chains' sampling time over their leapfrog steps (None before a step)."""
    from hmlib.simulate.registries import small_registry
    from hmlib.stats.imputation import impute
    from hmlib.stats.joint.sampling import DrawProgress

    events = []
    chain = SimpleNamespace
    with listening(events.append):
        impute(small_registry(), method="fixed_effects", cluster="site", outcome="died", outcome_family="binomial",
               predictors=["age", "sex", "lab"], m=3, iterations=2, seed=1)
        hook = DrawProgress()
        hook([chain(finished_draws=0, total_draws=100, tuning=True, runtime_ms=0, total_num_steps=0)] * 2)
        assert hook.seconds_per_gradient() is None
        # chain 1: 50 warm-up draws in 10 s, then 10 sampling draws in 1 s; chain 2: 40 warm-up draws in 10 s
        hook([chain(finished_draws=50, total_draws=100, tuning=False, runtime_ms=10_000, total_num_steps=500),
              chain(finished_draws=40, total_draws=100, tuning=True, runtime_ms=10_000, total_num_steps=400)])
        hook([chain(finished_draws=60, total_draws=100, tuning=False, runtime_ms=11_000, total_num_steps=600),
              chain(finished_draws=44, total_draws=100, tuning=True, runtime_ms=11_000, total_num_steps=440)])
        hook([chain(finished_draws=100, total_draws=100, tuning=False, runtime_ms=15_000, total_num_steps=1_500),
              chain(finished_draws=100, total_draws=100, tuning=False, runtime_ms=15_000, total_num_steps=1_000)])
    # seconds per gradient: both chains' sampling time over both chains' leapfrog steps, at the last call
    assert hook.seconds_per_gradient() == pytest.approx(30.0 / 2_500)
    imputation = [(e.task, e.done, e.total) for e in events if e.task.startswith("imputation")]
    assert imputation == [("imputation (fixed-effects)", k, 3) for k in range(4)]
    joint = [(e.done, e.total, e.detail, e.eta) for e in events if e.task == "joint model"]
    # chain 2 is the slowest: 56 draws left at 44 draws per 11 s (its phase's rate) = 14 s
    assert joint == [(0, 200, "warm-up", None), (90, 200, "warm-up", pytest.approx(15.0)),
                     (104, 200, "warm-up", pytest.approx(14.0)), (200, 200, "sampling", None)]
    with listening(events.append):  # a phase's rate once it has 10 draws over a second: chain 1 samples fast
        hook = DrawProgress()
        hook([chain(finished_draws=50, total_draws=100, tuning=True, runtime_ms=50_000, total_num_steps=500)])
        hook([chain(finished_draws=51, total_draws=100, tuning=False, runtime_ms=51_000, total_num_steps=510)])
        hook([chain(finished_draws=71, total_draws=100, tuning=False, runtime_ms=53_000, total_num_steps=710)])
    assert events[-1].eta == pytest.approx(29 * 2 / 20)


@pytest.mark.slow
def test_progress_007b_nutpie_calls_the_hook_with_its_records():
    """PROGRESS-007 (real sampler): nutpie 0.16's progress_callback, as fit.py passes it, reaches
    DrawProgress with ChainProgress records: events from 0 to every draw of both chains."""
    import nutpie
    import pymc as pm

    from hmlib.stats.joint.sampling import DrawProgress

    with pm.Model() as model:
        pm.Normal("x", 0, 1, shape=2)
    compiled = nutpie.compile_pymc_model(model)
    events = []
    with listening(events.append):
        nutpie.sample(compiled, draws=300, tune=300, chains=2, cores=2, seed=1, progress_bar=False,
                      progress_callback=DrawProgress(), progress_rate=20)
    assert events and events[-1].done == events[-1].total == 1200 and events[-1].detail == "sampling"
    assert {e.detail for e in events} <= {"warm-up", "sampling"}


@pytest.mark.slow
def test_progress_008_fast_run_log_shows_progress_and_no_noise(tmp_path):
    """PROGRESS-008: `hmreport run --only imputation` on a small registry with stderr to a file: between
    "[2/2] imputation: running" and its "done" the log has the four methods' k-of-m lines and the
    transport check's; nothing else is printed (no kernel TCP warning, no traceback, no warnings)."""
    from hmlib.simulate.registries import small_registry

    small_registry().to_csv(tmp_path / "registry.csv", index=False)
    params = {"name": "case", "data": "registry.csv", "cluster": "site", "outcome": "died",
              "outcome_family": "binomial", "predictors": ["age", "sex", "lab"], "seed": 3, "fast": True}
    (tmp_path / "case.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "hmlib.cli", "run", "case.yaml", "--only", "imputation",
                           "--out", "reports"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    start = lines.index("[2/2] imputation: running 03_imputation.ipynb ...")
    end = next(i for i, line in enumerate(lines) if line.startswith("[2/2] imputation: done in"))
    inside = lines[start + 1:end]
    for method in ("flat", "stratified", "fixed-effects", "multilevel"):
        assert f"  imputation ({method}): 5 imputed data sets to do" in inside
        assert any(line.startswith(f"  imputation ({method}): 5 of 5 imputed data sets, done in") for line in inside)
    assert any(line.startswith("  transport check: 12 of 12 clusters, done in") for line in inside)
    assert all(line.startswith("  ") for line in inside)
    other = [line for line in lines if not line.startswith(("  ", "[", "hmreport: "))]
    assert other == [] and done.stdout == ""
    assert "\r" not in done.stderr
