"""The R side of a side-by-side speed figure: an R script timed inside R on one data frame.

Benchmarks here time hmlib and the R reference in the same run; the R
script reads the CSV given as its first argument, runs the timed work the
number of times given as its second (``system.time``; R's start-up and
reading the CSV are not counted) and prints the median seconds.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

#: What a figure says when R is not installed.
NO_R = "Rscript not found: install R with lme4 (Debian: r-cran-lme4) for the side-by-side figure"


def r_median_seconds(script: str, frame: pd.DataFrame, repeats: int) -> float | str:
    """Median seconds the R ``script`` reports on ``frame`` over ``repeats`` runs, or :data:`NO_R`."""
    if not shutil.which("Rscript"):
        return NO_R
    with tempfile.TemporaryDirectory() as tmp:
        data, path = Path(tmp) / "data.csv", Path(tmp) / "bench.R"
        frame.to_csv(data, index=False)
        path.write_text(script)
        done = subprocess.run(["Rscript", str(path), str(data), str(repeats)], capture_output=True, text=True,
                              check=True)
    return float(done.stdout.split()[0])
