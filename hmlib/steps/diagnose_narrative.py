"""Step 1's findings in sentences: the narrative of :class:`hmlib.steps.diagnose.DiagnoseResult`.

Every number in a sentence is read from the published (suppressed) result:
a suppressed count is said to be "fewer than min_cell", never shown. The
functions take the result and return plain text; the step's result calls them
(:meth:`~hmlib.steps.diagnose.DiagnoseResult.narrative`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hmlib.stats.missingness import ClusterVariationResult, FunnelResult, MissingnessPredictorsResult
from hmlib.stats.missingness.counts import level_label
from hmlib.steps.diagnose_higher import higher_level_sentences, level_correlation_sentences
from hmlib.steps.diagnose_levels import level_sentences
from hmlib.steps.diagnose_time import time_sentences
from hmlib.steps.diagnose_units import unit_sentences
from hmlib.wording import count_text, is_number, plural, row_noun

__all__ = ["narrative", "correlation_text"]


def _fmt_int(n) -> str:
    """A count (already suppressed where small), or words for a suppressed one."""
    return f"{int(n):,}" if is_number(n) else "a suppressed number of"


def _fmt_pct(x: float) -> str:
    if x > 0 and x < 0.001:
        return "<0.1%"
    return f"{100 * x:.1f}%"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "p not available"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _fmt_num(x: float, digits: int = 2) -> str:
    return f"{x:.{digits}f}"


def _name_list(names: Sequence[str], limit: int = 6) -> str:
    names = list(names)
    if len(names) <= limit:
        if len(names) <= 1:
            return "".join(names)
        return ", ".join(names[:-1]) + " and " + names[-1]
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def _plural(result, count: int) -> str:
    """The cluster noun, in the plural unless ``count`` is 1."""
    return result.cluster_noun if count == 1 else f"{result.cluster_noun}s"


def _rows(result) -> str:
    """The extract's rows in the plural: visits when step 1 described them over time, else patients."""
    return plural(row_noun(getattr(result, "over_time", None) is not None))


def _overall_sentence(result, row, mask_row, primary_row) -> str:
    var = row["variable"]
    n = _fmt_int(row["n"])
    rows = _rows(result)
    if bool(mask_row["n_missing"]):
        if bool(primary_row["n_missing"]):
            head = f"Of {n} {rows}, fewer than {result.min_cell} have no recorded {var}"
        else:
            head = f"Of {n} {rows}, all but fewer than {result.min_cell} have no recorded {var}"
    else:
        head = (f"Of {n} {rows}, {_fmt_int(row['n_missing'])} ({_fmt_pct(row['share_missing'])}) "
                f"have no recorded {var}")
    summary = result.gap_summary.set_index("variable").loc[var]
    if summary["structural_clusters"] is None:
        return head + (f"; there are too few to break them down by {result.cluster_noun} without "
                       f"revealing counts below {result.min_cell}.")
    n_all = int(summary["n_structural"])
    m = result.n_clusters
    if n_all:
        never = int(result.overview.values.set_index("variable").loc[var, "n_clusters_all_missing"])
        if never == n_all:
            tail = (f"; in {n_all} of {m} {_plural(result, m)} it was never recorded "
                    f"(structural gaps: {_name_list(summary['structural_clusters'])})")
        else:
            tail = (f"; {n_all} of {m} {_plural(result, m)} have structural gaps (never recorded in "
                    f"{never}, missing for more than {_fmt_pct(result.structural_share)} in the others: "
                    f"{_name_list(summary['structural_clusters'])})")
    else:
        tail = f"; no {result.cluster_noun} has a structural gap"
    any_missing = int(summary["n_sporadic"])
    tail += f", and {any_missing} {_plural(result, any_missing)} have sporadic gaps."
    return head + tail


def _variation_sentence(result, res: ClusterVariationResult) -> str:
    adjusted = f" after adjusting for {_name_list(res.covariates, 20)}" if res.covariates else ""
    numbers = (f"{result.cluster_noun} SD {_fmt_num(res.cluster_sd)} on the logit scale, "
               f"latent ICC {_fmt_num(res.icc)}, likelihood-ratio test {_fmt_p(res.p_value)}")
    if res.p_value < 0.001 and res.icc >= 0.2:
        verdict = f"varies between {result.cluster_noun}s far more than chance allows"
    elif res.p_value < 0.05:
        verdict = f"varies between {result.cluster_noun}s more than chance allows"
    else:
        verdict = f"shows no clear variation between {result.cluster_noun}s"
    return f"Missingness of {res.variable}{adjusted} {verdict}: {numbers}."


