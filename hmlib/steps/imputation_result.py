"""What step 3 found: its result (tables, narrative, figures) and its typed artifact.

:class:`ImputationStepResult` holds every method's run (:class:`MethodRun`)
and the aggregated tables the step computed; its methods build the tables
the notebook shows, the sentences of the narrative (each stating a finding
with this dataset's numbers), the figures (:mod:`hmlib.figures.imputation`)
and the record written to ``artifacts/imputation.json``
(:class:`ImputationArtifact`). Only aggregates leave it: completed data sets
are kept in memory for the figures and never written.

The artifact's tables that the report reads field by field are row records
(:class:`MethodRecord`, :class:`FmiRecord`, :class:`RhatRecord`,
:class:`TransportRecord`, :class:`ResidualVarianceRecord`); tables that are
only displayed stay free JSON. The JSON keys are those the report has always
read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact, Record
from hmlib.exceptions import ArtifactError
from hmlib.figures import imputation as figures
from hmlib.methods import method_order
from hmlib.results import ESTIMATE_COLUMNS, to_jsonable
from hmlib.stats.imputation import ResidualVarianceCheck
from hmlib.stats.pooling import intraclass_correlation
from hmlib.wording import plural, row_noun

__all__ = ["MethodSpec", "MethodRun", "ImputationStepResult", "ImputationArtifact", "MethodRecord",
           "StratumFallback", "FmiRecord", "RhatRecord", "TransportRecord", "TransportFailure",
           "ResidualVarianceRecord", "ICC_TOLERANCE", "RHAT_THRESHOLD", "SMALL_CLUSTER_MEAN"]

#: Relative difference of ICCs below which the narrative calls them "about the same".
ICC_TOLERANCE = 0.05
#: R-hat above this is flagged in the narrative (chain means over few iterations are noisy).
RHAT_THRESHOLD = 1.1
#: Mean patients per cluster below which the narrative warns that a binary outcome's cluster SD comes out
#: low by the Laplace fit itself (measured by ``bench/ri_logistic_small_clusters.py`` on complete data:
#: -7.5% at a mean of 4.6 patients per site, -16% at 2.55; the coefficients within 1%).
SMALL_CLUSTER_MEAN = 6.0


# --------------------------------------------------------------------------
# Runs and the result
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class MethodSpec:
    """One imputation method of the comparison.

    Attributes
    ----------
    label : str
        ``method`` in ``estimates.csv`` (e.g. ``"flat_mi"``).
    method : str
        Engine method (:data:`hmlib.stats.imputation.METHODS`).
    options : dict
        Further keyword arguments of :func:`hmlib.stats.imputation.impute`.
    description : str
        One line for the report.
    """

    label: str
    method: str
    options: dict
    description: str


@dataclass(eq=False)
class MethodRun:
    """One method: what ran, how long, and what came out.

    Attributes
    ----------
    spec : MethodSpec
    status : str
        ``"ok"`` or ``"failed"``.
    reason : str
        Why it failed ("" when ok).
    seconds_impute, seconds_analyse : float
    notes : list of str
        The engine's remarks (the pooling's are in ``pooled.notes``).
    models : dict
        ``{variable: imputation model description}``.
    rhat : dict
        ``{variable: split R-hat}``.
    fallbacks : dict
        Stratified only: ``{variable: {"strata": fallen back, "of": strata,
        "reasons": {reason: count}}}`` (:attr:`hmlib.stats.imputation.ImputationResult.fallbacks`).
    cluster_means_dropped, extrapolated : dict
        The engine's :attr:`~hmlib.stats.imputation.ImputationResult.cluster_means_dropped`
        and :attr:`~hmlib.stats.imputation.ImputationResult.extrapolated`.
    pooled : hmlib.stats.pooling.PooledResult or None
    focus_variation : dict
        ``cluster_sd, icc`` of the focus variable (means over the completed
        data sets) and ``icc_min, icc_max`` over them.
    imputation : hmlib.stats.imputation.ImputationResult or None
        Kept in memory for figures; never written out (completed data are
        patient-level).
    """

    spec: MethodSpec
    status: str
    reason: str = ""
    seconds_impute: float = 0.0
    seconds_analyse: float = 0.0
    notes: list = field(default_factory=list)
    models: dict = field(default_factory=dict)
    rhat: dict = field(default_factory=dict)
    fallbacks: dict = field(default_factory=dict)
    cluster_means_dropped: dict = field(default_factory=dict)
    extrapolated: dict = field(default_factory=dict)
    pooled: object = field(default=None, repr=False)
    focus_variation: dict = field(default_factory=dict)
    imputation: object = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The method's label in ``estimates.csv``."""
        return self.spec.label

    @property
    def ok(self) -> bool:
        """The method ran and was pooled."""
        return self.status == "ok"


