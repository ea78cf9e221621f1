"""Step 3: flat vs hierarchical multiple imputation, side by side.

The same registry is imputed four ways (:mod:`hmlib.stats.imputation`), each
imputation is analysed with the report's random-intercept model and pooled
by Rubin's rules (:mod:`hmlib.stats.pooling`), and the results are set next to
the complete-case fit and, for simulated data, the truth.

Methods (labels as written to ``estimates.csv``)
-----------------------------------------------
``flat_mi``
    Single-level chained equations with predictive mean matching for
    continuous variables; the clusters are ignored. The comparator (R's
    ``mice`` with ``pmm``).
``stratified_mi``
    The flat models fitted separately within each cluster (``strata`` is
    the cluster by default: the classical "separate imputation per group").
    Where a cluster is too small for its model, the engine imputes it from
    the flat model instead. When that happens in at least
    ``max_fallback_share`` (default half) of the strata for some variable,
    the result is mostly flat imputation under another name, so the method
    is reported as **failed** with that reason (and no estimates are
    written for it); below that share, the fall-backs are listed in its
    notes.
``fixed_effects_mi``
    Single-level models with one intercept per cluster.
``multilevel_mi``
    Random-intercept chained equations (``2l.pan``; with
    ``cluster_residual_variance`` ``2l.norm``).

Any method whose imputation or analysis raises is reported as failed with
its reason; it is never dropped silently.

Common or cluster-specific residual variance
--------------------------------------------
``2l.norm`` (a residual variance per cluster, Kasim & Raudenbush 1998)
protects against clusters whose focus variable is noisier than others', at
the price of estimating one variance per cluster. With
``cluster_residual_variance="auto"`` (the default) the choice follows the
data: :func:`hmlib.stats.imputation.residual_variance_check` tests whether the within-cluster
residual SD of the focus variable (given the other predictors and the
outcome, with cluster fixed effects) differs between clusters, by the
Brown-Forsythe test, and estimates how much the log residual SD varies
between clusters beyond sampling noise (method of moments:
``var(log s_j) - mean(1 / (2 (n_j - 1)))``). ``2l.norm`` is used when the
test rejects at ``alpha = 0.01`` *and* that SD is at least 0.2 (residual
SDs of the middle 80 % of clusters spanning a factor of about 1.7);
otherwise ``2l.pan``. Measured (``bench/results/residual_variance.json``):
on six demo registries (common residual variance by construction; the
default demo gives p = 0.29 and an SD of 0.11) both choices were as close to
the full-data estimate of the lactate coefficient (RMSE 0.049 vs 0.048) but
2l.norm's intervals were wider (mean SE 0.110 vs 0.101; FMI 0.56 vs 0.45).
On the Brandsma schools data (p = 0.27) 2l.norm moved the ``lpr``
coefficient from 0.662 to 0.639 and its SE from 0.018 to 0.028: noise from
216 separately estimated variances, not a correction. Hence 2l.pan unless
the data show heterogeneity. The threshold is a rule of
thumb, not a theorem; the step reports the check so a reader can disagree.

Between-cluster variation by method
-----------------------------------
For each method, the focus variable's between-cluster variation is
measured in every completed data set by an intercept-only random-intercept
model (gaussian; latent-scale logistic for a 0/1 variable): its cluster SD
and intraclass correlation (ICC), averaged over the ``m`` data sets. The
reference is the same model fitted to the observed values only (which,
under missingness that depends on the cluster, is itself only an estimate
of the full-data ICC). The textbook expectation (Luedtke, Robitzsch &
Grund 2017; Drechsler 2015): flat imputation shrinks the ICC (imputed
values ignore the clusters), fixed-effects imputation inflates it (each
cluster's intercept is estimated without shrinkage, so small clusters'
noise is added), multilevel imputation keeps it. The narrative states what
this dataset's numbers actually show. The analysis model's own cluster SD
(``sd(<cluster>)``, pooled on the log scale) and ICC
(:attr:`hmlib.stats.pooling.PooledResult.icc`: gaussian from the pooled cluster
and residual SDs, binomial on the latent scale) are reported beside it.

Diagnostics: split R-hat of the chain means of every imputed variable
(:func:`hmlib.stats.imputation.split_rhat`), and the fraction of missing
information per coefficient (Rubin's rules, :mod:`hmlib.stats.pooling`).

References
----------
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., ch. 7.
Drechsler J (2015). Multiple imputation of multilevel missing data: rigor
versus simplicity. J Educ Behav Stat 40(1):69-95.
Luedtke O, Robitzsch A, Grund S (2017). Multiple imputation of missing data
in multilevel designs: a comparison of different strategies. Psychol
Methods 22(1):141-165.
Kasim RM, Raudenbush SW (1998). Application of Gibbs sampling to nested
variance components models with heterogeneous within-group variance.
J Educ Behav Stat 23(2):93-116.
Brown MB, Forsythe AB (1974). Robust tests for the equality of variances.
J Am Stat Assoc 69(346):364-367.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact
from hmlib.figures import imputation as figures
from hmlib.stats.design import fit_analysis_model
from hmlib.exceptions import DataError, FitError
from hmlib.stats.imputation import (ImputationResult, ResidualVarianceCheck, cluster_variation,
                                    completed_variation, impute, residual_variance_check)
from hmlib.stats.pooling import analyse_imputations, intraclass_correlation
from hmlib.privacy import suppress_counts
from hmlib.results import ESTIMATE_COLUMNS, estimate_rows, load_truth, read_estimates, to_jsonable
from hmlib.settings import run_sizes
from hmlib.steps.base import Step, StepContext
from hmlib.steps.imputation_transport import transport_check

__all__ = ["MethodSpec", "default_methods", "impute_registry", "MethodRun", "ImputationStepResult",
           "imputation_step",
           "ImputationArtifact", "run", "STEP", "METHOD_ORDER"]

METHOD_ORDER = ("complete_case", "flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi")
#: Relative difference of ICCs below which the narrative calls them "about the same".
ICC_TOLERANCE = 0.05
#: R-hat above this is flagged in the narrative (chain means over few iterations are noisy).
RHAT_THRESHOLD = 1.1

_ERRORS = (FitError, DataError, np.linalg.LinAlgError, ValueError, FloatingPointError)


# --------------------------------------------------------------------------
# Methods
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


def default_methods(cluster: str, *, cluster_residual_variance: bool = False) -> tuple:
    """The four methods of the comparison (module docstring)."""
    model = "2l.norm" if cluster_residual_variance else "2l.pan"
    return (
        MethodSpec("flat_mi", "flat", {"continuous": "pmm"},
                   "single-level chained equations, predictive mean matching; clusters ignored (mice pmm)"),
        MethodSpec("stratified_mi", "stratified", {"strata": cluster},
                   f"the flat models fitted separately within each {cluster}"),
        MethodSpec("fixed_effects_mi", "fixed_effects", {},
                   f"single-level models with one fixed intercept per {cluster}"),
        MethodSpec("multilevel_mi", "multilevel", {"cluster_residual_variance": bool(cluster_residual_variance)},
                   f"random-intercept chained equations ({model}; cluster means as predictors where enough "
                   "clusters observe the variable)"),
    )


def impute_registry(registry, *, method: str, m: int | None = None, iterations: int | None = None,
                    continuous: str = "norm", **options) -> ImputationResult:
    """:func:`hmlib.stats.imputation.impute` with the roles, kinds, levels and seed of a registry.

    Parameters
    ----------
    registry : hmlib.data.Registry
    method : str
        Engine method (:data:`hmlib.stats.imputation.METHODS`).
    m, iterations : int, optional
        Default: the run sizes of the params' ``fast``
        (:func:`hmlib.settings.run_sizes`: ``imputations``, ``iterations``).
    continuous : {"norm", "pmm"}
    **options
        Further keyword arguments of :func:`hmlib.stats.imputation.impute`.

    Returns
    -------
    hmlib.stats.imputation.ImputationResult
    """
    p = registry.params
    sizes = run_sizes(bool(getattr(p, "fast", False)))
    return impute(registry.frame, method=method, cluster=p.cluster, outcome=p.outcome,
                  outcome_family=p.outcome_family, predictors=list(p.predictors), kinds=registry.kinds,
                  levels=registry.levels, cluster_covariates=list(p.cluster_covariates),
                  higher_levels=list(p.higher_levels), m=m or sizes.imputations,
                  iterations=iterations or sizes.iterations, seed=p.seed, continuous=continuous, **options)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------
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
        The engine's and the pooling's remarks.
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
        return self.spec.label

    @property
    def ok(self) -> bool:
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
    transport : hmlib.stats.transport.TransportResult or None
    min_cell : int
    notes : list of str
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

    # ---- tables ---------------------------------------------------------
    def run(self, label: str) -> MethodRun:
        """The run of one method by label."""
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(f"no method {label!r}; methods are {[r.label for r in self.runs]}")

    @property
    def ok_runs(self) -> list:
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
        return f"sd({self.cluster})"

    @property
    def focus_term(self) -> str:
        """The focus variable's coefficient: its name, or its first level (``name[level]``) if categorical."""
        terms = list(dict.fromkeys(self.comparison()["term"]))
        if self.focus in terms:
            return self.focus
        return next((t for t in terms if t.startswith(f"{self.focus}[")), self.focus)

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
        order = [m for m in METHOD_ORDER if m in wide.columns] + [m for m in wide.columns if m not in METHOD_ORDER]
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
        """``method, term, fmi, riv, lambda, df`` (the cluster SD on the log scale)."""
        parts = [r.pooled.diagnostics.assign(method=r.label) for r in self.ok_runs]
        if not parts:
            return pd.DataFrame(columns=["method", "term", "fmi", "riv", "lambda", "df"])
        return pd.concat(parts, ignore_index=True).loc[:, ["method", "term", "fmi", "riv", "lambda", "df"]]

    def traces(self, variable: str | None = None) -> dict:
        """``{method: array (m, iterations)}`` of chain means of ``variable`` (default: the focus)."""
        variable = variable or self.focus
        return {r.label: np.asarray(r.imputation.chain_means[variable]) for r in self.ok_runs
                if r.imputation is not None and variable in r.imputation.chain_means}

    # ---- narrative -----------------------------------------------------
    def _focus_estimate(self, label: str):
        comp = self.comparison()
        sel = comp.loc[(comp["method"] == label) & (comp["term"] == self.focus_term)]
        return None if not len(sel) else sel.iloc[0]

    def narrative(self) -> list[str]:
        """Generated sentences, each stating a finding with this dataset's numbers."""
        out = []
        mc = self.missing_counts.set_index("variable")
        if self.focus in mc.index:
            n_missing = mc.loc[self.focus, "n_missing"]
            count = (f"{n_missing:,} of {self.n_patients:,} patients" if not isinstance(n_missing, str)
                     else f"fewer than {self.min_cell} patients")
            out.append(f"{self.focus} is missing for {count}. Each method made m = {self.m} imputations "
                       f"({self.iterations} iterations per chain), and each imputed data set was analysed with "
                       f"the random-intercept model of {self.outcome}; the m fits were pooled by Rubin's rules.")
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
        out.extend(self._coefficient_sentences())
        out.extend(self._variation_sentences())
        out.extend(self._diagnostic_sentences())
        if self.residual_variance is not None and np.isfinite(self.residual_variance.p_value):
            out.append(self.residual_variance.sentence())
        if self.transport is not None:
            out.extend(self.transport.narrative())
        return out + list(self.notes)

    def _coefficient_sentences(self) -> list[str]:
        out = []
        parts = []
        for label in METHOD_ORDER:
            row = self._focus_estimate(label)
            if row is not None:
                parts.append(f"{label} {row['estimate']:.3g} ({row['ci_lower']:.3g} to {row['ci_upper']:.3g})")
        term = self.focus_term
        if parts:
            out.append(f"The {term} coefficient (95% interval): " + "; ".join(parts) + ".")
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
        ests = [self._focus_estimate(r.label) for r in self.ok_runs]
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
        if not np.isfinite(obs) or not icc:
            return ["The between-cluster variation of the focus variable could not be measured "
                    f"({self.focus} is categorical or the model could not be fitted)."]
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
        return out

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
        sel = fmi.loc[fmi["term"] == self.focus_term]
        if len(sel):
            listing = ", ".join(f"{r.method} {r.fmi:.2f}" for r in sel.itertuples())
            out.append(f"Fraction of missing information for the {self.focus_term} coefficient: {listing}.")
        return out

    # ---- artifact ------------------------------------------------------
    def to_artifact(self) -> "ImputationArtifact":
        """The typed record of step 3."""
        return ImputationArtifact.from_json(to_jsonable(self.to_dict()))

    def figures(self) -> dict:
        """Step 3's figures by section: estimates, cluster_variation, distributions, transport, diagnostics."""
        comparison = self.comparison()
        first = [self.focus_term, self.sd_term]
        terms = first + [t for t in dict.fromkeys(comparison["term"]) if t not in first]
        out = {"estimates": [figures.forest_plot(comparison, terms, failed=self.failed)],
               "cluster_variation": [figures.cluster_variation_plot(self.cluster_variation_table(),
                                                                    focus=self.focus, cluster=self.cluster)],
               "distributions": [], "transport": [], "diagnostics": []}
        if len(self.distributions):
            out["distributions"].append(figures.distribution_plot(
                self.distributions, self.distribution_clusters, focus=self.focus, min_cell=self.min_cell))
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
            "residual_variance": None if self.residual_variance is None else self.residual_variance.__dict__,
            "transport": None if self.transport is None else self.transport.to_dict(),
            "narrative": self.narrative(), "notes": list(self.notes),
        }