def _funnel_sentence(result, funnel: FunnelResult) -> str:
    outer = level_label(funnel.outer_level)
    m = len(funnel.table)
    parts = []
    if funnel.above:
        parts.append(f"{len(funnel.above)} lie above it ({_name_list(funnel.above)})")
    if funnel.below:
        parts.append(f"{len(funnel.below)} below it ({_name_list(funnel.below)})")
    if not parts:
        return (f"In the funnel plot of {funnel.variable}, all {m} {_plural(result, m)} lie within the "
                f"{outer} exact binomial limits around the overall rate of "
                f"{_fmt_pct(funnel.overall_rate)}.")
    return (f"In the funnel plot of {funnel.variable}, against {outer} exact binomial limits around "
            f"the overall rate of {_fmt_pct(funnel.overall_rate)}, of {m} {_plural(result, m)} "
            + " and ".join(parts) + ".")


def _predictors_sentence(result, res: MissingnessPredictorsResult) -> str:
    table = res.table
    clear = table.loc[(table["ci_lower"] > 1) | (table["ci_upper"] < 1)]
    if res.n_dropped is None:
        dropped = (f"; fewer than {result.min_cell} {_rows(result)} with a covariate missing were left out "
                   "of this model")
    elif res.n_dropped:
        dropped = f"; {_fmt_int(res.n_dropped)} {_rows(result)} with a covariate missing were left out of this model"
    else:
        dropped = ""
    if clear.empty:
        return (f"No observed covariate clearly predicts that {res.variable} is missing "
                f"(all {level_label(result.level)} intervals of the odds ratios include 1){dropped}.")
    bits = []
    for row in clear.itertuples(index=False):
        direction = "more" if row.odds_ratio > 1 else "less"
        ci = f"{_fmt_num(row.ci_lower)}-{_fmt_num(row.ci_upper)}"
        if row.component == "within":
            what = (f"within {result.cluster_noun}s, {_rows(result)} with a higher value of {row.covariate} "
                    f"are {direction} often missing it")
            per = "per SD"
        elif row.component == "between":
            what = (f"between {result.cluster_noun}s, those with a higher mean {row.covariate} "
                    f"miss it {direction} often")
            per = "per SD of the mean"
        else:
            what = f"{_rows(result)} with {row.term} are {direction} often missing it"
            per = "vs the reference level"
        bits.append(f"{what} (odds ratio {per} {_fmt_num(row.odds_ratio)}, {level_label(result.level)} CI {ci})")
    return f"Predictors of missing {res.variable}: " + "; ".join(bits) + dropped + "."


def _pattern_sentence(result) -> str:
    top = result.patterns.head(3)
    bits = [f"{row.pattern} ({_fmt_int(row.count)}, {_fmt_pct(row.share)})" if row.count >= result.min_cell
            else f"{row.pattern} ({count_text(row.count, result.min_cell)})" for row in top.itertuples(index=False)]
    n_patterns = int(result.patterns["n_patterns"].sum())
    pooled = result.patterns["n_missing_variables"].isna()
    tail = (f" ({int(result.patterns.loc[pooled, 'n_patterns'].sum())} rare patterns are pooled)"
            if pooled.any() else "")
    lead = "the most common are " if len(result.patterns) > len(top) or pooled.any() else ""
    return (f"Patients fall into {n_patterns} missingness pattern{'s' if n_patterns != 1 else ''}"
            f"{tail}; {lead}" + _name_list(bits, 3) + ".")


def _correlation_sentence(result) -> list[str]:
    res = result.outcome_correlation
    if res is None or not np.isfinite(res.spearman):
        return []
    lvl = level_label(res.level)
    if res.spearman_ci[0] > 0 or res.spearman_ci[1] < 0:
        direction = "higher" if res.spearman > 0 else "lower"
        lead = (f"{result.cluster_noun.capitalize()}s that miss {res.variable} more often tend to have "
                f"{direction} {res.outcome} cluster effects")
    else:
        lead = (f"There is no clear link between how often a {result.cluster_noun} misses {res.variable} "
                f"and its {res.outcome} cluster effect")
    return [
        f"{lead}: Spearman correlation {_fmt_num(res.spearman)} ({lvl} CI {_fmt_num(res.spearman_ci[0])} "
        f"to {_fmt_num(res.spearman_ci[1])}), Pearson {_fmt_num(res.pearson)} ({lvl} CI "
        f"{_fmt_num(res.pearson_ci[0])} to {_fmt_num(res.pearson_ci[1])}) over {res.n_clusters} "
        f"{_plural(result, res.n_clusters)}.",
        *_level_correlation_lines(result),
        res.caveat,
    ]


