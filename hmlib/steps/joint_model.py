"""Step 4, the joint Bayesian model of the data and the missingness.

The model, its fit and its summaries are the engine's
(:mod:`hmlib.stats.joint`); this module is the step around it:

- :func:`fit_registry` fits the engine on a checked registry (its frame,
  roles, levels, focus and seed), the one adapter from a
  :class:`hmlib.data.Registry` to :func:`hmlib.stats.joint.fit_joint_model`;
- :func:`run` fits it with the run's sizes (:mod:`hmlib.settings`) and writes
  the step's outputs: the artifact (:class:`JointModelArtifact`, small
  per-cluster counts suppressed), the estimates, and the posterior draws of
  the parameters (``artifacts/joint_posterior.npz``, no data row), which
  step 5 reweights to other priors;
- :class:`JointStepResult` is what the notebook shows: narrative, tables made
  safe to show (:mod:`hmlib.privacy`) and figures (:mod:`hmlib.figures.joint_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact, Record, artifact_path
from hmlib.data import Registry
from hmlib.figures import joint_model as figures
from hmlib.methods import NOT_CONVERGED
from hmlib.privacy import suppress_cluster_counts, suppress_counts
from hmlib.results import read_estimates, to_jsonable
from hmlib.stats.joint import METHOD, JointModelResult, fit_joint_model, model_fingerprint
from hmlib.steps.base import Step, StepContext
from hmlib.steps.disclosure import HiddenCounts, hidden_counts
from hmlib.wording import cluster_noun, plural, row_noun

__all__ = ["PartialPoolingRow", "SamplerRun", "JointSettings", "JointModelArtifact", "JointStepResult",
           "fit_options", "fit_registry", "missingness_submodel_on", "run", "STEP", "POSTERIOR_FILE"]

#: The saved parameter draws, beside the artifact.
POSTERIOR_FILE = "joint_posterior.npz"
#: Columns of the partial-pooling table computed from a cluster's observed values (hidden with their count).
_DERIVED_FROM_OBSERVED = ["raw_mean", "raw_effect"]


@dataclass(frozen=True)
class PartialPoolingRow(Record):
    """One cluster of the partial-pooling table of the focus variable (``partial_pooling`` of the artifact).

    Counts from 1 to ``min_cell - 1``, the cells that would reveal them, and
    the observed mean and own effect of such a cluster hold ``"suppressed"``;
    ``measured`` (any observed value) survives suppression. Columns as
    :meth:`hmlib.stats.joint.JointModelResult.partial_pooling`.
    """

    cluster: str | int | float
    measured: bool
    n_patients: int | str
    n_observed: int | str
    raw_mean: float | str | None
    raw_effect: float | str | None
    pooled_effect: float | None
    pooled_effect_sd: float | None
    shrinkage: float | None
    pooled_mean: float | None
    pooled_mean_sd: float | None
    unit: str | None
    unit_effect: float | None


@dataclass(frozen=True)
class SamplerRun(Record):
    """One run of the sampler (``settings.attempts`` of the artifact; more than one when extended automatically).

    Sizes per chain (``draws``: its last checkpoint), the draws per chain at
    which the gate was checked (more than one when its chains were
    continued, :mod:`hmlib.stats.joint.sampling`), the run's seed, its
    sampling time, whether it passed the convergence gate, its divergent
    transitions and whether it sampled the non-centred fall-back model
    (:mod:`hmlib.stats.joint.sampling`); and the sampler's work: leapfrog
    steps (gradient evaluations) of each chain in the warm-up and per draw
    after it, draws that stopped at the maximum tree depth, and seconds per
    gradient evaluation (a chain's time is about the product: a slow fit is
    either a hard posterior or an expensive gradient).
    """

    checkpoints: tuple[int, ...]
    converged: bool
    divergences: int
    draws: int
    fallback: bool
    leapfrog_per_draw: tuple[float, ...]
    leapfrog_warmup: tuple[int, ...]
    max_depth_draws: int
    seconds: float
    seconds_per_gradient: float | None
    seed: int
    tune: int


@dataclass(frozen=True)
class JointSettings(Record):
    """How the joint model was fitted (``settings`` of the artifact; the report's methods and appendix read it).

    Attributes
    ----------
    draws, tune, chains, seed : int
        Sampler sizes (per chain) and seed.
    fast : bool
        Fast run sizes (not for reporting).
    missing_values : {"marginal", "latent"}
    quadrature_nodes : int
    quadrature_error_check : float or None
        Log-likelihood error of the chosen node count (None when the count was given).
    missingness_model : bool
    parameterisation, information_share : dict
        Centred or not per submodel, and the cluster information share behind it.
    distributions : dict
        Normal or lognormal, per incomplete continuous predictor.
    binary_summed_out : tuple of str
    categorical_summed_out : dict
        ``{column: "nominal" | "ordinal"}``: the incomplete categorical
        predictors with three or more levels, summed out, and their submodel.
    priors : dict
        The priors used (free JSON: specs as lists, ``lkj_eta`` a number).
    sampler, adaptation : str
    n_parameters : int
        Unconstrained parameters sampled.
    time_budget_minutes : float or None
        The budget of the automatic extension (None: not extended).
    extensions : int
        Automatic extensions made: continuations of a run's chains plus new
        runs (0: the first run, as asked for, is the one reported).
    attempts : tuple of SamplerRun
        Every run, the reported one last (its sizes are ``draws`` and ``tune``).
    """

    adaptation: str
    attempts: tuple[SamplerRun, ...]
    binary_summed_out: tuple[str, ...]
    categorical_summed_out: dict[str, str]
    chains: int
    distributions: dict[str, str]
    draws: int
    extensions: int
    fast: bool
    information_share: dict[str, float | None]
    missing_values: str
    missingness_model: bool
    n_parameters: int
    parameterisation: dict[str, str]
    priors: dict
    quadrature_error_check: float | None
    quadrature_nodes: int
    sampler: str
    seed: int
    time_budget_minutes: float | None
    tune: int


@dataclass(frozen=True)
class JointModelArtifact(Artifact):
    """The record of step 4 (``artifacts/joint_model.json``): aggregates only, small cells suppressed.

    ``partial_pooling`` and ``settings`` are typed (the report reads their
    fields); the other tables are free JSON, only displayed.
    """

    KEY: ClassVar[str] = "joint_model"
    VERSION: ClassVar[int] = 5

    cluster: str
    converged: bool
    convergence_message: str
    correlation: dict | None
    divergences: int
    ess_per_second: dict
    estimates: list
    family: str
    focus: str
    imputed_in_unmeasured: dict | None
    method: str
    n_clusters: int
    n_dropped_outcome: int
    n_patients: int
    narrative: list
    outcome: str
    partial_pooling: tuple[PartialPoolingRow, ...]
    posterior_predictive: list
    priors: list
    settings: JointSettings
    summary: list
    timing: dict

    def alert(self) -> str | None:
        """The line the runner prints when the convergence gate failed."""
        if self.converged:
            return None
        return (f"joint_model NOT CONVERGED: {self.convergence_message} "
                f"Its estimates are flagged ':{NOT_CONVERGED}' in estimates.csv.")

    def notice(self) -> str | None:
        """The line the runner prints when the sampling was extended automatically and then passed the gate."""
        if not self.converged or self.settings.extensions < 1:
            return None
        last = self.settings.attempts[-1]
        return (f"joint_model: the convergence gate was missed at first; the sampling was extended "
                f"{self.settings.extensions} time(s) automatically and passed it with {last.draws} draws after "
                f"{last.tune} warm-up iterations per chain.")


def missingness_submodel_on(params) -> bool:
    """Whether step 4's joint model has its missingness submodel: the params' ``joint_model.missingness_submodel``,
    or by default (``auto``) on unless the params give ``time`` or ``random_slopes``.

    With either the clusters are patients seen at several visits, and a visit's value is typically missing
    for reasons of that visit (its outcome, say): missing at random given the recorded data, which the joint model
    handles without a missingness submodel. The shared-parameter submodel instead ties each patient's missingness to
    the patient's latent outcome level, so that patients with a high value of the predictor (and so a high outcome,
    and more visits without the value) have it taken up by their outcome intercept: measured on visits in patients
    (``bench/joint_random_slopes_truth.py --no-missingness-model``, paired on the same registries), switching it off
    moved an ordinal predictor's coefficients up by 5.5% and 6.1% of the truth (MC SE 0.7% and 0.8%), from 5.5%
    below the full data's to about theirs (2.9% and 0.4% below them, MC SE 2.5% and 1.4%, over 20 registries); a
    nominal one's by 4.6% and 5.6% (then with a block of patient effects per level; with today's one block across
    the levels the nominal fit without the submodel is 4.4% and 2.1% below the full data's, MC SE 2.0% and 1.3%
    over 30 registries), a yes/no one's by 5.4% (MC SE 0.7%, 20 registries), and a continuous one's by 0.04% (MC
    SE 0.11%).
    Without random slopes (``time`` only, random intercepts: ``--binary --no-slopes``) the submodel moved the
    yes/no one's by 7.8% (MC SE 1.5%, 8 registries) just the same. With sites as clusters it stays on.
    """
    setting = params.joint_model.missingness_submodel
    if setting is not None:
        return bool(setting)
    return not (tuple(params.random_slopes or ()) or params.time)


def fit_registry(registry: Registry, *, seed: int | None = None, fast: bool | None = None,
                 **options) -> JointModelResult:
    """Fit the joint model on a checked registry.

    Outcome, predictors, cluster, family, levels, focus and the ordinal
    predictors come from the registry, and whether there is a missingness
    submodel from :func:`missingness_submodel_on` (``options`` may override
    them), the seed and ``fast`` from its params unless given.

    Parameters
    ----------
    registry : hmlib.data.Registry
    seed : int, optional
    fast : bool, optional
        See :func:`hmlib.stats.joint.fit_joint_model`.
    **options
        Passed to :func:`hmlib.stats.joint.fit_joint_model` (``draws``,
        ``tune``, ``chains``, ``missing_values``, ``priors``, ``cores``, ...).

    Returns
    -------
    hmlib.stats.joint.JointModelResult
    """
    p = registry.params
    arguments = {"outcome": p.outcome, "predictors": list(p.predictors), "cluster": p.cluster,
                 "family": p.outcome_family, "levels": registry.levels, "focus": p.focus,
                 "ordinal": dict(p.ordinal), "higher_levels": list(p.higher_levels),
                 "random_slopes": list(p.random_slopes), "missingness_model": missingness_submodel_on(p)}
    arguments |= options
    return fit_joint_model(registry.frame, seed=p.seed if seed is None else seed,
                           fast=bool(p.fast if fast is None else fast), **arguments)


@dataclass
class JointStepResult:
    """Step 4's result: the fitted joint model, shown with the report's privacy threshold.

    Attributes
    ----------
    fit : hmlib.stats.joint.JointModelResult
    min_cell : int
        Counts from 1 to ``min_cell - 1`` are suppressed in what is shown and written.
    estimates_path : pathlib.Path, optional
        ``estimates.csv`` of the report (the other methods, for the comparison figure).
    truth : dict, optional
        True values by term (simulated data).
    hidden : hmlib.steps.disclosure.HiddenCounts, optional
        Step 1's small-cell decision: counts of the focus variable step 1
        hides are hidden here too, whatever their size.
    visits : bool
        The rows are visits in patients (params ``time``): captions count visits.
    """

    fit: JointModelResult
    min_cell: int
    estimates_path: Path | None = None
    truth: dict | None = None
    hidden: HiddenCounts | None = None
    visits: bool = False

    def _given(self, table: pd.DataFrame, columns: dict) -> pd.DataFrame | None:
        """Step 1's hidden cells for a per-cluster table of the focus variable (``None``: no decision given)."""
        return None if self.hidden is None or not len(table) else self.hidden.mask(table, columns)

    @property
    def estimates(self) -> pd.DataFrame:
        """The step's rows of ``estimates.csv`` (``joint_bayes``, flagged when not converged)."""
        return self.fit.to_estimates()

    @property
    def converged(self) -> bool:
        """The convergence gate passed."""
        return self.fit.converged

    @property
    def convergence_message(self) -> str:
        """``"converged: ..."`` or ``"not converged: ..."`` naming each offender."""
        return self.fit.convergence_message

    def narrative(self) -> list[str]:
        """The step's findings as generated sentences."""
        return self.fit.narrative(min_cell=self.min_cell)

    def partial_pooling_table(self) -> pd.DataFrame:
        """Partial pooling by cluster, counts below the small-cell threshold suppressed."""
        table = self.fit.partial_pooling()
        focus = self.fit.data.focus
        return suppress_cluster_counts(table, n_column="n_patients", observed_column="n_observed",
                                       min_cell=self.min_cell, derived_from_observed=_DERIVED_FROM_OBSERVED,
                                       hidden=self._given(table, {"n_patients": None, "n_observed": focus}))

    def posterior_predictive_table(self) -> pd.DataFrame:
        """The predictive check by cluster, small observed counts and what they reveal suppressed.

        The observed mean/SD, and what is compared with them (p-values,
        outside flags), reveal the values of a small cluster.
        """
        ppc = self.fit.posterior_predictive()
        if not len(ppc):
            return ppc
        derived = [c for c in ppc.columns if c.startswith(("observed_", "p_")) or c.endswith("_outside")]
        return suppress_counts(ppc, ["n_observed"], self.min_cell, column_totals=False,
                               derived_columns={c: ["n_observed"] for c in derived},
                               hidden=self._given(ppc, {"n_observed": self.fit.data.focus})).display

    def priors_table(self) -> pd.DataFrame:
        """The priors used, written out for reviewers."""
        return self.fit.priors_table()

    def imputed_in_unmeasured(self) -> dict:
        """The imputed focus values in clusters that never measured it (``{}`` when there are none)."""
        return self.fit.imputed_in_unmeasured()

    def to_artifact(self) -> JointModelArtifact:
        """The step's typed record: aggregates only, per-cluster counts below ``min_cell`` suppressed.

        Each cluster of the partial-pooling table keeps a ``measured`` flag
        (any observed value) so that never-measured clusters stay known.
        """
        fit = self.fit
        pooled = fit.partial_pooling()
        if len(pooled):
            measured = pooled["n_observed"] > 0
            pooled = self.partial_pooling_table()
            pooled.insert(1, "measured", measured.to_numpy())
        settings = dict(fit.settings)
        settings["priors"] = {k: list(v) if isinstance(v, tuple) else v for k, v in settings["priors"].items()}
        return JointModelArtifact.from_json(to_jsonable({
            "method": METHOD,
            "outcome": fit.data.outcome,
            "family": fit.data.family,
            "cluster": fit.data.cluster,
            "focus": fit.data.focus,
            "n_patients": fit.n_patients,
            "n_clusters": fit.n_clusters,
            "n_dropped_outcome": fit.n_dropped_outcome,
            "summary": fit.summary.to_dict(orient="records"),
            "estimates": fit.to_estimates().to_dict(orient="records"),
            "converged": fit.converged,
            "convergence_message": fit.convergence_message,
            "divergences": fit.divergences,
            "timing": dict(fit.timing),
            "ess_per_second": dict(fit.ess_per_second),
            "settings": settings,
            "correlation": fit.correlation,
            "priors": fit.priors_table().to_dict(orient="records"),
            "partial_pooling": pooled.to_dict(orient="records"),
            "posterior_predictive": self.posterior_predictive_table().to_dict(orient="records"),
            "imputed_in_unmeasured": fit.imputed_in_unmeasured(),
            "narrative": self.narrative(),
        }))

    def _pooling_for_figure(self) -> pd.DataFrame:
        """The partial-pooling table for the shrinkage plot: a cluster whose observed count is hidden in the
        published table is drawn as the plot draws small clusters (no raw effect, at the "< min_cell" place)."""
        table = self.fit.partial_pooling()
        if not len(table):
            return table
        shown = pd.to_numeric(self.partial_pooling_table()["n_observed"], errors="coerce").to_numpy()
        hidden = np.isnan(shown) & (table["n_observed"].to_numpy() > 0)
        return table.assign(n_observed=np.where(hidden, 0, table["n_observed"].to_numpy()))

    def figures(self) -> dict:
        """Step 4's figures by section: methods, pooling, checks, correlation."""
        fit = self.fit
        focus = fit.data.focus
        others = read_estimates(self.estimates_path) if self.estimates_path is not None else fit.to_estimates()
        out = {"methods": [figures.coefficient_forest(others, truth=self.truth or None)],
               "pooling": [figures.shrinkage_plot(self._pooling_for_figure(), focus=focus, min_cell=self.min_cell)],
               "checks": [figures.ppc_by_cluster(self.posterior_predictive_table(), focus=focus)], "correlation": []}
        pooled = fit.partial_pooling()
        if "unit_effect" in pooled and pooled["unit_effect"].notna().any():  # levels above, focus not categorical
            out["pooling"].append(figures.pooling_by_unit(
                self._pooling_for_figure(), focus=focus, unit_name=fit.data.higher[-1].name,
                min_cell=self.min_cell, cluster_noun=cluster_noun(fit.data.cluster)))
        if fit.imputed_in_unmeasured():
            out["checks"].append(figures.imputed_distribution(fit.imputed_in_unmeasured(), focus=focus,
                                                                rows=plural(row_noun(self.visits))))
        if fit.correlation is not None:
            out["correlation"].append(figures.correlation_posterior(
                fit.correlation_draws(), fit.correlation, lkj_eta=fit.settings["priors"]["lkj_eta"]))
        return out


