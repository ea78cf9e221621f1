"""Independent tasks on Dask (``dask.distributed``), with the results a serial run gives.

The one place hmlib hands work to other processes: step 3's imputation
chains and their analyses, step 5's scenarios, and the worker processes of
``hmreport run``. :class:`TaskPool` maps a function over tasks on one of
three engines:

``"dask"``
    A Dask cluster. With a scheduler address (``scheduler=``, else the
    environment variable ``HMLIB_SCHEDULER``, which ``hmreport run
    --scheduler`` and the runner set for the notebook kernels) the pool
    connects to that cluster; without one it uses a ``LocalCluster`` on
    this machine (processes, one thread each, as many as cores; nothing to
    install or start by hand), started when a first map has more than one
    task and reused by every later pool of this process (closed at exit).
``"serial"``
    Every task in this process, in order.
``"processes"``
    The former hand-written pool (``concurrent.futures`` over spawned
    processes), kept as the comparator of ``bench/bench_parallel.py``.

``engine="auto"`` (the default) is Dask, except that a pool of one worker,
or a map of one task, without a scheduler address runs in this process.

What every engine guarantees:

- results come back in task order, whatever the order of completion;
- the results do not depend on the engine or the number of workers: a task
  must take its randomness from its own identity (hmlib's tasks use the
  params' seed and the task's index, e.g. child ``k`` of
  ``numpy.random.SeedSequence(seed)`` for imputation chain ``k``), never
  from the worker it runs on; and every task runs with BLAS held to one
  thread (``threadpoolctl``; a serial pool holds the same limit in this
  process), so the arithmetic is the same everywhere. Two workers on two
  cores do not oversubscribe them either (on a busy 2-core machine
  multithreaded BLAS made the fitters' small solves 5-10 times slower);
- ``shared`` (the data every task needs, e.g. the registry and the primary
  imputation) reaches each worker once, not with every task: Dask scatters
  it to every worker (``Client.scatter(..., broadcast=True)``) and each
  task gets the worker's copy; the process pool sends it once per process
  through its initializer; a serial pool passes the object itself. (A
  scheduler started by hand should run with Dask's active memory manager
  off, ``DASK_DISTRIBUTED__SCHEDULER__ACTIVE_MEMORY_MANAGER__START=False``,
  as the local cluster does: otherwise it drops idle copies and workers
  fetch the data again later.)
- a task that raises makes :meth:`TaskPool.map` raise that exception, with
  a note naming the task (which of how many, which function); the tasks
  not yet run are cancelled. A worker that dies (e.g. out of memory) is an
  :class:`hmlib.exceptions.HmlibError` saying so. A caller that wants
  failures as results catches them inside its task function.

Tasks, ``shared`` and the task function must be picklable (module-level
functions, plain data), and importable where the workers run: a remote
cluster needs hmlib installed in its workers' Python. Local workers are
started with ``spawn`` (safe with the threads of numpy, BLAS and the
samplers), so a *script* that maps with more than one worker needs the usual
``if __name__ == "__main__":`` guard (notebooks do not).

Examples
--------
>>> run_tasks(abs, [-2, 1, -3], workers=1)
[2, 1, 3]
>>> run_tasks(pow, [2, 3], workers=1, shared=2)
[4, 9]
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import operator
import os
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import as_completed as completed_futures

from threadpoolctl import threadpool_limits

from hmlib.exceptions import HmlibError, ParamsError
from hmlib.progress import counting

__all__ = ["TaskPool", "run_tasks", "serial_map", "check_workers", "blas_one_thread", "local_cores", "scheduler_address",
           "connect", "check_scheduler", "start_local_cluster", "SchedulerUnavailable", "ENGINES",
           "SCHEDULER_ENV"]

#: The environment variable holding a Dask scheduler address (``tcp://host:8786``).
SCHEDULER_ENV = "HMLIB_SCHEDULER"
#: The engines of :class:`TaskPool`.
ENGINES = ("auto", "dask", "serial", "processes")
#: Seconds to wait for a scheduler to answer, and for it to have a worker.
CONNECT_TIMEOUT_S = 10.0
#: Marks "no shared object" (``None`` is a valid shared object).
_NOTHING = object()

#: The BLAS limit of a process-pool worker, held for its life.
_WORKER_BLAS_LIMIT = None
#: The shared object of a process-pool worker (set once per process by its initializer).
_PROCESS_SHARED = _NOTHING
#: The environment of local worker processes (Dask's ``distributed.nanny.pre-spawn-environ``).
_WORKER_ENVIRONMENT = {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1}
#: Local clusters of this process by worker count: started on first need, reused, closed at exit.
_LOCAL_CLUSTERS: dict = {}


class SchedulerUnavailable(HmlibError):
    """The Dask scheduler at the given address does not answer, or has no worker."""


def blas_one_thread():
    """A context manager holding BLAS to one thread in this process."""
    return threadpool_limits(limits=1, user_api="blas")


def local_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:            # not on Linux
        return max(1, os.cpu_count() or 1)


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


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The Dask scheduler to use: ``scheduler`` if given, else ``$HMLIB_SCHEDULER``, else None (local)."""
    address = scheduler if scheduler is not None else os.environ.get(SCHEDULER_ENV, "")
    address = str(address).strip()
    return address or None