def _focus_columns(variation: dict) -> dict:
    return {"focus_sd": variation.get("cluster_sd", np.nan), "focus_icc": variation.get("icc", np.nan),
            "focus_icc_min": variation.get("icc_min", np.nan), "focus_icc_max": variation.get("icc_max", np.nan)}


# --------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------
def _complete_case_rows(registry, estimates_path) -> tuple[pd.DataFrame, str, list]:
    if estimates_path is not None:
        table = read_estimates(estimates_path)
        rows = table.loc[table["method"] == "complete_case"]
        if len(rows):
            return rows.loc[:, list(ESTIMATE_COLUMNS)].reset_index(drop=True), "estimates.csv", []
    p = registry.params
    try:
        fit = fit_analysis_model(registry.frame, outcome=p.outcome, predictors=list(p.predictors),
                                 cluster=p.cluster, family=p.outcome_family, levels=registry.levels)
    except _ERRORS as exc:
        return (pd.DataFrame(columns=list(ESTIMATE_COLUMNS)), "unavailable",
                [f"The complete-case model could not be fitted for comparison: {exc}"])
    return estimate_rows(fit, "complete_case"), "fitted here", []


def _missing_counts(frame: pd.DataFrame, columns, min_cell: int) -> pd.DataFrame:
    table = pd.DataFrame({"variable": list(columns),
                          "n": len(frame),
                          "n_missing": [int(frame[c].isna().sum()) for c in columns]})
    table["n_observed"] = table["n"] - table["n_missing"]
    safe = suppress_counts(table, ["n_missing", "n_observed"], min_cell, total_column="n",
                           column_totals=False)
    return safe.display


