"""The fitted joint model: its summary table, estimates rows, per-cluster tables and generated narrative.

:class:`JointModelResult` is what :func:`hmlib.stats.joint.fit_joint_model`
returns. It carries the patient-level :class:`~hmlib.stats.joint.data.JointData`
it was fitted on (never written out) beside aggregated results: the
per-cluster tables here are unsuppressed, and making them safe to show
(small-cell suppression) and writing the step's artifact are the report's
(:mod:`hmlib.steps.joint_model`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hmlib.stats.joint.data import BinaryPredictor, CategoricalPredictor, JointData
from hmlib.stats.joint.priors import priors_table
from hmlib.stats.joint.reweighting import PosteriorDraws
from hmlib.stats.joint.slopes import random_part_terms
from hmlib.stats.joint.summaries import contract_method

__all__ = ["JointModelResult", "SUMMED_OUT_SLOPES_ATTENUATION"]

#: Measured shift towards 0 of the coefficients of an incomplete yes/no or categorical predictor summed out in a
#: model with random slopes and the missingness submodel (``bench/joint_random_slopes_truth.py --binary``,
#: ``--categorical [--ordinal]``: a finding with strong persistence within the patient, 300 patients, x missing
#: for 30% at random given the visit's outcome; against the truth, or paired against the full data), by submodel;
#: the nominal one with its one block across the levels (15 registries: 9.3% and 7.3% below the full data's, MC SE
#: 2.1% and 1.4%; 8-12% with the per-level blocks before 2026-12-07). Without the missingness submodel the yes/no
#: and ordinal ones came out within Monte Carlo error of the full data's (ordinal 2.9% and 0.4% below them, MC SE
#: 2.5% and 1.4%, 20 registries), the nominal one 4.4% and 2.1% below them (MC SE 2.0% and 1.3%, 30 registries).
SUMMED_OUT_SLOPES_ATTENUATION = {"binary": "about 6%", "nominal": "7-9%", "ordinal": "about 5-6%"}


@dataclass(frozen=True, eq=False)
class JointModelResult:
    """A fitted joint model. Build it with :func:`hmlib.stats.joint.fit_joint_model`.

    Attributes
    ----------
    summary : pandas.DataFrame
        One row per reported quantity: ``term, estimate, std_error, ci_lower,
        ci_upper, rhat, ess_bulk, ess_tail, mcse_mean`` (estimate = posterior
        mean, std_error = posterior SD, 95% equal-tailed interval, original
        scale). Terms: ``Intercept``, the predictors' terms, ``sd(<cluster>)``,
        then ``sigma`` (gaussian) and ``corr(missingness, outcome)``.
    converged : bool
        The gate of :data:`~hmlib.stats.joint.summaries.GATE` passed.
    convergence_message : str
        ``"converged: ..."`` or ``"not converged: ..."`` naming each offender.
    divergences : int
    timing : dict
        ``build_s`` (data preparation, parameterisation rule, PyMC model),
        ``compile_s`` (nutpie/numba compile), ``sampling_s``, ``post_s``,
        ``total_s``, and ``cpu_s`` (process CPU time of build + compile +
        sampling).
    ess_per_second : dict
        Bulk ESS per wall second (build + compile + sampling) of the focus
        coefficient and of the cluster SD.
    settings : dict
        draws, tune, chains, seed, fast, missing_values, quadrature_nodes,
        parameterisation chosen and the information shares behind it,
        distributions of the incomplete predictors, priors.
    correlation : dict or None
        Posterior of the missingness/outcome cluster-effect correlation
        (``estimate, std_error, ci_lower, ci_upper, prob_positive``).
    n_patients, n_clusters, n_dropped_outcome : int
    """

    data: JointData = field(repr=False)
    summary: pd.DataFrame
    converged: bool
    convergence_message: str
    divergences: int
    timing: dict
    ess_per_second: dict
    settings: dict
    correlation: dict | None
    n_patients: int
    n_clusters: int
    n_dropped_outcome: int
    draws: dict = field(repr=False)
    imputations: dict = field(repr=False)
    trace: object = field(repr=False, default=None)
    sd_draws: dict = field(repr=False, default_factory=dict)

    @property
    def contract_terms(self) -> list:
        """The terms of ``estimates.csv``: ``Intercept``, the predictors' terms, ``sd(<level>)`` per level above
        the cluster (outermost first), ``sd(<cluster>)``; with random slopes ``sd(<slope>|<cluster>)`` and
        ``cor(<slope>|<cluster>)`` (:func:`hmlib.stats.joint.slopes.random_part_terms`)."""
        return ["Intercept", *self.data.term_order, *(f"sd({h.name})" for h in self.data.higher),
                f"sd({self.data.cluster})", *random_part_terms(self.data)]

    def to_estimates(self) -> pd.DataFrame:
        """Rows of ``estimates.csv`` (method ``joint_bayes``, flagged when not converged), contract terms only."""
        table = self.summary.set_index("term").loc[self.contract_terms].reset_index()
        # Estimates that failed the convergence gate are flagged in the method name itself.
        table.insert(0, "method", contract_method(self.converged))
        table["n_patients"] = self.n_patients
        table["n_clusters"] = self.n_clusters
        return table.loc[:, ["method", "term", "estimate", "std_error", "ci_lower", "ci_upper",
                             "n_patients", "n_clusters"]]

    def priors_table(self) -> pd.DataFrame:
        """The priors used (see :func:`hmlib.stats.joint.priors.priors_table`)."""
        return priors_table(self.settings["priors"], self.data.slopes)

    def partial_pooling(self) -> pd.DataFrame:
        """The focus variable's cluster intercepts: raw vs partially pooled (unsuppressed).

        Returns
        -------
        pandas.DataFrame
            One row per cluster: ``cluster, n_patients, n_observed, raw_mean``
            (mean of the observed values), ``raw_effect`` (the cluster's own
            deviation: mean over its observed rows of the value minus the
            fixed part at the posterior mean, on the submodel's scale in
            original units; logit for a binary focus; NaN without observed
            values), ``pooled_effect`` and ``pooled_effect_sd`` (posterior
            mean and SD of the cluster intercept, same units), ``shrinkage``
            (``1 / (1 + n_obs I tau^2)`` at posterior means: 0 = the cluster's
            own estimate, 1 = the average cluster), ``pooled_mean`` and
            ``pooled_mean_sd`` (posterior mean and SD of the cluster's mean
            of the completed values: observed plus imputed). Empty when the
            focus is complete. A categorical focus with three or more levels
            is summarised by the share of patients not in its reference
            level: ``raw_mean`` and ``pooled_mean`` are that share,
            ``raw_effect`` and ``pooled_effect`` the logit of the cluster's
            share minus that at cluster effect 0, and ``shrinkage`` uses the
            between-cluster SD of that effect. With levels above the cluster
            (``higher_levels``), ``unit`` is the cluster's unit of the
            innermost of them (its country) and ``unit_effect`` the
            posterior mean of that unit's total effect, same units as
            ``pooled_effect``: what the cluster is pooled towards
            (``shrinkage`` then measures the pull towards it, with the
            within-unit SD); both None/NaN without levels above or for a
            categorical focus.
        """
        return self.imputations.get("partial_pooling", pd.DataFrame())

    def posterior_predictive(self) -> pd.DataFrame:
        """Posterior predictive check of the focus variable by cluster (unsuppressed).

        Replicates the observed rows from the focus submodel (thinned
        posterior draws) and compares, per cluster with observed values,
        the observed mean and SD with the replicated ones: columns
        ``cluster, n_observed, observed_mean, replicated_mean, replicated_mean_lower,
        replicated_mean_upper, p_mean`` (share of replications with a mean at
        least the observed one), and the same for the SD (continuous focus
        only), plus ``mean_outside`` (observed mean outside the 95%
        predictive interval).
        """
        return self.imputations.get("ppc", pd.DataFrame())

    def imputed_in_unmeasured(self) -> dict:
        """The imputed focus values in clusters that never measured it.

        Returns
        -------
        dict
            ``clusters`` (labels), ``n_patients``, ``imputed`` (mean, sd and
            5/25/50/75/95% quantiles over all imputed values and draws),
            ``observed`` (the same for the observed values elsewhere),
            ``by_cluster``, ``histogram`` (shared bin edges and both densities).
        """
        return self.imputations.get("unmeasured", {})

    def correlation_draws(self) -> np.ndarray | None:
        """Draws of the missingness/outcome cluster-effect correlation, or None without that submodel."""
        return self.draws.get("re_corr")

    def _nested_pooling_sentence(self, pooled: pd.DataFrame) -> list[str]:
        """With levels above the cluster: who borrows from whom, with the spread of the units' effects."""
        if "unit_effect" not in pooled or not pooled["unit_effect"].notna().any():
            return []
        d = self.data
        unit = d.higher[-1].name
        units = pooled.groupby("unit")["unit_effect"].first()
        scale = "logit scale" if isinstance(d.focus_variable, BinaryPredictor) else f"units of {d.focus}"
        return [f"Partial pooling is nested: a {d.cluster}'s {d.focus} effect is pooled towards its {unit}'s, and "
                f"each {unit}'s towards the average {unit}. The {len(units)} {unit} effects range from "
                f"{units.min():.3g} ({units.idxmin()}) to {units.max():.3g} ({units.idxmax()}) ({scale}): "
                f"the value a {d.cluster} with few observed values is pulled towards is its {unit}'s, not the "
                f"overall mean."]

    def narrative(self, min_cell: int = 11) -> list[str]:
        """Plain-language sentences generated from the numbers of this result.

        Parameters
        ----------
        min_cell : int
            A patient count below it is written "fewer than <min_cell>".
        """
        d = self.data
        sentences = self._estimate_sentences()
        pooled = self.partial_pooling()
        var = d.focus_variable
        # a categorical focus is summarised per cluster by its share outside the reference level
        summary = (f"share of patients whose {d.focus} is not '{var.levels[0]}'"
                   if isinstance(var, CategoricalPredictor) else f"mean {d.focus}")
        if len(pooled):
            partly = pooled.loc[(pooled["n_observed"] > 0) & (pooled["n_observed"] < pooled["n_patients"])]
            never = pooled.loc[pooled["n_observed"] == 0]
            if len(partly):
                share = partly["n_observed"] / partly["n_patients"]
                lo = partly.loc[share.idxmax()]
                hi = partly.loc[share.idxmin()]
                sentences.append(
                    f"Imputation uncertainty is uneven: the posterior SD of a {d.cluster}'s {summary} is "
                    f"{lo.pooled_mean_sd:.3g} where {lo.n_observed / lo.n_patients:.0%} of values were "
                    f"observed and {hi.pooled_mean_sd:.3g} where {hi.n_observed / hi.n_patients:.0%} "
                    "were" + (f", and {never['pooled_mean_sd'].mean():.3g} on average in the {len(never)} "
                              f"{d.cluster}(s) that never measured it." if len(never) else "."))
            sentences.extend(self._nested_pooling_sentence(pooled))
        unmeasured = self.imputed_in_unmeasured()
        if unmeasured.get("clusters"):
            imp, obs = unmeasured["imputed"], unmeasured["observed"]
            patients = unmeasured["n_patients"] if unmeasured["n_patients"] >= min_cell else f"fewer than {min_cell}"
            if "shares" in imp:
                imputed_text = "the imputed values are " + ", ".join(
                    f"{share:.0%} '{level}'" for level, share in imp["shares"].items())
                observed_text = "against " + ", ".join(
                    f"{share:.0%} '{level}'" for level, share in obs["shares"].items()) + " where recorded"
            else:
                imputed_text = (f"the imputed values have mean {imp['mean']:.3g} (90% of them between "
                                f"{imp['q05']:.3g} and {imp['q95']:.3g})")
                observed_text = f"against an observed mean of {obs['mean']:.3g} elsewhere"
            sentences.append(
                f"In the {len(unmeasured['clusters'])} {d.cluster}(s) that never recorded {d.focus} "
                f"({patients} patients), {imputed_text}, {observed_text}; these values rest entirely on the "
                f"model (the {d.cluster}'s own level is drawn from the between-cluster distribution), so they "
                "widen the uncertainty rather than add information.")
        ppc = self.posterior_predictive()
        if len(ppc):
            outside = int(ppc["mean_outside"].sum())
            sentences.append(
                f"Posterior predictive check: the observed {summary} lies outside the 95% predictive "
                f"interval of its replicated value in {outside} of {len(ppc)} {d.cluster}s with observed values"
                + (" (about 5% are expected by chance)." if outside <= max(1, round(0.1 * len(ppc)))
                   else f"; more than chance would give: the {d.focus} submodel misfits some {d.cluster}s."))
        sentences.append(("Sampling " + self.convergence_message[0].lower() + self.convergence_message[1:]) if
                         self.converged else "Sampling " + self.convergence_message)
        t = self.timing
        eps = self.ess_per_second
        sentences.append(
            f"Building and compiling took {t['build_s'] + t['compile_s']:.0f} s and sampling "
            f"{t['sampling_s']:.0f} s ({self.settings['chains']} chains x {self.settings['draws']} draws); "
            f"effective samples per second: {eps.get('focus', float('nan')):.1f} for the {d.focus} coefficient, "
            f"{eps['cluster_sd']:.1f} for the cluster SD.")
        return sentences

    def _estimate_sentences(self) -> list[str]:
        """The focus coefficient, the cluster SD and the missingness/outcome correlation in words."""
        d = self.data
        s = self.summary.set_index("term")
        focus = d.focus
        sentences = []
        term = d.focus_term
        var = d.focus_variable
        if isinstance(var, CategoricalPredictor) or (var is None and len(d.focus_terms) > 1):
            sentences.append(self._level_sentence(d.focus_terms, var.levels[0] if var is not None else None))
        elif term is not None and term in s.index:
            r = s.loc[term]
            if d.focus_kind != "binary":
                subject = f"one unit higher {focus}"
            elif term.endswith("]"):                     # a two-level categorical: its second level
                subject = f"{focus} = {term[len(focus) + 1:-1]} (against the reference level)"
            else:
                subject = f"{focus} = 1 (against 0)"
            if d.family == "binomial":
                sentences.append(
                    f"In the joint Bayesian model, {subject} goes with a log-odds ratio of "
                    f"{r.estimate:.3f} for {d.outcome} (odds ratio {math.exp(r.estimate):.2f}; 95% credible "
                    f"interval {r.ci_lower:.3f} to {r.ci_upper:.3f}), the missing {focus} values being "
                    "modelled rather than dropped.")
            else:
                sentences.append(
                    f"In the joint Bayesian model, {subject} goes with a change of {r.estimate:.3g} "
                    f"in {d.outcome} (95% credible interval {r.ci_lower:.3g} to {r.ci_upper:.3g}).")
        sd = s.loc[f"sd({d.cluster})"]
        scale = "log-odds" if d.family == "binomial" else f"{d.outcome} units"
        within = f" within a {d.higher[-1].name}" if d.higher else ""
        sentences.append(f"The between-{d.cluster} SD of the outcome{within} is {sd.estimate:.3f} ({scale}; 95% "
                         f"credible interval {sd.ci_lower:.3f} to {sd.ci_upper:.3f}).")
        sentences.extend(self._slope_sentences(s))
        for level in d.higher:
            r = s.loc[f"sd({level.name})"]
            sentences.append(f"The between-{level.name} SD of the outcome is {r.estimate:.3f} (95% credible "
                             f"interval {r.ci_lower:.3f} to {r.ci_upper:.3f}): each {d.cluster}'s effect is "
                             f"pooled towards its {level.name}'s, and each {level.name}'s towards the overall "
                             "mean.")
        if self.correlation is not None:
            c = self.correlation
            if c["ci_lower"] > 0 or c["ci_upper"] < 0:
                direction = "higher" if c["estimate"] > 0 else "lower"
                verdict = (f"{d.cluster}s that leave {focus} unrecorded more often tend to have {direction} "
                           f"outcome propensity, so missingness is informative about the {d.cluster} "
                           "effects; the joint model uses this, complete-case analysis cannot")
            else:
                verdict = (f"the interval includes 0: no clear evidence that {d.cluster}s that record {focus} "
                           "less often differ in outcome propensity")
            sentences.append(
                f"The correlation between a {d.cluster}'s tendency to leave {focus} missing and its outcome "
                f"random effect is {c['estimate']:.2f} (95% credible interval {c['ci_lower']:.2f} to "
                f"{c['ci_upper']:.2f}; posterior probability {c['prob_positive']:.2f} that it is positive): "
                f"{verdict}. This assumes missingness depends on the {d.cluster}'s latent propensity and the "
                f"complete predictors, not on the unrecorded value itself.")
        return sentences

    def _slope_sentences(self, s: pd.DataFrame) -> list[str]:
        """With random slopes: each slope's between-cluster SD and its correlation with the intercept."""
        d = self.data
        out = []
        if d.slopes:
            out.append(f"With random slopes, sd({d.cluster}) is the SD of the {d.cluster}s' intercepts where "
                       f"{' and '.join(d.slopes)} {'is' if len(d.slopes) == 1 else 'are'} 0.")
        if d.slopes and d.missingness_model and (d.binaries or d.categoricals):
            out.append(self._summed_out_slopes_caveat())
        for name in d.slopes:
            sd = s.loc[f"sd({name}|{d.cluster})"]
            cor = s.loc[f"cor({name}|{d.cluster})"]
            out.append(f"The {d.cluster}s' slopes on {name} vary with an SD of {sd.estimate:.3g} per unit of {name} "
                       f"(95% credible interval {sd.ci_lower:.3g} to {sd.ci_upper:.3g}); their correlation with "
                       f"the intercepts is {cor.estimate:.2f} ({cor.ci_lower:.2f} to {cor.ci_upper:.2f}).")
        return out

    def _summed_out_slopes_caveat(self) -> str:
        """The measured attenuation of summed-out yes/no and categorical predictors in a model with random slopes
        and the missingness submodel (which step 4 leaves out by default for visits in patients,
        :func:`hmlib.steps.joint_model.missingness_submodel_on`)."""
        d = self.data
        parts = [f"{var.name} (yes/no: {SUMMED_OUT_SLOPES_ATTENUATION['binary']})" for var in d.binaries]
        for var in d.categoricals:
            kind = "ordinal" if var.ordinal else "nominal"
            parts.append(f"{var.name} ({kind}: {SUMMED_OUT_SLOPES_ATTENUATION[kind]})")
        advice = "" if all(var.ordinal for var in d.categoricals) else (
            "; if a nominal one's levels are ordered, declaring it ordinal (params 'ordinal:') loses less")
        return ("Caution: with random slopes and the missingness submodel, the missing values of "
                + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
                + " are summed out, and in simulated visits in patients, with a visit's value missing more often "
                "when that visit's outcome was high, such a predictor's coefficients came out that much towards 0 "
                "(complete cases 5-7%; bench/joint_random_slopes_truth.py --binary, --categorical): the submodel "
                "ties a patient's missingness to the patient's outcome level. Without it (params "
                "joint_model.missingness_submodel: false, the default for visits in patients) they came out within "
                "Monte Carlo error of the full data's: read them as possibly attenuated, or refit without it"
                + advice + ".")

    def _level_sentence(self, terms, reference) -> str:
        """One sentence on every level of a categorical focus against its reference (odds ratios, binomial)."""
        d = self.data
        s = self.summary.set_index("term")
        against = f"'{reference}'" if reference is not None else "the reference level"
        parts = []
        for term in terms:
            r = s.loc[term]
            level = term[len(d.focus) + 1:-1] if term.startswith(f"{d.focus}[") else term
            if d.family == "binomial":
                parts.append(f"'{level}' {r.estimate:.3f} (odds ratio {math.exp(r.estimate):.2f}; 95% credible "
                             f"interval {r.ci_lower:.3f} to {r.ci_upper:.3f})")
            else:
                parts.append(f"'{level}' {r.estimate:.3g} (95% credible interval {r.ci_lower:.3g} to "
                             f"{r.ci_upper:.3g})")
        scale = f"log-odds ratios for {d.outcome}" if d.family == "binomial" else f"differences in {d.outcome}"
        var = d.focus_variable
        how = ""
        if var is not None:
            submodel = "an ordinal (cumulative logit)" if var.ordinal else "a nominal (baseline-category logit)"
            how = (f" the missing values being summed out over the levels of {submodel} submodel with "
                   f"{d.cluster} random intercepts,")
        return (f"In the joint Bayesian model, against {d.focus} = {against},{how} the {scale} are: "
                + "; ".join(parts) + ".")

    def posterior_draws(self, fingerprint: str = "") -> PosteriorDraws:
        """The parameter draws a prior-sensitivity reweighting needs, without any data row.

        Parameters
        ----------
        fingerprint : str
            Identifies the data and model the fit belongs to (see
            :func:`hmlib.stats.joint.reweighting.model_fingerprint`), so that
            a saved file is not reused for other data.
        """
        return PosteriorDraws(
            terms={t: np.asarray(self.draws[t], dtype=float) for t in self.contract_terms},
            cluster_sds={k: np.asarray(v, dtype=float) for k, v in self.sd_draws.items()},
            cluster_sd_prior=tuple(self.settings["priors"]["cluster_sd"]), converged=self.converged,
            convergence_message=self.convergence_message, n_patients=self.n_patients,
            n_clusters=self.n_clusters, fingerprint=fingerprint)
