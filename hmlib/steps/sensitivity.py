"""Step 5: how far the conclusion rests on the missing-data assumptions.

The primary analysis is multilevel multiple imputation (:mod:`hmlib.stats.imputation`,
``method="multilevel"``) followed by the random-intercept analysis model pooled
by Rubin's rules (:func:`hmlib.stats.pooling.analyse_imputations`). Each *scenario*
changes one assumption, within or across clusters, re-runs that analysis and
reports every term (method ``sensitivity:<scenario>`` in ``estimates.csv``).
The scenario families (exclusion of poorly documenting clusters, imputation
by cluster type, priors of the joint model, missing-indicator models, MNAR
delta adjustment, leave-one-out of the best-documented clusters) are defined
and run in :mod:`hmlib.steps.sensitivity_scenarios`, and with repeated
measures (params ``time``) the MNAR delta after dropout and the exclusion of
early dropouts in :mod:`hmlib.steps.sensitivity_dropout`; the statistics they share
(when a conclusion changes, delta adjustment, the tipping-point search) are
in :mod:`hmlib.stats.sensitivity`. This module runs them around the primary
analysis, judges each against its reference, and holds the result, its
verdict and the step's typed artifact.

Residual variance
-----------------
The multilevel imputation model has a common residual variance (``2l.pan``)
or one per cluster (``2l.norm``). Step 3 decides which
(:func:`hmlib.steps.imputation.residual_variance_check`); the primary analysis
here and every scenario that re-imputes use step 3's choice, read from its
artifact. When step 3 has not run, the same check decides it here, by the
same rule. The result's notes say which.

Changed conclusion
------------------
A scenario changes the conclusion about a term when, compared with its
reference (the primary analysis, or the scenario named as its reference):
the 95% interval's decision about no effect flips and the estimate moved by
at least half the clinically relevant difference; the estimate moved by at
least that difference; or it changed direction with both intervals excluding
no effect (:func:`hmlib.stats.sensitivity.conclusion_change`). The difference
is the params' ``sensitivity.relevant_difference`` on the reported scale
(default: an odds ratio 1.25 times larger or smaller, or 0.1 SD of a
continuous outcome, per reported unit), resolved per term by
:mod:`hmlib.steps.sensitivity_rule` and recorded in the artifact. For the
cluster SD only the move counts; the intercept is not judged.

Tipping point
-------------
For each delta mode and direction, the smallest ``|delta|`` on the grid at
which the focus coefficient's conclusion changes, refined by bisection between
it and the largest unchanged ``|delta|`` before it (``bisection_steps``, default
6: the bracket shrinks 64-fold). The reported tipping point is the smallest
``|delta|`` *found* to change the conclusion; the conclusion at every smaller
grid value is unchanged.

Execution
---------
Scenarios are independent tasks (:mod:`hmlib.parallel`: a Dask cluster,
``$HMLIB_SCHEDULER`` or local processes, one per core; ``workers=1`` runs
them in this process), longest first; the bisections follow, on the same
workers. What every scenario needs (the registry, the primary imputation)
reaches each worker once. The primary imputation's chains and analyses run
as tasks too. An exclusion, stratified or leave-out scenario starts each
chain from the primary imputation's completed data set (restricted to its
patients) and the state that chain ended in, and runs ``warm_iterations``
iterations (:attr:`hmlib.settings.RunSizes.scenario_iterations`) instead of a
cold start's ``iterations`` (``bench/sensitivity_warm_start.py``: no shift of
the mean or the SE beyond Monte Carlo error; warm minus cold scatters as two
independent imputation runs should, ``sqrt(2 B / m)``;
``SensitivitySettings.warm_families`` chooses the families). Each
scenario uses the same seed as the primary analysis (common random numbers:
a scenario differs from the primary by its assumption, not by Monte Carlo
noise), so the results do not depend on ``workers`` or on the order of completion. A scenario that
raises is kept, as failed, with its reason.

References
----------
van Buuren S (2018). Flexible Imputation of Missing Data, 2nd ed., sec. 3.9
(sensitivity analysis, delta adjustment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact, Record, artifact_path
from hmlib.exceptions import ParamsError
from hmlib.figures import sensitivity as figures
from hmlib.params import check_relevant_difference
from hmlib.parallel import TaskPool, check_workers
from hmlib.progress import reporter
from hmlib.privacy import SUPPRESSED_LABEL, suppress_counts
from hmlib.results import ESTIMATE_COLUMNS, to_jsonable
from hmlib.stats.joint import PosteriorDraws
from hmlib.steps.base import Step, StepContext
from hmlib.steps.disclosure import hidden_counts
from hmlib.steps.handoff import take_over
from hmlib.steps.imputation import CHUNKS_PER_WORKER, ImputationArtifact, impute_registry
from hmlib.steps.sensitivity_grid import assemble_grid, bisection_tasks, tipping_points
from hmlib.steps.sensitivity_focus import (categorical_focus, category_model_for, delta_grid, focus_levels,
                                           focus_reference, focus_row, focus_terms)
from hmlib.steps.sensitivity_rule import ConclusionRule, resolve_conclusion_rule
from hmlib.steps.sensitivity_scenarios import (DELTA_FAMILIES, DELTA_MODES, FAMILIES, REIMPUTING_FAMILIES, Scenario,
                                               ScenarioContext, SensitivitySettings, analyse, joint_model_fitter)
from hmlib.steps.sensitivity_dropout import (dropout_bisection_tasks, dropout_methods_text, dropout_plan_notes,
                                             dropout_tipping_points, plan_all, run_bisection, run_task)
from hmlib.steps import sensitivity_verdict
from hmlib.steps.sensitivity_verdict import FAMILY_TEXT, FamilyRecord
from hmlib.steps.sensitivity_variance import SensitivityVarianceChoice, residual_variance_choice
from hmlib.methods import method_label

__all__ = ["SensitivityResult", "SensitivityArtifact", "ScenarioRecord", "TippingRecord", "SettingsRecord",
           "SensitivityVarianceChoice", "residual_variance_choice", "run_sensitivity", "run", "STEP", "FAMILY_TEXT"]



# --------------------------------------------------------------------------
# Row records of the artifact (the report reads these fields)
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class ScenarioRecord(Record):
    """One scenario as published: what it changed, whether it ran, and whether the conclusion moved.

    ``n_patients_excluded`` and ``n_patients`` (analysed) are ``"suppressed"``
    when a small count could be recovered from them, and so is
    ``n_clusters_excluded`` when the clusters are patients (params ``time``)
    and from 1 to ``min_cell - 1`` of them are left out; ``n_patients`` is None
    for a failed scenario. ``joint_fit`` says how a prior scenario's joint
    model was obtained (``"step 4 fit"``, ``"importance reweighting"`` or
    ``"refit"``; empty for the other families).
    """

    scenario: str
    family: str
    reference: str
    status: str
    reason: str
    n_clusters_excluded: int | str
    n_patients_excluded: int | str
    excluded_clusters: tuple[str, ...]
    delta_sd: float | None
    delta_units: float | None
    joint_fit: str
    changed_conclusion: bool
    change_reason: str
    notes: tuple[str, ...]
    n_patients: int | str | None


@dataclass(frozen=True)
class TippingRecord(Record):
    """The tipping point of one delta mode and direction (``found=False``: none on the grid).

    ``delta_sd`` is on the step's delta scale (:attr:`SensitivityArtifact.delta_scale`:
    SDs of the observed values, or log odds for a categorical focus, whose
    ``odds_ratio`` is ``e^delta``; None for a numeric focus); ``term`` the
    focus term whose conclusion changed when several are judged.
    """

    mode: str
    direction: str
    found: bool
    delta_sd: float | None
    delta_units: float | None
    bracket_sd: tuple[float, ...] | None
    estimate: float | None
    ci_lower: float | None
    ci_upper: float | None
    change: str
    grid_max_sd: float
    term: str | None
    odds_ratio: float | None


@dataclass(frozen=True)
class SettingsRecord(Record):
    """:class:`SensitivitySettings` as run (``m`` and ``iterations`` those of the primary imputation)."""

    families: tuple[str, ...]
    exclusion_thresholds: tuple[float, ...]
    cluster_sd_priors: list
    reference_prior: list
    deltas_sd: tuple[float, ...]
    deltas_log_odds: tuple[float, ...]
    bisection_steps: int
    dropout_form: str
    relevant_difference: float | None
    negligible_share: float
    null_value: float
    plausible_delta_sd: float
    plausible_log_odds: float
    n_influential: int
    min_clusters: int
    m: int | None
    iterations: int | None
    warm_iterations: int | None
    warm_families: tuple[str, ...]
    joint_fast: bool
    level: float


# --------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _whole_count(value):
    """A count as an int; the suppression label as it is; a missing count (NaN) as None."""
    if value is None or isinstance(value, str):
        return value
    value = float(value)
    return int(value) if np.isfinite(value) else None


@dataclass(eq=False)
class SensitivityResult:
    """The scenario x estimate grid, the tipping points and the verdict.

    Attributes
    ----------
    focus : str
    focus_terms : list of str
        Terms of the focus variable (one per non-reference level if categorical).
    primary : pandas.DataFrame
        The primary analysis (contract columns without ``method``).
    primary_method : str
    grid : pandas.DataFrame
        Tidy: ``scenario, family, reference, status, term, estimate, std_error,
        ci_lower, ci_upper, n_patients, n_clusters, changed_conclusion,
        change_reason`` (one row per scenario and term; failed scenarios one row
        with NaN estimates and the reason).
    scenarios : pandas.DataFrame
        One row per scenario: ``scenario, family, reference, status, reason,
        n_clusters_excluded, n_patients_excluded, excluded_clusters,
        delta_sd, delta_units, joint_fit, changed_conclusion, change_reason, notes,
        seconds, cpu_seconds``; ``joint_fit`` says how a prior scenario's joint
        model was obtained (``"step 4 fit"``, ``"importance reweighting"`` or
        ``"refit"``; empty for the other families).
        Holds raw counts; :meth:`scenario_table` is what the report shows.
    tipping : dict
        ``{mode: {"positive" | "negative": {...}}}`` (see :meth:`tipping_table`).
    delta_curve : pandas.DataFrame
        ``mode, delta_sd, delta_units, estimate, ci_lower, ci_upper, changed, source``.
    observed_sd : float
        SD of the observed focus values (the delta scale).
    settings : SensitivitySettings
    min_cell : int
    n_patients_primary : int
        Patients in the primary analysis.
    n_patients_all : int
        Patients in the registry's analysis frame.
    residual_variance : SensitivityVarianceChoice
        The residual variance of every multilevel imputation, and where the
        choice came from.
    rule : hmlib.steps.sensitivity_rule.ConclusionRule
        When a conclusion changes, with its clinically relevant difference.
    workers : int
    elapsed : float
    notes : list of str
    delta_scale : {"SD", "log odds"}
        The scale of delta: SDs of the observed focus values, or log odds
        ratios for a categorical focus (then ``observed_sd`` is NaN).
    delta_grid : tuple of float
        The delta grid without 0, on that scale.
    skipped : dict
        ``{family: why}`` for families the run left out (e.g. the prior
        scenarios in fast mode without step 4's draws).
    focus_reference : str or None
        The reference level of a categorical focus.
    focus_ordinal : bool
        A categorical focus declared ordinal (its delta shifts the odds of a higher category).
    """

    focus: str
    focus_terms: list
    primary: pd.DataFrame
    primary_method: str
    grid: pd.DataFrame
    scenarios: pd.DataFrame
    tipping: dict
    delta_curve: pd.DataFrame
    observed_sd: float
    settings: SensitivitySettings
    min_cell: int
    n_patients_primary: int
    n_patients_all: int
    residual_variance: SensitivityVarianceChoice
    rule: ConclusionRule
    workers: int = 1
    elapsed: float = 0.0
    notes: list = field(default_factory=list)
    delta_scale: str = "SD"
    delta_grid: tuple = ()
    skipped: dict = field(default_factory=dict)
    focus_reference: str | None = None
    focus_ordinal: bool = False
    hidden_sizes: frozenset = frozenset()
    outcome: str = ""
    dropout: dict = field(default_factory=dict)
    clusters_are_patients: bool = False

    # -- tables ---------------------------------------------------------------
    def _suppression(self) -> tuple[pd.DataFrame, np.ndarray]:
        """Scenario table with patient counts, and which rows hide them."""
        table = self.scenarios.drop(columns=["seconds", "cpu_seconds"]).copy()
        focus = self.grid.loc[self.grid["term"] == self.focus_terms[0], ["scenario", "n_patients"]]
        table = table.merge(focus, on="scenario", how="left")
        excluded = table["n_patients_excluded"].fillna(0).astype(int)
        counts = pd.DataFrame({"n_kept": self.n_patients_all - excluded, "n_excluded": excluded,
                               "n_total": self.n_patients_all})
        safe = suppress_counts(counts, ["n_kept", "n_excluded"], self.min_cell, total_column="n_total",
                               parts=[["n_kept", "n_excluded"]], column_totals=False)
        # The analysed counts differ from the primary's by the excluded clusters' analysed patients.
        analysed_gap = self.n_patients_primary - table["n_patients"].astype(float)
        small_gap = ((analysed_gap > 0) & (analysed_gap < self.min_cell)).to_numpy()
        # a cluster size step 1 hides is hidden here too: leaving that cluster out would give it back
        size_hidden = table["excluded_clusters"].map(
            lambda names: any(str(c) in self.hidden_sizes for c in (names or ()))).to_numpy(dtype=bool)
        hidden = (safe.mask["n_excluded"].to_numpy() | small_gap | size_hidden) & (excluded.to_numpy() > 0)
        if self.clusters_are_patients:   # a number of clusters left out is then a number of patients
            n = table["n_clusters_excluded"].fillna(0).astype(int).to_numpy()
            hidden |= (n > 0) & (n < self.min_cell)
        return table, hidden

    def scenario_table(self) -> pd.DataFrame:
        """The scenarios as the report shows them: small patient counts suppressed.

        ``n_patients_excluded`` from 1 to ``min_cell - 1`` is suppressed, and
        with it the scenario's analysed ``n_patients`` (the two add up to
        published totals); so is a scenario whose analysed count differs from
        the primary's by fewer than ``min_cell`` patients.
        """
        table, hidden = self._suppression()
        columns = ("n_patients_excluded", "n_patients") + (("n_clusters_excluded",) if self.clusters_are_patients
                                                            else ())
        for col in columns:
            table[col] = table[col].astype(object)
            table.loc[hidden, col] = SUPPRESSED_LABEL
        return table

    def _hidden_scenarios(self) -> set:
        table, hidden = self._suppression()
        return set(table.loc[hidden, "scenario"])

    def tipping_table(self) -> pd.DataFrame:
        """One row per delta mode and direction.

        Columns ``mode, direction, found, delta_sd, delta_units, bracket_sd``
        (the unchanged and changed ends after bisection), ``estimate,
        ci_lower, ci_upper`` at the tipping point, ``change`` (why), ``term``
        (which focus term changed, several judged) and ``odds_ratio``
        (``e^delta`` for a categorical focus).
        """
        rows = []
        for mode, sides in self.tipping.items():
            for direction, info in sides.items():
                odds = float(np.exp(info["delta_sd"])) if self.delta_scale == "log odds" and info["found"] else None
                rows.append({"mode": mode, "direction": direction, **info, "odds_ratio": odds})
        return pd.DataFrame(rows)

    def dropout_tipping_table(self) -> pd.DataFrame:
        """The tipping points of the delta after dropout: as :meth:`tipping_table`, ``mode`` ``dropout:<variable>``,
        ``delta_sd`` in SDs of that variable's recorded values and ``delta_units`` in its units (empty without)."""
        rows = [{"mode": f"dropout:{variable}", "direction": direction, **tip, "odds_ratio": None}
                for variable, info in self.dropout.items() for direction, tip in info["tipping"].items()]
        return pd.DataFrame(rows, columns=list(TippingRecord.__dataclass_fields__))

    def dropout_interval_words(self) -> str | None:
        """The visit interval of a growing delta after dropout in words (``"3 units of month"``), None when the
        delta is constant or did not run (:func:`hmlib.steps.sensitivity_dropout.dropout_time_unit`)."""
        return next((info["interval_words"] for info in self.dropout.values() if info.get("form") == "growing"),
                    None)

    def dropout_tipping_caption(self) -> str:
        """The caption of :meth:`dropout_tipping_table`: says the shifts' unit when the delta grows with time."""
        growing = self.dropout_interval_words()
        return "Tipping points of the delta after dropout" + (
            f" (shifts in SDs per visit interval of {growing}, and in units per interval)" if growing else "")

    def _published_grid(self) -> pd.DataFrame:
        grid = self.grid.copy()
        grid["n_patients"] = grid["n_patients"].astype(float)
        grid.loc[grid["scenario"].isin(self._hidden_scenarios()), "n_patients"] = np.nan
        return grid

    def estimate_rows(self) -> pd.DataFrame:
        """Rows of ``estimates.csv``: method ``sensitivity:<scenario>``, successful scenarios only.

        ``n_patients`` is NaN where the scenario's excluded count is suppressed.
        """
        grid = self._published_grid()
        ok = grid.loc[grid["status"] == "ok"].copy()
        ok["method"] = "sensitivity:" + ok["scenario"]
        ok["n_patients"] = ok["n_patients"].astype("Int64")
        ok["n_clusters"] = ok["n_clusters"].astype("Int64")
        return ok.loc[:, list(ESTIMATE_COLUMNS)].reset_index(drop=True)

    # -- findings -------------------------------------------------------------
    def primary_focus(self) -> pd.Series:
        """The primary analysis's row of the (first) focus term."""
        return focus_row(self.primary, self.focus_terms[0])

    def changed(self) -> pd.DataFrame:
        """Scenarios (not delta) whose conclusion about a focus term changed."""
        g = self.grid
        sel = g["term"].isin(self.focus_terms) & g["changed_conclusion"] & ~g["family"].isin(list(DELTA_FAMILIES))
        return g.loc[sel].reset_index(drop=True)

    def family_coverage(self) -> list:
        """What ran of each family (:func:`hmlib.steps.sensitivity_verdict.family_coverage`)."""
        return sensitivity_verdict.family_coverage(self)

    def verdict(self) -> str:
        """"robust", "not robust" or "incomplete", from what ran (:mod:`hmlib.steps.sensitivity_verdict`)."""
        return sensitivity_verdict.verdict(self)

    def narrative(self) -> list[str]:
        """Generated sentences, each stating a finding with its numbers, only from scenarios that ran."""
        return sensitivity_verdict.narrative(self)

    def summary(self) -> str:
        """Plain text: verdict, the focus coefficient per scenario, tipping points (returned)."""
        lines = [self.verdict(), ""]
        g = self.grid.loc[self.grid["term"] == self.focus_terms[0]]
        width = max([len(s) for s in g["scenario"]] + [8])
        for r in g.itertuples():
            if r.status != "ok":
                lines.append(f"{r.scenario:<{width}}  failed: {r.change_reason}")
                continue
            flag = "  <- " + r.change_reason if r.changed_conclusion else ""
            lines.append(f"{r.scenario:<{width}}  {r.estimate:>9.4g}  ({r.ci_lower:>8.4g}, {r.ci_upper:>8.4g}){flag}")
        return "\n".join(lines)

    @property
    def estimates(self) -> pd.DataFrame:
        """Rows of ``estimates.csv`` (:meth:`estimate_rows`)."""
        return self.estimate_rows()

    def to_artifact(self) -> "SensitivityArtifact":
        """The typed record of step 5."""
        return SensitivityArtifact.from_json(to_jsonable(self.to_dict()))

    def figures(self) -> dict:
        """Step 5's figures by section: scenarios, tipping, and dropout (the delta after dropout, when it ran)."""
        return {"scenarios": [figures.scenario_heatmap(self), figures.scenario_forest(self)],
                "tipping": [figures.tipping_point_curve(self)],
                **({"dropout": [figures.dropout_tipping_curve(self)]} if self.dropout else {})}

    def to_dict(self) -> dict:
        """JSON-ready aggregates for ``artifacts/sensitivity.json`` (no patient-level rows)."""
        table = self.scenario_table()
        table["excluded_clusters"] = table["excluded_clusters"].map(lambda v: [str(x) for x in v])
        for col in ("n_patients_excluded", "n_patients"):   # counts as whole numbers (NaN-padded columns are float)
            table[col] = pd.Series([_whole_count(v) for v in table[col]], index=table.index, dtype=object)
        return {
            "focus": self.focus, "focus_terms": list(self.focus_terms), "primary_method": self.primary_method,
            "primary": self.primary.to_dict(orient="records"),
            "settings": dataclasses.asdict(self.settings),
            "observed_sd": self.observed_sd if np.isfinite(self.observed_sd) else None,
            "grid": self._published_grid().to_dict(orient="records"),
            "scenarios": table.to_dict(orient="records"),
            "tipping": self.tipping_table().to_dict(orient="records"),
            "delta_curve": self.delta_curve.to_dict(orient="records"),
            "verdict": self.verdict(), "narrative": self.narrative(), "notes": list(self.notes),
            "workers": self.workers, "elapsed_s": self.elapsed,
            "residual_variance": self.residual_variance.to_json(), "conclusion_rule": self.rule.to_json(),
            "delta_scale": self.delta_scale, "dropout_tipping": self.dropout_tipping_table().to_dict(orient="records"),
            "families_run": [record.to_json() for record in self.family_coverage()],
        }


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------
def _task_cost(scenario: Scenario) -> int:
    # Longest first (LPT scheduling): joint-model fits dwarf the rest.
    return {"prior": 0, "stratified": 1, "exclusion": 2, "leave-out": 2, "early-dropout": 2,
            "indicator": 3}.get(scenario.family, 4)


