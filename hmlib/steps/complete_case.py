"""Step 2, complete-case check: who drops out, and how the question changes.

The statistics (retention, standardised differences, the missing-indicator
model and its cluster-varying effect) are in :mod:`hmlib.stats.complete_case`;
this module runs them on the checked registry, fits the complete-case model,
suppresses small counts in what it publishes, and defines the step's result,
its typed artifact and ``STEP``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib.artifacts import Artifact, Record
from hmlib.exceptions import FitError
from hmlib.figures import complete_case as figures
from hmlib.results import ESTIMATE_COLUMNS, estimate_rows, to_jsonable
from hmlib.stats.complete_case import (SMD_THRESHOLD, complete_case_mask, fit_missing_category_model,
                                       fit_missing_indicator_model, indicator_effects_by_cluster,
                                       retention_by_cluster, standardized_differences, standardized_differences_by)
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.patient_flow import patient_flow
from hmlib.steps.base import Step, StepContext
from hmlib.steps.complete_case_flow import FlowRecord, published_flow
from hmlib.steps.complete_case_time import OverTimeCheck, check_over_time, over_time_sentences
from hmlib.steps.complete_case_levels import (LevelCheck, LevelRecord, check_levels, retention_hidden_by_step1,
                                              suppressed_retention)
from hmlib.wording import cluster_noun, count_text, not_estimable_note, plural, row_noun

__all__ = ["CompleteCaseResult", "complete_case_check", "suppressed_retention", "ShiftRow",
           "CompleteCaseArtifact", "run", "STEP"]


@dataclass
class CompleteCaseResult:
    """Everything step 2 found. Aggregated only: no patient-level rows.

    Attributes
    ----------
    outcome, outcome_family, focus : str
        As in the params (focus resolved).
    n_all, n_complete : int
        Patients in the analysis frame, and complete cases among them.
    n_clusters, n_clusters_lost : int
    clusters_lost : list
        Labels of clusters without any complete case.
    retention : pandas.DataFrame
        :func:`hmlib.stats.complete_case.retention_by_cluster`.
    retention_display : pandas.DataFrame
        The same with small counts suppressed (what the report shows;
        :func:`suppressed_retention`; with higher levels, consistent with
        their tables: :func:`hmlib.steps.complete_case_levels.published_retention`).
    shift : pandas.DataFrame
        :func:`hmlib.stats.complete_case.standardized_differences` over
        outcome and predictors.
    shift_by_type : pandas.DataFrame or None
        The same within each level of the first cluster covariate.
    estimates : pandas.DataFrame
        Rows of ``estimates.csv`` (``complete_case``, ``missing_indicator``).
    indicator_by_cluster : pandas.DataFrame or None
        :func:`hmlib.stats.complete_case.indicator_effects_by_cluster`.
    min_cell : int
        The small-cell threshold of the params (figures leave smaller clusters out).
    notes : list of str
        Plain-language remarks (models that could not be fitted, and why).
    focus_levels : tuple of str
        Levels of a categorical focus (the first is the reference); empty for
        a numeric focus.
    categorical_levels : dict
        ``{variable: levels}`` of the categorical predictors, the focus first
        (the level-shares figure).
    indicator_term : str
        The indicator's term in the ``missing_indicator`` rows:
        ``<focus>_missing`` (numeric focus), ``<focus>[missing]`` (categorical
        focus: the missing-category model); ``""`` when it was not fitted.
    flow : hmlib.steps.complete_case_flow.FlowRecord or None
        Patients and clusters from the extract to each analysis, small counts suppressed.
    noun : str
        What a cluster is called (``site``, ``hospital``).
    by_level : tuple of hmlib.steps.complete_case_levels.LevelCheck
        Retention and estimand shift by unit of each level above the cluster
        (``higher_levels``), outermost first; empty without higher levels.
    over_time : hmlib.steps.complete_case_time.OverTimeCheck or None
        With ``time``: the complete cases' share and the outcome's shift at each visit.
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
    flow: FlowRecord | None = None
    noun: str = "cluster"
    focus_levels: tuple = ()
    indicator_term: str = ""
    categorical_levels: dict = field(default_factory=dict)
    by_level: tuple[LevelCheck, ...] = ()
    over_time: OverTimeCheck | None = None

    @property
    def rows(self) -> str:
        """The extract's rows in the plural: ``"visits"`` with a visit time, else ``"patients"``."""
        return plural(row_noun(self.over_time is not None))

    @property
    def focus_terms(self) -> list:
        """The focus variable's terms: its name, or ``focus[level]`` for each non-reference level."""
        if self.focus_levels:
            return [f"{self.focus}[{level}]" for level in self.focus_levels[1:]]
        return [self.focus]

    @property
    def outcome_all(self) -> float:
        """The outcome's mean (or rate) in all patients."""
        return float(self.shift.loc[self.shift["variable"] == self.outcome, "all_patients"].iloc[0])

    @property
    def outcome_cc(self) -> float:
        """The outcome's mean (or rate) among complete cases."""
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
        if self.clusters_lost and self.over_time is not None:   # the clusters are patients: no labels
            out.append(f"{self.noun.capitalize()}s with no complete visit (they vanish from a complete-case "
                       f"analysis): {count_text(len(self.clusters_lost), self.min_cell)}.")
        elif self.clusters_lost:
            shown = ", ".join(map(str, self.clusters_lost[:8])) + (" ..." if len(self.clusters_lost) > 8 else "")
            out.append(f"Clusters with no complete case (they vanish from a complete-case analysis): {shown}.")
        out.extend(over_time_sentences(self.over_time))
        for check in self.by_level:
            out.extend(check.sentences(self.outcome, self.focus))
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
        out.extend(self._model_sentences())
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

    def _model_sentences(self) -> list:
        """The focus coefficient(s) among complete cases and in the missing-indicator (or -category) model."""
        est = self.estimates.set_index(["method", "term"])

        def interval(method, term):
            row = est.loc[(method, term)]
            # a level's odds ratio is what a reader of a categorical predictor looks for
            odds = (f"; odds ratio {np.exp(row['estimate']):.3g}"
                    if self.focus_levels and self.outcome_family == "binomial" else "")
            return f"{row['estimate']:.3g} (95% CI {row['ci_lower']:.3g} to {row['ci_upper']:.3g}{odds})"

        available = [t for t in self.focus_terms
                     if ("complete_case", t) in est.index and ("missing_indicator", t) in est.index]
        if not self.focus_levels:
            return [f"The {self.focus} coefficient is {interval('complete_case', t)} among complete cases and "
                    f"{interval('missing_indicator', t).replace('95% CI ', '')} in the missing-indicator model."
                    for t in available]
        reference = self.focus_levels[0]
        out = [f"The {t} coefficient against {self.focus} = {reference} is {interval('complete_case', t)} "
               f"among complete cases and {interval('missing_indicator', t)} in the missing-category model."
               for t in available]
        if ("missing_indicator", self.indicator_term) in est.index:
            out.append(f"Patients without a recorded {self.focus} ({self.indicator_term}, against {self.focus} = "
                       f"{reference}): {interval('missing_indicator', self.indicator_term)}.")
        return out

    def indicator_by_cluster_note(self) -> str:
        """Why no cluster-specific indicator effect is shown (when none is): none can be estimated, or partial
        pooling gives every cluster the same effect (a figure of one value repeated says less than this sentence)."""
        table = self.indicator_by_cluster
        if table is not None and table["raw"].notna().any() and not self._pooled_effects_vary():
            raw = table["raw"].dropna()
            what = (f"the level '{self.focus} missing' (against {self.focus} = {self.focus_levels[0]})"
                    if self.focus_levels else f"{self.focus} being unmeasured")
            return (f"Partial pooling gives every cluster the same effect of {what}, "
                    f"{float(table['pooled'].iloc[0]):.3g} (between-cluster SD {table.attrs.get('tau', 0.0):.2g}): "
                    f"the own estimates of the {len(raw)} clusters where it can be estimated (from "
                    f"{raw.min():.3g} to {raw.max():.3g}) differ no more than their standard errors allow, so one "
                    "common effect describes them and no per-cluster figure or table is shown.")
        return ("No cluster has both measured and unmeasured patients with outcome variation, "
                "so cluster-specific indicator effects cannot be estimated.")

    def _pooled_effects_vary(self) -> bool:
        pooled = self.indicator_by_cluster["pooled"].dropna().to_numpy(dtype=float)
        return bool(len(pooled)) and float(np.ptp(pooled)) > 1e-9 * max(1.0, float(np.abs(pooled).max()))

    def to_artifact(self) -> CompleteCaseArtifact:
        """The typed record of step 2."""
        return CompleteCaseArtifact.from_json(to_jsonable(self.to_dict()))

    def figures(self) -> dict:
        """``{"flow": [...], "retention": [...], "shift": [...], "indicator_by_cluster": [...]}``."""
        overall = self.n_complete / self.n_all if self.n_all else float("nan")
        shift = [figures.smd_plot(self.shift, threshold=SMD_THRESHOLD, rows=self.rows)]
        if self.categorical_levels:
            shift.append(figures.level_shares_plot(self.shift, self.categorical_levels, rows=self.rows))
        out = {"flow": [figures.flow_diagram(self.flow, noun=self.noun, rows=self.rows)] if self.flow is not None else [],
               "retention": [figures.retention_plot(self.retention_display, overall_share=overall,
                                                    min_cell=self.min_cell, rows=self.rows)],
               "shift": shift,
               "indicator_by_cluster": []}
        table = self.indicator_by_cluster
        if table is not None and table["raw"].notna().any() and self._pooled_effects_vary():
            out["indicator_by_cluster"].append(figures.indicator_effects_plot(
                table, focus=self.focus, missing_level=bool(self.focus_levels)))
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
            "flow": None if self.flow is None else self.flow.to_json(),
            "focus_levels": list(self.focus_levels), "indicator_term": self.indicator_term,
            "by_level": [check.to_dict() for check in self.by_level],
            "over_time": None if self.over_time is None else self.over_time.to_json(),
        }