def _unavailable(address: str, why: str) -> SchedulerUnavailable:
    return SchedulerUnavailable(
        f"no Dask scheduler answers at {address} ({why}); start one (`dask scheduler`, then "
        f"`dask worker {address} --nthreads 1` on each machine) or leave out --scheduler and "
        f"{SCHEDULER_ENV} to run on this machine's cores.")


def connect(address: str, timeout: float = CONNECT_TIMEOUT_S):
    """A ``distributed.Client`` of the scheduler at ``address`` that has at least one worker.

    Raises
    ------
    SchedulerUnavailable
        Nothing answers at ``address`` within ``timeout`` seconds, or the
        scheduler has no worker after that long (its tasks would wait forever).
    """
    from distributed import Client

    try:
        client = Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _unavailable(address, first) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError):
        client.close()
        raise _unavailable(address, f"the scheduler answers but has no worker after {timeout:g} s") from None
    return client


def check_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> int:
    """Check that the scheduler at ``address`` answers and has workers; returns their number.

    Raises
    ------
    SchedulerUnavailable
        As :func:`connect`.
    """
    client = connect(address, timeout)
    try:
        return len(client.scheduler_info(n_workers=-1)["workers"])
    finally:
        client.close()


def start_local_cluster(workers: int | None = None):
    """A ``distributed.LocalCluster`` on 127.0.0.1: ``workers`` processes (default: the cores), one thread each.

    Its HTTP server listens on a free port (8787 may be taken by another
    cluster). No memory limit (Dask's default limit would kill a worker
    holding a large registry at 95% of its share of the memory; the
    machine's own limit still applies). Dask's active memory manager is off:
    it drops the copies of scattered data that no queued task waits for at
    that moment, so that a worker would fetch the shared data of a
    :meth:`TaskPool.map` again later. The workers' statistical profiler is
    off (a thread sampling the task's stack every 10 ms, holding the GIL:
    measured here, it added about half to the CPU time of step 5's
    scenarios). Dask's nanny starts each worker with ``OMP_NUM_THREADS=1``
    and the like (:data:`_WORKER_ENVIRONMENT`; not Dask's default
    ``MALLOC_TRIM_THRESHOLD_=65536``, which made the workers' numpy
    temporaries fault in fresh pages: a third more page faults than this
    process for the same imputation), and every task holds BLAS to one
    thread besides. Close it (or use it as a context manager) when done.
    """
    import dask
    from distributed import LocalCluster

    n = check_workers(workers) if workers is not None else local_cores()
    saved = dict(os.environ)
    try:
        with dask.config.set({"distributed.scheduler.active-memory-manager.start": False,
                              "distributed.worker.profile.enabled": False,
                              "distributed.nanny.pre-spawn-environ": dict(_WORKER_ENVIRONMENT)}):
            return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                dashboard_address=":0", memory_limit=0, silence_logs=logging.CRITICAL)
    finally:
        # The nanny writes its pre-spawn variables into this process's environment as well; put it back, so
        # that the notebook kernels started later are not changed by the cluster.
        os.environ.clear()
        os.environ.update(saved)