def _run_plan(plan: list, context: ScenarioContext, reference: dict, pool: TaskPool) -> tuple[dict, dict]:
    """Every scenario, then the tipping-point bisections, in one pool: (outcomes by name, bisections by side)."""
    order = sorted(range(len(plan)), key=lambda i: _task_cost(plan[i]))
    terms = focus_terms(context.registry)
    scenarios = pool.map(run_task, [plan[i] for i in order], shared=context,
                         progress=reporter("sensitivity", unit="scenarios"))
    outcomes = {out.scenario.name: out for out in scenarios}
    tasks = bisection_tasks(plan, outcomes, reference, context.settings, terms, context.rule) \
        + dropout_bisection_tasks(plan, outcomes, terms, context.rule, context.settings.bisection_steps)
    refined = pool.map(run_bisection, [task for _, task in tasks], shared=context,
                       progress=reporter("tipping points", unit="searches"))
    return outcomes, {key: result for (key, _), result in zip(tasks, refined)}


def run_sensitivity(registry, settings: SensitivitySettings | None = None, *, workers: int | None = None,
                    joint_fitter="auto", primary_imputation=None, joint_reference=None,
                    seed: int | None = None, cluster_residual_variance="auto",
                    pool: TaskPool | None = None) -> SensitivityResult:
    """Run every scenario of ``settings`` on a checked registry.

    Parameters
    ----------
    registry : hmlib.data.Registry
    settings : SensitivitySettings, optional
        Defaults as documented there.
    workers : int, optional
        Local worker processes (default: one per core); 1 runs everything in
        this process. Ignored when ``$HMLIB_SCHEDULER`` names a Dask
        cluster. The results do not depend on it. Local workers are started
        with ``spawn``, so a *script* that calls this with ``workers > 1``
        needs the usual ``if __name__ == "__main__":`` guard (notebooks do
        not).
    joint_fitter : callable, "auto" or None
        ``joint_fitter(registry, *, priors, seed, fast)`` returning an object with
        ``to_estimates()`` (a :class:`hmlib.stats.joint.JointModelResult`) or
        a frame of contract rows. Must be picklable (a module-level function)
        when ``workers > 1``. ``"auto"``: :func:`hmlib.steps.sensitivity_scenarios.joint_model_fitter`.
        None: a prior scenario that would need a fit fails with the reason
        ("not available: joint model not built" without step-4 draws).
    primary_imputation : hmlib.stats.imputation.ImputationResult, optional
        The primary multilevel imputation, if already made (with the residual
        variance of ``cluster_residual_variance``); else it is made here with
        ``m``/``iterations`` of the settings and ``seed``.
    joint_reference : JointModelResult, PosteriorDraws or pandas.DataFrame, optional
        The joint model already fitted (step 4; :class:`hmlib.stats.joint.PosteriorDraws`
        as saved by notebook 04). Its prior's scenario reuses it; with draws,
        the other priors reweight them instead of refitting. A frame of
        contract rows (no draws) only saves the reference prior's fit.
    seed : int, optional
        Seed of every imputation (default: the params' seed).
    cluster_residual_variance : bool, "auto" or SensitivityVarianceChoice
        Residual variance of every multilevel imputation (primary and
        scenarios): cluster-specific (True, 2l.norm) or common (False,
        2l.pan); "auto" decides by step 3's rule (:func:`residual_variance_choice`);
        a :class:`SensitivityVarianceChoice` is used as given (``run`` passes
        step 3's).
    pool : hmlib.parallel.TaskPool, optional
        An open pool to run the tasks on (``workers`` is then ignored).

    Returns
    -------
    SensitivityResult

    Examples
    --------
    >>> result = run_sensitivity(registry, SensitivitySettings(families=("delta-global",)))  # doctest: +SKIP
    >>> result.verdict()                                                                      # doctest: +SKIP
    """
    s = settings or SensitivitySettings()
    if workers is not None:
        check_workers(workers)
    with contextlib.nullcontext(pool) if pool is not None else TaskPool(workers) as tasks:
        return _run_sensitivity(registry, s, tasks, joint_fitter=joint_fitter, primary_imputation=primary_imputation,
                                joint_reference=joint_reference, seed=seed,
                                cluster_residual_variance=cluster_residual_variance)


