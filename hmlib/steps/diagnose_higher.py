"""Step 1 with levels above the cluster (params ``higher_levels``): missingness by level.

Two findings, both aggregated over whole units of a level:

- **The partition by level**: for each modelled missingness indicator, the
  SD of its nested random intercepts at every level, each level's latent
  variance share and its boundary-corrected test
  (:func:`hmlib.stats.missingness.levels.missingness_level_variation`), and
  the SD a model with the cluster level alone would give the clusters: the
  variation it would wrongly call between-cluster.
- **Structural gaps at a higher level**: units (countries) where a variable
  is missing for more than the structural share of its patients, or for all
  (:func:`hmlib.stats.missingness.classify_gaps` with the higher level as
  the grouping). Only the units' labels and their numbers of clusters are
  published, never their patient counts.

- **Missingness and outcome at each level**: the focus variable's missingness
  and the outcome, each with nested random intercepts and the fully observed
  predictors, their units' conditional modes correlated level by level
  (:func:`hmlib.stats.missingness.missingness_outcome_correlation_by_level`):
  a screening number, as the two-level correlation is.

Levels are named by their column labels. Variables step 1 does not break
down by cluster (:attr:`hmlib.steps.diagnose_tables.PublishedTables.no_breakdown`)
are not broken down by higher unit either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.exceptions import DataError, FitError
from hmlib.stats.missingness import classify_gaps, missingness_outcome_correlation_by_level
from hmlib.stats.missingness.levels import missingness_level_variation
from hmlib.stats.missingness.outcome_correlation import LevelCorrelationResult

__all__ = ["LevelRow", "LevelVariationRecord", "HigherGapRow", "LevelCorrelationRow", "LevelCorrelationRecord",
           "fit_level_variation", "fit_level_correlation", "higher_gaps", "level_variation_table",
           "higher_level_sentences", "level_correlation_sentences", "level_correlation_table", "records",
           "no_gaps"]


@dataclass(frozen=True)
class LevelRow(Record):
    """One level of a missingness indicator's partition (``sd`` on the logit scale)."""

    level: str
    n_units: int
    sd: float
    sd_ci_lower: float | None
    sd_ci_upper: float | None
    variance_share: float
    lrt_statistic: float
    p_value: float


@dataclass(frozen=True)
class LevelVariationRecord(Record):
    """:class:`hmlib.stats.missingness.levels.LevelVariationResult` as recorded (no per-unit values)."""

    variable: str
    levels: tuple[str, ...]
    table: tuple[LevelRow, ...]
    latent_icc: float
    two_level_sd: float
    loglik: float
    n_used: int
    converged: bool


@dataclass(frozen=True)
class HigherGapRow(Record):
    """Structural gaps of one variable at one higher level: which units (almost) never record it."""

    level: str
    variable: str
    n_units: int
    n_units_structural: int
    structural_units: tuple[str, ...]
    n_clusters_in_structural: int


@dataclass(frozen=True)
class LevelCorrelationRow(Record):
    """The correlation of missingness and outcome effects at one level (NaN-free: ``None`` when undefined)."""

    level: str
    n_units: int
    pearson: float | None
    pearson_ci_lower: float | None
    pearson_ci_upper: float | None
    pearson_p: float | None
    spearman: float | None
    spearman_ci_lower: float | None
    spearman_ci_upper: float | None
    spearman_p: float | None
    missingness_sd: float
    outcome_sd: float


@dataclass(frozen=True)
class LevelCorrelationRecord(Record):
    """:class:`hmlib.stats.missingness.LevelCorrelationResult` as recorded (no per-unit values)."""

    variable: str
    outcome: str
    outcome_family: str
    levels: tuple[str, ...]
    predictors_used: tuple[str, ...]
    table: tuple[LevelCorrelationRow, ...]
    level: float
    caveat: str


def fit_level_variation(frame: pd.DataFrame, variables: Sequence[str], cluster: str,
                        higher_levels: Sequence[str], *, level: float, notes: list) -> dict:
    """The partition by level of each variable's missingness; a model that cannot be fitted is noted.

    Returns
    -------
    dict of str to LevelVariationResult
    """
    out = {}
    if not higher_levels:
        return out
    for var in variables:
        try:
            out[var] = missingness_level_variation(frame, var, cluster, higher_levels, level=level)
        except FitError as err:
            notes.append(f"The partition by level of the missingness of {var} was not fitted: {err}")
    return out


