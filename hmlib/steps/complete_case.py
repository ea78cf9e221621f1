"""Step 2: what complete-case analysis does to a clustered population.

In hierarchical data, complete-case analysis is cluster selection: a site
that never records a variable disappears, poorly documenting sites shrink,
and the estimand quietly moves from "all patients" to "patients in
well-documented sites". This module measures that shift and fits the models
that go with it.

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
    (Austin 2009). ``|SMD| > 0.1`` is the usual flag of a meaningful shift.
missing-indicator model
    The focus variable filled with its observed mean plus a 0/1 indicator of
    its missingness, in the outcome model (Strategy 1 of the seed material):
    "not perfect, but honest" -- it keeps every patient, but it is biased
    even under MCAR when the focus variable is correlated with other
    predictors (Greenland & Finkle 1995; Groenwold et al. 2012), and its
    indicator effect mixes "what the unmeasured values were" with "which
    patients are not measured".
cluster-varying indicator effect
    The indicator effect estimated within each cluster (the cluster's own
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
Groenwold RHH et al. (2012). Missing covariate data in clinical research:
when and when not to use the missing-indicator method. CMAJ 184:1265-1269.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact
from hmlib.exceptions import FitError
from hmlib.figures import complete_case as figures
from hmlib.privacy import suppress_counts
from hmlib.results import estimate_rows, to_jsonable
from hmlib.stats.design import design_matrix, fit_analysis_model, fit_design
from hmlib.steps.base import Step, StepContext

__all__ = ["complete_case_mask", "retention_by_cluster", "standardized_differences",
           "indicator_effects_by_cluster", "CompleteCaseResult", "complete_case_check",
           "SMD_THRESHOLD", "CompleteCaseArtifact", "run", "STEP"]

SMD_THRESHOLD = 0.1


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
        ``lost`` (no complete case at all).
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
        variable; levels of a categorical variable get one row each.
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
        ``tau`` (between-cluster SD of the effect), ``mean`` and ``q_p`` (the
        heterogeneity test's p-value).
    """
    from scipy import stats

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
        q_p = float(stats.chi2.sf(q, dof))
    else:
        tau2, mean, q_p = 0.0, float(fit.coef[k]), np.nan
    keep = tau2 / (tau2 + table["raw_se"] ** 2)
    table["pooled"] = np.where(ok, keep * table["raw"] + (1 - keep) * mean, mean)
    table["shrinkage"] = np.where(ok, 1 - keep, 1.0)
    table.attrs.update(tau=float(np.sqrt(tau2)), mean=mean, q_p=q_p, n_estimable=int(ok.sum()))
    return table