def _run_sensitivity(registry, s: SensitivitySettings, pool: TaskPool, *, joint_fitter, primary_imputation,
                     joint_reference, seed, cluster_residual_variance) -> SensitivityResult:
    start = time.perf_counter()
    p = registry.params
    seed = int(p.seed if seed is None else seed)
    check_relevant_difference(s.relevant_difference, p.outcome_family)  # before any imputation
    if isinstance(joint_fitter, str):
        if joint_fitter != "auto":
            raise ParamsError(f"joint_fitter must be a callable, 'auto' or None, got {joint_fitter!r}.")
        joint_fitter = joint_model_fitter
    residual = cluster_residual_variance if isinstance(cluster_residual_variance, SensitivityVarianceChoice) \
        else residual_variance_choice(registry, None, cluster_residual_variance)
    notes: list[str] = [residual.text]
    chunked = functools.partial(pool.map, chunks_per_worker=CHUNKS_PER_WORKER)
    if primary_imputation is None:
        reg = dataclasses.replace(registry, params=p.with_overrides(seed=seed))
        primary_imputation = impute_registry(reg, method="multilevel", m=s.m, iterations=s.iterations,
                                             cluster_residual_variance=residual.cluster_specific,
                                             map_tasks=chunked)
    # Every scenario imputes with the primary's m and iterations.
    s = dataclasses.replace(s, m=primary_imputation.m, iterations=primary_imputation.iterations)
    categorical = categorical_focus(registry)
    observed = registry.frame[p.focus]
    observed_sd = float(observed.dropna().std(ddof=1)) if registry.kinds.get(p.focus) == "numeric" else float("nan")
    category_model = None
    if categorical and any(f in DELTA_MODES for f in s.families):
        category_model = category_model_for(registry, primary_imputation, seed)
        if not isinstance(category_model, str):
            notes.extend(category_model.notes)
    context = ScenarioContext(registry=registry, settings=s, seed=seed, primary_imputation=primary_imputation,
                              primary_rows=None, joint_fitter=joint_fitter, observed_sd=observed_sd,
                              joint_reference=joint_reference,
                              cluster_residual_variance=residual.cluster_specific, category_model=category_model)
    primary_rows, primary_notes = analyse(context, primary_imputation, map_tasks=chunked)
    context.primary_rows = primary_rows
    notes.extend(primary_notes)
    terms = focus_terms(registry)
    context.rule = resolve_conclusion_rule(registry, primary_rows["term"], terms, s.relevant_difference,
                                           s.negligible_share, s.null_value)

    plan = plan_all(registry, s)    # with the dropout families when the params have a visit time
    notes.extend(dropout_plan_notes(registry, s))
    reference = focus_reference(primary_rows, terms)
    outcomes, bisections = _run_plan(plan, context, reference, pool)
    grid, scenarios = assemble_grid(plan, outcomes, primary_rows, context.rule, terms)
    tipping, delta_curve, tipping_notes = tipping_points(plan, outcomes, bisections, grid, reference, s,
                                                          terms, 1.0 if categorical else observed_sd, context.rule)
    dropout, dropout_curve, dropout_notes = dropout_tipping_points(plan, outcomes, bisections, registry, context.rule,
                                                                   form=s.dropout_form)
    notes.extend(tipping_notes + dropout_notes)
    if dropout_curve:
        delta_curve = pd.concat([part for part in (delta_curve, pd.DataFrame(dropout_curve)) if len(part)],
                                ignore_index=True)
    return SensitivityResult(
        focus=p.focus, focus_terms=terms, primary=primary_rows,
        primary_method=primary_imputation.label, grid=grid, scenarios=scenarios, tipping=tipping,
        delta_curve=delta_curve, observed_sd=observed_sd, settings=s, min_cell=p.privacy.min_cell,
        n_patients_primary=int(primary_rows["n_patients"].iloc[0]), n_patients_all=registry.n_patients,
        residual_variance=residual, rule=context.rule, workers=pool.workers, elapsed=time.perf_counter() - start,
        notes=notes, delta_scale="log odds" if categorical else "SD", delta_grid=delta_grid(registry, s)[0],
        focus_reference=focus_levels(registry)[0] if categorical else None,
        focus_ordinal=bool(categorical and p.focus in p.ordinal), hidden_sizes=hidden_counts(registry).sizes,
        outcome=p.outcome, dropout=dropout, clusters_are_patients=p.time is not None)