def complete_case_check(registry) -> CompleteCaseResult:
    """Run step 2 on a checked registry.

    Parameters
    ----------
    registry : hmlib.data.Registry

    Returns
    -------
    CompleteCaseResult
        A model that cannot be fitted is a note in the result, not an error.
    """
    p = registry.params
    frame = registry.frame
    columns = [p.outcome, *p.predictors]
    complete = complete_case_mask(frame, columns)
    retention = retention_by_cluster(frame, p.cluster, complete)
    lost = retention.loc[retention["lost"], "cluster"].tolist()
    binary_outcome = p.outcome if p.outcome_family == "binomial" else None
    retention_display, by_level = check_levels(registry, complete, columns, retention,
                                               retention_hidden_by_step1(registry, retention), binary_outcome)
    shift = standardized_differences(frame, complete, columns, registry.kinds, binary_outcome=binary_outcome)
    shift_by_type = None
    if p.cluster_covariates:
        shift_by_type = standardized_differences_by(frame, complete, columns, registry.kinds,
                                                    p.cluster_covariates[0], binary_outcome=binary_outcome)

    notes: list[str] = []
    estimates = []
    try:
        fit_cc = fit_analysis_model(frame, outcome=p.outcome, predictors=p.predictors, cluster=p.cluster,
                                    family=p.outcome_family, levels=registry.levels, higher_levels=p.higher_levels,
                                    random_slopes=p.random_slopes)
        estimates.append(estimate_rows(fit_cc, "complete_case"))
        if fit_cc.separated:
            notes.append(not_estimable_note("complete-case model", fit_cc.separated))
    except FitError as exc:
        notes.append(f"The complete-case model could not be fitted: {exc}")

    focus = p.focus
    categorical = registry.kinds.get(focus) == "categorical"
    indicator_table, indicator_term = None, ""
    if frame[focus].isna().any():
        fit_model = fit_missing_category_model if categorical else fit_missing_indicator_model
        what = "missing-category" if categorical else "missing-indicator"
        try:
            model = fit_model(frame, focus=focus, predictors=p.predictors, outcome=p.outcome, cluster=p.cluster,
                              family=p.outcome_family, levels=registry.levels, higher_levels=p.higher_levels,
                              random_slopes=p.random_slopes)
            estimates.append(estimate_rows(model.fit, "missing_indicator"))
            indicator_term = model.indicator
            if model.fit.separated:
                notes.append(not_estimable_note(f"{what} model", model.fit.separated))
            indicator_table = indicator_effects_by_cluster(
                model.frame, fit=model.fit, design=model.design, indicator_column=model.indicator,
                outcome=p.outcome, cluster=p.cluster, family=p.outcome_family)
        except FitError as exc:
            notes.append(f"The {what} model could not be fitted: {exc}")
    else:
        notes.append(f"The focus variable {focus} is complete, so there is no missing-indicator model.")

    estimates_frame = (pd.concat(estimates, ignore_index=True) if estimates
                       else pd.DataFrame(columns=list(ESTIMATE_COLUMNS)))
    return CompleteCaseResult(
        outcome=p.outcome, outcome_family=p.outcome_family, focus=focus,
        n_all=int(len(frame)), n_complete=int(complete.sum()), n_clusters=int(len(retention)),
        n_clusters_lost=len(lost), clusters_lost=lost, retention=retention, retention_display=retention_display,
        shift=shift, shift_by_type=shift_by_type, estimates=estimates_frame,
        indicator_by_cluster=indicator_table, min_cell=p.privacy.min_cell, notes=notes,
        focus_levels=tuple(registry.levels.get(focus, ())) if categorical else (), indicator_term=indicator_term,
        categorical_levels={c: tuple(registry.levels[c]) for c in sorted(p.predictors, key=lambda c: c != focus)
                            if registry.kinds.get(c) == "categorical" and c in registry.levels},
        flow=published_flow(patient_flow(frame, p.cluster, columns), p.privacy.min_cell),
        noun=cluster_noun(p.cluster), by_level=by_level, over_time=check_over_time(registry, complete),
    )


