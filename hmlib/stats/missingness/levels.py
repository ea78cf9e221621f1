"""How missingness varies at each level: patients in hospitals in countries.

With levels above the cluster (params ``higher_levels``), the missingness
indicator of a variable gets nested random intercepts,
``logit P(R = 1) = b0 + u_country + u_hospital(country)`` (any number of
levels), fitted by the Laplace approximation
(:func:`hmlib.stats.mixed.fit_mixed`, as ``glmer(nAGQ = 1)``; adaptive
quadrature does not extend to nested effects). Per level:

- the SD of its intercepts on the logit scale, with a Wald interval on the
  log-SD scale;
- its latent variance share, ``s_l^2 / (sum_k s_k^2 + pi^2 / 3)``: the part
  of the latent-scale variance of missingness that lies between the units
  of that level (Snijders & Bosker 2012, section 17.3; the shares of the
  levels add up to the latent ICC of two patients of one cluster);
- a likelihood-ratio test of ``s_l = 0``: the full model against the model
  without that level (the other levels kept), referred to the 50:50
  mixture of chi2_0 and chi2_1, the null distribution of one variance
  component on its boundary (Self & Liang 1987; Stram & Lee 1994).

And, for the misattribution a model with the cluster level alone makes,
the cluster SD of that two-level model (:attr:`LevelVariationResult.two_level_sd`):
when missingness varies between countries, it is counted as variation
between hospitals.

References
----------
Self SG, Liang KY (1987). JASA 82:605-610.
Stram DO, Lee JW (1994). Variance components testing in the longitudinal
mixed effects model. Biometrics 50:1171-1177.
Snijders TAB, Bosker RJ (2012). Multilevel Analysis, 2nd ed. Sage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hmlib.stats.design import outermost_first
from hmlib.stats.missingness.counts import check_columns, check_higher_levels, check_level, missing_indicator
from hmlib.stats.mixed import RandomEffects, fit_mixed

__all__ = ["LevelVariationResult", "missingness_level_variation"]

_TABLE_COLUMNS = ["level", "n_units", "sd", "sd_ci_lower", "sd_ci_upper", "variance_share", "lrt_statistic",
                  "p_value"]


@dataclass(frozen=True)
class LevelVariationResult:
    """The variation of one variable's missingness at every level (module docstring).

    Attributes
    ----------
    variable : str
    levels : tuple of str
        The levels, outermost first; the cluster is the last.
    table : pandas.DataFrame
        One row per level, outermost first: ``level, n_units, sd,
        sd_ci_lower, sd_ci_upper`` (logit scale; interval NaN at SD 0),
        ``variance_share`` (latent scale), ``lrt_statistic, p_value``
        (boundary-corrected test of the level's SD being 0).
    latent_icc : float
        The shares summed: the latent correlation of missingness of two
        patients of one cluster.
    two_level_sd : float
        The cluster SD of the model with the cluster level alone.
    loglik : float
        Laplace log-likelihood of the nested model.
    n_used : int
    converged : bool
        Every fit converged.
    """

    variable: str
    levels: tuple
    table: pd.DataFrame
    latent_icc: float
    two_level_sd: float
    loglik: float
    n_used: int
    converged: bool
    fits: dict = field(repr=False, compare=False, default_factory=dict)

    def row(self, level: str) -> pd.Series:
        """The table's row of one level."""
        return self.table.set_index("level").loc[level]

    @property
    def dominant_level(self) -> str:
        """The level with the largest SD."""
        return str(self.table.loc[self.table["sd"].idxmax(), "level"])

    def to_dict(self) -> dict:
        """Aggregated numbers (JSON-ready); no per-unit values."""
        return {"variable": self.variable, "levels": list(self.levels),
                "table": self.table.to_dict(orient="records"), "latent_icc": self.latent_icc,
                "two_level_sd": self.two_level_sd, "loglik": self.loglik, "n_used": self.n_used,
                "converged": self.converged}


def missingness_level_variation(frame: pd.DataFrame, variable: str, cluster: str,
                                higher_levels: Sequence[str], *, level: float = 0.95) -> LevelVariationResult:
    """Partition the variation of a missingness indicator by level (intercept-only nested model).

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level data (not modified).
    variable : str
        The variable whose missingness is modelled.
    cluster : str
        The innermost level (hospital).
    higher_levels : sequence of str
        The levels above the cluster, in any order (they are nested by their
        numbers of units, outermost first), each cluster in one unit of each
        (:mod:`hmlib.data` checks this for a registry).
    level : float, default 0.95
        Level of the SD intervals.

    Returns
    -------
    LevelVariationResult

    Raises
    ------
    ParamsError
        No higher level given.
    FitError
        The indicator is constant, a level has one unit, or a fit fails.

    Examples
    --------
    >>> from hmlib.simulate.scale import trial_registry
    >>> frame = trial_registry(5, n_patients=6000, n_hospitals=100, n_countries=10)
    >>> res = missingness_level_variation(frame, "dead_or_dependent", "hospital", ["country"])
    >>> res.table["level"].tolist()
    ['country', 'hospital']
    """
    higher = check_higher_levels(higher_levels, "missingness_level_variation")
    level = check_level(level)
    check_columns(frame, [variable, cluster, *higher], "missingness_level_variation")
    higher = outermost_first(frame, higher)
    names = [*higher, cluster]
    labels = {name: frame[name].to_numpy() for name in names}
    y = missing_indicator(frame, variable)
    X = np.ones((y.size, 1))

    def fit(kept):
        structure = RandomEffects.nested(*((name, labels[name]) for name in kept))
        return fit_mixed(y, X, structure, family="binomial", term_names=["Intercept"])

    full = fit(names)
    reduced = {name: fit([n for n in names if n != name]) for name in names}
    two_level = reduced[higher[0]] if len(higher) == 1 else fit([cluster])
    z = stats.norm.ppf(0.5 + level / 2.0)
    sds = np.array([lv.sd[0] for lv in full.levels])
    total = float(np.sum(sds ** 2) + np.pi ** 2 / 3.0)
    rows = []
    for name, lv, sd in zip(names, full.levels, sds):
        se = float(lv.log_sd_std_error[0])
        ok = sd > 0 and np.isfinite(se)
        statistic = 0.0 if sd == 0 else max(0.0, 2.0 * (full.loglik - reduced[name].loglik))
        rows.append({"level": name, "n_units": lv.n_clusters, "sd": float(sd),
                     "sd_ci_lower": float(sd * np.exp(-z * se)) if ok else np.nan,
                     "sd_ci_upper": float(sd * np.exp(z * se)) if ok else np.nan,
                     "variance_share": float(sd ** 2 / total), "lrt_statistic": float(statistic),
                     "p_value": 1.0 if statistic == 0.0 else 0.5 * float(stats.chi2.sf(statistic, 1))})
    table = pd.DataFrame(rows, columns=_TABLE_COLUMNS)
    fits = {"nested": full, **{f"without {name}": f for name, f in reduced.items()}, "two_level": two_level}
    return LevelVariationResult(
        variable=variable, levels=tuple(names), table=table, latent_icc=float(table["variance_share"].sum()),
        two_level_sd=float(two_level.levels[-1].sd[0]), loglik=float(full.loglik), n_used=int(y.size),
        converged=all(bool(f.converged) for f in fits.values()), fits=fits)