# --------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivityArtifact(Artifact):
    """The record of step 5 (``artifacts/sensitivity.json``).

    ``scenarios``, ``tipping``, ``settings``, ``residual_variance`` and
    ``families_run`` (what ran of each family) are typed rows (the report
    reads their fields); ``grid``, ``primary`` and ``delta_curve`` are
    displayed only and stay free JSON. ``delta_scale`` is ``"SD"`` (SDs of
    the observed focus values) or ``"log odds"`` (a categorical focus).
    """

    KEY: ClassVar[str] = "sensitivity"
    VERSION: ClassVar[int] = 3     # 2: dropout_tipping; 3: settings.dropout_form

    conclusion_rule: ConclusionRule
    delta_curve: list
    elapsed_s: float
    focus: str
    focus_terms: tuple[str, ...]
    grid: list
    narrative: tuple[str, ...]
    notes: tuple[str, ...]
    observed_sd: float | None
    primary: list
    primary_method: str
    residual_variance: SensitivityVarianceChoice
    scenarios: tuple[ScenarioRecord, ...]
    settings: SettingsRecord
    tipping: tuple[TippingRecord, ...]
    verdict: str
    workers: int
    delta_scale: str
    families_run: tuple[FamilyRecord, ...]
    dropout_tipping: tuple[TippingRecord, ...]


