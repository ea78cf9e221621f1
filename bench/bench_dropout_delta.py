"""Speed of the MNAR delta after dropout beside base R, in one run (issue #16).

What step 5 adds per delta is the shift of the post-dropout cells of every
completed data set (:func:`hmlib.stats.dropout_delta.shift_after_dropout`,
constant and growing forms); the analysis refitted on the shifted sets is
the same model as every other scenario's and is timed elsewhere
(``bench_mixed_general.py``). Here: finding the post-dropout cells and
shifting ``--m`` completed sets, on a registry of ``--patients`` patients x
``--visits`` visits (``bench/dropout_delta_truth.py``'s simulator: dropout
and intermittent gaps), against the same work vectorised in base R (the
algorithm of ``tests/results/dropout_delta_reference.R``: the last recorded
time per patient by ``ave``, the cells after it, the shift added to each
completed column), both timed inside their own process, median of
``--repeats``.

Usage::

    .venv/bin/python bench/bench_dropout_delta.py [--patients 5000] [--visits 8] [--m 20] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from dropout_delta_truth import simulate_dropout_shift  # noqa: E402
from r_side import r_median_seconds  # noqa: E402

from hmlib.stats.dropout_delta import dropout_cells, shift_after_dropout  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "bench_dropout_delta.json"
DELTA = -2.0

R_SCRIPT = """
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); repeats <- as.integer(args[2]); m <- MCOLS
completed <- lapply(seq_len(m), function(k) ifelse(is.na(d$y), k, d$y))
one <- function(form) {
  last <- ave(ifelse(is.na(d$y), -Inf, d$t), d$id, FUN = max)
  post <- is.na(d$y) & d$t > last & is.finite(last)
  shift <- if (form == "constant") ifelse(post, DELTA, 0) else ifelse(post, DELTA * (d$t - last), 0)
  lapply(completed, function(y) y + shift)
}
times <- sapply(seq_len(repeats), function(i) system.time({one("constant"); one("growing")})[["elapsed"]])
cat(median(times) / 2, "\\n")
"""


def hmlib_seconds(frame, completed, repeats: int) -> float:
    """Median seconds per form of finding the cells and shifting every completed set (both forms, halved)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for form in ("constant", "growing"):
            shift_after_dropout(completed, frame, "y", DELTA, cluster="id", time="t", form=form)
        times.append((time.perf_counter() - start) / 2)
    return float(np.median(times))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=5000)
    parser.add_argument("--visits", type=int, default=8)
    parser.add_argument("--m", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    frame = simulate_dropout_shift(1, args.patients, args.visits)[0]
    completed = [frame.assign(y=frame["y"].fillna(float(k))) for k in range(1, args.m + 1)]
    cells = dropout_cells(frame, "y", cluster="id", time="t")
    ours = hmlib_seconds(frame, completed, args.repeats)
    r_script = R_SCRIPT.replace("MCOLS", str(args.m)).replace("DELTA", str(DELTA))
    theirs = r_median_seconds(r_script, frame[["id", "t", "y"]], args.repeats)
    out = {"patients": args.patients, "visits": args.visits, "rows": len(frame), "m": args.m,
           "post_dropout_cells": cells.n_cells, "repeats": args.repeats, "hmlib_seconds": ours,
           "r_seconds": theirs, "ratio_r_over_hmlib": theirs / ours if isinstance(theirs, float) else None}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