def _distribution_clusters(frame, focus, cluster, n_clusters: int) -> list:
    missing = frame[focus].isna().groupby(frame[cluster].to_numpy()).agg(["sum", "size"])
    missing = missing.loc[missing["sum"] > 0]
    order = sorted(missing.index.tolist(), key=lambda c: (-int(missing.loc[c, "sum"]), str(c)))
    chosen = order[:n_clusters]
    never = [c for c in order if missing.loc[c, "sum"] == missing.loc[c, "size"]]
    if never and not any(c in chosen for c in never):
        chosen = chosen[:max(n_clusters - 1, 0)] + [never[0]]
    return chosen


def _distributions(frame, runs, focus, cluster, chosen, min_cell: int, bins: int = 30):
    values = frame[focus].to_numpy(dtype=float)
    labels = frame[cluster].to_numpy()
    missing = np.isnan(values)
    # {method: array (m, n_missing)} of the imputed values
    imputed = {r.label: np.vstack([done[focus].to_numpy(dtype=float)[missing] for done in r.imputation.completed])
               for r in runs if r.imputation is not None}
    pooled = np.concatenate([values[~missing], *(v.ravel() for v in imputed.values())])
    pooled = pooled[np.isfinite(pooled)]
    if pooled.size == 0 or not chosen:
        return pd.DataFrame(columns=["cluster", "source", "bin_left", "bin_right", "density"])
    # 1st-99th percentile range: no bin edge is an individual's extreme value
    lo, hi = np.quantile(pooled, [0.01, 0.99])
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    rows = []
    missing_labels = labels[missing]

    def add(label, source, x):
        x = np.clip(x[np.isfinite(x)], lo, hi)
        if x.size == 0:
            return
        dens, _ = np.histogram(x, bins=edges, density=True)
        rows.extend({"cluster": label, "source": source, "bin_left": a, "bin_right": b, "density": d}
                    for a, b, d in zip(edges[:-1], edges[1:], dens))

    for label in chosen:
        in_cluster = labels == label
        obs = values[in_cluster & ~missing]
        if obs.size >= min_cell:
            add(label, "observed", obs)
        for source, draws in imputed.items():
            add(label, source, draws[:, missing_labels == label].ravel())
    return pd.DataFrame(rows, columns=["cluster", "source", "bin_left", "bin_right", "density"])