def run(ctx: StepContext) -> SensitivityResult:
    """Run the scenario grid around the primary analysis and write the artifact and estimates.

    Every multilevel imputation uses step 3's residual-variance choice (read
    from its artifact; without it, step 3's rule is applied here). The prior
    scenarios reweight step 4's posterior draws (refitting only where the
    weights say so); without those draws they refit the joint model per prior, which fast mode
    skips (the notes say so). The primary imputation is step 3's when handed over (:mod:`hmlib.steps.handoff`).
    """
    joint_reference = PosteriorDraws.load_matching(
        artifact_path(ctx.output_dir, "joint_posterior").with_name("joint_posterior.npz"), ctx.registry)
    residual = residual_variance_choice(ctx.registry, ctx.read(ImputationArtifact))
    families = tuple(f for f in FAMILIES if not (ctx.params.fast and f == "prior" and joint_reference is None))
    settings = SensitivitySettings(families=families, m=ctx.sizes.imputations, iterations=ctx.sizes.iterations,
                                   warm_iterations=ctx.sizes.scenario_iterations,
                                   relevant_difference=ctx.params.sensitivity.relevant_difference,
                                   dropout_form=ctx.params.sensitivity.dropout_delta_form)
    primary = take_over(ctx, m=settings.m, iterations=settings.iterations, cluster_specific=residual.cluster_specific)
    result = run_sensitivity(ctx.registry, settings, primary_imputation=primary, joint_reference=joint_reference,
                             cluster_residual_variance=residual)
    if "prior" not in families:
        result.skipped["prior"] = "fast mode without step 4's posterior draws, so no joint model was refitted"
    ctx.write(STEP, result)
    return result


