"""hmlib.parallel: the Dask engine gives what a serial run gives, on a local cluster and on a scheduler with two
workers started here on 127.0.0.1; shared data reaches each worker once; a failing task and a silent
scheduler are clear errors. Each test names the behaviour it checks by a stable ID (``PAR-...``).

The scheduler and its two workers are real ``dask scheduler`` / ``dask worker`` processes (module fixture
``scheduler``), listening on 127.0.0.1 only, stopped at the end of the module.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_info

from conftest import REPO
from hmlib.exceptions import HmlibError, ParamsError
from hmlib.parallel import (SCHEDULER_ENV, SchedulerUnavailable, TaskPool, check_scheduler, check_workers,
                            run_tasks)

DASK = Path(sys.executable).with_name("dask")

#: Unpickled copies of a Payload in this process (a worker counts its own).
_UNPICKLED = 0


class Payload:
    """Shared data that counts how often it is unpickled in the process that receives it."""

    def __init__(self, size: int):
        self.values = np.arange(size, dtype=float)

    def __getstate__(self):
        return {"values": self.values}

    def __setstate__(self, state):
        global _UNPICKLED
        _UNPICKLED += 1
        self.values = state["values"]


def payload_task(x, payload):
    """A task that reads the shared payload; reports its process and the copies unpickled there so far."""
    return x + float(payload.values[x]), os.getpid(), _UNPICKLED


def square_with_blas(x, offset):
    """A task that needs the shared offset and reports the BLAS threads it runs with."""
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return x * x + offset, max(blas, default=1)


def fails_on_three(x):
    if x == 3:
        raise ValueError("deliberate failure of task x=3")
    time.sleep(0.05)
    return x


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """A `dask scheduler` and two `dask worker` processes (one thread each) on 127.0.0.1; yields the address."""
    folder = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    # The README's way of starting a scheduler for hmlib: Dask's active memory manager off (hmlib.parallel).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"),
                                                         os.environ.get("PYTHONPATH", "")]),
           "DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__START": "False"}
    logs = open(folder / "dask.log", "w")
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=logs, stderr=logs)]
    for _ in range(2):
        procs.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                       "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "0"],
                                      env=env, stdout=logs, stderr=logs))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if check_scheduler(address, timeout=5) == 2:
                    break
            except SchedulerUnavailable:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test cluster did not start: {(folder / 'dask.log').read_text()[-2000:]}")
            time.sleep(1)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()


def test_PAR_001_task_order_and_every_engine_equal():
    """PAR-001: results come back in task order (also sent in chunks); a local Dask cluster of 2 and the former
    process pool give what a serial run gives; the shared value reaches every task; BLAS runs with one thread in
    every task."""
    tasks = [5, 3, 9, 1, 7, 2]
    serial = run_tasks(square_with_blas, tasks, workers=1, shared=10)
    assert [r[0] for r in serial] == [x * x + 10 for x in tasks]
    with TaskPool(2, scheduler="") as pool:
        assert pool.engine == "dask"
        first = pool.map(square_with_blas, tasks, shared=10)
        second = pool.map(square_with_blas, tasks[::-1], shared=10)
        assert pool.workers == 2
        chunked = pool.map(square_with_blas, tasks, shared=10, chunks_per_worker=2)
    assert first == serial and second == serial[::-1] and chunked == serial
    assert run_tasks(square_with_blas, tasks, workers=2, shared=10, engine="processes") == serial
    assert all(threads == 1 for _, threads in first + serial)
    assert run_tasks(abs, [-4], workers=2, scheduler="") == [4]        # one task: in this process


def test_PAR_002_arguments_are_checked():
    """PAR-002: workers must be a positive integer (True, 0, 1.5 and text are refused); numpy integers pass;
    an unknown engine is refused; map needs an open pool."""
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ParamsError, match="workers"):
            check_workers(bad)
    assert check_workers(np.int64(2)) == 2
    with pytest.raises(ParamsError, match="engine"):
        TaskPool(2, engine="threads")
    with pytest.raises(RuntimeError, match="open pool"):
        TaskPool(1).map(abs, [1])


def test_PAR_003_shared_data_reaches_each_worker_once(scheduler):
    """PAR-003: an object shared by 12 tasks is unpickled at most once in each of the 2 workers (scattered with
    broadcast, not sent with every task), also over two maps of one pool; in a serial pool it is not copied.
    How this was measured: the object counts its own unpickling in each process."""
    payload = Payload(1000)
    before = pickle.dumps(payload)
    with TaskPool(scheduler=scheduler) as pool:
        first = pool.map(payload_task, list(range(12)), shared=payload)
        second = pool.map(payload_task, list(range(12)), shared=payload)
    results = first + second
    assert [r[0] for r in first] == [x + float(x) for x in range(12)]
    per_worker = {}
    for _, pid, copies in results:
        per_worker[pid] = max(per_worker.get(pid, 0), copies)
    assert pid != os.getpid() and len(per_worker) <= 2
    assert all(copies == 1 for copies in per_worker.values()), per_worker
    serial = run_tasks(payload_task, [0, 1], workers=1, shared=payload)
    assert [r[2] for r in serial] == [_UNPICKLED, _UNPICKLED] and pickle.dumps(payload) == before


def _imputation_and_analysis(registry, pool):
    from hmlib.stats.pooling import analyse_imputations
    from hmlib.steps.imputation import impute_registry

    p = registry.params
    tasks = None if pool is None else pool.map
    result = impute_registry(registry, method="multilevel", m=4, iterations=4, map_tasks=tasks)
    pooled = analyse_imputations(result, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                 family=p.outcome_family, levels=registry.levels, map_tasks=tasks)
    return result, pooled.to_frame()


def test_PAR_004_identical_serial_local_cluster_and_scheduler(scheduler, write_case, monkeypatch):
    """PAR-004: the m imputation chains and their analyses (step 3), and a sensitivity grid (step 5), give
    identical estimates (exact equality) run serially, on a local Dask cluster and on the scheduler with two
    workers, given by address or by $HMLIB_SCHEDULER: seeds belong to tasks, not to workers."""
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.steps.sensitivity import run_sensitivity
    from hmlib.steps.sensitivity_scenarios import SensitivitySettings

    registry = load_registry(load_params(write_case()))
    runs = {"serial": _imputation_and_analysis(registry, None)}
    with TaskPool(2, scheduler="") as pool:
        runs["local"] = _imputation_and_analysis(registry, pool)
    with TaskPool(scheduler=scheduler) as pool:
        runs["scheduler"] = _imputation_and_analysis(registry, pool)
    base_imputation, base_pooled = runs["serial"]
    for name in ("local", "scheduler"):
        imputation, pooled = runs[name]
        for a, b in zip(base_imputation.completed, imputation.completed):
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        assert imputation.notes == base_imputation.notes
        pd.testing.assert_frame_equal(pooled, base_pooled, check_exact=True)

    settings = SensitivitySettings(families=("exclusion", "delta-global"), m=3, iterations=3,
                                   deltas_sd=(-1.0, 1.0), bisection_steps=2)
    serial = run_sensitivity(registry, settings, workers=1, joint_fitter=None)
    monkeypatch.setenv(SCHEDULER_ENV, scheduler)
    remote = run_sensitivity(registry, settings, joint_fitter=None)
    assert remote.workers == 2 and serial.workers == 1
    pd.testing.assert_frame_equal(serial.grid, remote.grid, check_exact=True)
    pd.testing.assert_frame_equal(serial.delta_curve, remote.delta_curve, check_exact=True)


def test_PAR_005_failing_task_is_a_clear_error(scheduler):
    """PAR-005: a task that raises on a worker raises its own exception here, with a note naming the task
    (4 of 8) and the function, also when the tasks travel in chunks; the pool and the cluster stay usable."""
    with TaskPool(scheduler=scheduler) as pool:
        with pytest.raises(ValueError, match="deliberate failure of task x=3") as err:
            pool.map(fails_on_three, list(range(8)))
        assert "in task 4 of 8 (fails_on_three), run by Dask (scheduler tcp://127.0.0.1" in \
            "\n".join(err.value.__notes__)
        with pytest.raises(ValueError, match="deliberate failure") as err:
            pool.map(fails_on_three, list(range(8)), chunks_per_worker=1)
        assert "in task 4 of 8 (fails_on_three)" in err.value.__notes__
        assert pool.map(fails_on_three, [0, 1, 2]) == [0, 1, 2]


def test_PAR_006_silent_scheduler_is_one_clear_line_before_any_work(tmp_path, write_case, capsys):
    """PAR-006: an address where nothing listens fails fast with SchedulerUnavailable saying what to do;
    `hmreport run --scheduler` with it prints one line, exits 2, and runs no step."""
    from hmlib.cli import main

    silent = f"tcp://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(SchedulerUnavailable, match=f"no Dask scheduler answers at {silent}"):
        with TaskPool(scheduler=silent) as pool:
            pool.map(abs, [1, 2])
    assert time.monotonic() - start < 30
    assert issubclass(SchedulerUnavailable, HmlibError)
    out = tmp_path / "reports"
    assert main(["run", str(write_case()), "--scheduler", silent, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"hmreport: error: no Dask scheduler answers at {silent}"), err
    assert "dask scheduler" in err[0] and "--scheduler" in err[0]
    assert not (out / "case" / "run-status.json").exists() and not (out / "case" / "artifacts").exists()


def test_PAR_007_the_run_hands_its_cluster_to_the_notebook_kernels(scheduler, write_case, tmp_path):
    """PAR-007: `hmreport run --scheduler ADDRESS` checks the scheduler, passes it to the notebook kernels
    as $HMLIB_SCHEDULER (restored afterwards), and step 3's chains, analyses and transport check's masked
    clusters run as tasks on that cluster."""
    from distributed import Client

    from hmlib.report.runner import parallel_engine, run_many

    before = os.environ.get(SCHEDULER_ENV)
    with parallel_engine(scheduler) as address:
        assert address == scheduler and os.environ[SCHEDULER_ENV] == scheduler
    assert os.environ.get(SCHEDULER_ENV) == before
    run_many([write_case()], only="imputation", fast=True, reports_root=tmp_path / "r", scheduler=scheduler)
    with Client(scheduler, set_as_default=False) as client:
        prefixes = client.run_on_scheduler(_task_prefixes)
    assert {"chain_task", "fit_completed_task", "check_cluster"} <= set(prefixes), prefixes
    assert (tmp_path / "r" / "case" / "artifacts" / "imputation.json").is_file()


def _task_prefixes(dask_scheduler=None):
    """The task names (prefixes) the scheduler has seen."""
    return sorted(dask_scheduler.task_prefixes)


def test_PAR_008_transport_check_identical_serial_and_scheduler(scheduler, write_case):
    """PAR-008: step 3's transport check (each masked cluster a task, both methods in it) gives the same table
    and failures, to exact equality, run serially and on the scheduler with two workers: each cluster's draws
    take their seeds from the cluster's position, not from the worker."""
    from hmlib.data import load_registry
    from hmlib.params import load_params
    from hmlib.stats.transport import DEFAULT_TRANSPORT_METHODS
    from hmlib.steps.imputation import impute_registry
    from hmlib.steps.imputation_transport import transport_check

    registry = load_registry(load_params(write_case()))
    backgrounds, states = {}, {}
    for label, (method, options) in DEFAULT_TRANSPORT_METHODS.items():
        run = impute_registry(registry, method=method, m=3, iterations=3, **dict(options))
        backgrounds[label], states[label] = run.completed, run.chain_states
    common = dict(backgrounds=backgrounds, background_states=states, m=6, max_clusters=6)
    serial = transport_check(registry, **common)
    with TaskPool(scheduler=scheduler) as pool:
        remote = transport_check(registry, map_tasks=pool.map, **common)
        assert pool.workers == 2
    assert len(serial.check.table) == 12 and serial.check.table["cluster"].nunique() == 6
    pd.testing.assert_frame_equal(serial.check.table, remote.check.table, check_exact=True)
    assert serial.check.failures == remote.check.failures
