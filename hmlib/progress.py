"""Progress inside long steps: reported where the work is done, shown where someone watches.

A long loop reports its start and each unit it finishes with one call,
``report("imputation (multilevel)", k, m, unit="imputed data sets")`` (``k``
from 0); the joint model reports its draws (warm-up, then sampling) from
nutpie's progress callback; :meth:`hmlib.parallel.TaskPool.map` reports the
results as they come back when given a :func:`reporter`. Who shows it is
decided by whoever runs the step, by installing a *sink* with :func:`listening`:

- ``hmreport run`` executes each notebook in a kernel whose output is not the
  terminal's. The step writes its events as JSON lines to a *channel*, the
  file :data:`CHANNEL_NAME` in the run's staging folder (:class:`FileSink`);
  the runner creates that file and tails it in a thread while papermill
  executes the notebook (:class:`ChannelTail`), printing each event through a
  :class:`TerminalPrinter`;
- in JupyterLab (or a papermill run outside ``hmreport``) the events update
  one line under the running cell, cleared when the step ends (:class:`NotebookSink`);
- in a script, a :class:`TerminalPrinter` on stderr.

With no sink installed (a library call, a test, a worker process) a report
costs one function call and shows nothing. The sink is module state, as a
logging handler is, because the calls sit deep inside the statistics (the
imputation loop, the sampler's callback) whose signatures should not carry a
display argument through every layer; the statistics stay silent and
importable on their own.

:class:`TerminalPrinter` redraws one live line (carriage return) when its
stream is a terminal, and writes plain lines otherwise (a log): the start of each task and of
each of its phases, then at most one line per :data:`LOG_INTERVAL` seconds,
and its last one, so a log shows every task with its total and time.

Every event carries the time since the task started and, once a unit is
done, an estimate of the time left (the task's average rate so far applied
to the units left). A task's clock restarts when it reports 0 units done.

A loop whose units run other reporting loops (the sensitivity scenarios run
imputations; the transport check re-imputes each cluster) owns the line
while it runs: inside :func:`counting` (or :func:`muted`) the reports of
other tasks are dropped, so a log reads "sensitivity: 3 of 14 scenarios",
not the imputations inside them.

Examples
--------
>>> events = []
>>> with listening(events.append):
...     for k in range(1, 4):
...         report("imputation (flat)", k, 3, unit="imputed data sets")
>>> [e.text() for e in events][-1].startswith("imputation (flat): 3 of 3 imputed data sets")
True
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ProgressEvent", "report", "reporter", "counting", "muted", "listening", "FileSink", "NotebookSink",
           "TerminalPrinter", "ChannelTail", "CHANNEL_NAME", "LOG_INTERVAL", "format_seconds"]

#: The progress channel's file name inside a run's staging folder.
CHANNEL_NAME = ".progress.jsonl"
#: Seconds between two plain (log) lines of one task.
LOG_INTERVAL = 10.0
#: Seconds between two redraws of a live line (terminal) or a notebook line.
REDRAW_INTERVAL = 0.2

#: The clock of every event and redraw (seconds); a test may replace it.
clock = time.perf_counter

_lock = threading.Lock()
_sink: Callable | None = None
_clocks: dict[str, float] = {}
_owners: list[str | None] = []  # the task that owns the line (None: nobody), innermost last


@dataclass(frozen=True)
class ProgressEvent:
    """One unit of a long task is done.

    Attributes
    ----------
    task : str
        What is running (``"imputation (multilevel)"``, ``"joint model"``).
    done, total : int
        Units done and units in all.
    unit : str
        What a unit is (``"draws"``, ``"scenarios"``); may be empty.
    detail : str
        The current phase (``"warm-up"``, ``"sampling"``); may be empty.
    elapsed : float
        Seconds since the task started.
    eta : float or None
        Estimated seconds left (``None`` before the first unit is done).
    """

    task: str
    done: int
    total: int
    unit: str = ""
    detail: str = ""
    elapsed: float = 0.0
    eta: float | None = None

    @property
    def finished(self) -> bool:
        """Every unit is done."""
        return self.done >= self.total

    def text(self) -> str:
        """One line: ``joint model, warm-up: 812 of 4,000 draws, 14 s, about 52 s left``."""
        head = f"{self.task}, {self.detail}" if self.detail else self.task
        count = f"{self.done:,} of {self.total:,}" + (f" {self.unit}" if self.unit else "")
        if self.finished:
            return f"{head}: {count}, done in {format_seconds(self.elapsed)}"
        if self.done <= 0:
            return f"{head}: {self.total:,}" + (f" {self.unit}" if self.unit else "") + " to do"
        left = f", about {format_seconds(self.eta)} left" if self.eta is not None else ""
        return f"{head}: {count}, {format_seconds(self.elapsed)}{left}"

    def to_json(self) -> str:
        """The event as one JSON line (the channel's format)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> "ProgressEvent":
        """Read an event written by :meth:`to_json`."""
        return cls(**json.loads(line))


def format_seconds(seconds: float) -> str:
    """``9 s``, ``52 s``, ``3 min``, ``1 h 05 min``: precise enough for a progress line."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{int(minutes // 60)} h {int(minutes % 60):02d} min"


def report(task: str, done: int, total: int, *, unit: str = "", detail: str = "",
           eta: float | None = None) -> None:
    """Tell the installed sink (if any) that ``done`` of ``total`` units of ``task`` are finished.

    Thread-safe (nutpie calls it from its own thread). ``done == 0`` starts
    (or restarts) the task's clock; so does the first report of a task.
    ``eta`` (seconds left) replaces the estimate from the task's average rate
    when the caller knows better (the sampler's chains).
    """
    sink = _sink
    if sink is None or (_owners and _owners[-1] != task):
        return
    now = clock()
    with _lock:
        if done <= 0 or task not in _clocks:
            _clocks[task] = now
        elapsed = now - _clocks[task]
        if done >= total:
            _clocks.pop(task, None)
    if eta is None and 0 < done < total:
        eta = elapsed / done * (total - done)
    elif done >= total:
        eta = None
    sink(ProgressEvent(task=task, done=int(done), total=int(total), unit=unit, detail=detail,
                       elapsed=round(elapsed, 3), eta=None if eta is None else round(eta, 3)))


class reporter:
    """:func:`report` bound to a task: a ``callback(done, total)`` for code that counts but does not name.

    Parameters
    ----------
    task, unit : str
        As :func:`report`.
    """

    def __init__(self, task: str, *, unit: str = ""):
        self.task = task
        self.unit = unit

    def __call__(self, done: int, total: int) -> None:
        report(self.task, done, total, unit=self.unit)


@contextmanager
def _owning(task: str | None):
    with _lock:
        _owners.append(task)
    try:
        yield
    finally:
        with _lock:
            _owners.pop()


def muted():
    """A block whose reports are not shown (work done for a loop that reports on its own)."""
    return _owning(None)


@contextmanager
def counting(callback: reporter | None, total: int):
    """Count ``total`` units: yields ``tick``, a pass-through that reports the k-th unit done.

    Reports 0 units done on entering; while the block runs, the reports of
    other tasks are dropped (the units' own loops). Inside a block owned by
    another task (or :func:`muted`) nothing is shown, this count included:
    the imputations of a scenario run here count their chains silently.
    With ``callback=None`` (or no units) ``tick`` only passes its argument
    through. Use it as ``[tick(f(x)) for x in xs]``.
    """
    done = 0

    def tick(value=None):
        nonlocal done
        done += 1
        if callback is not None:
            callback(done, total)
        return value

    if callback is None or total <= 0:  # nothing to count: no line
        yield tick
        return
    task = getattr(callback, "task", None)
    with _lock:
        outer = _owners[-1] if _owners else task
    with _owning(task if outer == task else None):
        callback(0, total)
        yield tick


@contextmanager
def listening(sink: Callable[[ProgressEvent], None] | None):
    """Install ``sink`` (called with each :class:`ProgressEvent`) for the duration of the block."""
    global _sink
    with _lock:
        previous, _sink = _sink, sink
    try:
        yield sink
    finally:
        with _lock:
            _sink = previous
            if previous is None:
                _clocks.clear()
        closing = getattr(sink, "close", None)
        if closing is not None:
            closing()


class FileSink:
    """Appends each event as a JSON line to a channel file (which the runner tails).

    Parameters
    ----------
    path : pathlib.Path
        The channel (:data:`CHANNEL_NAME` in the staging folder).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._write_lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._write_lock, self.path.open("a", encoding="utf-8") as handle:
            handle.write(event.to_json() + "\n")


class NotebookSink:
    """One line under the running notebook cell, updated in place and cleared when the step ends."""

    def __init__(self):
        self._handle = None
        self._last = float("-inf")
        self._write_lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        from IPython.display import display

        now = clock()
        with self._write_lock:
            if self._handle is not None and now - self._last < REDRAW_INTERVAL and not event.finished:
                return
            self._last = now
            bundle = {"text/plain": event.text()}
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)

    def close(self) -> None:
        """Remove the line: a finished step shows its results, not its progress."""
        with self._write_lock:
            if self._handle is not None:
                self._handle.update({"text/plain": ""}, raw=True)
                self._handle = None


class TerminalPrinter:
    """Shows events on a stream: a live line on a terminal, plain lines in a log.

    Parameters
    ----------
    stream : file, optional
        Default ``sys.stderr``.
    live : bool, optional
        Redraw one line with carriage returns; default: whether ``stream`` is a terminal.
    indent : str
        Put before every line (the runner indents under its step line).
    """

    def __init__(self, stream=None, *, live: bool | None = None, indent: str = "  "):
        self.stream = stream if stream is not None else sys.stderr
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self.indent = indent
        self._shown = 0  # characters of the live line on screen
        self._last_line: dict[str, tuple] = {}  # task: (time, detail) of its last plain line
        self._last_draw = float("-inf")
        self._write_lock = threading.Lock()

    def __call__(self, event: ProgressEvent) -> None:
        with self._write_lock:
            if self.live:
                self._draw(event)
            else:
                self._log(event)

    def _draw(self, event: ProgressEvent) -> None:
        now = clock()
        if now - self._last_draw < REDRAW_INTERVAL and not event.finished:
            return
        self._last_draw = now
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = (self.indent + event.text())[:width]
        self.stream.write("\r" + text + " " * max(0, self._shown - len(text)))
        self.stream.flush()
        self._shown = len(text)

    def _log(self, event: ProgressEvent) -> None:
        now = clock()
        last = self._last_line.get(event.task)
        if (event.finished or last is None or last[1] != event.detail or event.done <= 0
                or now - last[0] >= LOG_INTERVAL):
            self.stream.write(self.indent + event.text() + "\n")
            self.stream.flush()
            self._last_line[event.task] = (now, event.detail)
            if event.finished:
                self._last_line.pop(event.task, None)

    def close(self) -> None:
        """Clear the live line (so that the next message starts on a clean line)."""
        with self._write_lock:
            if self.live and self._shown:
                self.stream.write("\r" + " " * self._shown + "\r")
                self.stream.flush()
            self._shown = 0
            self._last_line.clear()


class ChannelTail:
    """Reads a channel file in a thread while a step runs and passes each event to a printer.

    Use as a context manager around the step's execution: entering creates
    (empties) the channel and starts the thread; leaving reads what is left,
    stops the thread, closes the printer and removes the channel.

    Parameters
    ----------
    path : pathlib.Path
        The channel (:data:`CHANNEL_NAME` in the staging folder).
    printer : callable
        Called with each :class:`ProgressEvent` (e.g. a :class:`TerminalPrinter`).
    poll : float
        Seconds between two reads.
    """

    def __init__(self, path: str | Path, printer: Callable[[ProgressEvent], None], *, poll: float = 0.25):
        self.path = Path(path)
        self.printer = printer
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0
        self._partial = ""

    def __enter__(self) -> "ChannelTail":
        self.path.write_text("", encoding="utf-8")
        self._offset = 0
        self._thread = threading.Thread(target=self._run, name="hmlib-progress-tail", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._read()
        closing = getattr(self.printer, "close", None)
        if closing is not None:
            closing()
        self.path.unlink(missing_ok=True)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self._read()

    def _read(self) -> None:
        try:
            with self.path.open("r", encoding="utf-8") as handle:
                handle.seek(self._offset)
                chunk = handle.read()
                self._offset = handle.tell()
        except OSError:
            return
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()  # an unfinished line waits for its end
        for line in lines:
            if line.strip():
                try:
                    event = ProgressEvent.from_json(line)
                except (ValueError, TypeError):
                    continue  # not an event: nothing to show
                self.printer(event)