@dataclass(frozen=True)
class ShiftRow(Record):
    """One row of the estimand-shift table (:func:`hmlib.stats.complete_case.standardized_differences`).

    Attributes
    ----------
    variable : str
    level : str
        Level of a categorical variable; ``""`` for a mean or a 0/1 rate.
    summary : str
        ``"mean"`` or ``"share"``.
    all_patients, complete_cases : float or None
        The mean or share in all patients (every recorded value) and among
        complete cases.
    smd : float or None
        Standardised difference, complete cases minus all patients.
    """

    variable: str
    level: str
    summary: str
    all_patients: float | None
    complete_cases: float | None
    smd: float | None


@dataclass(frozen=True)
class CompleteCaseArtifact(Artifact):
    """The record of step 2 (``artifacts/complete_case.json``).

    The fields the report reads are typed (counts, clusters lost, the outcome
    in all patients and complete cases, the shift rows, a categorical focus's
    levels and the indicator's term: ``<focus>[missing]`` for the
    missing-category model); the tables that are
    only displayed (``retention`` with its suppressed cells, ``shift_by_type``
    whose level column is named by the cluster covariate, and
    ``indicator_by_cluster``) are free JSON, ``null`` when absent. ``by_level``
    holds one record per level above the cluster, outermost first (empty
    without higher levels; version 2 added it). ``over_time`` is step 2 over the visits
    (:mod:`hmlib.steps.complete_case_time`), ``null`` without ``time`` (version 3 added it).
    """

    KEY: ClassVar[str] = "complete_case"
    VERSION: ClassVar[int] = 3

    by_level: tuple[LevelRecord, ...]
    over_time: OverTimeCheck | None

    clusters_lost: tuple[str, ...]
    flow: FlowRecord | None
    focus_levels: tuple[str, ...]
    indicator_by_cluster: dict
    indicator_term: str
    n_all: int
    n_clusters: int
    n_clusters_lost: int
    n_complete: int
    narrative: tuple[str, ...]
    notes: tuple[str, ...]
    outcome_all: float | None
    outcome_complete_cases: float | None
    retention: list
    shift: tuple[ShiftRow, ...]
    shift_by_type: list