@dataclass
class CompleteCaseResult:
    """Everything step 2 found. Aggregated only: no patient-level rows.

    Attributes
    ----------
    n_all, n_complete : int
        Patients in the analysis frame, and complete cases among them.
    n_clusters, n_clusters_lost : int
    clusters_lost : list
        Labels of clusters without any complete case.
    retention : pandas.DataFrame
        :func:`retention_by_cluster`.
    retention_display : pandas.DataFrame
        The same with small counts suppressed (what the report shows).
    shift : pandas.DataFrame
        :func:`standardized_differences` over outcome and predictors.
    shift_by_type : pandas.DataFrame or None
        The same within each level of the first cluster covariate.
    estimates : pandas.DataFrame
        Rows of ``estimates.csv`` (``complete_case``, ``missing_indicator``).
    indicator_by_cluster : pandas.DataFrame or None
        :func:`indicator_effects_by_cluster`.
    notes : list of str
        Plain-language remarks (models that could not be fitted, and why).
    """

    outcome: str
    outcome_family: str
    focus: str
    n_all: int
    n_complete: int
    n_clusters: int
    n_clusters_lost: int
    clusters_lost: list
    retention: pd.DataFrame
    retention_display: pd.DataFrame
    shift: pd.DataFrame
    shift_by_type: pd.DataFrame | None
    estimates: pd.DataFrame
    indicator_by_cluster: pd.DataFrame | None
    min_cell: int
    notes: list = field(default_factory=list)

    @property
    def outcome_all(self) -> float:
        return float(self.shift.loc[self.shift["variable"] == self.outcome, "all_patients"].iloc[0])

    @property
    def outcome_cc(self) -> float:
        return float(self.shift.loc[self.shift["variable"] == self.outcome, "complete_cases"].iloc[0])

    def headline(self) -> str:
        """The one-sentence statement of the shift, with its numbers."""
        dropped = 1 - self.n_complete / self.n_all
        lost = (f"exclude {self.n_clusters_lost} of {self.n_clusters} clusters and "
                if self.n_clusters_lost else f"keep all {self.n_clusters} clusters but exclude ")
        if self.outcome_family == "binomial":
            outcome = (f"the {self.outcome} rate is {self.outcome_cc:.1%} among complete cases vs "
                       f"{self.outcome_all:.1%} overall")
        else:
            outcome = (f"mean {self.outcome} is {self.outcome_cc:.3g} among complete cases vs "
                       f"{self.outcome_all:.3g} overall")
        return f"Complete cases {lost}{dropped:.0%} of patients; {outcome}."

    def narrative(self) -> list[str]:
        """Generated sentences, each stating a finding with its numbers."""
        out = [self.headline()]
        if self.n_complete == self.n_all:
            out.append("Every patient has every model variable recorded: complete-case analysis "
                       "uses everyone, and the estimand does not shift.")
            return out + self.notes
        if self.clusters_lost:
            shown = ", ".join(map(str, self.clusters_lost[:8])) + (" ..." if len(self.clusters_lost) > 8 else "")
            out.append(f"Clusters with no complete case (they vanish from a complete-case analysis): {shown}.")
        r = self.retention
        kept = r.loc[~r["lost"]]
        if len(kept):
            out.append(
                f"Retention ranges from {kept['retained'].min():.0%} to {kept['retained'].max():.0%} among "
                f"the clusters that remain; the largest change in a cluster's share of the sample is "
                f"{(r['share_after'] - r['share_before']).abs().max():.1%} points.")
        flagged = self.shift.loc[self.shift["smd"].abs() > SMD_THRESHOLD]
        if len(flagged):
            parts = [f"{row.variable}{'=' + row.level if row.level else ''} (SMD {row.smd:+.2f})"
                     for row in flagged.itertuples()]
            out.append(f"Variables whose distribution shifts by more than {SMD_THRESHOLD} SD among "
                       f"complete cases: {', '.join(parts)}.")
        else:
            out.append(f"No variable's distribution shifts by more than {SMD_THRESHOLD} SD among complete cases.")
        est = self.estimates
        sel = (est["term"] == self.focus)
        cc = est.loc[sel & (est["method"] == "complete_case")]
        mi = est.loc[sel & (est["method"] == "missing_indicator")]
        if len(cc) and len(mi):
            out.append(
                f"The {self.focus} coefficient is {cc['estimate'].iloc[0]:.3g} "
                f"(95% CI {cc['ci_lower'].iloc[0]:.3g} to {cc['ci_upper'].iloc[0]:.3g}) among complete cases "
                f"and {mi['estimate'].iloc[0]:.3g} ({mi['ci_lower'].iloc[0]:.3g} to {mi['ci_upper'].iloc[0]:.3g}) "
                "in the missing-indicator model.")
        ind = self.indicator_by_cluster
        if ind is not None and ind.attrs.get("n_estimable", 0) >= 2:
            tau, q_p = ind.attrs["tau"], ind.attrs["q_p"]
            counts = (f"between-cluster SD {tau:.2f}, heterogeneity p = {q_p:.3g}, "
                      f"{ind.attrs['n_estimable']} clusters with both measured and unmeasured patients")
            if q_p < 0.05:
                out.append(f"The effect of being unmeasured on {self.focus} varies between clusters beyond "
                           f"chance ({counts}): missingness is informative in some clusters and not in "
                           "others, so one common indicator effect misdescribes them.")
            else:
                out.append(f"The effect of being unmeasured on {self.focus} does not vary between clusters "
                           f"beyond chance ({counts}); with few such clusters this test has little power.")
        return out + self.notes

    def indicator_by_cluster_note(self) -> str:
        """Why no cluster-specific indicator effect is shown (when none is)."""
        return ("No cluster has both measured and unmeasured patients with outcome variation, "
                "so cluster-specific indicator effects cannot be estimated.")

    def to_artifact(self) -> "CompleteCaseArtifact":
        """The typed record of step 2."""
        return CompleteCaseArtifact.from_json(to_jsonable(self.to_dict()))

    def figures(self) -> dict:
        """``{"retention": [...], "shift": [...], "indicator_by_cluster": [...]}``."""
        out = {"retention": [figures.retention_plot(self.retention, min_cell=self.min_cell)],
               "shift": [figures.smd_plot(self.shift, threshold=SMD_THRESHOLD)],
               "indicator_by_cluster": []}
        table = self.indicator_by_cluster
        if table is not None and table["raw"].notna().any():
            out["indicator_by_cluster"].append(figures.indicator_effects_plot(table, focus=self.focus))
        return out

    def to_dict(self) -> dict:
        """JSON-ready aggregates for ``artifacts/complete_case.json``."""
        return {
            "n_all": self.n_all, "n_complete": self.n_complete, "n_clusters": self.n_clusters,
            "n_clusters_lost": self.n_clusters_lost, "clusters_lost": [str(c) for c in self.clusters_lost],
            "outcome_all": self.outcome_all, "outcome_complete_cases": self.outcome_cc,
            "retention": self.retention_display.to_dict(orient="records"),
            "shift": self.shift.to_dict(orient="records"),
            "shift_by_type": None if self.shift_by_type is None else self.shift_by_type.to_dict(orient="records"),
            "indicator_by_cluster": None if self.indicator_by_cluster is None else {
                "table": self.indicator_by_cluster.assign(cluster=lambda t: t["cluster"].astype(str))
                .drop(columns=["n", "n_missing"]).to_dict(orient="records"),
                **self.indicator_by_cluster.attrs},
            "narrative": self.narrative(), "notes": self.notes,
        }