def fit_level_correlation(frame: pd.DataFrame, focus: str | None, cluster: str, higher_levels: Sequence[str],
                          outcome: str, outcome_family: str, predictors: Sequence[str], *, level: float,
                          notes: list) -> LevelCorrelationResult | None:
    """The focus variable's missingness against the outcome at each level; None without higher levels or
    focus, or when a model cannot be fitted (noted)."""
    if not higher_levels or focus is None:
        return None
    try:
        return missingness_outcome_correlation_by_level(frame, focus, cluster, higher_levels, outcome,
                                                        outcome_family, predictors, level=level)
    except (FitError, DataError) as err:
        notes.append(f"The correlation of {focus} missingness with the {outcome} effects at each level "
                     f"was not computed: {err}")
        return None


def higher_gaps(frame: pd.DataFrame, variables: Sequence[str], cluster: str, higher_levels: Sequence[str], *,
                structural_share: float) -> pd.DataFrame:
    """Structural gaps of each variable at each higher level (columns of :class:`HigherGapRow`).

    Parameters
    ----------
    frame : pandas.DataFrame
    variables : sequence of str
        The variables broken down (incomplete, with protected cluster counts).
    cluster : str
    higher_levels : sequence of str
    structural_share : float
        As for :func:`hmlib.stats.missingness.classify_gaps`.
    """
    rows = []
    variables = list(variables)
    for name in higher_levels:
        if not variables:
            break
        clusters_per_unit = frame.groupby(name, observed=True)[cluster].nunique()
        summary = classify_gaps(frame, variables, name, structural_share=structural_share).summary
        for row in summary.itertuples(index=False):
            units = tuple(str(u) for u in row.structural_clusters)
            rows.append({"level": name, "variable": row.variable, "n_units": int(row.n_clusters),
                         "n_units_structural": int(row.n_structural), "structural_units": units,
                         "n_clusters_in_structural": int(clusters_per_unit.loc[list(row.structural_clusters)].sum())})
    return pd.DataFrame(rows, columns=list(HigherGapRow.__dataclass_fields__))


def no_gaps() -> pd.DataFrame:
    """The empty table of :func:`higher_gaps` (no higher levels)."""
    return pd.DataFrame(columns=list(HigherGapRow.__dataclass_fields__))


def level_variation_table(results: dict) -> pd.DataFrame:
    """The partitions of all variables, one row per variable and level, outermost level first."""
    frames = [r.table.assign(variable=var, two_level_sd=r.two_level_sd) for var, r in results.items()]
    if not frames:
        return pd.DataFrame(columns=["variable", "level", "n_units", "sd", "sd_ci_lower", "sd_ci_upper",
                                     "variance_share", "lrt_statistic", "p_value", "two_level_sd"])
    table = pd.concat(frames, ignore_index=True)
    return table[["variable", *[c for c in table.columns if c != "variable"]]]


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _level_phrase(row, cluster_noun: str, cluster: str) -> str:
    name = cluster_noun if row["level"] == cluster else row["level"]
    return (f"SD {row['sd']:.2f} at the {name} level ({100 * row['variance_share']:.0f}% of the latent variance, "
            f"{_p(row['p_value'])})")