def _shared_local_cluster(workers: int):
    """This process's local cluster of ``workers`` processes (started once; later pools reuse it)."""
    cluster = _LOCAL_CLUSTERS.get(workers)
    if cluster is None or cluster.status.name in ("closing", "closed", "failed"):
        cluster = _LOCAL_CLUSTERS[workers] = start_local_cluster(workers)
        if len(_LOCAL_CLUSTERS) == 1:
            atexit.register(_close_local_clusters)
    return cluster


def _close_local_clusters() -> None:
    for cluster in _LOCAL_CLUSTERS.values():
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)
    _LOCAL_CLUSTERS.clear()


# --------------------------------------------------------------------------
# What runs in the workers
# --------------------------------------------------------------------------
def _call(fn: Callable, task, shared):
    with blas_one_thread():
        return fn(task) if shared is _NOTHING else fn(task, shared)


def _dask_task(fn: Callable, task, shared, has_shared: bool):
    # The Nothing marker cannot travel (it is a new object in every process), hence has_shared.
    return _call(fn, task, shared if has_shared else _NOTHING)


def _run_chunk(chunk: tuple, shared=_NOTHING) -> list:
    """Run a chunk ``(fn, [(index, task), ...], n)`` of a map: ``[(index, result), ...]``."""
    fn, items, n = chunk
    out = []
    for index, task in items:
        try:
            out.append((index, _call(fn, task, shared)))
        except Exception as exc:
            _add_note(exc, f"in {_describe(index, n, fn)}")
            raise
    return out


def _start_process_worker(shared, has_shared: bool) -> None:
    """Runs first in every process-pool worker: the BLAS limit for its life, and the shared object."""
    global _WORKER_BLAS_LIMIT, _PROCESS_SHARED
    _WORKER_BLAS_LIMIT = blas_one_thread()
    _PROCESS_SHARED = shared if has_shared else _NOTHING


def _process_task(fn: Callable, task):
    # The limit again per task: BLAS may be loaded only by the task (after the initializer's limit).
    return _call(fn, task, _PROCESS_SHARED)


def _describe(index: int, n: int, fn: Callable) -> str:
    return f"task {index + 1} of {n} ({getattr(fn, '__qualname__', repr(fn))})"