def fit_options(sizes, budget_minutes: float | None = None) -> dict:
    """:func:`fit_registry`'s sizes as this step passes them: the run sizes' (:mod:`hmlib.settings`) draws,
    warm-up, chains and missing values, and the params' time budget (None: the run sizes')."""
    return {"draws": sizes.joint_draws, "tune": sizes.joint_tune, "chains": sizes.joint_chains,
            "missing_values": sizes.joint_missing_values,
            "time_budget_minutes": sizes.joint_time_budget_minutes if budget_minutes is None else budget_minutes}


def run(ctx: StepContext) -> JointStepResult:
    """Fit the joint model with the run's sizes; write the artifact, estimates and posterior draws.

    A fit that misses the convergence gate is extended automatically within
    the params' ``joint_model.time_budget_minutes`` (default: the run
    sizes', :mod:`hmlib.settings`).
    """
    fit = fit_registry(ctx.registry, **fit_options(ctx.sizes, ctx.params.joint_model.time_budget_minutes))
    result = JointStepResult(fit, int(ctx.params.privacy.min_cell), ctx.estimates_path, ctx.truth,
                             hidden=hidden_counts(ctx.registry),
                             visits=ctx.params.time is not None)
    ctx.write(STEP, result)
    fit.posterior_draws(model_fingerprint(ctx.registry)).save(artifact_path(ctx.output_dir, "joint_posterior")
                                                              .with_name(POSTERIOR_FILE))
    return result