#: How the methods text names the re-imputing families.
WARM_LABELS = {"exclusion": "exclusion", "stratified": "imputation by cluster type", "leave-out": "leave-out"}


def methods_text(record, ev) -> list:
    """This step's paragraph(s) of the report's methods section, from its record.

    ``ev`` is the report's wording context (:class:`hmlib.report.evidence.ReportEvidence`: ``noun``,
    ``min_cell``, ``versions``).
    """
    st, noun = record.settings, ev.noun
    ran = [f for f in record.families_run if f.n_ok]
    not_run = [f for f in record.families_run if not f.n_ok and f.status != "not applicable"]
    text = (f"Sensitivity analysis around the primary method ({method_label(record.primary_method)}): "
            f"scenario families that ran: {', '.join(f.family for f in ran) or 'none'}")
    if not_run:
        text += "; not run: " + ", ".join(f"{f.family} ({f.status}: {f.reason})" for f in not_run)
    deltas = [f for f in ran if f.family in ("delta-global", "delta-cluster")]
    if deltas:
        modes = " and ".join("the same in every " + noun if f.family == "delta-global"
                             else f"in proportion to each {noun}'s missingness" for f in deltas)
        if record.delta_scale == "log odds":
            grid = ", ".join(f"{d:g}" for d in st.deltas_log_odds)
            text += (f"; MNAR delta adjustment of the imputed {record.focus} categories on the log-odds scale "
                     f"(pattern mixture: the imputed categories redrawn with their odds multiplied by e^delta), "
                     f"delta {grid}, {modes}, with tipping points searched by bisection")
        else:
            text += (f"; MNAR delta adjustment of the imputed {record.focus} values by "
                     f"{', '.join(f'{d:g}' for d in st.deltas_sd)} observed SDs, {modes}, with tipping points "
                     "searched by bisection")
    dropout = dropout_methods_text(record)
    paras = [f"{text}. {dropout + ' ' if dropout else ''}{record.residual_variance.text}", record.conclusion_rule.text]
    warm = [WARM_LABELS[f] for f in REIMPUTING_FAMILIES if f in st.warm_families and f in st.families]
    cold = [WARM_LABELS[f] for f in REIMPUTING_FAMILIES if f not in st.warm_families and f in st.families]
    if st.warm_iterations is not None and warm:
        text = (f"Scenarios of {' and '.join(warm)} re-impute starting each of their {st.m} chains from the "
                f"primary imputation's completed data set and run {st.warm_iterations} chained-equations "
                f"iterations (a cold start runs {st.iterations}); in simulations (bench/sensitivity_warm_start.py: "
                "registries shaped like the demo and like a multinational trial) this shifted no estimate beyond "
                "Monte Carlo error and scattered them no more than an independent rerun with another seed.")
        if cold:
            text += (f" Scenarios of {' and '.join(cold)} start cold ({st.iterations} iterations from random "
                     "draws), as set for this run.")
        paras.append(text)
    priors = [sc for sc in record.scenarios if sc.family == "prior" and sc.status == "ok"]
    if priors:
        how = [sc.joint_fit for sc in priors]
        n_weighted, n_refit = how.count("importance reweighting"), how.count("refit")
        paras.append(
            f"Priors on the joint model's cluster SDs: {', '.join(sc.scenario.split(':', 1)[-1] for sc in priors)}; "
            f"{n_weighted} by Pareto-smoothed importance reweighting of the step-4 posterior draws "
            f"(Vehtari et al. 2024), {n_refit} refitted (the weights were unreliable or no draws were saved), "
            "the rest the step-4 fit itself.")
    return paras


STEP = Step(key="sensitivity", number=5, title="Group-aware sensitivity analysis",
            notebook="05_sensitivity.ipynb", artifact=SensitivityArtifact, run=run,
            needs=("diagnose", "imputation", "joint_model"), methods=("sensitivity",),
            summary_name="step 5 (sensitivity analysis)",
            methods_text=methods_text,
            absent_methods_text="Step 5 (sensitivity analysis) is absent from this report.",
            uses_workers=True)
