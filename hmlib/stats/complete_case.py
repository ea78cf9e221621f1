"""What complete-case selection does to a clustered population: the statistics of step 2.

In hierarchical data, complete-case analysis is cluster selection: a site
that never records a variable disappears, poorly documenting sites shrink,
and the estimand quietly moves from "all patients" to "patients in
well-documented sites". The functions here measure that shift and fit the
missing-indicator model, on a frame and explicit column names (no registry,
no small-cell suppression: :mod:`hmlib.steps.complete_case` runs them on the
checked registry and suppresses what it publishes).

Terms
-----
complete case
    A row with the outcome, every predictor and the cluster id recorded: the
    rows a complete-case random-intercept model uses.
retention
    Share of a cluster's rows that are complete cases.
standardised mean difference (SMD)
    For a numeric variable ``(mean_cc - mean_all) / sqrt((var_cc + var_all) / 2)``
    and for a level of a categorical one (or the outcome rate)
    ``(p_cc - p_all) / sqrt((p_cc (1 - p_cc) + p_all (1 - p_all)) / 2)``
    (Austin 2009). ``|SMD| > 0.1`` (:data:`SMD_THRESHOLD`) is the usual flag
    of a meaningful shift.
missing-indicator model
    The focus variable filled with its observed mean plus a 0/1 indicator of
    its missingness, in the outcome model (Strategy 1 of the seed material):
    "not perfect, but honest" -- it keeps every patient, but it is biased
    even under MCAR when the focus variable is correlated with other
    predictors (Greenland & Finkle 1995; Groenwold et al. 2012), and its
    indicator effect mixes "what the unmeasured values were" with "which
    patients are not measured".
missing-category model
    The same strategy for a categorical focus: "missing" becomes one more
    level of the variable (:data:`MISSING_LEVEL`, the last level, so the
    reference level stays the first observed one), and its treatment-coded
    column ``<focus>[missing]`` is the indicator. It is the categorical form
    of the numeric model (for a 0/1 focus the two span the same columns),
    with the same caveats.
cluster-varying indicator effect
    The indicator effect (or the missing level's effect) estimated within each cluster (the cluster's own
    intercept and indicator effect, with the common model's fixed part as
    offset), then partially
    pooled by a normal random-effects model (DerSimonian & Laird 1986): each
    cluster's estimate is shrunk towards the mean by ``tau^2 / (tau^2 + se_j^2)``.

References
----------
Austin PC (2009). Balance diagnostics for comparing the distribution of
baseline covariates between treatment groups. Stat Med 28:3083-3107.
DerSimonian R, Laird N (1986). Meta-analysis in clinical trials. Control Clin
Trials 7:177-188.
Greenland S, Finkle WD (1995). A critical look at methods for handling
missing covariates in epidemiologic regression analyses. Am J Epidemiol
142:1255-1264.
Groenwold RHH et al. (2012). Missing covariate data in clinical research:
when and when not to use the missing-indicator method. CMAJ 184:1265-1269.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import chi2

from hmlib.stats.design import DesignMatrix, design_matrix, fit_design
from hmlib.stats.mixed import RandomInterceptFit

__all__ = ["SMD_THRESHOLD", "MISSING_LEVEL", "complete_case_mask", "retention_by_cluster", "retention_by_unit",
           "standardized_differences", "standardized_differences_by", "MissingIndicatorModel",
           "fit_missing_indicator_model", "missing_level_label", "fit_missing_category_model",
           "indicator_effects_by_cluster"]

#: ``|SMD|`` above this flags a shift reviewers call material (Austin 2009).
SMD_THRESHOLD = 0.1
#: Label of the level "not recorded" in the missing-category model (term ``<focus>[missing]``).
MISSING_LEVEL = "missing"


def complete_case_mask(frame: pd.DataFrame, columns) -> np.ndarray:
    """True for rows with every one of ``columns`` recorded."""
    return frame.loc[:, list(columns)].notna().all(axis=1).to_numpy()


def retention_by_cluster(frame: pd.DataFrame, cluster: str, complete: np.ndarray) -> pd.DataFrame:
    """Patients before and after complete-case selection, per cluster.

    Parameters
    ----------
    frame : pandas.DataFrame
    cluster : str
    complete : array of bool
        Complete-case mask over ``frame``'s rows.

    Returns
    -------
    pandas.DataFrame
        One row per cluster, ordered by retention (lowest first): ``cluster,
        n_all, n_complete, n_dropped, retained`` (share kept), ``share_before``
        and ``share_after`` (the cluster's share of the analysed sample),
        ``lost`` (no complete case at all). Counts are not suppressed.

    Examples
    --------
    >>> frame = pd.DataFrame({"site": ["A", "A", "B"]})
    >>> retention_by_cluster(frame, "site", np.array([True, False, False]))["lost"].tolist()
    [True, False]
    """
    counts = pd.DataFrame({"cluster": frame[cluster].to_numpy(), "complete": np.asarray(complete, bool)})
    table = counts.groupby("cluster", observed=True)["complete"].agg(n_all="size", n_complete="sum")
    table = table.reset_index()
    table["n_complete"] = table["n_complete"].astype(int)
    table["n_dropped"] = table["n_all"] - table["n_complete"]
    table["retained"] = table["n_complete"] / table["n_all"]
    table["share_before"] = table["n_all"] / table["n_all"].sum()
    total_after = table["n_complete"].sum()
    table["share_after"] = table["n_complete"] / total_after if total_after else 0.0
    table["lost"] = table["n_complete"] == 0
    return table.sort_values(["retained", "n_all"], ascending=[True, False]).reset_index(drop=True)


def retention_by_unit(frame: pd.DataFrame, unit: str, cluster: str, complete: np.ndarray) -> pd.DataFrame:
    """:func:`retention_by_cluster` for a level above the cluster (a country), with its clusters counted.

    Parameters
    ----------
    frame : pandas.DataFrame
    unit : str
        Column of the higher level; the clusters are nested in its units.
    cluster : str
    complete : array of bool
        Complete-case mask over ``frame``'s rows.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`retention_by_cluster`, its first named ``unit``
        instead of ``cluster`` (``lost``: the whole unit has no complete
        case), then ``n_clusters`` (clusters in the unit) and
        ``n_clusters_lost`` (those without a complete case). Rows without a
        unit label are left out. Counts are not suppressed.

    Examples
    --------
    >>> frame = pd.DataFrame({"country": ["X", "X", "X", "Y"], "site": ["A", "A", "B", "C"]})
    >>> t = retention_by_unit(frame, "country", "site", np.array([True, False, False, False]))
    >>> t[["country", "n_complete", "n_clusters", "n_clusters_lost", "lost"]].values.tolist()
    [['Y', 0, 1, 1, True], ['X', 1, 2, 1, False]]
    """
    complete = np.asarray(complete, bool)
    table = retention_by_cluster(frame, unit, complete).rename(columns={"cluster": unit})
    clusters = pd.DataFrame({unit: frame[unit].to_numpy(), "cluster": frame[cluster].to_numpy(),
                             "complete": complete}).dropna(subset=[unit, "cluster"])
    per_cluster = clusters.groupby([unit, "cluster"], observed=True)["complete"].any().reset_index()
    counts = per_cluster.groupby(unit, observed=True)["complete"].agg(
        n_clusters="size", n_clusters_lost=lambda kept: int((~kept).sum()))
    table = table.join(counts, on=unit)
    return table.astype({"n_clusters": int, "n_clusters_lost": int})


def _smd_numeric(all_values: pd.Series, cc_values: pd.Series) -> tuple[float, float, float]:
    a, c = all_values.dropna().astype(float), cc_values.dropna().astype(float)
    pooled = np.sqrt((a.var(ddof=1) + c.var(ddof=1)) / 2) if len(a) > 1 and len(c) > 1 else np.nan
    diff = c.mean() - a.mean()
    return float(a.mean()), float(c.mean()), float(diff / pooled) if pooled and pooled > 0 else 0.0


def _smd_share(p_all: float, p_cc: float) -> float:
    pooled = np.sqrt((p_all * (1 - p_all) + p_cc * (1 - p_cc)) / 2)
    return float((p_cc - p_all) / pooled) if pooled > 0 else 0.0


def standardized_differences(frame: pd.DataFrame, complete: np.ndarray, variables, kinds: dict,
                             *, binary_outcome: str | None = None) -> pd.DataFrame:
    """Each variable's distribution in all patients vs complete cases.

    Parameters
    ----------
    frame : pandas.DataFrame
    complete : array of bool
    variables : sequence of str
    kinds : dict
        ``{column: "numeric" | "categorical"}``.
    binary_outcome : str, optional
        A 0/1 column summarised as a rate (e.g. the binomial outcome).

    Returns
    -------
    pandas.DataFrame
        ``variable, level, summary ("mean" | "share"), all_patients,
        complete_cases, smd``. "All patients" uses every recorded value of the
        variable; levels of a categorical variable get one row each (level
        ``""`` otherwise).

    References
    ----------
    Austin PC (2009), Stat Med 28:3083-3107.
    """
    cc = frame.loc[np.asarray(complete, bool)]
    rows = []
    for var in variables:
        if var == binary_outcome or (kinds.get(var) == "numeric" and set(frame[var].dropna().unique()) <= {0, 1}):
            p_all, p_cc = float(frame[var].dropna().mean()), float(cc[var].dropna().mean())
            rows.append((var, "", "share", p_all, p_cc, _smd_share(p_all, p_cc)))
        elif kinds.get(var) == "categorical":
            all_shares = frame[var].dropna().astype(str).value_counts(normalize=True)
            cc_shares = cc[var].dropna().astype(str).value_counts(normalize=True)
            for level in sorted(all_shares.index):
                p_all, p_cc = float(all_shares.get(level, 0.0)), float(cc_shares.get(level, 0.0))
                rows.append((var, level, "share", p_all, p_cc, _smd_share(p_all, p_cc)))
        else:
            m_all, m_cc, smd = _smd_numeric(frame[var], cc[var])
            rows.append((var, "", "mean", m_all, m_cc, smd))
    return pd.DataFrame(rows, columns=["variable", "level", "summary", "all_patients",
                                       "complete_cases", "smd"])


def standardized_differences_by(frame: pd.DataFrame, complete: np.ndarray, variables, kinds: dict, by: str,
                                *, binary_outcome: str | None = None) -> pd.DataFrame | None:
    """:func:`standardized_differences` within each level of ``by`` (e.g. the cluster type).

    Returns
    -------
    pandas.DataFrame or None
        The same columns with a leading column ``by`` (its level); None when
        ``by`` has no recorded level.
    """
    parts = []
    for level, sub in frame.groupby(by, observed=True):
        cc_sub = complete[frame[by].to_numpy() == level]
        part = standardized_differences(sub, cc_sub, variables, kinds, binary_outcome=binary_outcome)
        part.insert(0, by, level)
        parts.append(part)
    return pd.concat(parts, ignore_index=True) if parts else None


@dataclass(frozen=True, eq=False)
class MissingIndicatorModel:
    """The missing-indicator model and what it was fitted on.

    Attributes
    ----------
    fit : hmlib.stats.mixed.RandomInterceptFit
    design : hmlib.stats.design.DesignMatrix
    frame : pandas.DataFrame
        The input frame with the focus variable filled with its observed
        mean and the indicator column added (numeric focus), or with its
        missing values set to the missing level (categorical focus); rows as
        the input.
    indicator : str
        Term of the indicator: ``<focus>_missing`` (numeric focus) or
        ``<focus>[missing]`` (categorical focus, :func:`fit_missing_category_model`).
    """

    fit: RandomInterceptFit
    design: DesignMatrix
    frame: pd.DataFrame
    indicator: str


def fit_missing_indicator_model(frame: pd.DataFrame, *, focus: str, predictors, outcome: str, cluster: str,
                                family: str, levels: dict | None = None, higher_levels=(),
                                random_slopes=()) -> MissingIndicatorModel:
    """Fit ``outcome ~ predictors + <focus>_missing + (1 | cluster)`` with ``focus`` mean-filled.

    Parameters
    ----------
    frame : pandas.DataFrame
    focus : str
        A numeric predictor with missing values.
    predictors : sequence of str
        The analysis model's predictors (``focus`` among them).
    outcome, cluster : str
    family : {"binomial", "gaussian"}
    levels : dict, optional
        Categorical levels (:func:`hmlib.stats.design.design_matrix`).
    higher_levels : sequence of str
        Levels above the cluster: nested random intercepts (:func:`hmlib.stats.design.fit_design`).
    random_slopes : sequence of str
        Numeric predictors with a random slope per cluster (:func:`hmlib.stats.design.fit_design`).

    Returns
    -------
    MissingIndicatorModel

    Raises
    ------
    hmlib.exceptions.FitError
        The model cannot be fitted.

    References
    ----------
    Groenwold RHH et al. (2012), CMAJ 184:1265-1269.
    """
    work = frame.copy()
    indicator = f"{focus}_missing"
    work[indicator] = work[focus].isna().astype(float)
    work[focus] = work[focus].fillna(work[focus].mean())
    design = design_matrix(work, [*predictors, indicator], levels, extra_rows_mask=work[outcome].notna())
    fit = fit_design(work, design, outcome=outcome, cluster=cluster, family=family, higher_levels=tuple(higher_levels),
                     random_slopes=tuple(random_slopes))
    return MissingIndicatorModel(fit=fit, design=design, frame=work, indicator=indicator)


def missing_level_label(levels) -> str:
    """The label of the missing level: :data:`MISSING_LEVEL`, or a variant no observed level uses.

    Examples
    --------
    >>> missing_level_label(["high", "low"]), missing_level_label(["missing", "yes"])
    ('missing', 'missing (not recorded)')
    """
    taken = {str(level) for level in levels}
    label = MISSING_LEVEL
    for candidate in (MISSING_LEVEL, f"{MISSING_LEVEL} (not recorded)", f"{MISSING_LEVEL} (no value)"):
        if candidate not in taken:
            return candidate
    while label in taken:
        label += "_"
    return label


def fit_missing_category_model(frame: pd.DataFrame, *, focus: str, predictors, outcome: str, cluster: str,
                               family: str, levels: dict | None = None, higher_levels=(),
                                random_slopes=()) -> MissingIndicatorModel:
    """Fit ``outcome ~ predictors + (1 | cluster)`` with a categorical ``focus``'s missing values as a level.

    The missing-category model (module docstring): every patient is kept;
    the focus gets one more level, :func:`missing_level_label` (``"missing"``),
    placed last so that the reference level is unchanged, and the level's
    column ``<focus>[missing]`` plays the part of the numeric model's
    indicator (:func:`indicator_effects_by_cluster` takes it as
    ``indicator_column``). lme4 fits the same model with ``addNA``-style
    recoding (``tests/results/missing_category.R``).

    Parameters
    ----------
    frame : pandas.DataFrame
    focus : str
        A categorical predictor with missing values.
    predictors : sequence of str
        The analysis model's predictors (``focus`` among them).
    outcome, cluster : str
    family : {"binomial", "gaussian"}
    levels : dict, optional
        Categorical levels (:func:`hmlib.stats.design.design_matrix`); the
        focus's levels default to its sorted recorded values.
    higher_levels : sequence of str
        Levels above the cluster: nested random intercepts (:func:`hmlib.stats.design.fit_design`).
    random_slopes : sequence of str
        Numeric predictors with a random slope per cluster (:func:`hmlib.stats.design.fit_design`).

    Returns
    -------
    MissingIndicatorModel
        ``indicator`` is ``<focus>[missing]``; ``frame`` holds the focus as
        text with the missing level filled in.

    Raises
    ------
    hmlib.exceptions.FitError
        The model cannot be fitted.

    References
    ----------
    Groenwold RHH et al. (2012), CMAJ 184:1265-1269.
    """
    levels = dict(levels or {})
    observed = frame[focus].dropna().astype(str)
    focus_levels = [str(level) for level in (levels.get(focus) or sorted(observed.unique().tolist()))]
    label = missing_level_label(focus_levels)
    levels[focus] = [*focus_levels, label]
    work = frame.copy()
    text = work[focus].astype(object).where(work[focus].notna(), None)
    work[focus] = [label if value is None else str(value) for value in text]
    design = design_matrix(work, list(predictors), levels, extra_rows_mask=work[outcome].notna())
    fit = fit_design(work, design, outcome=outcome, cluster=cluster, family=family, higher_levels=tuple(higher_levels),
                     random_slopes=tuple(random_slopes))
    return MissingIndicatorModel(fit=fit, design=design, frame=work, indicator=f"{focus}[{label}]")


def _within_cluster_effect(y, offset, x, family):
    """MLE of d in ``y ~ offset + a + d x`` within one cluster, and its SE.

    The cluster's own intercept ``a`` is estimated alongside ``d`` so that the
    indicator effect is not absorbed into (or confounded with) the cluster
    effect. Logit link for binomial, identity for gaussian. Returns NaNs when
    the effect is not estimable (no contrast, or the outcome does not vary
    within the measured or the unmeasured group of a binomial model).
    """
    Z = np.column_stack([np.ones_like(x), x])
    if family == "gaussian":
        r = y - offset
        ztz = Z.T @ Z
        if np.linalg.matrix_rank(ztz) < 2 or y.size <= 2:
            return np.nan, np.nan
        coef = np.linalg.solve(ztz, Z.T @ r)
        resid = r - Z @ coef
        sigma2 = float(resid @ resid) / (y.size - 2)
        return float(coef[1]), float(np.sqrt(sigma2 * np.linalg.inv(ztz)[1, 1]))
    for group in (x > 0, x <= 0):
        if y[group].min() == y[group].max():  # separated: no finite estimate
            return np.nan, np.nan
    coef = np.zeros(2)
    try:
        for _ in range(100):
            p = 1 / (1 + np.exp(-(offset + Z @ coef)))
            info = (Z * (p * (1 - p))[:, None]).T @ Z
            step = np.linalg.solve(info, Z.T @ (y - p))
            coef += step
            if np.max(np.abs(step)) < 1e-10:
                break
        p = 1 / (1 + np.exp(-(offset + Z @ coef)))
        info = (Z * (p * (1 - p))[:, None]).T @ Z
        se = float(np.sqrt(np.linalg.inv(info)[1, 1]))
    except np.linalg.LinAlgError:  # quasi-separation: the information vanishes
        return np.nan, np.nan
    if not (np.all(np.isfinite(coef)) and np.isfinite(se)) or abs(coef[1]) > 20:
        return np.nan, np.nan  # diverging towards separation: no finite estimate
    return float(coef[1]), se


def indicator_effects_by_cluster(frame: pd.DataFrame, *, fit, design, indicator_column: str,
                                 outcome: str, cluster: str, family: str) -> pd.DataFrame:
    """Cluster-specific missing-indicator effects, raw and partially pooled.

    Parameters
    ----------
    frame : pandas.DataFrame
        Rows used by ``fit`` (in the same order as ``design``'s rows).
    fit : hmlib.stats.mixed.RandomInterceptFit
        The common-indicator model.
    design : hmlib.stats.design.DesignMatrix
        Its design (for the offset).
    indicator_column : str
        Term name of the indicator in ``fit``.
    outcome, cluster : str
    family : {"binomial", "gaussian"}

    Returns
    -------
    pandas.DataFrame
        ``cluster, n, n_missing, raw, raw_se, pooled, shrinkage`` where
        ``shrinkage`` is ``1 - tau^2 / (tau^2 + se^2)`` (0 = own estimate kept,
        1 = fully pooled to the mean). Clusters where the effect cannot be
        estimated (no missing or no observed value, or no outcome contrast) get
        NaN raw estimates and the pooled mean. The frame's ``attrs`` hold
        ``tau`` (between-cluster SD of the effect), ``mean``, ``q_p`` (the
        heterogeneity test's p-value) and ``n_estimable``.

    References
    ----------
    DerSimonian R, Laird N (1986), Control Clin Trials 7:177-188.
    """
    k = fit.term_names.index(indicator_column)
    x = design.X[:, k]
    labels = frame[cluster].to_numpy()[design.rows]
    y = frame[outcome].to_numpy(dtype=float)[design.rows]
    # Fixed part without the indicator; each cluster re-estimates its own intercept.
    offset = design.X @ fit.coef - fit.coef[k] * x
    rows = []
    for label in fit.cluster_labels.tolist():
        sel = labels == label
        xs = x[sel]
        n_miss = int(xs.sum())
        if n_miss == 0 or n_miss == sel.sum():
            d, se = np.nan, np.nan
        else:
            d, se = _within_cluster_effect(y[sel], offset[sel], xs, family)
        rows.append((label, int(sel.sum()), n_miss, d, se))
    table = pd.DataFrame(rows, columns=["cluster", "n", "n_missing", "raw", "raw_se"])
    ok = table["raw"].notna() & table["raw_se"].notna() & (table["raw_se"] > 0)
    est, se = table.loc[ok, "raw"].to_numpy(), table.loc[ok, "raw_se"].to_numpy()
    if ok.sum() >= 2:
        w = 1 / se ** 2
        mean_fixed = np.sum(w * est) / np.sum(w)
        q = float(np.sum(w * (est - mean_fixed) ** 2))
        dof = int(ok.sum()) - 1
        tau2 = max(0.0, (q - dof) / (np.sum(w) - np.sum(w ** 2) / np.sum(w)))
        w_re = 1 / (se ** 2 + tau2)
        mean = float(np.sum(w_re * est) / np.sum(w_re))
        q_p = float(chi2.sf(q, dof))
    else:
        tau2, mean, q_p = 0.0, float(fit.coef[k]), np.nan
    keep = tau2 / (tau2 + table["raw_se"] ** 2)
    table["pooled"] = np.where(ok, keep * table["raw"] + (1 - keep) * mean, mean)
    table["shrinkage"] = np.where(ok, 1 - keep, 1.0)
    table.attrs.update(tau=float(np.sqrt(tau2)), mean=mean, q_p=q_p, n_estimable=int(ok.sum()))
    return table