def _suppressed_retention(table: pd.DataFrame, min_cell: int) -> pd.DataFrame:
    safe = suppress_counts(
        table, ["n_complete", "n_dropped"], min_cell, total_column="n_all",
        parts=[["n_complete", "n_dropped"]],
        derived_columns={"retained": ["n_complete", "n_dropped"], "share_after": ["n_complete"],
                         "share_before": ["n_all"]},
    )
    return safe.display


def complete_case_check(registry) -> CompleteCaseResult:
    """Run step 2 on a checked registry.

    Parameters
    ----------
    registry : hmlib.data.Registry

    Returns
    -------
    CompleteCaseResult
    """
    p = registry.params
    frame = registry.frame
    columns = [p.outcome, *p.predictors]
    complete = complete_case_mask(frame, columns)
    retention = retention_by_cluster(frame, p.cluster, complete)
    lost = retention.loc[retention["lost"], "cluster"].tolist()
    binary_outcome = p.outcome if p.outcome_family == "binomial" else None
    shift = standardized_differences(frame, complete, columns, registry.kinds, binary_outcome=binary_outcome)
    shift_by_type = None
    if p.cluster_covariates:
        ctype = p.cluster_covariates[0]
        parts = []
        for level, sub in frame.groupby(ctype, observed=True):
            cc_sub = complete[frame[ctype].to_numpy() == level]
            part = standardized_differences(sub, cc_sub, columns, registry.kinds, binary_outcome=binary_outcome)
            part.insert(0, ctype, level)
            parts.append(part)
        shift_by_type = pd.concat(parts, ignore_index=True) if parts else None

    notes: list[str] = []
    estimates = []
    try:
        fit_cc = fit_analysis_model(frame, outcome=p.outcome, predictors=p.predictors, cluster=p.cluster,
                                    family=p.outcome_family, levels=registry.levels)
        estimates.append(estimate_rows(fit_cc, "complete_case"))
    except FitError as exc:
        notes.append(f"The complete-case model could not be fitted: {exc}")

    indicator_table = None
    focus = p.focus
    if frame[focus].isna().any() and registry.kinds.get(focus) == "numeric":
        work = frame.copy()
        indicator = f"{focus}_missing"
        work[indicator] = work[focus].isna().astype(float)
        work[focus] = work[focus].fillna(work[focus].mean())
        predictors = [*p.predictors, indicator]
        try:
            design = design_matrix(work, predictors, registry.levels, extra_rows_mask=work[p.outcome].notna())
            fit_mi = fit_design(work, design, outcome=p.outcome, cluster=p.cluster, family=p.outcome_family)
            estimates.append(estimate_rows(fit_mi, "missing_indicator"))
            indicator_table = indicator_effects_by_cluster(
                work, fit=fit_mi, design=design, indicator_column=indicator, outcome=p.outcome,
                cluster=p.cluster, family=p.outcome_family)
        except FitError as exc:
            notes.append(f"The missing-indicator model could not be fitted: {exc}")
    elif not frame[focus].isna().any():
        notes.append(f"The focus variable {focus} is complete, so there is no missing-indicator model.")
    else:
        notes.append(f"The focus variable {focus} is categorical; the missing-indicator model is fitted "
                     "for numeric focus variables only.")

    estimates_frame = (pd.concat(estimates, ignore_index=True) if estimates
                       else pd.DataFrame(columns=["method", "term", "estimate", "std_error", "ci_lower",
                                                  "ci_upper", "n_patients", "n_clusters"]))
    return CompleteCaseResult(
        outcome=p.outcome, outcome_family=p.outcome_family, focus=focus,
        n_all=int(len(frame)), n_complete=int(complete.sum()), n_clusters=int(len(retention)),
        n_clusters_lost=len(lost), clusters_lost=lost, retention=retention,
        retention_display=_suppressed_retention(retention, p.privacy.min_cell),
        shift=shift, shift_by_type=shift_by_type, estimates=estimates_frame,
        indicator_by_cluster=indicator_table, min_cell=p.privacy.min_cell, notes=notes,
    )


@dataclass(frozen=True)
class CompleteCaseArtifact(Artifact):
    """The record of step 2 (``artifacts/complete_case.json``)."""

    KEY: ClassVar[str] = "complete_case"
    VERSION: ClassVar[int] = 1

    clusters_lost: list
    indicator_by_cluster: dict
    n_all: int
    n_clusters: int
    n_clusters_lost: int
    n_complete: int
    narrative: list
    notes: list
    outcome_all: float | None
    outcome_complete_cases: float | None
    retention: list
    shift: list
    shift_by_type: list


def run(ctx: StepContext) -> CompleteCaseResult:
    """Run step 2 on the checked inputs and write its artifact and estimates."""
    result = complete_case_check(ctx.registry)
    ctx.write(STEP, result)
    return result


STEP = Step(key="complete_case", number=2, title="Complete-case check: who drops out",
            notebook="02_complete_case.ipynb", artifact=CompleteCaseArtifact, run=run,
            methods=("complete_case", "missing_indicator"), summary_name="step 2 (complete-case check)")