def higher_level_sentences(results: dict, gaps: pd.DataFrame, *, cluster: str, cluster_noun: str,
                           two_level: dict | None = None) -> list[str]:
    """Sentences for the partition by level and the structural gaps at higher levels.

    Parameters
    ----------
    results : dict of str to LevelVariationResult
    gaps : pandas.DataFrame
        :func:`higher_gaps`.
    cluster, cluster_noun : str
    two_level : dict of str to ClusterVariationResult, optional
        Step 1's intercept-only models with the cluster level alone. Where
        one used adaptive quadrature and its SD differs from the Laplace
        two-level SD of the partition by more than a fifth, a sentence says
        that the nested fits' Laplace approximation overstates the SDs there.
    """
    lines = []
    for var, res in results.items():
        parts = [_level_phrase(row, cluster_noun, cluster) for _, row in res.table.iterrows()]
        line = f"By level, missingness of {var} varies with " + "; ".join(parts) + "."
        inner = res.row(cluster)
        higher_share = float(res.table.loc[res.table["level"] != cluster, "variance_share"].sum())
        if higher_share > inner["variance_share"] and res.two_level_sd > inner["sd"] + 0.05:
            top = res.table.loc[res.table["level"] != cluster].sort_values("sd").iloc[-1]["level"]
            line += (f" The model with {cluster_noun}s alone puts SD {res.two_level_sd:.2f} between {cluster_noun}s, "
                     f"but most of that lies at the {top} level: comparing {cluster_noun}s' missingness mostly "
                     f"compares the {top} units they belong to.")
        other = (two_level or {}).get(var)
        if other is not None and other.nagq > 1 and other.cluster_sd > 0 and \
                abs(np.log(res.two_level_sd / other.cluster_sd)) > np.log(1.2):
            line += (f" These nested fits use the Laplace approximation (adaptive quadrature does not extend to "
                     f"nested effects), which overstates SDs when {cluster_noun}s are small or the variable is "
                     f"rarely missing: without the levels above, Laplace gives the {cluster_noun}s SD "
                     f"{res.two_level_sd:.2f} where adaptive quadrature gives {other.cluster_sd:.2f}. Compare the "
                     f"levels with each other rather than read the SDs' sizes.")
        lines.append(line)
    for row in gaps.itertuples(index=False):
        if row.n_units_structural:
            units = ", ".join(row.structural_units[:6]) + (f" and {row.n_units_structural - 6} more"
                                                           if row.n_units_structural > 6 else "")
            lines.append(f"{row.variable} is structurally missing in {row.n_units_structural} of {row.n_units} "
                         f"{row.level} units ({units}; {row.n_clusters_in_structural} {cluster_noun}s): no analysis "
                         f"learns its distribution there from data of that {row.level}.")
    return lines


def level_correlation_sentences(res: LevelCorrelationResult | None, *, cluster: str, cluster_noun: str) -> list[str]:
    """One sentence per level for :func:`fit_level_correlation`'s result (none without it)."""
    if res is None:
        return []
    lines = []
    for row in res.table.itertuples(index=False):
        k = res.levels.index(row.level)
        where = f"{cluster_noun}s" if row.level == cluster else f"{row.level} units"
        if k > 0:
            where += f" within their {res.levels[k - 1]}"
        if not np.isfinite(row.spearman):
            lines.append(f"Across {row.n_units} {where}, the correlation of {res.variable} missingness with the "
                         f"{res.outcome} effects is undefined (one of the two models puts that level's SD at 0).")
            continue
        clear = row.spearman_ci_lower > 0 or row.spearman_ci_upper < 0
        link = ("a clear link" if clear else "no clear link")
        lines.append(f"Across {row.n_units} {where}, {link} between {res.variable} missingness and the "
                     f"{res.outcome} effects: Spearman {row.spearman:.2f} ({100 * res.level:.0f}% CI "
                     f"{row.spearman_ci_lower:.2f} to {row.spearman_ci_upper:.2f}), Pearson {row.pearson:.2f} "
                     f"({row.pearson_ci_lower:.2f} to {row.pearson_ci_upper:.2f}).")
    return lines


def level_correlation_table(res: LevelCorrelationResult | None) -> pd.DataFrame:
    """The per-level correlation table (empty without it)."""
    if res is None:
        return pd.DataFrame(columns=list(LevelCorrelationRow.__dataclass_fields__))
    return res.table.copy()


def records(results: dict, gaps: pd.DataFrame, correlation: LevelCorrelationResult | None = None) -> dict:
    """JSON-ready fields of the artifact: ``level_variation``, ``higher_gaps`` and ``level_correlation``."""
    return {"level_variation": {v: r.to_dict() for v, r in results.items()},
            "higher_gaps": [dict(row._asdict(), structural_units=list(row.structural_units))
                            for row in gaps.itertuples(index=False)],
            "level_correlation": correlation.to_dict() if correlation is not None else None}