# --------------------------------------------------------------------------
# The pool
# --------------------------------------------------------------------------
class TaskPool:
    """Maps functions over tasks on Dask, in this process, or over a process pool (module docstring).

    Use as a context manager; several :meth:`map` calls share the pool (one
    Dask client, one local cluster).

    Parameters
    ----------
    workers : int, optional
        Local worker processes (default: the cores, :func:`local_cores`);
        1 runs every task in this process. Ignored with a scheduler address
        (the cluster has the workers it has).
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``); default
        ``$HMLIB_SCHEDULER``; ``""`` means "local, whatever the environment says".
    engine : {"auto", "dask", "serial", "processes"}
        See the module docstring.

    Raises
    ------
    hmlib.exceptions.ParamsError
        ``workers`` is not a positive integer, or the engine is unknown.
    SchedulerUnavailable
        (on the first map that needs it) the scheduler does not answer.

    Examples
    --------
    >>> with TaskPool(1) as pool:
    ...     pool.map(len, ["a", "bcd"]), pool.map(str.upper, ["x"])
    ([1, 3], ['X'])
    """

    def __init__(self, workers: int | None = None, *, scheduler: str | None = None, engine: str = "auto"):
        if engine not in ENGINES:
            raise ParamsError(f"engine must be one of {ENGINES}, got {engine!r}.")
        self.requested = check_workers(workers) if workers is not None else local_cores()
        self.address = scheduler_address(scheduler)
        if engine == "auto":
            engine = "dask" if (self.address or self.requested > 1) else "serial"
        self.engine = engine
        self._stack: contextlib.ExitStack | None = None
        self._client = None
        self._scattered: dict = {}
        self.used_workers = 1

    # -- life -----------------------------------------------------------------
    def __enter__(self) -> "TaskPool":
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(blas_one_thread())     # the serial path, and this process's own work
        return self

    def __exit__(self, *exc_info) -> None:
        stack, self._stack, self._client, self._scattered = self._stack, None, None, {}
        if stack is not None:
            stack.__exit__(*exc_info)

    @property
    def workers(self) -> int:
        """Worker processes that ran tasks so far (1 in this process; a cluster's worker count)."""
        return self.used_workers

    def _dask_client(self):
        if self._client is None:
            if self.address:
                client = connect(self.address)
            else:
                from distributed import Client

                client = Client(_shared_local_cluster(self.requested), set_as_default=False)
            self._client = self._stack.enter_context(client)
            self.used_workers = max(1, len(self._client.scheduler_info(n_workers=-1)["workers"]))
        return self._client

    # -- mapping --------------------------------------------------------------
    def map(self, fn: Callable, tasks: Iterable, shared=_NOTHING, *, chunks_per_worker: int | None = None,
            progress=None) -> list:
        """``[fn(task) for task in tasks]`` (``fn(task, shared)`` when ``shared`` is given), in task order.

        Tasks are handed out in the order given (put the longest first for
        the shortest total time). With ``chunks_per_worker``, many short
        tasks travel as that many chunks per worker (task ``i`` in chunk
        ``i mod chunks``, so that each chunk mixes early and late tasks): the
        per-task cost of the engine is paid per chunk. The results are the
        same. With ``progress`` (a :class:`hmlib.progress.reporter`), each
        task is reported as it comes back: k of n done, in any order
        (:func:`hmlib.progress.counting`; a chunk counts its tasks).
        """
        if self._stack is None:
            raise RuntimeError("TaskPool.map needs an open pool: use `with TaskPool(...) as pool:`.")
        tasks = list(tasks)
        with counting(progress, len(tasks)) as tick:
            return self._map_counted(fn, tasks, shared, chunks_per_worker, tick if progress is not None else None)

    def _map_counted(self, fn: Callable, tasks: list, shared, chunks_per_worker: int | None, tick) -> list:
        # tick(): one task done (None: nobody counts)
        local_serial = self.engine == "serial" or (self.engine == "dask" and not self.address and len(tasks) <= 1)
        if local_serial or not tasks:
            return [(tick or _identity)(_call(fn, task, shared)) for task in tasks]
        run = self._map_processes if self.engine == "processes" else self._map_dask
        if chunks_per_worker is None:
            return run(fn, tasks, shared, None if tick is None else (lambda index: tick()))
        n_workers = self.requested if self.engine == "processes" else len(
            self._dask_client().scheduler_info(n_workers=-1)["workers"])
        n_chunks = min(len(tasks), max(1, check_workers(chunks_per_worker) * max(1, n_workers)))
        chunks = [(fn, [(i, tasks[i]) for i in range(c, len(tasks), n_chunks)], len(tasks)) for c in range(n_chunks)]
        results = [None] * len(tasks)
        finished = None if tick is None else (lambda index: [tick() for _ in chunks[index][1]])  # its tasks
        for chunk in run(_run_chunk, chunks, shared, finished):
            for i, result in chunk:
                results[i] = result
        return results

    def _map_processes(self, fn: Callable, tasks: list, shared, finished: Callable | None = None) -> list:
        # The shared object reaches the processes through their initializer: maps with the same one (step 5's
        # scenarios, then its bisections) share the processes, another one needs new processes.
        if self._scattered.get("processes", (None,))[0] is not shared:
            has_shared = shared is not _NOTHING
            executor = ProcessPoolExecutor(max_workers=self.requested, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_start_process_worker,
                                           initargs=(shared if has_shared else None, has_shared))
            previous = self._scattered.pop("processes", (None, None))[1]
            if previous is not None:
                previous.shutdown()
            self._scattered["processes"] = (shared, executor)
            self._stack.callback(executor.shutdown)
        executor = self._scattered["processes"][1]
        self.used_workers = self.requested
        futures = [executor.submit(_process_task, fn, task) for task in tasks]
        if finished is not None:  # finished(index) as the tasks come back (a failure is raised below)
            index = {future: i for i, future in enumerate(futures)}
            for future in completed_futures(futures):
                if future.exception() is not None:
                    break
                finished(index[future])
        return [_result_or_note(future.result, i, len(tasks), fn) for i, future in enumerate(futures)]

    def _shared_future(self, client, shared):
        # Maps with the same shared object (step 5's scenarios, then its bisections) scatter it once; another
        # object replaces it (the workers then release the previous one).
        if self._scattered.get("dask", (None,))[0] is not shared:
            self._scattered["dask"] = (shared, client.scatter(shared, broadcast=True, hash=False))
        return self._scattered["dask"][1]

    def _map_dask(self, fn: Callable, tasks: list, shared, finished: Callable | None = None) -> list:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        client = self._dask_client()
        has_shared = shared is not _NOTHING
        argument = self._shared_future(client, shared) if has_shared else None
        # Keys "<function>-<token>-<index>": Dask's dashboard and task prefixes show the function's name.
        token = uuid.uuid4().hex
        name = getattr(fn, "__name__", "task")
        futures = [client.submit(_dask_task, fn, task, argument, has_shared, key=f"{name}-{token}-{i}",
                                 priority=len(tasks) - i, pure=False)
                   for i, task in enumerate(tasks)]
        position = {future.key: i for i, future in enumerate(futures)}
        future = None
        try:
            for future in as_completed(futures, loop=client.loop):
                if future.status == "error":
                    future.result()          # raises the task's exception (or KilledWorker)
                if finished is not None:
                    finished(position[future.key])
        except KilledWorker as exc:
            which = _describe(_killed_index(exc, position), len(tasks), fn)
            raise HmlibError(f"a Dask worker died while running {which} "
                             "(and so did the workers it was retried on): out of memory, or a crash in compiled "
                             "code. Use fewer or larger workers, or run on a smaller registry.") from None
        except Exception as exc:
            index = position.get(getattr(future, "key", None), -1)
            _add_note(exc, f"in {_describe(index, len(tasks), fn)}, run by Dask "
                           f"({'scheduler ' + self.address if self.address else 'local cluster'})")
            raise
        finally:
            pending = [f for f in futures if not f.done()]
            if pending:
                client.cancel(pending)
        return client.gather(futures)


