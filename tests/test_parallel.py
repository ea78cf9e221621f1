"""hmlib.parallel: results in task order, identical with one worker or several; the initializer reaches
every worker; BLAS held to one thread. Each test names the behaviour it checks by a stable ID (``PAR-...``)."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from hmlib.exceptions import ParamsError
from hmlib.parallel import TaskPool, check_workers, run_tasks

#: Set by the initializer in each process that runs tasks.
_OFFSET = None


def set_offset(value):
    global _OFFSET
    _OFFSET = value


def shifted_square(x):
    """A task that needs the initializer's value, and reports the BLAS threads it runs with."""
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return x * x + _OFFSET, max(blas, default=1)


def test_PAR_001_task_order_and_serial_equals_parallel():
    """PAR-001: results come back in task order; 2 workers give what 1 gives; the initializer ran in every
    process that ran a task; BLAS runs with one thread there; two maps share one pool."""
    global _OFFSET
    tasks = [5, 3, 9, 1, 7, 2]
    serial = run_tasks(shifted_square, tasks, workers=1, initializer=set_offset, initargs=(10,))
    assert [r[0] for r in serial] == [x * x + 10 for x in tasks]
    _OFFSET = None
    with TaskPool(2, initializer=set_offset, initargs=(10,)) as pool:
        first = pool.map(shifted_square, tasks)
        second = pool.map(shifted_square, tasks[::-1])
    assert first == serial and second == serial[::-1]
    assert all(threads == 1 for _, threads in first + serial)
    assert _OFFSET is None                    # the workers' initializer does not touch this process


def test_PAR_002_workers_are_checked():
    """PAR-002: workers must be a positive integer (True, 0, 1.5 and text are refused); numpy integers pass."""
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ParamsError, match="workers"):
            check_workers(bad)
    assert check_workers(np.int64(2)) == 2
    with pytest.raises(RuntimeError, match="open pool"):
        TaskPool(1).map(abs, [1])
