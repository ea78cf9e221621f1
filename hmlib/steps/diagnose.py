"""Step 1, diagnose: where and how data are missing, by variable and by cluster.

The statistics are in :mod:`hmlib.stats.missingness`; this module runs
them on the checked registry (:func:`diagnose` on a frame,
:func:`diagnose_registry` on a registry, :func:`run` on a step context),
publishes them with small-cell suppression (:mod:`hmlib.steps.diagnose_tables`),
states the findings in sentences (:mod:`hmlib.steps.diagnose_narrative`) and
writes the step's typed artifact (:class:`DiagnoseArtifact`; no estimates:
step 1 fits no analysis model).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd

from hmlib import wording
from hmlib.artifacts import Artifact, Record
from hmlib.data import Registry
from hmlib.exceptions import DataError, FitError, ParamsError
from hmlib.figures import diagnose as figures
from hmlib.privacy import SuppressedTable
from hmlib.results import ESTIMATE_COLUMNS, to_jsonable
from hmlib.stats.design import outermost_first
from hmlib.stats.missingness import (ClusterVariationResult, LevelCorrelationResult, OutcomeCorrelationResult,
                                     missingness_cluster_variation, missingness_outcome_correlation,
                                     missingness_overview, missingness_patterns, missingness_predictors)
from hmlib.stats.missingness.counts import check_columns, check_level, cluster_index
from hmlib.steps import diagnose_higher, diagnose_narrative, diagnose_time, diagnose_units
from hmlib.steps.base import Step, StepContext
from hmlib.steps.diagnose_higher import HigherGapRow, LevelCorrelationRecord, LevelVariationRecord
from hmlib.steps.diagnose_levels import FocusLevels, FocusLevelsRecord, focus_levels
from hmlib.steps.diagnose_tables import (PublishedTables, display_names, publish_outcome_correlation,
                                         publish_overview, publish_predictors, publish_sporadic_variation,
                                         publish_tables)
from hmlib.steps.diagnose_time import TimeDiagnosis
from hmlib.steps.diagnose_time import OverTimeRecord
from hmlib.steps.diagnose_units import FunnelRecord, HeatmapRecord, UnitMissingnessRecord

__all__ = ["DiagnoseArtifact", "DiagnoseResult", "diagnose", "diagnose_registry", "run", "STEP"]


# --------------------------------------------------------------------------
# The artifact: artifacts/diagnose.json
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class OverviewRow(Record):
    """One variable of ``overview``: its missing values overall (``None``: suppressed)."""

    variable: str
    n: float | None
    n_missing: float | None
    n_observed: float | None
    share_missing: float | None
    ci_lower: float | None
    ci_upper: float | None
    n_clusters: int
    n_clusters_any_missing: float | None
    n_clusters_all_missing: float | None
    suppressed: tuple[str, ...]


@dataclass(frozen=True)
class ClusterRow(Record):
    """One cluster and incomplete variable of ``by_cluster`` (display names; ``None``: suppressed)."""

    cluster: str
    variable: str
    n: float | None
    n_missing: float | None
    n_observed: float | None
    share_missing: float | None
    ci_lower: float | None
    ci_upper: float | None
    gap_type: str | None
    funnel_position: str | None
    suppressed: tuple[str, ...]


@dataclass(frozen=True)
class GapSummaryRow(Record):
    """One incomplete variable of ``gap_summary``: clusters by gap type (``None``: not broken down)."""

    variable: str
    n_clusters: int
    n_complete: float | None
    n_sporadic: float | None
    n_structural: float | None
    structural_clusters: tuple[str, ...] | None
    n_missing: float | None
    n_missing_structural: float | None
    share_of_missing_structural: float | None


@dataclass(frozen=True)
class ClusterVariationRecord(Record):
    """A random-intercept model of one missingness indicator (no per-cluster values)."""

    variable: str
    covariates: tuple[str, ...]
    n_used: int | None
    n_dropped: int | None
    n_clusters: int
    cluster_sd: float
    cluster_sd_ci: tuple[float | None, ...]
    icc_latent: float
    lrt_statistic: float | None
    p_value: float | None
    df: int
    loglik: float | None
    loglik_without: float | None
    nagq: int
    method: str
    converged: bool
    fixed_effects: list  # displayed only: the fitter's coefficient table as records


@dataclass(frozen=True)
class PredictorRow(Record):
    """One term of a predictors-of-missingness model (odds ratios per SD of the term)."""

    covariate: str
    component: str
    term: str
    scale_sd: float | None
    log_odds_ratio: float | None
    std_error: float | None
    odds_ratio: float | None
    ci_lower: float | None
    ci_upper: float | None
    p_value: float | None


@dataclass(frozen=True)
class MissingnessPredictorsRecord(Record):
    """What predicts that one variable is missing, within and between clusters."""

    variable: str
    covariates: tuple[str, ...]
    table: tuple[PredictorRow, ...]
    n_used: int | None
    n_dropped: int | None
    dropped_by_covariate: dict[str, int | None]
    n_clusters: int
    cluster_sd: float
    nagq: int
    notes: tuple[str, ...]


@dataclass(frozen=True)
class OutcomeCorrelationRecord(Record):
    """Correlation of the focus variable's missingness with the outcome's cluster effects."""

    variable: str
    outcome: str
    outcome_family: str
    n_clusters: int
    pearson: float | None
    pearson_p: float | None
    pearson_ci: tuple[float | None, ...]
    spearman: float | None
    spearman_p: float | None
    spearman_ci: tuple[float | None, ...]
    level: float
    outcome_cluster_sd: float
    missingness_cluster_sd: float
    predictors_used: tuple[str, ...]
    missingness_covariates: tuple[str, ...]
    caveat: str


@dataclass(frozen=True)
class PatternRow(Record):
    """One missing-data pattern (the pooled row of rare patterns has ``n_missing_variables`` None)."""

    pattern: str
    n_missing_variables: float | None
    n_patterns: int
    count: int
    share: float


@dataclass(frozen=True)
class DiagnoseSettings(Record):
    """The settings step 1 ran with."""

    cluster: str
    outcome: str
    outcome_family: str
    predictors: tuple[str, ...]
    focus: str | None
    min_cell: int
    structural_share: float
    level: float
    cluster_noun: str
    higher_levels: tuple[str, ...]


@dataclass(frozen=True)
class DiagnoseArtifact(Artifact):
    """The record of step 1 (``artifacts/diagnose.json``): published (suppressed) aggregates only."""

    KEY: ClassVar[str] = "diagnose"
    VERSION: ClassVar[int] = 6

    by_cluster: tuple[ClusterRow, ...]
    by_unit: dict[str, UnitMissingnessRecord]
    cluster_variation: dict[str, ClusterVariationRecord]
    cluster_variation_without_structural: dict[str, ClusterVariationRecord]
    focus_levels: FocusLevelsRecord | None
    focus_variation_adjusted: ClusterVariationRecord | None
    funnels: dict[str, FunnelRecord]
    gap_summary: tuple[GapSummaryRow, ...]
    heatmap: HeatmapRecord
    higher_gaps: tuple[HigherGapRow, ...]
    incomplete_variables: tuple[str, ...]
    input_notices: tuple[str, ...]
    level_correlation: LevelCorrelationRecord | None
    level_variation: dict[str, LevelVariationRecord]
    missingness_predictors: dict[str, MissingnessPredictorsRecord]
    n_clusters: int
    n_excluded_missing_cluster: int
    n_patients: int
    n_rows_read: int
    narrative: tuple[str, ...]
    notes: tuple[str, ...]
    outcome_correlation: OutcomeCorrelationRecord | None
    over_time: OverTimeRecord | None
    overview: tuple[OverviewRow, ...]
    patterns: tuple[PatternRow, ...]
    settings: DiagnoseSettings
    variables: tuple[str, ...]


# --------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class DiagnoseResult:
    """Everything step 1 found, ready to publish (small cells suppressed).

    Per-cluster tables name clusters by their display names
    (``cluster_names``) and hold NaN for suppressed counts and the values
    derived from them; :meth:`to_artifact`, :meth:`narrative` and :meth:`figures` use only these.

    Attributes
    ----------
    cluster, outcome, outcome_family : str
    predictors : tuple of str
    focus : str or None
        The focus variable (None when it has no missing values).
    min_cell : int
    structural_share, level : float
    cluster_noun : str
        Word for a cluster in the narrative ("site", "school").
    n_patients, n_clusters : int
    variables : tuple of str
        Outcome and predictors.
    incomplete : tuple of str
        Those with at least one missing value (order of ``variables``).
    overview : SuppressedTable
        :func:`~hmlib.stats.missingness.missingness_overview` of all variables, suppressed.
    by_cluster : SuppressedTable or None
        :func:`~hmlib.stats.missingness.missingness_by_cluster` of the incomplete variables joined
        with the gap type and funnel position; ``cluster`` holds display names.
    heatmap : pandas.DataFrame
        Share missing, clusters (display names) x incomplete variables, NaN
        where the share is suppressed; ordered by the mean of the published
        shares (most missing first; clusters with every share suppressed
        last), so the order does not bound a suppressed share.
    gap_summary : pandas.DataFrame
        :class:`~hmlib.stats.missingness.GapResult` summary with display names; ``n_missing_structural``
        is NaN when it would reveal a suppressed count.
    patterns : pandas.DataFrame
        :func:`~hmlib.stats.missingness.missingness_patterns` (small patterns pooled).
    funnels : dict of str to FunnelResult
        Tables use display names and NaN for suppressed counts and rates.
    variation : dict of str to ClusterVariationResult
        Intercept-only missingness models.
    variation_sporadic : dict of str to ClusterVariationResult
        The same, for variables with structural gaps, fitted without the
        clusters that have them (how much the remaining clusters vary).
    focus_variation : ClusterVariationResult or None
        Missingness model of the focus variable adjusted for the fully
        observed predictors.
    predictor_models : dict of str to MissingnessPredictorsResult
    outcome_correlation : OutcomeCorrelationResult or None
        Its ``effects`` table (display names) is not published by
        :meth:`to_artifact`: with an intercept-only missingness model, a
        cluster's conditional mode and size give back its missing count.
    cluster_names : dict
        Label -> display name.
    notes : tuple of str
        Analyses skipped, and why.
    input_notices : tuple of str
        Notices raised while checking the extract (:mod:`hmlib.data`).
    n_rows_read : int
        Rows in the extract as read.
    n_excluded_missing_cluster : int
        Rows left out for having no cluster label.
    focus_levels : FocusLevels or None
        A categorical focus's recorded levels by cluster and their relation
        to missingness (:mod:`hmlib.steps.diagnose_levels`); None for a
        numeric focus or when the levels are not broken down.
    higher_levels : tuple of str
        Levels above the cluster (params ``higher_levels``), outermost first.
    level_variation : dict of str to LevelVariationResult
        Each modelled variable's missingness partitioned by level
        (:mod:`hmlib.steps.diagnose_higher`); empty without higher levels.
    higher_gaps : pandas.DataFrame
        Structural gaps at each higher level (:func:`hmlib.steps.diagnose_higher.higher_gaps`).
    level_correlation : LevelCorrelationResult or None
        The focus variable's missingness against the outcome at each level
        (nested models); None without higher levels or focus. Its per-unit
        ``effects`` are not published.
    by_unit : dict of str to UnitMissingness
        By higher level, outermost first: the heatmap and funnels by unit, suppressed around the
        clusters' decision (:mod:`hmlib.steps.diagnose_units`); empty without higher levels.
    over_time : TimeDiagnosis or None
        Missingness over each patient's visits (params ``time``; :mod:`hmlib.steps.diagnose_time`) or None.
    """

    cluster: str
    outcome: str
    outcome_family: str
    predictors: tuple
    focus: str | None
    min_cell: int
    structural_share: float
    level: float
    cluster_noun: str
    n_patients: int
    n_clusters: int
    variables: tuple
    incomplete: tuple
    overview: SuppressedTable
    by_cluster: SuppressedTable | None
    heatmap: pd.DataFrame
    gap_summary: pd.DataFrame
    patterns: pd.DataFrame
    funnels: dict
    variation: dict
    variation_sporadic: dict
    focus_variation: ClusterVariationResult | None
    predictor_models: dict
    outcome_correlation: OutcomeCorrelationResult | None
    cluster_names: dict = field(repr=False)
    notes: tuple = ()
    input_notices: tuple = ()
    n_rows_read: int = 0
    n_excluded_missing_cluster: int = 0
    focus_levels: FocusLevels | None = None
    higher_levels: tuple = ()
    level_variation: dict = field(default_factory=dict)
    higher_gaps: pd.DataFrame = field(default_factory=diagnose_higher.no_gaps)
    level_correlation: LevelCorrelationResult | None = None
    by_unit: dict = field(default_factory=dict)
    over_time: TimeDiagnosis | None = None

    @property
    def estimates(self) -> pd.DataFrame:
        """Step 1 writes no estimates (an empty table of the contract's columns)."""
        return pd.DataFrame(columns=list(ESTIMATE_COLUMNS))

    # ---------------------------------------------------------------- tables and text
    def variation_table(self) -> pd.DataFrame:
        """Between-cluster variation of each missingness indicator, one row per model.

        Columns ``variable, model, n_clusters, cluster_sd, sd_ci_lower,
        sd_ci_upper, icc_latent, lrt_statistic, p_value`` (boundary-corrected
        likelihood-ratio test of "no cluster effect").
        """
        rows = []
        models = [("intercept only", self.variation),
                  ("without clusters with structural gaps", self.variation_sporadic)]
        if self.focus_variation is not None:
            models.append(("adjusted for " + ", ".join(self.focus_variation.covariates),
                           {self.focus_variation.variable: self.focus_variation}))
        for label, results in models:
            for var, res in results.items():
                rows.append((var, label, res.n_clusters, res.cluster_sd, res.cluster_sd_ci[0],
                             res.cluster_sd_ci[1], res.icc, res.lrt_statistic, res.p_value))
        return pd.DataFrame(rows, columns=["variable", "model", "n_clusters", "cluster_sd", "sd_ci_lower",
                                           "sd_ci_upper", "icc_latent", "lrt_statistic", "p_value"])

    def level_table(self) -> pd.DataFrame:
        """Missingness variation by level (with higher levels): one row per variable and level, outermost first;
        ``two_level_sd`` is what a model with the clusters alone gives them."""
        return diagnose_higher.level_variation_table(self.level_variation)

    def level_correlation_table(self) -> pd.DataFrame:
        """The focus variable's missingness against the outcome at each level (with higher levels): one row per
        level, outermost first; empty without higher levels or focus."""
        return diagnose_higher.level_correlation_table(self.level_correlation)

    def narrative(self) -> list[str]:
        """Sentences stating each finding with its numbers (suppressed counts never shown);
        see :func:`hmlib.steps.diagnose_narrative.narrative`."""
        return diagnose_narrative.narrative(self)

    def correlation_text(self) -> str:
        """The correlation of missingness with the outcome's cluster effects, as one paragraph."""
        return diagnose_narrative.correlation_text(self)

    # ---------------------------------------------------------------- outputs
    def to_artifact(self) -> DiagnoseArtifact:
        """The typed record of ``artifacts/diagnose.json`` (aggregated and suppressed only).

        Suppressed values are ``None`` (JSON ``null``) and named in each
        row's ``suppressed`` list.

        Raises
        ------
        ArtifactError
            A value does not fit the record (a programming error).
        """
        funnels = {var: diagnose_units.funnel_record(f) for var, f in self.funnels.items()}
        payload = {
            "settings": {
                "cluster": self.cluster, "outcome": self.outcome, "outcome_family": self.outcome_family,
                "predictors": list(self.predictors), "focus": self.focus, "min_cell": self.min_cell,
                "structural_share": self.structural_share, "level": self.level,
                "cluster_noun": self.cluster_noun, "higher_levels": list(self.higher_levels),
            },
            "n_patients": self.n_patients,
            "n_clusters": self.n_clusters,
            "variables": list(self.variables),
            "incomplete_variables": list(self.incomplete),
            "overview": self.overview.to_records(),
            "by_cluster": self.by_cluster.to_records() if self.by_cluster is not None else [],
            "heatmap": {
                "clusters": list(self.heatmap.index),
                "variables": list(self.heatmap.columns),
                "share_missing": self.heatmap.to_numpy().tolist(),
            },
            "gap_summary": self.gap_summary,
            "patterns": self.patterns,
            "funnels": funnels,
            "cluster_variation": {v: r.to_dict() for v, r in self.variation.items()},
            "cluster_variation_without_structural": {v: r.to_dict() for v, r in self.variation_sporadic.items()},
            "focus_variation_adjusted": self.focus_variation.to_dict() if self.focus_variation else None,
            "focus_levels": self.focus_levels.to_dict() if self.focus_levels else None,
            "missingness_predictors": {v: r.to_dict() for v, r in self.predictor_models.items()},
            "outcome_correlation": self.outcome_correlation.to_dict() if self.outcome_correlation else None,
            "notes": list(self.notes),
            "narrative": self.narrative(),
            "input_notices": list(self.input_notices),
            "n_rows_read": self.n_rows_read,
            "n_excluded_missing_cluster": self.n_excluded_missing_cluster,
            **diagnose_higher.records(self.level_variation, self.higher_gaps, self.level_correlation),
            **diagnose_units.records(self.by_unit),
            "over_time": self.over_time.to_record() if self.over_time is not None else None,
        }
        return DiagnoseArtifact.from_json(to_jsonable(payload))

    def figures(self) -> dict:
        """The step's figures: ``{"by_cluster": [heatmap, then bars and funnel per variable],
        "patterns": [pattern plot], "by_level": [per higher level: heatmap, then funnel per variable],
        "over_time": [per variable: by visit, by calendar period, dropout curves]}``, all
        empty when nothing is missing (``by_level`` also without higher levels, ``over_time`` without time)."""
        noun, rows = self.cluster_noun, wording.plural(wording.row_noun(self.over_time is not None))
        out = {"by_cluster": [], "patterns": [], "by_level": diagnose_units.unit_figures(self.by_unit, rows=rows),
               "over_time": diagnose_time.time_figures(self.over_time) if self.over_time is not None else []}
        if not self.incomplete:
            return out
        out["by_cluster"].append(figures.missingness_heatmap(self.heatmap, cluster_noun=noun, rows=rows))
        published = self.by_cluster.values if self.by_cluster is not None else None
        for var, funnel in self.funnels.items():
            if published is not None and (published["variable"] == var).any():
                out["by_cluster"].append(figures.cluster_missingness_bars(
                    published, var, overall_rate=funnel.overall_rate, cluster_noun=noun, rows=rows))
            out["by_cluster"].append(figures.funnel_plot(funnel, cluster_noun=noun, rows=rows))
        if self.focus_levels is not None:
            out["by_cluster"].append(figures.level_mix_plot(self.focus_levels.table, self.focus_levels.levels,
                                                            variable=self.focus_levels.variable, cluster_noun=noun,
                                                            rows=rows))
        out["patterns"].append(figures.pattern_plot(self.patterns, list(self.incomplete), rows=rows))
        return out


# --------------------------------------------------------------------------
# Running step 1
# --------------------------------------------------------------------------
def diagnose(frame: pd.DataFrame, *, cluster: str, outcome: str, outcome_family: str,
             predictors: Sequence[str], focus: str | None = None, min_cell: int = 11,
             structural_share: float = 0.9, level: float = 0.95, cluster_noun: str = "cluster",
             cluster_names: Mapping[Hashable, str] | None = None, nagq: int | None = None,
             input_notices: Sequence[str] = (), n_rows_read: int | None = None,
             n_excluded_missing_cluster: int = 0, levels: Mapping[str, Sequence[str]] | None = None,
             higher_levels: Sequence[str] = (), time: str | None = None, seed: int | None = None) -> DiagnoseResult:
    """Run step 1: all missingness diagnostics for the incomplete analysis variables.

    Parameters
    ----------
    frame : pandas.DataFrame
        Patient-level registry extract (not modified).
    cluster, outcome : str
        Cluster and outcome columns.
    outcome_family : {"gaussian", "binomial"}
    predictors : sequence of str
        Predictors of the analysis model.
    focus : str, optional
        Variable of main interest (its missingness model is adjusted for the
        fully observed predictors and related to the outcome). Default: the
        incomplete variable with the most missing values.
    min_cell : int, default 11
        Small-cell threshold for every published count (:mod:`hmlib.privacy`).
    structural_share : float, default 0.9
        See :func:`hmlib.stats.missingness.classify_gaps`.
    level : float, default 0.95
        Level of all intervals.
    cluster_noun : str, default "cluster"
        Word for a cluster in the narrative (e.g. "site").
    cluster_names : mapping, optional
        Label -> display name (e.g. from
        :func:`hmlib.privacy.pseudonymize_clusters`). Default: the label
        itself, or ``"<cluster_noun> <label>"`` for a numeric label. Published
        per-cluster tables are sorted by display name, so pseudonyms do not
        reveal the original order.
    nagq : int, optional
        Quadrature nodes of all binomial models; default 10 up to
        ``AGHQ_MAX_ROWS`` rows, else Laplace.
    input_notices : sequence of str, optional
        Notices raised while checking the extract, recorded in the artifact.
    n_rows_read : int, optional
        Rows in the extract as read (default: the rows of ``frame``).
    n_excluded_missing_cluster : int, default 0
        Rows left out before ``frame`` for having no cluster label.
    levels : mapping, optional
        ``{column: levels}`` of the categorical variables
        (:attr:`hmlib.data.Registry.levels`). A categorical focus also gets
        its recorded levels by cluster (:mod:`hmlib.steps.diagnose_levels`).
    higher_levels : sequence of str, optional
        Levels above the cluster, each cluster in one unit of each (params
        ``higher_levels``): each modelled variable's missingness is also
        partitioned by level, and structural gaps are found at each higher
        level (:mod:`hmlib.steps.diagnose_higher`).
    time : str, optional
        Visit time column (numbers or datetime64; params ``time``): missingness over the visits
        (:mod:`hmlib.steps.diagnose_time`; site: the innermost higher level). None: nothing about time.
    seed : int, optional
        Seed of the change-point screen's permutations (with ``time``).

    Returns
    -------
    DiagnoseResult

    Raises
    ------
    DataError
        Unknown columns, or rows without a cluster label.
    ParamsError
        Bad ``outcome_family``, ``focus``, ``min_cell``, ``level`` or
        ``structural_share``.

    Notes
    -----
    A model that cannot be fitted (e.g. a variable missing for almost
    nobody) is skipped and the reason is added to ``notes``; the rest of the
    diagnosis still runs. Covariates of the predictor models of a variable are
    the other analysis variables, the outcome included.

    Disclosure control (:mod:`hmlib.steps.diagnose_tables`): the per-cluster counts (cluster size, missing,
    recorded) are suppressed once, on one wide table, by
    :func:`hmlib.privacy.suppress_counts` (column totals treated as
    published), and every per-cluster table, the heatmap and the funnels use
    that one decision; a share is hidden when it would give back a hidden
    count, an interval whenever any count of its row is hidden. A variable
    whose overall count is suppressed, or whose cluster counts cannot be
    protected (few missing values spread one by one over clusters), is not
    broken down by cluster at all (no per-cluster values, gap types, cluster
    counts in the overview, heatmap column or funnel), and one whose overall
    count is suppressed is not modelled either (an intercept-only fit gives
    the count back). Rows-dropped counts of the predictor models follow the
    overview's suppression. Per-cluster empirical-Bayes effects are not
    published. What is not prevented: bounds (intervals) on a hidden count
    from the gap type or funnel position of its cluster, and relations
    between the pooled pattern count and the per-variable totals.
    """

    predictors = list(predictors)
    variables = [outcome] + [p for p in predictors if p != outcome]
    level = _check_arguments(frame, cluster=cluster, variables=variables, outcome_family=outcome_family,
                             min_cell=min_cell, structural_share=structural_share, level=level, focus=focus)
    check_columns(frame, list(higher_levels) + ([time] if time is not None else []), "diagnose")
    higher_levels = tuple(outermost_first(frame, higher_levels))
    labels, _ = cluster_index(frame, cluster, "diagnose")
    names = display_names(labels, cluster_names, cluster_noun)
    overview_raw = missingness_overview(frame, variables, cluster, level=level)
    overview = publish_overview(overview_raw, min_cell)
    incomplete = [v for v, k in zip(variables, overview_raw["n_missing"]) if k > 0]
    notes: list[str] = []
    focus = _choose_focus(focus, incomplete, overview_raw, notes)
    common = dict(
        cluster=cluster, outcome=outcome, outcome_family=outcome_family, predictors=tuple(predictors),
        min_cell=int(min_cell), structural_share=float(structural_share), level=level, cluster_noun=cluster_noun,
        n_patients=len(frame), n_clusters=int(labels.size), variables=tuple(variables), cluster_names=names,
        input_notices=tuple(input_notices), n_rows_read=len(frame) if n_rows_read is None else int(n_rows_read),
        n_excluded_missing_cluster=int(n_excluded_missing_cluster), higher_levels=higher_levels)
    if not incomplete:
        empty = pd.DataFrame()
        return DiagnoseResult(
            **common, focus=None, incomplete=(), overview=overview, by_cluster=None, heatmap=empty,
            gap_summary=empty, patterns=missingness_patterns(frame, variables, min_cell=min_cell), funnels={},
            variation={}, variation_sporadic={}, focus_variation=None, predictor_models={},
            outcome_correlation=None, notes=tuple(notes))

    categorical_focus = focus is not None and focus in (levels or {})
    tables = publish_tables(frame, incomplete, cluster, overview=overview, min_cell=min_cell,
                            structural_share=structural_share, level=level, names=names, cluster_noun=cluster_noun,
                            focus_levels=(focus, list(levels[focus])) if categorical_focus else None)
    notes.extend(tables.notes)
    patterns = missingness_patterns(frame, incomplete, min_cell=min_cell)
    if focus in tables.hidden_overall:
        focus = None
    models = _fit_models(frame, cluster=cluster, outcome=outcome, outcome_family=outcome_family,
                         predictors=predictors, variables=variables, incomplete=incomplete, focus=focus,
                         tables=tables, names=names, min_cell=min_cell, nagq=nagq, level=level,
                         cluster_noun=cluster_noun, notes=notes)
    broken_down = [v for v in tables.modelled(incomplete) if v not in tables.no_breakdown]
    by_level = diagnose_higher.fit_level_variation(frame, tables.modelled(incomplete), cluster, higher_levels,
                                                   level=level, notes=notes)
    gaps = diagnose_higher.higher_gaps(frame, broken_down, cluster, higher_levels, structural_share=structural_share)
    by_level_correlation = diagnose_higher.fit_level_correlation(
        frame, focus, cluster, higher_levels, outcome, outcome_family, predictors, level=level, notes=notes)
    by_unit = diagnose_units.missingness_by_unit(frame, tables.hidden, broken_down, cluster, higher_levels,
                                                 min_cell=min_cell, notes=notes)
    published_levels = (focus_levels(focus, levels[focus], tables.level_counts, tables.level_shares, min_cell, notes)
                        if categorical_focus and focus is not None else None)
    described = [v for v in incomplete if v not in tables.hidden_overall and v != time] if time else []
    over_time = diagnose_time.diagnose_over_time(
        frame, described, cluster, time, site=higher_levels[-1] if higher_levels else None, outcome=outcome,
        min_cell=int(min_cell), level=level, seed=seed, cluster_noun=cluster_noun) if described else None
    return DiagnoseResult(
        **common, focus=focus, incomplete=tuple(incomplete), overview=tables.overview, by_cluster=tables.by_cluster,
        heatmap=tables.heatmap, gap_summary=tables.gap_summary, patterns=patterns, funnels=tables.funnels,
        **models, notes=tuple(notes), focus_levels=published_levels, level_variation=by_level, higher_gaps=gaps,
        level_correlation=by_level_correlation, by_unit=by_unit, over_time=over_time)


def _check_arguments(frame, *, cluster, variables, outcome_family, min_cell, structural_share, level,
                     focus) -> float:
    """Refuse bad arguments of :func:`diagnose` before any work; returns the checked level."""
    check_columns(frame, [cluster, *variables], "diagnose")
    if outcome_family not in ("gaussian", "binomial"):
        raise ParamsError(f"outcome_family must be 'gaussian' or 'binomial', got {outcome_family!r}.")
    if not isinstance(min_cell, (int, np.integer)) or isinstance(min_cell, bool) or min_cell < 1:
        raise ParamsError(f"min_cell must be a whole number >= 1, got {min_cell!r}.")
    if not 0.0 <= float(structural_share) <= 1.0:
        raise ParamsError(f"structural_share must be between 0 and 1, got {structural_share!r}.")
    level = check_level(level)
    if focus is not None and focus not in variables:
        raise ParamsError(f"focus {focus!r} is not the outcome or a predictor ({', '.join(variables)}).")
    return level


def _choose_focus(focus: str | None, incomplete: list, overview_raw: pd.DataFrame, notes: list) -> str | None:
    """The focus variable: as given if incomplete (else None, noted), by default the most often missing."""
    if focus is None and incomplete:
        missing = overview_raw.set_index("variable")["n_missing"]
        return max(incomplete, key=lambda v: (int(missing.loc[v]), -incomplete.index(v)))
    if focus is not None and focus not in incomplete:
        notes.append(f"The focus variable {focus} has no missing values; the focus analyses were skipped.")
        return None
    return focus


def _fit_models(frame: pd.DataFrame, *, cluster, outcome, outcome_family, predictors, variables, incomplete,
                focus, tables: PublishedTables, names, min_cell, nagq, level, cluster_noun, notes: list) -> dict:
    """Step 1's missingness models, published; a model that cannot be fitted is noted, not raised.

    Returns the fields ``variation, variation_sporadic, focus_variation,
    predictor_models, outcome_correlation`` of :class:`DiagnoseResult`.
    """
    fit = {"nagq": nagq, "level": level}
    modelled = tables.modelled(incomplete)
    variation: dict = {}
    variation_sporadic: dict = {}
    for var in modelled:
        try:
            variation[var] = missingness_cluster_variation(frame, var, cluster, **fit)
        except FitError as err:
            notes.append(f"The model of between-{cluster_noun} variation in missingness of {var} "
                         f"was not fitted: {err}")
        structural = tables.structural_clusters[var]
        if structural and var not in tables.no_breakdown:
            # structural gaps alone make the SD huge; how much do the other clusters vary?
            keep = ~frame[cluster].isin(list(structural)).to_numpy()
            try:
                res = missingness_cluster_variation(frame.loc[keep], var, cluster, **fit)
                variation_sporadic[var] = publish_sporadic_variation(res, tables, structural)
            except FitError as err:
                notes.append(f"The model of missingness of {var} without the {cluster_noun}s with "
                             f"structural gaps was not fitted: {err}")
    complete_predictors = [p for p in predictors if p not in incomplete]
    focus_variation = None
    if focus is not None and complete_predictors:
        try:
            focus_variation = missingness_cluster_variation(frame, focus, cluster, complete_predictors, **fit)
        except FitError as err:
            notes.append(f"The adjusted missingness model of {focus} was not fitted: {err}")
    predictor_models: dict = {}
    for var in modelled:
        covariates = [v for v in variables if v != var]
        try:
            res = missingness_predictors(frame, var, cluster, covariates, **fit)
        except FitError as err:
            notes.append(f"The model of what predicts missing {var} was not fitted: {err}")
            continue
        predictor_models[var] = publish_predictors(res, tables.hidden_overall, min_cell)
    outcome_correlation = None
    if focus is not None:
        reuse = focus_variation if focus_variation is not None else variation.get(focus)
        try:
            corr = missingness_outcome_correlation(frame, focus, cluster, outcome, outcome_family, predictors,
                                                   missingness_fit=reuse, **fit)
            outcome_correlation = publish_outcome_correlation(corr, names)
        except (FitError, DataError) as err:
            notes.append(f"The correlation of {focus} missingness with the {outcome} {cluster_noun} "
                         f"effects was not computed: {err}")
    return {"variation": variation, "variation_sporadic": variation_sporadic, "focus_variation": focus_variation,
            "predictor_models": predictor_models, "outcome_correlation": outcome_correlation}


def diagnose_registry(registry: Registry) -> DiagnoseResult:
    """Step 1 on a checked registry: its params, its analysis frame and what was learnt reading it.

    Parameters
    ----------
    registry : hmlib.data.Registry

    Returns
    -------
    DiagnoseResult
    """
    p = registry.params
    frame = registry.frame
    if p.time is not None:
        frame = frame.assign(**{p.time: registry.time_values.to_numpy()})
    return diagnose(frame, cluster=p.cluster, outcome=p.outcome, outcome_family=p.outcome_family,
                    predictors=p.predictors, focus=p.focus, min_cell=p.privacy.min_cell,
                    structural_share=p.diagnose.structural_share, cluster_noun=wording.cluster_noun(p.cluster),
                    input_notices=[n.message for n in registry.notices], n_rows_read=registry.n_rows_read,
                    n_excluded_missing_cluster=registry.n_excluded_missing_cluster, levels=registry.levels,
                    higher_levels=p.higher_levels, time=p.time, seed=p.seed)


def run(ctx: StepContext) -> DiagnoseResult:
    """Run step 1 on the checked inputs of ``ctx`` and write its artifact (it has no estimates)."""
    result = diagnose_registry(ctx.registry)
    ctx.write(STEP, result)
    return result


def methods_text(record, ev) -> list:
    """This step's paragraph(s) of the report's methods section, from its record.

    ``ev`` is the report's wording context (:class:`hmlib.report.evidence.ReportEvidence`: ``noun``,
    ``min_cell``, ``versions``).
    """
    noun = ev.noun
    return [f"Missingness was described per variable and per {noun} (Wilson intervals; funnel plots with exact "
            "binomial limits); a structural gap is a " + noun + " where at least "
            f"{100 * record.settings.structural_share:.0f}% of a variable is missing. The between-{noun} "
            "variation of each missingness indicator was estimated with a random-intercept logistic model and "
            "tested with a boundary-corrected likelihood-ratio test; predictors of missingness were separated "
            "into within- and between-" + noun + " components." + _levels_methods(record, noun)
            + diagnose_time.time_methods(record.over_time)]


def _levels_methods(record, noun: str) -> str:
    """The methods sentence for the partition by level (empty without higher levels)."""
    higher = record.settings.higher_levels
    if not higher:
        return ""
    text = (f" With levels above the {noun} ({', '.join(higher)}), each indicator's variation was partitioned by "
            "level with nested random intercepts (Laplace approximation), each level tested against the model "
            "without it (boundary-corrected likelihood-ratio test), and structural gaps were also sought at each "
            "level above the " + noun + ".")
    if record.by_unit:
        text += (" Heatmaps and funnel plots were also drawn by the units of each level above the " + noun + ", "
                 "their small cells suppressed so that no count hidden by " + noun + " can be recovered from a "
                 "unit's total.")
    if record.level_correlation is not None:
        text += (" The focus variable's missingness and the outcome were each modelled with nested random "
                 "intercepts and the fully observed predictors, and their conditional modes correlated at each "
                 "level (a screening number: the modes are shrunk and carry estimation error).")
    return text


STEP = Step(key="diagnose", number=1, title="Diagnose: where and how data are missing",
            notebook="01_diagnose.ipynb", artifact=DiagnoseArtifact, run=run,
            summary_name="step 1 (diagnose)",
            methods_text=methods_text,
            absent_methods_text="Step 1 (diagnose) is absent: missingness was not described in this report.")