@dataclass(eq=False)
class ImputationStepResult:
    """Everything step 3 found. Aggregates only leave it (:meth:`to_dict`).

    Attributes
    ----------
    outcome, outcome_family, cluster, focus : str
    n_patients, n_clusters : int
    m, iterations : int
    runs : list of MethodRun
        One per method, failed ones included.
    complete_case : pandas.DataFrame
        ``complete_case`` rows of the estimates contract (read from
        ``estimates.csv`` or fitted here; empty if it cannot be fitted).
    complete_case_source : str
        ``"estimates.csv"`` or ``"fitted here"`` (or ``"unavailable"``).
    truth : dict
        ``{term: true value}`` (empty for real data).
    residual_variance : ResidualVarianceCheck or None
    focus_observed : dict
        ``cluster_sd, icc`` of the focus variable's observed values.
    missing_counts : pandas.DataFrame
        Per model variable ``variable, n, n_missing, n_observed`` with small
        counts suppressed (display version).
    distributions : pandas.DataFrame
        Histogram densities of the focus variable in the clusters with most
        missing values: ``cluster, source, bin_left, bin_right, density``
        (``source`` is ``"observed"`` or a method label). The observed
        density of a cluster with fewer than ``min_cell`` observed values
        is left out.
    distribution_clusters : pandas.DataFrame
        The chosen clusters: ``cluster, n, n_missing, n_observed,
        never_observed`` (counts suppressed for display).
    transport : hmlib.steps.imputation_transport.PublishedTransport or None
    min_cell : int
    notes : list of str
    level_distributions : pandas.DataFrame
        Categorical focus: its level shares among the observed and each
        method's imputed values in the chosen clusters
        (:func:`hmlib.steps.imputation_levels.level_distributions`); empty
        for a numeric focus.
    focus_levels : tuple of str
        A categorical focus's levels (the first is the reference); empty for
        a numeric focus.
    time : str or None
        The params' visit time (rows are then visits, and are counted as such).
    random_slopes : tuple of str
        The params' random slopes (the analysis model's, named in the narrative).
    """

    outcome: str
    outcome_family: str
    cluster: str
    focus: str
    n_patients: int
    n_clusters: int
    m: int
    iterations: int
    runs: list
    complete_case: pd.DataFrame
    complete_case_source: str
    truth: dict
    residual_variance: ResidualVarianceCheck | None
    focus_observed: dict
    missing_counts: pd.DataFrame
    distributions: pd.DataFrame
    distribution_clusters: pd.DataFrame
    min_cell: int
    transport: object = None
    notes: list = field(default_factory=list)
    level_distributions: pd.DataFrame = field(default_factory=pd.DataFrame)
    focus_levels: tuple = ()
    time: str | None = None
    random_slopes: tuple = ()

    # ---- tables ---------------------------------------------------------
    def run(self, label: str) -> MethodRun:
        """The run of one method by label."""
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(f"no method {label!r}; methods are {[r.label for r in self.runs]}")

    @property
    def ok_runs(self) -> list:
        """The runs that succeeded, in order."""
        return [r for r in self.runs if r.ok]

    @property
    def failed(self) -> dict:
        """``{label: reason}`` of the methods that failed."""
        return {r.label: r.reason for r in self.runs if not r.ok}

    @property
    def estimates(self) -> pd.DataFrame:
        """Rows for ``estimates.csv`` of the methods that ran (Rubin's rules)."""
        parts = [r.pooled.to_frame() for r in self.ok_runs]
        return (pd.concat(parts, ignore_index=True) if parts
                else pd.DataFrame(columns=list(ESTIMATE_COLUMNS)))

    @property
    def sd_term(self) -> str:
        """The analysis model's cluster-SD term (``sd(<cluster>)``)."""
        return f"sd({self.cluster})"

    @property
    def focus_term(self) -> str:
        """The focus variable's coefficient: its name, or its first level (``name[level]``) if categorical."""
        return self.focus_terms[0]

    @property
    def focus_terms(self) -> list:
        """The focus variable's coefficients: its name, or one ``name[level]`` per non-reference level."""
        if self.focus_levels:
            return [f"{self.focus}[{level}]" for level in self.focus_levels[1:]]
        terms = list(dict.fromkeys(self.comparison()["term"]))
        if self.focus in terms:
            return [self.focus]
        return [t for t in terms if t.startswith(f"{self.focus}[")] or [self.focus]

    def methods_table(self) -> pd.DataFrame:
        """One row per method: status, reason, model, seconds, max R-hat."""
        rows = []
        for r in self.runs:
            finite = [v for v in r.rhat.values() if np.isfinite(v)]
            rows.append({"method": r.label, "status": r.status, "reason": r.reason,
                         "description": r.spec.description,
                         "seconds": r.seconds_impute + r.seconds_analyse,
                         "max_rhat": max(finite) if finite else float("nan")})
        return pd.DataFrame(rows)

    def comparison(self) -> pd.DataFrame:
        """Long table of every method's estimates with complete case and truth.

        Columns: the estimates contract, then ``truth``, ``error`` (estimate
        minus truth) and ``covers_truth`` (True/False; None without truth).
        """
        parts = [p for p in (self.complete_case, self.estimates) if len(p)]
        table = (pd.concat(parts, ignore_index=True) if parts
                 else pd.DataFrame(columns=list(ESTIMATE_COLUMNS)))
        table = table.loc[:, list(ESTIMATE_COLUMNS)].copy()
        truth = table["term"].map(self.truth).astype(float)
        table["truth"] = truth
        table["error"] = table["estimate"] - truth
        covers = (table["ci_lower"] <= truth) & (truth <= table["ci_upper"])
        table["covers_truth"] = pd.Series([bool(c) if np.isfinite(t) else None for c, t in zip(covers, truth)],
                                          index=table.index, dtype=object)
        return table

    def side_by_side(self) -> pd.DataFrame:
        """One row per term, one column per method: ``estimate (lower, upper)``; then truth."""
        comp = self.comparison()
        if not len(comp):
            return pd.DataFrame(columns=["term"])
        comp["cell"] = [f"{e:.3g} ({lo:.3g}, {hi:.3g})" if np.isfinite(lo) else f"{e:.3g}"
                        for e, lo, hi in zip(comp["estimate"], comp["ci_lower"].astype(float),
                                             comp["ci_upper"].astype(float))]
        wide = comp.pivot(index="term", columns="method", values="cell")
        order = method_order(wide.columns)
        terms = list(dict.fromkeys(comp["term"]))
        wide = wide.reindex(index=terms, columns=order)
        if self.truth:
            wide["truth"] = [self.truth.get(t, np.nan) for t in terms]
        return wide.reset_index()

    def cluster_variation_table(self) -> pd.DataFrame:
        """Between-cluster variation by method.

        Columns: ``method``; ``outcome_sd, outcome_sd_lower, outcome_sd_upper``
        (the analysis model's pooled cluster SD and interval);
        ``outcome_icc`` (:attr:`hmlib.stats.pooling.PooledResult.icc`: latent
        scale for a binomial outcome; for a gaussian one from the pooled
        residual SD, NaN for complete-case rows read from ``estimates.csv``,
        which do not carry it, and for the truth unless it has
        ``sd(residual)``);
        ``focus_sd, focus_icc, focus_icc_min, focus_icc_max`` (the focus
        variable in the completed data; first row: observed values only).
        """
        rows = [{"method": "observed values", **_focus_columns(self.focus_observed)}]
        cc = self.complete_case
        if len(cc) and (cc["term"] == self.sd_term).any():
            rows.append({"method": "complete_case", **self._outcome_columns(cc)})
        for r in self.ok_runs:
            rows.append({"method": r.label, **self._outcome_columns(r.pooled.to_frame(), icc=r.pooled.icc),
                         **_focus_columns(r.focus_variation)})
        if self.sd_term in self.truth:
            rows.append({"method": "truth", **self._outcome_columns(
                None, self.truth[self.sd_term], residual_sd=self.truth.get("sd(residual)"))})
        columns = ["method", "outcome_sd", "outcome_sd_lower", "outcome_sd_upper", "outcome_icc",
                   "focus_sd", "focus_icc", "focus_icc_min", "focus_icc_max"]
        return pd.DataFrame(rows).reindex(columns=columns)

    def _outcome_columns(self, estimates: pd.DataFrame | None, value: float | None = None, *,
                         icc: float | None = None, residual_sd: float | None = None) -> dict:
        if estimates is not None:
            row = estimates.loc[estimates["term"] == self.sd_term].iloc[0]
            value, lower, upper = float(row["estimate"]), float(row["ci_lower"]), float(row["ci_upper"])
        else:
            lower = upper = float("nan")
        if icc is None:
            icc = intraclass_correlation(value, self.outcome_family, residual_sd)
        return {"outcome_sd": value, "outcome_sd_lower": lower, "outcome_sd_upper": upper, "outcome_icc": icc}

    def rhat_table(self) -> pd.DataFrame:
        """``method, variable, rhat`` for every imputed variable of every method that ran."""
        rows = [{"method": r.label, "variable": v, "rhat": float(x)} for r in self.ok_runs
                for v, x in r.rhat.items()]
        return pd.DataFrame(rows, columns=["method", "variable", "rhat"])

    def fmi_table(self) -> pd.DataFrame:
        """``method, term, fmi, riv, lambda, df`` (the cluster SD on the log scale); multiple imputations only
        (a single imputation, LOCF, has no missing information to measure)."""
        parts = [r.pooled.diagnostics.assign(method=r.label) for r in self.ok_runs if r.pooled.m > 1]
        if not parts:
            return pd.DataFrame(columns=["method", "term", "fmi", "riv", "lambda", "df"])
        return pd.concat(parts, ignore_index=True).loc[:, ["method", "term", "fmi", "riv", "lambda", "df"]]

    def traces(self, variable: str | None = None) -> dict:
        """``{method: array (m, iterations)}`` of chain means of ``variable`` (default: the focus)."""
        variable = variable or self.focus
        return {r.label: np.asarray(r.imputation.chain_means[variable]) for r in self.ok_runs
                if r.imputation is not None and variable in r.imputation.chain_means}

    # ---- narrative -----------------------------------------------------
    def _focus_estimate(self, label: str, term: str | None = None):
        comp = self.comparison()
        sel = comp.loc[(comp["method"] == label) & (comp["term"] == (term or self.focus_term))]
        return None if not len(sel) else sel.iloc[0]

    def narrative(self) -> list[str]:
        """Generated sentences, each stating a finding with this dataset's numbers."""
        out = []
        mc = self.missing_counts.set_index("variable")
        if self.focus in mc.index:
            n_missing = mc.loc[self.focus, "n_missing"]
            rows = plural(row_noun(self.time))
            count = (f"{n_missing:,} of {self.n_patients:,} {rows}" if not isinstance(n_missing, str)
                     else f"fewer than {self.min_cell} {rows}")
            model = ("random-intercept model" if not self.random_slopes else
                     f"model with a random intercept and random slopes on {', '.join(self.random_slopes)}")
            out.append(f"{self.focus} is missing for {count}. Each method made m = {self.m} imputations "
                       f"({self.iterations} iterations per chain), and each imputed data set was analysed with "
                       f"the {model} of {self.outcome}; the m fits were pooled by Rubin's rules.")
            if (mc["n_missing"] == 0).all():
                out.append("No model variable has a missing value: every method returns the data as they are, "
                           "so the methods agree by construction and this step has nothing to compare.")
            elif n_missing == 0:
                out.append(f"{self.focus} itself is complete; the methods differ only in how they impute the "
                           "other incomplete variables.")
        for r in self.runs:
            if not r.ok:
                out.append(f"{r.label} failed and has no estimates: {r.reason}")
            if r.cluster_means_dropped:
                listing = ", ".join(f"{var} ({info['clusters']} clusters; {info['needed']} needed for its "
                                    f"{info['cluster_columns']} cluster-level predictors)"
                                    for var, info in r.cluster_means_dropped.items())
                out.append(f"{r.label}: too few clusters observe {listing} to estimate the coefficients of "
                           "cluster-level predictors, so those imputation models leave out the cluster means.")
            for var, excess in r.extrapolated.items():
                out.append(f"{r.label}: some imputed values of {var} lie {excess:.3g} observed SDs beyond its "
                           "observed range; that imputation model is extrapolating and its results should not "
                           "be trusted without a look at the imputed values.")
        for term in self.focus_terms:
            out.extend(self._coefficient_sentences(term))
        out.extend(self._variation_sentences())
        out.extend(self._diagnostic_sentences())
        if self.residual_variance is not None and np.isfinite(self.residual_variance.p_value):
            out.append(self.residual_variance.sentence())
        if self.transport is not None:
            out.extend(self.transport.narrative())
        return out + list(self.notes)

    def _coefficient_sentences(self, term: str) -> list[str]:
        out = []
        parts = []
        for label in method_order(self.comparison()["method"]):
            row = self._focus_estimate(label, term)
            if row is not None:
                parts.append(f"{label} {row['estimate']:.3g} ({row['ci_lower']:.3g} to {row['ci_upper']:.3g})")
        if parts:
            against = f" against {self.focus} = {self.focus_levels[0]}" if self.focus_levels else ""
            out.append(f"The {term} coefficient{against} (95% interval): " + "; ".join(parts) + ".")
        truth = self.truth.get(term)
        if truth is not None and parts:
            comp = self.comparison()
            sel = comp.loc[comp["term"] == term].dropna(subset=["error"])
            best = sel.loc[sel["error"].abs().idxmin()]
            covering = sel.loc[sel["covers_truth"] == True, "method"].tolist()  # noqa: E712
            missing = sel.loc[sel["covers_truth"] == False, "method"].tolist()  # noqa: E712
            sentence = (f"The generating value is {truth:.3g}; closest is {best['method']} (off by "
                        f"{best['error']:+.3g}, {abs(best['error']) / best['std_error']:.1f} standard errors). "
                        f"Intervals covering it: {', '.join(covering) if covering else 'none'}")
            sentence += f"; missing it: {', '.join(missing)}." if missing else "."
            sentence += (" One registry's estimates scatter around the generating value by sampling error, "
                         "so closeness to it ranks the methods only loosely; the between-cluster variation "
                         "below is the more direct check.")
            out.append(sentence)
        ests = [self._focus_estimate(r.label, term) for r in self.ok_runs]
        ests = [e for e in ests if e is not None]
        if len(ests) >= 2:
            spread = max(e["estimate"] for e in ests) - min(e["estimate"] for e in ests)
            se = float(np.median([e["std_error"] for e in ests]))
            scale = "less than" if spread < se else "more than"
            out.append(f"The imputation methods differ by up to {spread:.3g} in the {term} coefficient, "
                       f"{scale} its typical standard error ({se:.3g}): the choice of method "
                       + ("matters less here than sampling error." if spread < se
                          else "matters more here than sampling error."))
        return out

    def _variation_sentences(self) -> list[str]:
        table = self.cluster_variation_table().set_index("method")
        obs = float(table.loc["observed values", "focus_icc"])
        icc = {m: float(table.loc[m, "focus_icc"]) for m in table.index
               if m.endswith("_mi") and np.isfinite(table.loc[m, "focus_icc"])}
        out = []
        if self.focus_levels:
            return [f"The between-cluster variation of {self.focus} is shown as its levels' shares by cluster "
                    "(observed and imputed), not as an ICC: it is categorical."]
        if not np.isfinite(obs) or not icc:
            return ["The between-cluster variation of the focus variable could not be measured "
                    "(the model could not be fitted)."]
        listing = ", ".join(f"{m} {v:.3f}" for m, v in icc.items())
        out.append(f"Between-cluster variation of {self.focus} (ICC of an intercept-only random-intercept model): "
                   f"{obs:.3f} among the observed values; after imputation {listing}.")

        def rel(a, b):
            return (a - b) / b if b > 0 else float("nan")

        ml = icc.get("multilevel_mi")
        # Multilevel imputation is the reference when it ran: the observed values' ICC is not the
        # full-data ICC when missingness depends on the cluster or on covariates.
        ref_label, ref = ("multilevel imputation", ml) if ml is not None else ("the observed values", obs)
        if "flat_mi" in icc:
            flat = icc["flat_mi"]
            d = rel(flat, ref)
            if d < -ICC_TOLERANCE:
                out.append(f"Flat imputation shrinks it, as the textbook says: its imputed values ignore the "
                           f"clusters and pull every cluster towards the overall mean (ICC {flat:.3f} vs "
                           f"{ref:.3f} with {ref_label}, {d:+.0%}).")
            elif d > ICC_TOLERANCE:
                out.append(f"Flat imputation does not shrink it here: the ICC is higher after flat imputation "
                           f"({flat:.3f}) than with {ref_label} ({ref:.3f}), contrary to the textbook "
                           "expectation; the other variables in its model carry cluster differences of their own.")
            else:
                out.append(f"Flat imputation barely changes it here (ICC {flat:.3f} vs {ref:.3f} with "
                           f"{ref_label}, {d:+.0%}): the textbook shrinkage is small when few values are "
                           "imputed or clusters differ little.")
        if "fixed_effects_mi" in icc:
            fe = icc["fixed_effects_mi"]
            d = rel(fe, ref)
            if d > ICC_TOLERANCE:
                out.append(f"Fixed-effects imputation inflates it (ICC {fe:.3f} vs {ref:.3f} with {ref_label}, "
                           f"{d:+.0%}): each cluster's intercept is estimated without shrinkage, so the noise of "
                           "small clusters' intercepts is added to their imputed values.")
            else:
                out.append(f"Fixed-effects imputation does not inflate it here (ICC {fe:.3f} vs {ref:.3f} with "
                           f"{ref_label}, {d:+.0%}): with about {self.n_patients / self.n_clusters:.0f} patients "
                           "per cluster the cluster intercepts are estimated precisely enough for the textbook "
                           "inflation to stay small.")
        sds = table["outcome_sd"].dropna()
        if len(sds):
            iccs = table["outcome_icc"]
            listing = ", ".join(f"{m} {v:.3g}" + (f" (ICC {iccs[m]:.3f})" if np.isfinite(iccs[m]) else "")
                                for m, v in sds.items())
            scale = " (latent logistic scale)" if self.outcome_family == "binomial" else ""
            out.append(f"The analysis model's cluster SD ({self.sd_term}) and ICC{scale}: {listing}.")
            out.extend(self._small_cluster_sentences())
        return out

    def _small_cluster_sentences(self) -> list[str]:
        """The caveat on a binary outcome's cluster SD when clusters are small (:data:`SMALL_CLUSTER_MEAN`);
        random-intercept models of patients in clusters only (not visits, not random slopes: not measured)."""
        per_cluster = self.n_patients / self.n_clusters if self.n_clusters else float("nan")
        if (self.outcome_family != "binomial" or self.time or self.random_slopes
                or not per_cluster < SMALL_CLUSTER_MEAN):
            return []
        return [f"With {per_cluster:.1f} patients per cluster on average, every method's cluster SD above is "
                "likely low, by the Laplace fit of the analysis model itself, even where no value is missing: "
                "in simulation with complete data it came out 7.5% below the truth at 4.6 patients per site and "
                "16% below at 2.6, while the coefficients stayed within 1%; complete cases, with fewer patients "
                "per site, came out lower still (22% and 27% below) "
                "(bench/ri_logistic_small_clusters.py in hmlib's repository)."]

    def _diagnostic_sentences(self) -> list[str]:
        out = []
        rh = self.rhat_table()
        if len(rh):
            high = rh.loc[rh["rhat"] > RHAT_THRESHOLD]
            worst = rh.loc[rh["rhat"].idxmax()] if rh["rhat"].notna().any() else None
            if worst is None:
                out.append("R-hat could not be computed (too few iterations per chain).")
            elif len(high):
                shown = ", ".join(f"{r.variable} in {r.method} ({r.rhat:.2f})" for r in high.itertuples())
                out.append(f"R-hat of the chain means is above {RHAT_THRESHOLD} for {shown}: those chains may "
                           "not have mixed yet; more iterations would settle it (with few iterations R-hat "
                           "is itself noisy).")
            else:
                out.append(f"R-hat of the chain means is at most {worst['rhat']:.2f} for every imputed variable "
                           f"and method (largest: {worst['variable']} in {worst['method']}).")
        fmi = self.fmi_table()
        for term in self.focus_terms:
            sel = fmi.loc[fmi["term"] == term]
            if len(sel):
                listing = ", ".join(f"{r.method} {r.fmi:.2f}" for r in sel.itertuples())
                out.append(f"Fraction of missing information for the {term} coefficient: {listing}.")
        return out

    # ---- artifact ------------------------------------------------------
    def to_artifact(self) -> "ImputationArtifact":
        """The typed record of step 3 (:class:`ImputationArtifact`, from :meth:`to_dict`)."""
        return ImputationArtifact.from_json(to_jsonable(self.to_dict()))

    def figures(self) -> dict:
        """Step 3's figures by section: estimates, cluster_variation, distributions, transport, diagnostics."""
        comparison = self.comparison()
        # the focus coefficient(s) (every level's, for a categorical focus) and the cluster SD; every term is in
        # the table below it (and step 4's figure)
        out = {"estimates": [figures.forest_plot(comparison, [*self.focus_terms, self.sd_term], failed=self.failed)],
               "cluster_variation": [figures.cluster_variation_plot(self.cluster_variation_table(),
                                                                    focus=self.focus, cluster=self.cluster)],
               "distributions": [], "transport": [], "diagnostics": []}
        if len(self.distributions):
            out["distributions"].append(figures.distribution_plot(
                self.distributions, self.distribution_clusters, focus=self.focus, min_cell=self.min_cell))
        if len(self.level_distributions):
            out["distributions"].append(figures.level_distribution_plot(
                self.level_distributions, self.distribution_clusters, focus=self.focus, levels=self.focus_levels,
                min_cell=self.min_cell))
        if self.transport is not None and len(self.transport.table):
            out["transport"].append(figures.transport_plot(self.transport))
        traces = self.traces()
        if traces:
            out["diagnostics"].append(figures.trace_plot(traces, variable=self.focus))
        out["diagnostics"].append(figures.fmi_plot(self.fmi_table()))
        return out

    def to_dict(self) -> dict:
        """JSON-ready aggregates for ``artifacts/imputation.json`` (no patient-level rows)."""
        methods = []
        for r in self.runs:
            methods.append({
                "method": r.label, "engine_method": r.spec.method, "description": r.spec.description,
                "options": {k: v for k, v in r.spec.options.items()}, "status": r.status, "reason": r.reason,
                "seconds_impute": r.seconds_impute, "seconds_analyse": r.seconds_analyse, "notes": list(r.notes),
                "models": dict(r.models), "rhat": dict(r.rhat),
                "fallbacks": {k: {"strata": v["strata"], "of": v["of"], "reasons": dict(v["reasons"])}
                              for k, v in r.fallbacks.items()},
                "cluster_means_dropped": {k: dict(v) for k, v in r.cluster_means_dropped.items()},
                "extrapolated": dict(r.extrapolated),
                "outcome_icc": r.pooled.icc if r.pooled is not None else None,
                "focus_variation": dict(r.focus_variation),
                "pooling_notes": list(r.pooled.notes) if r.pooled is not None else [],
            })
        traces = {k: v.tolist() for k, v in self.traces().items()}
        return {
            "outcome": self.outcome, "outcome_family": self.outcome_family, "focus": self.focus,
            "n_patients": self.n_patients, "n_clusters": self.n_clusters, "m": self.m,
            "iterations": self.iterations, "min_cell": self.min_cell,
            "methods": methods, "failed": self.failed,
            "estimates": self.estimates.to_dict(orient="records"),
            "comparison": self.comparison().to_dict(orient="records"),
            "complete_case_source": self.complete_case_source,
            "cluster_variation": self.cluster_variation_table().to_dict(orient="records"),
            "rhat": self.rhat_table().to_dict(orient="records"),
            "fmi": self.fmi_table().to_dict(orient="records"),
            "focus_traces": traces,
            "missing_counts": self.missing_counts.to_dict(orient="records"),
            "distribution_clusters": self.distribution_clusters.assign(
                cluster=self.distribution_clusters["cluster"].astype(str)).to_dict(orient="records"),
            "distributions": self.distributions.assign(
                cluster=self.distributions["cluster"].astype(str)).to_dict(orient="records"),
            "level_distributions": self.level_distributions.assign(
                cluster=self.level_distributions.get("cluster", pd.Series(dtype=object)).astype(str)
            ).to_dict(orient="records"),
            "focus_levels": list(self.focus_levels),
            "residual_variance": None if self.residual_variance is None else self.residual_variance.__dict__,
            "transport": None if self.transport is None else self.transport.to_dict(),
            "narrative": self.narrative(), "notes": list(self.notes),
        }


