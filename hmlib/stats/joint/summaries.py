"""Posterior summaries of the joint model: original scale, diagnostics, the convergence gate.

- :func:`outcome_to_original_scale`: the outcome's coefficients back on the
  original scale of each predictor (and of a gaussian outcome), draw by draw;
- :func:`summarise_draws`: posterior mean, SD and equal-tailed interval;
- :func:`draw_diagnostics`: rank-normalised R-hat, bulk and tail ESS (at the
  5% and 95% quantiles, as Stan's ``posterior``) and the Monte Carlo SE of
  the mean (Vehtari et al. 2021);
- :func:`gate_message`: the convergence gate (:data:`GATE`) for every
  reported quantity, naming each offender.

ArviZ is imported when diagnostics are computed, so that importing hmlib
stays quick.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hmlib.methods import NOT_CONVERGED
from hmlib.stats.joint.data import JointData

__all__ = ["METHOD", "GATE", "LEVEL", "contract_method", "outcome_to_original_scale", "summarise_draws",
           "draw_diagnostics", "gate_message"]

#: Method name in ``estimates.csv``.
METHOD = "joint_bayes"
#: Convergence gate for every reported quantity.
GATE = {"rhat_max": 1.01, "ess_bulk_min": 400.0, "ess_tail_min": 400.0, "divergences_max": 0}
#: Level of the reported equal-tailed intervals.
LEVEL = 0.95


def contract_method(converged: bool) -> str:
    """``joint_bayes``, flagged ``joint_bayes:not_converged`` when the gate failed."""
    return METHOD if converged else f"{METHOD}:{NOT_CONVERGED}"


def outcome_to_original_scale(data: JointData, intercept: np.ndarray, coef: np.ndarray,
                              cluster_sd: np.ndarray, sigma: np.ndarray | None = None,
                              higher_sds=()) -> dict:
    """Outcome coefficients on the original scale, draw by draw.

    With numeric predictors standardised as ``(x - m) / s`` (0/1 columns not)
    and a gaussian outcome as ``(y - m_y) / s_y``: ``beta = s_y b / s``,
    ``Intercept = m_y + s_y (a - sum b m / s)``, SDs times ``s_y``.

    Parameters
    ----------
    data : JointData
    intercept, cluster_sd : numpy.ndarray, shape (...)
    coef : numpy.ndarray, shape (..., p)
        In :attr:`JointData.outcome_terms` order.
    sigma : numpy.ndarray, optional
        Residual SD (gaussian).
    higher_sds : sequence of numpy.ndarray, optional
        The outcome's SD at each level above the cluster (``data.higher``, outermost first).

    Returns
    -------
    dict
        ``{term: draws}`` with ``Intercept``, every term of ``outcome_terms``,
        ``sd(<level>)`` per level above the cluster, ``sd(<cluster>)`` and,
        for gaussian, ``sigma``.
    """
    centres, scales = _outcome_standardisation(data)
    coef = np.asarray(coef, dtype=float)
    orig = coef / scales * data.y_scale
    icpt = data.y_centre + data.y_scale * (np.asarray(intercept) - (coef * centres / scales).sum(axis=-1))
    out = {"Intercept": icpt}
    for k, term in enumerate(data.outcome_terms):
        out[term] = orig[..., k]
    for level, sd in zip(data.higher, higher_sds):
        out[f"sd({level.name})"] = np.asarray(sd) * data.y_scale
    out[f"sd({data.cluster})"] = np.asarray(cluster_sd) * data.y_scale
    if sigma is not None:
        out["sigma"] = np.asarray(sigma) * data.y_scale
    return out


def _outcome_standardisation(data: JointData):
    n_indicators = len(data.binaries) + sum(c.n_levels - 1 for c in data.categoricals)
    centres = np.r_[data.z_centre, [c.centre for c in data.continuous], np.zeros(n_indicators)]
    scales = np.r_[data.z_scale, [c.scale for c in data.continuous], np.ones(n_indicators)]
    return centres, scales


def draw_diagnostics(draws: np.ndarray) -> dict:
    """R-hat (rank-normalised), bulk and tail ESS, MCSE of the mean, of (chain, draw) draws."""
    import arviz as az
    import xarray as xr

    ds = xr.Dataset({"q": (("chain", "draw"), np.asarray(draws, dtype=float))})
    ess_bulk = float(az.ess(ds, method="bulk")["q"])
    ess_tail = float(az.ess(ds, method="tail", prob=(0.05, 0.95))["q"])
    rhat = float(az.rhat(ds)["q"])
    mcse = float(np.std(draws) / math.sqrt(max(ess_bulk, 1.0)))
    return {"rhat": rhat, "ess_bulk": ess_bulk, "ess_tail": ess_tail, "mcse_mean": mcse}


def summarise_draws(draws: np.ndarray, level: float = LEVEL) -> dict:
    """Posterior mean (``estimate``), SD (``std_error``) and equal-tailed interval (``ci_lower``, ``ci_upper``)."""
    flat = np.asarray(draws, dtype=float).reshape(-1)
    tail = (1.0 - level) / 2.0
    return {"estimate": float(flat.mean()), "std_error": float(flat.std(ddof=1)),
            "ci_lower": float(np.quantile(flat, tail)), "ci_upper": float(np.quantile(flat, 1 - tail))}


def gate_message(table: pd.DataFrame, divergences: int, settings_hint: str) -> tuple[bool, str]:
    """Whether the gate passed, and ``"converged: ..."`` or ``"not converged: ..."`` naming each offender.

    Parameters
    ----------
    table : pandas.DataFrame
        Columns ``term, rhat, ess_bulk, ess_tail``.
    divergences : int
    settings_hint : str
        Appended to a failure (what to try).
    """
    offenders = []
    for row in table.itertuples(index=False):
        problems = []
        if not row.rhat <= GATE["rhat_max"]:
            problems.append(f"R-hat {row.rhat:.3f} > {GATE['rhat_max']}")
        if not row.ess_bulk >= GATE["ess_bulk_min"]:
            problems.append(f"bulk ESS {row.ess_bulk:.0f} < {GATE['ess_bulk_min']:.0f}")
        if not row.ess_tail >= GATE["ess_tail_min"]:
            problems.append(f"tail ESS {row.ess_tail:.0f} < {GATE['ess_tail_min']:.0f}")
        if problems:
            offenders.append(f"{row.term} ({', '.join(problems)})")
    if divergences > GATE["divergences_max"]:
        offenders.append(f"{divergences} divergent transition(s)")
    if not offenders:
        return True, (f"converged: R-hat <= {table['rhat'].max():.3f}, bulk ESS >= {table['ess_bulk'].min():.0f}, "
                      f"tail ESS >= {table['ess_tail'].min():.0f} for every reported quantity, "
                      "no divergent transitions.")
    return False, f"not converged: {'; '.join(offenders)}. {settings_hint}"