def imputation_step(registry, *, methods=None, m: int | None = None, iterations: int | None = None,
                    estimates_path: str | Path | None = None, cluster_residual_variance="auto",
                    max_fallback_share: float = 0.5, transport: bool = True, transport_options: dict | None = None,
                    n_distribution_clusters: int = 4) -> ImputationStepResult:
    """Run step 3 on a checked registry.

    Parameters
    ----------
    registry : hmlib.data.Registry
    methods : sequence of MethodSpec, optional
        Default :func:`default_methods`.
    m, iterations : int, optional
        Imputations and iterations per chain; default 20 and 10, or 5 and 5
        when the params say ``fast: true`` (:func:`hmlib.stats.imputation.impute_registry`).
    estimates_path : path, optional
        ``estimates.csv`` to read the ``complete_case`` rows from (fitted
        here when absent).
    cluster_residual_variance : bool or "auto"
        Multilevel method: common (False, 2l.pan) or cluster-specific (True,
        2l.norm) residual variances; "auto" decides by
        :func:`hmlib.stats.imputation.residual_variance_check` (module docstring).
    max_fallback_share : float
        A stratified run that fell back to the flat model in at least this
        share of the strata for some variable is reported as failed.
    transport : bool
        Run the transport check (:func:`hmlib.stats.transport.transport_check`)
        for the flat and multilevel methods.
    transport_options : dict, optional
        Keyword arguments for the transport check (thresholds,
        ``max_clusters``, ``m``).
    n_distribution_clusters : int
        Clusters shown in the observed-vs-imputed distributions.

    Returns
    -------
    ImputationStepResult
    """
    p = registry.params
    frame = registry.frame
    fast = bool(getattr(p, "fast", False))
    m = int(m or (5 if fast else 20))
    iterations = int(iterations or (5 if fast else 10))
    focus = p.focus
    kind = registry.kinds.get(focus, "numeric")
    observed_focus = frame[focus].dropna()
    binary_focus = kind == "numeric" and len(observed_focus) > 0 and set(
        pd.unique(observed_focus.astype(float))) <= {0.0, 1.0}
    numeric_focus = kind == "numeric"
    notes: list[str] = []

    rv_check = None
    if numeric_focus and not binary_focus and len(observed_focus):
        try:
            rv_check = residual_variance_check(frame, variable=focus, cluster=p.cluster,
                                               covariates=[*p.predictors, p.outcome], levels=registry.levels)
        except _ERRORS as exc:
            notes.append(f"The residual-variance check of {focus} could not be run: {exc}")
    if cluster_residual_variance == "auto":
        hetero = bool(rv_check is not None and rv_check.heterogeneous)
    else:
        hetero = bool(cluster_residual_variance)
        rv_check = None if rv_check is None else ResidualVarianceCheck(
            **{**rv_check.__dict__, "heterogeneous": hetero})
        notes.append(f"The multilevel imputation was set to "
                     f"{'cluster-specific' if hetero else 'a common'} residual variance by the caller.")
    specs = tuple(methods) if methods is not None else default_methods(p.cluster, cluster_residual_variance=hetero)

    runs = []
    for spec in specs:
        run = MethodRun(spec=spec, status="ok")
        started = time.perf_counter()
        try:
            imputation = impute_registry(registry, method=spec.method, m=m, iterations=iterations, **spec.options)
        except _ERRORS as exc:
            run.status, run.reason = "failed", f"imputation failed: {exc}"
            run.seconds_impute = time.perf_counter() - started
            runs.append(run)
            continue
        run.seconds_impute = time.perf_counter() - started
        run.notes, run.models, run.rhat = list(imputation.notes), dict(imputation.models), dict(imputation.rhat)
        run.fallbacks = {k: dict(v) for k, v in imputation.fallbacks.items()}
        run.cluster_means_dropped = {k: dict(v) for k, v in imputation.cluster_means_dropped.items()}
        run.extrapolated = dict(imputation.extrapolated)
        worst = max(((v, f["strata"] / f["of"]) for v, f in run.fallbacks.items() if f["of"]),
                    key=lambda x: x[1], default=None)
        if worst is not None and worst[1] >= max_fallback_share:
            var = worst[0]
            broken, total = run.fallbacks[var]["strata"], run.fallbacks[var]["of"]
            run.status = "failed"
            run.reason = (f"the strata are too small: for {var} the stratified model could not be fitted in "
                          f"{broken} of {total} strata (too few or no observed values), so most of its imputations "
                          "would come from the flat model; it is reported as failed rather than as a stratified "
                          "result.")
            runs.append(run)
            continue
        started = time.perf_counter()
        try:
            run.pooled = analyse_imputations(imputation, outcome=p.outcome, predictors=list(p.predictors),
                                             cluster=p.cluster, family=p.outcome_family, levels=registry.levels,
                                             method=spec.label)
        except _ERRORS as exc:
            run.status, run.reason = "failed", f"the analysis model could not be fitted to the imputed data: {exc}"
        run.seconds_analyse = time.perf_counter() - started
        if run.ok:
            run.imputation = imputation
            if numeric_focus:
                run.focus_variation = completed_variation(imputation.completed, focus, p.cluster,
                                                          binary=binary_focus)
        runs.append(run)

    focus_observed = (cluster_variation(frame[focus].to_numpy(dtype=float), frame[p.cluster].to_numpy(),
                                        binary=binary_focus)
                      if numeric_focus else {"cluster_sd": float("nan"), "icc": float("nan")})
    complete_case, cc_source, cc_notes = _complete_case_rows(registry, estimates_path)
    notes.extend(cc_notes)
    min_cell = p.privacy.min_cell
    model_columns = [c for c in [p.outcome, *p.predictors, *p.cluster_covariates] if c in frame.columns]
    missing_counts = _missing_counts(frame, model_columns, min_cell)

    ok_runs = [r for r in runs if r.ok]
    chosen = _distribution_clusters(frame, focus, p.cluster, n_distribution_clusters) if numeric_focus else []
    distributions = (_distributions(frame, ok_runs, focus, p.cluster, chosen, min_cell) if numeric_focus
                     else pd.DataFrame(columns=["cluster", "source", "bin_left", "bin_right", "density"]))
    per_cluster = frame.groupby(p.cluster, observed=True)[focus].agg(n="size", n_observed="count")
    dc = per_cluster.loc[chosen].reset_index().rename(columns={p.cluster: "cluster"}) if chosen else pd.DataFrame(
        columns=["cluster", "n", "n_observed"])
    dc["n_missing"] = dc["n"] - dc["n_observed"]
    dc["never_observed"] = dc["n_observed"] == 0
    if len(dc):
        dc = suppress_counts(dc, ["n_missing", "n_observed"], min_cell, total_column="n").display

    transport_result = None
    if transport and numeric_focus:
        backgrounds = {r.label: r.imputation.completed for r in ok_runs
                       if r.label in ("flat_mi", "multilevel_mi")}
        chosen_methods = {r.label: (r.spec.method, r.spec.options) for r in ok_runs
                          if r.label in ("flat_mi", "multilevel_mi")}
        if chosen_methods:
            try:
                options = {"iterations": iterations, **dict(transport_options or {})}
                transport_result = transport_check(registry, methods=chosen_methods, backgrounds=backgrounds,
                                                   **options)
            except _ERRORS as exc:
                notes.append(f"The transport check could not be run: {exc}")
        else:
            notes.append("The transport check needs the flat or the multilevel imputation, and both failed.")
    elif transport:
        notes.append(f"The transport check needs a numeric focus variable; {focus} is categorical.")

    return ImputationStepResult(
        outcome=p.outcome, outcome_family=p.outcome_family, cluster=p.cluster, focus=focus,
        n_patients=int(len(frame)), n_clusters=int(frame[p.cluster].nunique()), m=m, iterations=iterations,
        runs=runs, complete_case=complete_case, complete_case_source=cc_source, truth=load_truth(p.truth),
        residual_variance=rv_check, focus_observed=focus_observed, missing_counts=missing_counts,
        distributions=distributions, distribution_clusters=dc, min_cell=min_cell,
        transport=transport_result, notes=notes)


