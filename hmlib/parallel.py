"""Independent tasks over worker processes, with the results a serial run gives.

The one place hmlib starts processes (step 5 runs its scenarios here). What
it guarantees:

- results come back in task order, whatever the order of completion;
- every worker holds BLAS to one thread for its whole life, and a serial run
  (``workers=1``, in this process) runs under the same limit: two workers on
  two cores do not oversubscribe them (on a busy 2-core machine multithreaded
  BLAS made the fitters' small solves 5-10 times slower), and the arithmetic,
  hence every result, is the same whatever the number of workers;
- workers are started with ``spawn`` (safe with the threads that numpy, BLAS
  and the samplers start; ``fork`` is not), so a *script* that uses more
  than one worker needs the usual ``if __name__ == "__main__":`` guard
  (notebooks do not);
- an ``initializer`` runs once per worker (and once in this process for a
  serial run), so that large inputs shared by every task travel to each
  worker once instead of with every task.

Tasks and the task function must be picklable (module-level functions, plain
data). A task that raises makes :meth:`TaskPool.map` raise; a caller that
wants failures as results catches them inside its task function.

The interface is kept small (:func:`run_tasks`, :class:`TaskPool`) so that
another executor (Dask) can take its place.

Examples
--------
>>> run_tasks(abs, [-2, 1, -3], workers=1)
[2, 1, 3]
"""

from __future__ import annotations

import contextlib
import multiprocessing
import operator
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

from threadpoolctl import threadpool_limits

from hmlib.exceptions import ParamsError
from hmlib.progress import counting

__all__ = ["TaskPool", "run_tasks", "check_workers", "blas_one_thread"]

#: The BLAS limit of a worker process, held for its life.
_WORKER_BLAS_LIMIT = None


def blas_one_thread():
    """A context manager holding BLAS to one thread in this process."""
    return threadpool_limits(limits=1, user_api="blas")


def _start_worker(initializer: Callable | None, initargs: tuple) -> None:
    """Runs first in every worker: the BLAS limit for the worker's life, then the caller's initializer."""
    global _WORKER_BLAS_LIMIT
    _WORKER_BLAS_LIMIT = blas_one_thread()
    if initializer is not None:
        initializer(*initargs)


def check_workers(workers) -> int:
    """``workers`` as an int; ParamsError unless it is a positive integer (``True`` is not)."""
    try:
        if isinstance(workers, bool):
            raise TypeError
        n = operator.index(workers)
    except TypeError:
        n = 0
    if n < 1:
        raise ParamsError(f"workers must be a positive integer, got {workers!r}.")
    return n


class TaskPool:
    """Worker processes (or this process) that map a function over tasks.

    Use as a context manager; several :meth:`map` calls share the workers
    (and what the initializer gave them).

    Parameters
    ----------
    workers : int
        Worker processes; 1 runs every task in this process.
    initializer : callable, optional
        Called as ``initializer(*initargs)`` once per worker before any task
        (with ``workers=1``: once in this process, on entering the pool).
    initargs : tuple
        Its arguments (pickled once per worker).

    Raises
    ------
    hmlib.exceptions.ParamsError
        ``workers`` is not a positive integer.

    Examples
    --------
    >>> with TaskPool(1) as pool:
    ...     pool.map(len, ["a", "bcd"]), pool.map(str.upper, ["x"])
    ([1, 3], ['X'])
    """

    def __init__(self, workers: int = 1, *, initializer: Callable | None = None, initargs: tuple = ()):
        self.workers = check_workers(workers)
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self._stack: contextlib.ExitStack | None = None
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "TaskPool":
        self._stack = contextlib.ExitStack()
        if self.workers == 1:
            self._stack.enter_context(blas_one_thread())
            if self.initializer is not None:
                self.initializer(*self.initargs)
        else:
            self._executor = self._stack.enter_context(ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker, initargs=(self.initializer, self.initargs)))
        return self

    def __exit__(self, *exc_info) -> None:
        stack, self._stack, self._executor = self._stack, None, None
        if stack is not None:
            stack.__exit__(*exc_info)

    def map(self, fn: Callable, tasks: Iterable, progress=None) -> list:
        """``[fn(task) for task in tasks]``, computed by the workers; results in task order.

        Tasks are handed out in the order given (put the longest first for
        the shortest total time). With ``progress`` (a
        :class:`hmlib.progress.reporter`), each task is reported as it
        finishes: k of n done (:func:`hmlib.progress.counting`).
        """
        if self._stack is None:
            raise RuntimeError("TaskPool.map needs an open pool: use `with TaskPool(...) as pool:`.")
        tasks = list(tasks)
        with counting(progress, len(tasks)) as tick:
            if self._executor is None:
                return [tick(fn(task)) for task in tasks]
            futures = [self._executor.submit(fn, task) for task in tasks]
            if progress is not None:  # counted as they finish, in any order (results stay in task order)
                for future in as_completed(futures):
                    if future.exception() is not None:
                        break
                    tick()
            return [future.result() for future in futures]


def run_tasks(fn: Callable, tasks: Iterable, workers: int = 1, initializer: Callable | None = None,
              initargs: tuple = ()) -> list:
    """``[fn(task) for task in tasks]`` over ``workers`` processes (one :meth:`TaskPool.map`).

    Parameters
    ----------
    fn : callable
        Picklable (module level) when ``workers > 1``.
    tasks : iterable
        Picklable tasks.
    workers : int
        Worker processes; 1 runs in this process.
    initializer, initargs
        As :class:`TaskPool`.

    Returns
    -------
    list
        One result per task, in task order.
    """
    with TaskPool(workers, initializer=initializer, initargs=initargs) as pool:
        return pool.map(fn, tasks)