def methods_text(record, ev) -> list:
    """This step's paragraph(s) of the report's methods section, from its record.

    ``ev`` is the report's wording context (:class:`hmlib.report.evidence.ReportEvidence`: ``noun``,
    ``min_cell``, ``versions``).
    """
    s, v = record.settings, ev.versions
    summed = [f"{name} ({'ordinal, cumulative logit' if kind == 'ordinal' else 'nominal, baseline-category logit'})"
              for name, kind in s.categorical_summed_out.items()]
    params = getattr(ev, "params", None)
    slopes = tuple(getattr(params, "random_slopes", ()) or ())
    own = f"{ev.noun} random intercepts" + (f" and slopes on {', '.join(slopes)}" if slopes else "")
    summed_text = (f"; the missing values of the incomplete categorical predictor(s) {', '.join(summed)} summed out "
                   f"over their levels, each with its own submodel and {own}") if summed else ""
    higher = tuple(getattr(params, "higher_levels", ()) or ())
    random_part = (f"{ev.noun} random intercepts and random slopes on {', '.join(slopes)} (LKJ prior on their "
                   "correlation)" if slopes else f"{ev.noun} random intercepts")
    if higher:
        random_part += f", nested in random intercepts per {' and per '.join(higher)},"
    setting = getattr(getattr(params, "joint_model", None), "missingness_submodel", None)
    why = "" if s.missingness_model or setting is True else "; switched off in the params" if setting is False else \
        "; off by default for visits in patients" if slopes or getattr(params, "time", None) else ""
    submodel = "a missingness submodel" if s.missingness_model else \
        f"no missingness submodel (missing at random given the recorded data{why})"
    return [f"Joint Bayesian model: outcome and incomplete predictors modelled jointly with {random_part} "
            f"and {submodel}{summed_text}, in PyMC {v.get('pymc', 'unknown')}, sampled with "
            f"nutpie {v.get('nutpie', 'unknown')} ({s.chains} chains x {s.draws} draws after {s.tune} tuning, "
            f"seed {s.seed}); {record.convergence_message}"]


STEP = Step(key="joint_model", number=4, title="Joint Bayesian model with partial pooling",
            notebook="04_joint_model.ipynb", artifact=JointModelArtifact, run=run, needs=("diagnose",),
            methods=(METHOD,), summary_name="step 4 (joint Bayesian model)",
            extra_files=(POSTERIOR_FILE,),
            methods_text=methods_text,
            absent_methods_text="Step 4 (joint Bayesian model) is absent from this report.")
