"""Do clusters that miss a variable more often differ in their outcome? A screening correlation.

Conditional modes of the missingness model against those of the outcome
model, over clusters, with Fisher-z intervals (:func:`fisher_interval`); why
this is a screening number only is in :mod:`hmlib.stats.missingness`
("Missingness propensity and outcome") and in :data:`EB_CAVEAT`.

With levels above the cluster (params ``higher_levels``),
:func:`missingness_outcome_correlation_by_level` fits both models with
nested random intercepts and correlates the modes at each level: do the
countries that miss the variable more often differ in their outcome, and,
within their countries, do the hospitals? A link at the country level is
invisible to (or misattributed by) a model with the hospital level alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.exceptions import DataError, FitError, ParamsError
from hmlib.stats.missingness.counts import check_columns, check_higher_levels, check_level, missing_indicator
from hmlib.stats.missingness.indicator_models import (missingness_cluster_variation, plain_design,
                                                      quadrature_nodes)
from hmlib.stats.design import outermost_first
from hmlib.stats.mixed import RandomEffects, fit_mixed, fit_random_intercept

__all__ = ["EB_CAVEAT", "LevelCorrelationResult", "OutcomeCorrelationResult", "fisher_interval",
           "missingness_outcome_correlation", "missingness_outcome_correlation_by_level"]

#: What a reader must know about a correlation of conditional modes.
EB_CAVEAT = (
    "These are empirical-Bayes cluster effects: they are shrunk towards zero, more so in "
    "small clusters, and carry estimation error, so the correlation is attenuated and only "
    "screens for a link; the joint Bayesian model of step 4 estimates it properly."
)


@dataclass(frozen=True)
class OutcomeCorrelationResult:
    """Correlation over clusters of missingness propensity and outcome level.

    Attributes
    ----------
    variable, outcome, outcome_family : str
    predictors_used : tuple of str
        Fully observed predictors in the outcome model.
    missingness_covariates : tuple of str
        Covariates of the missingness model.
    n_clusters : int
        Clusters in both models.
    pearson, pearson_ci, pearson_p : float, tuple, float
    spearman, spearman_ci, spearman_p : float, tuple, float
    level : float
    effects : pandas.DataFrame
        ``cluster, missingness_effect, outcome_effect`` (conditional modes,
        one row per cluster; no counts).
    outcome_cluster_sd, missingness_cluster_sd : float
    caveat : str
    """

    variable: str
    outcome: str
    outcome_family: str
    predictors_used: tuple
    missingness_covariates: tuple
    n_clusters: int
    pearson: float
    pearson_ci: tuple
    pearson_p: float
    spearman: float
    spearman_ci: tuple
    spearman_p: float
    level: float
    effects: pd.DataFrame
    outcome_cluster_sd: float
    missingness_cluster_sd: float
    caveat: str = EB_CAVEAT

    def to_dict(self) -> dict:
        """Aggregated numbers (JSON-ready); the per-cluster ``effects`` are left out."""
        out = {k: getattr(self, k) for k in (
            "variable", "outcome", "outcome_family", "n_clusters", "pearson", "pearson_p",
            "spearman", "spearman_p", "level", "outcome_cluster_sd", "missingness_cluster_sd",
            "caveat")}
        out.update(predictors_used=list(self.predictors_used),
                   missingness_covariates=list(self.missingness_covariates),
                   pearson_ci=list(self.pearson_ci), spearman_ci=list(self.spearman_ci))
        return out


def fisher_interval(r: float, m: int, level: float, variance_factor: float = 1.0) -> tuple:
    """Fisher-z interval of a correlation ``r`` over ``m`` pairs.

    Parameters
    ----------
    r : float
    m : int
        Number of pairs (clusters).
    level : float
    variance_factor : float, default 1.0
        Variance of ``atanh(r)`` is ``variance_factor / (m - 3)``: 1 for
        Pearson, 1.06 for Spearman (Fieller, Hartley & Pearson 1957).

    Returns
    -------
    tuple of float
        ``(lower, upper)``; NaN for ``m <= 3`` or a non-finite ``r``.

    Examples
    --------
    >>> lo, hi = fisher_interval(0.5, 40, 0.95)
    >>> round(lo, 4), round(hi, 4)
    (0.2233, 0.7021)
    """
    if m <= 3 or not np.isfinite(r):
        return (np.nan, np.nan)
    z = stats.norm.ppf(0.5 + level / 2.0)
    centre = np.arctanh(np.clip(r, -0.9999999, 0.9999999))
    half = z * np.sqrt(variance_factor / (m - 3))
    return (float(np.tanh(centre - half)), float(np.tanh(centre + half)))


def _check_family(outcome_family: str) -> None:
    if outcome_family not in ("gaussian", "binomial"):
        raise ParamsError(f"outcome_family must be 'gaussian' or 'binomial', got {outcome_family!r}.")


def _outcome_values(frame: pd.DataFrame, outcome: str) -> np.ndarray:
    """The outcome as floats (NaN where missing); DataError when it is not numeric."""
    try:
        return frame[outcome].to_numpy(dtype=float)
    except (TypeError, ValueError) as err:
        raise DataError(f"outcome {outcome} must be numeric (0/1 for binomial).") from err


def missingness_outcome_correlation(frame: pd.DataFrame, variable: str, cluster: str, outcome: str,
                                    outcome_family: str, predictors: Sequence[str], *,
                                    missingness_fit=None, nagq: int | None = None,
                                    level: float = 0.95) -> OutcomeCorrelationResult:
    """Do clusters that miss ``variable`` more often differ in their outcome level?

    Parameters
    ----------
    frame : pandas.DataFrame
    variable : str
        The focus variable (its missingness indicator).
    cluster, outcome : str
    outcome_family : {"gaussian", "binomial"}
    predictors : sequence of str
        Candidate predictors; only those recorded for every patient enter the
        outcome model (and, when no ``missingness_fit`` is given, the
        missingness model).
    missingness_fit : ClusterVariationResult, optional
        A fitted missingness model of ``variable`` to reuse.
    nagq : int, optional
        As :func:`missingness_cluster_variation` (binomial outcome too).
    level : float, default 0.95

    Returns
    -------
    OutcomeCorrelationResult

    Raises
    ------
    FitError
        A model cannot be fitted, or fewer than 3 clusters in common.
    """
    level = check_level(level)
    _check_family(outcome_family)
    predictors = list(predictors)
    check_columns(frame, [variable, cluster, outcome, *predictors], "missingness_outcome_correlation")
    complete = [p for p in predictors if p not in (variable, outcome) and not frame[p].isna().any()]
    if missingness_fit is None:
        missingness_fit = missingness_cluster_variation(frame, variable, cluster, complete, nagq=nagq)
    rows = frame[outcome].notna().to_numpy()
    y = _outcome_values(frame, outcome)[rows]
    X, names, _ = plain_design(frame, complete, rows)
    groups = frame[cluster].to_numpy()[rows]
    q = 1 if outcome_family == "gaussian" else quadrature_nodes(y.size, nagq)
    outcome_fit = fit_random_intercept(y, X, groups, family=outcome_family, nagq=q, term_names=names,
                                       cluster_name=cluster)
    mfit = missingness_fit.fit
    miss_effects = pd.Series(np.asarray(mfit.cluster_effects), index=pd.Index(mfit.cluster_labels))
    out_effects = pd.Series(np.asarray(outcome_fit.cluster_effects), index=pd.Index(outcome_fit.cluster_labels))
    common = [c for c in mfit.cluster_labels if c in out_effects.index]
    if len(common) < 3:
        raise FitError(f"only {len(common)} cluster(s) in both models; need at least 3 to correlate.")
    a = miss_effects.loc[common].to_numpy(float)
    b = out_effects.loc[common].to_numpy(float)
    c = _correlations(a, b, level)
    return OutcomeCorrelationResult(
        variable=variable, outcome=outcome, outcome_family=outcome_family,
        predictors_used=tuple(complete), missingness_covariates=tuple(missingness_fit.covariates),
        n_clusters=len(common), pearson=c["pearson"], pearson_ci=(c["pearson_ci_lower"], c["pearson_ci_upper"]),
        pearson_p=c["pearson_p"], spearman=c["spearman"],
        spearman_ci=(c["spearman_ci_lower"], c["spearman_ci_upper"]), spearman_p=c["spearman_p"],
        level=level,
        effects=pd.DataFrame({"cluster": common, "missingness_effect": a, "outcome_effect": b}),
        outcome_cluster_sd=float(outcome_fit.cluster_sd),
        missingness_cluster_sd=float(mfit.cluster_sd),
    )


_LEVEL_COLUMNS = ["level", "n_units", "pearson", "pearson_ci_lower", "pearson_ci_upper", "pearson_p", "spearman",
                  "spearman_ci_lower", "spearman_ci_upper", "spearman_p", "missingness_sd", "outcome_sd"]


@dataclass(frozen=True)
class LevelCorrelationResult:
    """Correlation of missingness propensity and outcome level at every level (nested models).

    Attributes
    ----------
    variable, outcome, outcome_family : str
    levels : tuple of str
        Outermost first; the cluster is the last.
    predictors_used : tuple of str
        Fully observed predictors, in both models.
    table : pandas.DataFrame
        One row per level, outermost first: ``level, n_units`` (units in
        both models), ``pearson, pearson_ci_lower, pearson_ci_upper,
        pearson_p``, the same for ``spearman``, and the level's SD in the
        missingness model (logit scale) and in the outcome model.
    level : float
    effects : dict of str to pandas.DataFrame
        Per level: the unit's labels (one column per level down to it),
        ``missingness_effect, outcome_effect`` (conditional modes; no counts).
    caveat : str
    """

    variable: str
    outcome: str
    outcome_family: str
    levels: tuple
    predictors_used: tuple
    table: pd.DataFrame
    level: float
    effects: dict
    caveat: str = EB_CAVEAT

    def to_dict(self) -> dict:
        """Aggregated numbers (JSON-ready); the per-unit ``effects`` are left out."""
        return {"variable": self.variable, "outcome": self.outcome, "outcome_family": self.outcome_family,
                "levels": list(self.levels), "predictors_used": list(self.predictors_used),
                "table": self.table.to_dict(orient="records"), "level": self.level, "caveat": self.caveat}


#: An SD below this (either model, at a level) is on its boundary: the modes there are rounding noise.
BOUNDARY_SD = 1e-4


def _correlations(a: np.ndarray, b: np.ndarray, level: float, defined: bool = True) -> dict:
    """Pearson and Spearman correlations of two vectors with Fisher-z intervals (NaN when one is constant,
    or not ``defined``)."""
    m = a.size
    if not defined or m < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        pearson = spearman = pearson_p = spearman_p = np.nan
    else:
        pearson, pearson_p = stats.pearsonr(a, b)
        spearman, spearman_p = stats.spearmanr(a, b)
    p_lo, p_hi = fisher_interval(float(pearson), m, level)
    s_lo, s_hi = fisher_interval(float(spearman), m, level, 1.06)
    return {"pearson": float(pearson), "pearson_ci_lower": p_lo, "pearson_ci_upper": p_hi,
            "pearson_p": float(pearson_p), "spearman": float(spearman), "spearman_ci_lower": s_lo,
            "spearman_ci_upper": s_hi, "spearman_p": float(spearman_p)}


def missingness_outcome_correlation_by_level(frame: pd.DataFrame, variable: str, cluster: str,
                                             higher_levels: Sequence[str], outcome: str, outcome_family: str,
                                             predictors: Sequence[str], *,
                                             level: float = 0.95) -> LevelCorrelationResult:
    """Do the units that miss ``variable`` more often differ in their outcome, at each level?

    Two models with nested random intercepts at every level (hospitals in
    countries), each adjusted for the fully observed predictors:
    ``logit P(variable missing)`` (Laplace, as ``glmer(nAGQ = 1)``) and the
    outcome (``lmer(REML = FALSE)`` or ``glmer``, Laplace). At each level the
    units' conditional modes in the two models are correlated over the units
    in both: the countries' effects, and the hospitals' effects within their
    countries (deviations from their country, not from the world). Where
    either model puts a level's SD on its boundary (below
    :data:`BOUNDARY_SD`), the modes there are rounding noise and the
    level's correlations are NaN.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    variable : str
        The focus variable (its missingness indicator).
    cluster : str
        The innermost level (hospital).
    higher_levels : sequence of str
        The levels above the cluster, in any order (nested by their numbers
        of units, outermost first), each cluster in one unit of each.
    outcome : str
    outcome_family : {"gaussian", "binomial"}
    predictors : sequence of str
        Candidate predictors; only those recorded for every patient enter
        the two models.
    level : float, default 0.95

    Returns
    -------
    LevelCorrelationResult

    Raises
    ------
    ParamsError
        No higher level, or an unknown family.
    FitError
        A model cannot be fitted, or the missingness indicator is constant.

    Examples
    --------
    >>> from hmlib.simulate.missingness import level_outcome_missingness_registry
    >>> frame = level_outcome_missingness_registry(1, n_countries=12, hospitals_per_country=5, per_hospital=30)
    >>> res = missingness_outcome_correlation_by_level(frame, "v", "hospital", ["country"], "y", "gaussian", ["x"])
    >>> res.table["level"].tolist()
    ['country', 'hospital']
    """
    higher = check_higher_levels(higher_levels, "missingness_outcome_correlation_by_level")
    level = check_level(level)
    _check_family(outcome_family)
    predictors = list(predictors)
    check_columns(frame, [variable, cluster, outcome, *higher, *predictors], "missingness_outcome_correlation_by_level")
    names = [*outermost_first(frame, higher), cluster]
    complete = [p for p in predictors if p not in (variable, outcome) and not frame[p].isna().any()]
    missing = missing_indicator(frame, variable)
    y_all = _outcome_values(frame, outcome)

    def fit(y, rows, family):
        X, terms, _ = plain_design(frame, complete, rows)
        structure = RandomEffects.nested(*((name, frame[name].to_numpy()[rows]) for name in names))
        return fit_mixed(y, X, structure, family=family, term_names=terms)

    everyone = np.ones(len(frame), dtype=bool)
    recorded = ~np.isnan(y_all)
    mfit = fit(missing, everyone, "binomial")
    ofit = fit(y_all[recorded], recorded, outcome_family)
    rows, effects = [], {}
    for k, name in enumerate(names):
        keys = names[:k + 1]
        m_frame = mfit.levels[k].effects_frame(keys)[[*keys, "Intercept"]]
        o_frame = ofit.levels[k].effects_frame(keys)[[*keys, "Intercept"]]
        both = m_frame.merge(o_frame, on=keys, suffixes=("_m", "_o"))
        both = both.rename(columns={"Intercept_m": "missingness_effect", "Intercept_o": "outcome_effect"})
        effects[name] = both
        a = both["missingness_effect"].to_numpy(float)
        b = both["outcome_effect"].to_numpy(float)
        sd_m, sd_o = float(mfit.levels[k].sd[0]), float(ofit.levels[k].sd[0])
        defined = min(sd_m, sd_o) >= BOUNDARY_SD
        rows.append({"level": name, "n_units": int(len(both)), **_correlations(a, b, level, defined),
                     "missingness_sd": sd_m, "outcome_sd": sd_o})
    return LevelCorrelationResult(
        variable=variable, outcome=outcome, outcome_family=outcome_family, levels=tuple(names),
        predictors_used=tuple(complete), table=pd.DataFrame(rows, columns=_LEVEL_COLUMNS), level=level,
        effects=effects)