def _identity(value):
    return value


def _killed_index(exc, position: dict) -> int:
    key = exc.args[0] if exc.args else None
    return position.get(key, -1)


def _add_note(exc: BaseException, note: str) -> None:
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)


def _result_or_note(result: Callable, index: int, n: int, fn: Callable):
    try:
        return result()
    except Exception as exc:
        _add_note(exc, f"in {_describe(index, n, fn)}, run by the process pool")
        raise


def serial_map(fn: Callable, tasks: Iterable, shared, *, progress=None) -> list:
    """``[fn(task, shared) for task in tasks]`` here, one after the other: the default ``map_tasks`` of code
    that can hand its tasks to :meth:`TaskPool.map` (same signature), counted by ``progress`` as they finish."""
    tasks = list(tasks)
    with counting(progress, len(tasks)) as tick:
        return [tick(fn(task, shared)) for task in tasks]


def run_tasks(fn: Callable, tasks: Iterable, workers: int | None = None, *, shared=_NOTHING,
              scheduler: str | None = None, engine: str = "auto") -> list:
    """``[fn(task) for task in tasks]`` (or ``fn(task, shared)``) on a :class:`TaskPool` (one map).

    Parameters
    ----------
    fn : callable
        Picklable (module level) unless the pool runs in this process.
    tasks : iterable
        Picklable tasks.
    workers, scheduler, engine
        As :class:`TaskPool`.
    shared : object, optional
        Passed to every call as its second argument; reaches each worker once.

    Returns
    -------
    list
        One result per task, in task order.
    """
    with TaskPool(workers, scheduler=scheduler, engine=engine) as pool:
        return pool.map(fn, tasks, shared)