def _focus_columns(variation: dict) -> dict:
    """The focus variable's columns of the cluster-variation table from a ``completed_variation`` dict."""
    return {"focus_sd": variation.get("cluster_sd", np.nan), "focus_icc": variation.get("icc", np.nan),
            "focus_icc_min": variation.get("icc_min", np.nan), "focus_icc_max": variation.get("icc_max", np.nan)}


# --------------------------------------------------------------------------
# The typed artifact
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class StratumFallback(Record):
    """Stratified imputation of one variable: strata that fell back to the flat model."""

    strata: int
    of: int
    reasons: dict[str, int]


@dataclass(frozen=True)
class MethodRecord(Record):
    """One imputation method as run (a row of ``methods``)."""

    method: str
    engine_method: str
    description: str
    options: dict
    status: str
    reason: str
    seconds_impute: float
    seconds_analyse: float
    notes: tuple[str, ...]
    models: dict[str, str]
    rhat: dict[str, float | None]
    fallbacks: dict[str, StratumFallback]
    cluster_means_dropped: dict[str, dict[str, int]]
    extrapolated: dict[str, float | None]
    outcome_icc: float | None
    focus_variation: dict[str, float | None]
    pooling_notes: tuple[str, ...]


@dataclass(frozen=True)
class FmiRecord(Record):
    """Rubin's diagnostics of one coefficient under one method (a row of ``fmi``).

    The JSON key of :attr:`lambda_` is ``lambda`` (a Python keyword).
    """

    method: str
    term: str
    fmi: float | None
    riv: float | None
    lambda_: float | None
    df: float | None

    def to_json(self) -> dict:
        """The row as JSON, with the key ``lambda``."""
        out = super().to_json()
        out["lambda"] = out.pop("lambda_")
        return out

    @classmethod
    def from_json(cls, data: dict, *, where: str | None = None):
        """Build the row from parsed JSON (key ``lambda``); ArtifactError names a bad field."""
        where = where or cls.__name__
        if isinstance(data, dict):
            if "lambda_" in data:
                raise ArtifactError(f"{where}: unknown field(s) lambda_ (not in {cls.__name__})")
            if "lambda" not in data:
                raise ArtifactError(f"{where}: field(s) lambda missing (required by {cls.__name__})")
            data = {("lambda_" if key == "lambda" else key): value for key, value in data.items()}
        return super().from_json(data, where=where)


