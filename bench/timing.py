"""The Python side of a speed figure: the median wall time of repeated calls (the R side: :mod:`r_side`)."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_seconds(work: Callable, repeats: int, *, warm: bool = False) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls of ``work()``, and the last call's result.

    ``warm``: call it once first, untimed (first-call costs such as compiling
    or allocating are then not counted).
    """
    if warm:
        work()
    times, out = [], None
    for _ in range(max(int(repeats), 1)):
        start = time.perf_counter()
        out = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out