def _level_correlation_lines(result) -> list[str]:
    """The correlation at each level (nested models), led in; none without higher levels."""
    lines = level_correlation_sentences(result.level_correlation, cluster=result.cluster,
                                         cluster_noun=result.cluster_noun)
    return (["With the levels above the cluster modelled (nested random intercepts in both models; read these "
             f"rather than the correlation over {result.cluster_noun}s alone, whose interval treats the "
             f"{result.cluster_noun}s of one {result.higher_levels[-1]} as independent and is too narrow when "
             f"the {result.higher_levels[-1]} units differ):", *lines]
            if lines else [])


def narrative(result) -> list[str]:
    """Sentences stating each finding of step 1 with its numbers (suppressed counts never shown).

    Parameters
    ----------
    result : hmlib.steps.diagnose.DiagnoseResult

    Returns
    -------
    list of str
    """
    m = result.n_clusters
    lines = [f"The extract has {_fmt_int(result.n_patients)} {_rows(result)} in {m} {_plural(result, m)}."]
    if not result.incomplete:
        lines.append(f"None of the {len(result.variables)} analysis variables "
                     f"({', '.join(result.variables)}) has a missing value: there are no gaps to diagnose.")
        return lines
    complete = [v for v in result.variables if v not in result.incomplete]
    k, p = len(result.incomplete), len(result.variables)
    if k == p:
        head = f"All {p} analysis variables have missing values ({_name_list(result.incomplete, 20)})."
    else:
        head = (f"{k} of the {p} analysis variables {'has' if k == 1 else 'have'} missing values "
                f"({_name_list(result.incomplete, 20)}); {_name_list(complete, 20)} "
                f"{'is' if len(complete) == 1 else 'are'} complete.")
    lines.append(head)
    values = result.overview.values.set_index("variable")
    mask = result.overview.mask.set_axis(result.overview.values["variable"])
    primary = result.overview.primary.set_axis(result.overview.values["variable"])
    for var in result.incomplete:
        lines.append(_overall_sentence(result, values.loc[var].rename(None).to_dict() | {"variable": var},
                                       mask.loc[var], primary.loc[var]))
    for var in result.incomplete:
        if var in result.variation:
            lines.append(_variation_sentence(result, result.variation[var]))
        if var in result.variation_sporadic:
            res = result.variation_sporadic[var]
            k = int(result.gap_summary.set_index("variable").loc[var, "n_structural"])
            lines.append(
                f"Leaving out the {k} {_plural(result, k)} with structural gaps in {var}, the remaining "
                f"{res.n_clusters} still differ: {result.cluster_noun} SD {_fmt_num(res.cluster_sd)}, "
                f"latent ICC {_fmt_num(res.icc)}, likelihood-ratio test {_fmt_p(res.p_value)}."
                if res.p_value < 0.05 else
                f"Leaving out the {k} {_plural(result, k)} with structural gaps in {var}, the remaining "
                f"{res.n_clusters} show no clear variation ({result.cluster_noun} SD "
                f"{_fmt_num(res.cluster_sd)}, latent ICC {_fmt_num(res.icc)}, {_fmt_p(res.p_value)}).")
    lines.extend(higher_level_sentences(result.level_variation, result.higher_gaps, cluster=result.cluster,
                                        cluster_noun=result.cluster_noun, two_level=result.variation))
    lines.extend(unit_sentences(result.by_unit))
    if result.focus_variation is not None:
        lines.append(_variation_sentence(result, result.focus_variation))
    for var in result.incomplete:
        if var in result.funnels:
            lines.append(_funnel_sentence(result, result.funnels[var]))
    for var in result.incomplete:
        if var in result.predictor_models:
            lines.append(_predictors_sentence(result, result.predictor_models[var]))
    lines.extend(level_sentences(result.focus_levels, result.cluster_noun))
    if len(result.patterns):
        lines.append(_pattern_sentence(result))
    lines.extend(time_sentences(result.over_time, focus=result.focus))
    lines.extend(_correlation_sentence(result))
    lines.extend(result.notes)
    return lines


def correlation_text(result) -> str:
    """The correlation of missingness with the outcome's cluster effects, as one paragraph
    (``result``: a :class:`hmlib.steps.diagnose.DiagnoseResult`)."""
    oc = result.outcome_correlation
    if oc is None:
        return "Not estimated: " + ("; ".join(result.notes) or "the focus variable is complete.")
    by_level = _level_correlation_lines(result)
    return " ".join([f"Spearman correlation {oc.spearman:.2f} (p = {oc.spearman_p:.3g}), Pearson "
                     f"{oc.pearson:.2f} (95% CI {oc.pearson_ci[0]:.2f} to {oc.pearson_ci[1]:.2f}) over "
                     f"{oc.n_clusters} clusters.", *by_level, oc.caveat])