def run(ctx: StepContext) -> CompleteCaseResult:
    """Run step 2 on the checked inputs and write its artifact and estimates."""
    result = complete_case_check(ctx.registry)
    ctx.write(STEP, result)
    return result


def methods_text(record, ev) -> list:
    """This step's paragraph(s) of the report's methods section, from its record.

    ``ev`` is the report's wording context (:class:`hmlib.report.evidence.ReportEvidence`: ``noun``,
    ``min_cell``, ``versions``).
    """
    model = ("a missing-category model (the missing values of the categorical focus as a level of their own) "
             if record.focus_levels else "a missing-indicator model ")
    by_unit = ""
    if record.by_level:
        levels = " and ".join(level.level for level in record.by_level)
        by_unit = (f" Retention and the standardised differences were also reported within each unit of {levels} "
                   f"(units with fewer than {ev.min_cell} complete cases or dropped patients suppressed).")
    over_time = ""
    if record.over_time is not None:
        by = "visit time" if record.over_time.visit_by == "time" else "visit number within the patient"
        over_time = (f" Over the visits ({record.over_time.time}, by {by}) the share of visits that are complete "
                     f"cases and the baseline outcome (first recorded value) of the patients complete at the visit "
                     f"against all patients (standardised difference) were reported per visit, without counts (visits with fewer than {ev.min_cell} complete or "
                     "dropped visits, or with a count step 1 hides, suppressed).")
    rows = plural(row_noun(record.over_time is not None))
    return [f"Complete-case analysis used the {count_text(record.n_complete, ev.min_cell)} {rows} with every "
            "model variable recorded; the estimand shift was measured by standardised differences between "
            f"complete cases and all patients; {model}was fitted for comparison.{by_unit}{over_time}"]


STEP = Step(key="complete_case", number=2, title="Complete-case check: who drops out",
            notebook="02_complete_case.ipynb", artifact=CompleteCaseArtifact, run=run,
            methods=("complete_case", "missing_indicator"), summary_name="step 2 (complete-case check)",
            methods_text=methods_text,
            absent_methods_text="Step 2 (complete-case check) is absent from this report.")