@dataclass(frozen=True)
class ImputationArtifact(Artifact):
    """The record of step 3 (``artifacts/imputation.json``)."""

    KEY: ClassVar[str] = "imputation"
    VERSION: ClassVar[int] = 1

    cluster_variation: list
    comparison: list
    complete_case_source: str
    distribution_clusters: list
    distributions: list
    estimates: list
    failed: dict
    fmi: list
    focus: str
    focus_traces: dict
    iterations: int
    m: int
    methods: list
    min_cell: int
    missing_counts: list
    n_clusters: int
    n_patients: int
    narrative: list
    notes: list
    outcome: str
    outcome_family: str
    residual_variance: dict
    rhat: list
    transport: dict


def run(ctx: StepContext) -> ImputationStepResult:
    """Run step 3 on the checked inputs and write its artifact and estimates."""
    sizes = ctx.sizes
    result = imputation_step(ctx.registry, m=sizes.imputations, iterations=sizes.iterations,
                             estimates_path=ctx.estimates_path,
                             transport_options={"m": sizes.transport_imputations,
                                                "iterations": sizes.transport_iterations})
    ctx.write(STEP, result)
    return result


STEP = Step(key="imputation", number=3, title="Flat vs hierarchical multiple imputation",
            notebook="03_imputation.ipynb", artifact=ImputationArtifact, run=run, needs=("diagnose",),
            methods=("flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi"),
            summary_name="step 3 (flat vs hierarchical multiple imputation)")