@dataclass(frozen=True)
class RhatRecord(Record):
    """Split R-hat of one imputed variable's chain means under one method (a row of ``rhat``)."""

    method: str
    variable: str
    rhat: float | None


@dataclass(frozen=True)
class TransportFailure(Record):
    """A masked imputation of the transport check that failed."""

    cluster: str
    method: str
    reason: str


@dataclass(frozen=True)
class TransportRecord(Record):
    """The published transport check (``transport``); ``table`` is displayed only."""

    focus: str
    methods: tuple[str, ...]
    m: int
    iterations: int
    max_clusters: int
    n_eligible: int
    n_checked: int
    bias_threshold_sd: float
    coverage_threshold: float
    spread_threshold_sd: float
    level: float
    scale_sd: float | None
    min_cell: int
    table: list
    flagged: dict[str, tuple[str, ...]]
    failures: tuple[TransportFailure, ...]
    seconds: float
    narrative: tuple[str, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class ResidualVarianceRecord(Record):
    """The residual-variance check of the focus variable (:class:`~hmlib.stats.imputation.ResidualVarianceCheck`)."""

    variable: str
    n_clusters: int
    statistic: float | None
    p_value: float | None
    sd_log_sd: float | None
    heterogeneous: bool
    alpha: float
    min_sd_log_sd: float


@dataclass(frozen=True)
class ImputationArtifact(Artifact):
    """The record of step 3 (``artifacts/imputation.json``).

    ``methods``, ``fmi``, ``rhat``, ``transport`` and ``residual_variance``
    are typed (the report and step 5 read their fields); the other tables
    are free JSON, displayed only.
    """

    KEY: ClassVar[str] = "imputation"
    VERSION: ClassVar[int] = 1

    cluster_variation: list
    comparison: list
    complete_case_source: str
    distribution_clusters: list
    distributions: list
    estimates: list
    failed: dict[str, str]
    fmi: tuple[FmiRecord, ...]
    focus: str
    focus_levels: tuple[str, ...]
    focus_traces: dict
    iterations: int
    level_distributions: list
    m: int
    methods: tuple[MethodRecord, ...]
    min_cell: int
    missing_counts: list
    n_clusters: int
    n_patients: int
    narrative: tuple[str, ...]
    notes: tuple[str, ...]
    outcome: str
    outcome_family: str
    residual_variance: ResidualVarianceRecord | None
    rhat: tuple[RhatRecord, ...]
    transport: TransportRecord | None
