"""One term's summary over a truth study's replicates: bias, its Monte Carlo SE, the SEs and 95% coverage."""

from __future__ import annotations

import numpy as np


def term_summary(estimate, std_error, ci_lower, ci_upper, truth: float) -> dict:
    """Summary of one term's estimates over replicates against its true value.

    Parameters
    ----------
    estimate, std_error, ci_lower, ci_upper : array_like
        One value per replicate.
    truth : float
        The generating value (relative figures are divided by its absolute value).

    Returns
    -------
    dict
        ``truth, reps, mean, bias, relative_bias, bias_mc_se, relative_bias_mc_se, empirical_sd, mean_se,
        coverage, coverage_mc_se`` (Monte Carlo SEs of the mean and of the coverage; NaN SDs with one
        replicate).
    """
    est, se, lo, hi = (np.asarray(a, dtype=float) for a in (estimate, std_error, ci_lower, ci_upper))
    reps = est.size
    cover = float(np.mean((lo <= truth) & (truth <= hi)))
    mc_se = float(est.std(ddof=1) / np.sqrt(reps)) if reps > 1 else float("nan")
    return {
        "truth": truth, "reps": reps, "mean": float(est.mean()), "bias": float(est.mean() - truth),
        "relative_bias": float((est.mean() - truth) / abs(truth)), "bias_mc_se": mc_se,
        "relative_bias_mc_se": mc_se / abs(truth),
        "empirical_sd": float(est.std(ddof=1)) if reps > 1 else float("nan"),
        "mean_se": float(np.nanmean(se)), "coverage": cover,
        "coverage_mc_se": float(np.sqrt(cover * (1 - cover) / reps)),
    }
