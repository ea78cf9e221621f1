"""The report's executive summary, and the entry point of its summary sections.

Everything here is generated from one report folder's aggregated results
(:mod:`hmlib.report.evidence`: the steps' typed artifacts and
``estimates.csv``). No number is typed by hand and nothing is computed from
patient rows; a step whose artifact is absent is *said* to be absent, and none
of its findings is guessed. The methods section is written by
:mod:`hmlib.report.methods_section`, the reviewer checklist by
:mod:`hmlib.report.checklist`.

Number formats (the tests re-derive them from the artifacts): coefficients
and their intervals ``.3f``; shares as percentages ``.1f``; SDs, ICCs,
standardised differences and fractions of missing information ``.2f``;
degrees of freedom ``.1f``. Counts between 1 and ``min_cell - 1`` are never
printed (``fewer than <min_cell>``), as in :func:`hmlib.privacy.suppress_counts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hmlib.methods import method_label
from hmlib.privacy import suppress_counts
from hmlib.report.checklist import ChecklistItem, checklist
from hmlib.report.evidence import ReportEvidence, collect_evidence, estimate_text, focus_rows, focus_terms
from hmlib.report.key_messages import distrusted_methods, key_messages
from hmlib.report.methods_section import methods_paragraphs
from hmlib.stats.complete_case import SMD_THRESHOLD
from hmlib.steps import get_step
from hmlib.wording import count_text, few_clusters_caveat, is_number, join_names, percent

__all__ = ["AuditSummary", "ChecklistItem", "audit_summary", "focus_terms", "missing_table"]


@dataclass
class AuditSummary:
    """Generated text of the summary sections of one report.

    Attributes
    ----------
    key_messages : list of str
        The bottom line, about 150 words (:mod:`hmlib.report.key_messages`).
    executive : list of str
        Sentences of the step-by-step summary (plain text, not escaped).
    methods : list of str
        Paragraphs of the methods section.
    checklist : list of ChecklistItem
        The reviewer-facing limitations and reporting items.
    missing_table : pandas.DataFrame
        Amount missing per variable (counts suppressed below ``min_cell``).
    absent : list of str
        Step keys whose artifact is absent.
    focus : str or None
    """

    key_messages: list = field(default_factory=list)
    executive: list = field(default_factory=list)
    methods: list = field(default_factory=list)
    checklist: list = field(default_factory=list)
    missing_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    absent: list = field(default_factory=list)
    focus: str | None = None


def missing_table(diag, min_cell: int) -> pd.DataFrame:
    """Amount missing per variable from step 1's (already suppressed) overview, suppressed again."""
    rows = [{"variable": r.variable, "n": r.n, "n_missing": r.n_missing, "n_observed": r.n_observed,
             "share_missing": r.share_missing, "clusters_with_missing": r.n_clusters_any_missing,
             "clusters_never_recorded": r.n_clusters_all_missing} for r in diag.overview]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    for col in ("n", "n_missing", "n_observed", "share_missing", "clusters_with_missing", "clusters_never_recorded"):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    complete = table[["n_missing", "n_observed"]].notna().all(axis=1)
    # Re-apply the rule here too: this table is printed, so it must hold on its own.
    safe = suppress_counts(table.loc[complete].reset_index(drop=True), ["n_missing", "n_observed"], min_cell,
                           total_column="n", column_totals=False,
                           derived_columns={"share_missing": ["n_missing"]})
    masked = safe.values
    table.loc[complete, ["n_missing", "n_observed", "share_missing"]] = \
        masked[["n_missing", "n_observed", "share_missing"]].to_numpy()
    return table


def _who(ev: ReportEvidence) -> list:
    """Sentences on who is represented and who is not."""
    diag, cc, noun, mc = ev["diagnose"], ev["complete_case"], ev.noun, ev.min_cell
    out = []
    if diag is not None:
        out.append(f"The extract has {count_text(diag.n_patients, mc)} {ev.rows} in "
                   f"{diag.n_clusters:,} {noun}s.")
        if few_clusters_caveat(diag.n_clusters, noun):
            out.append(few_clusters_caveat(diag.n_clusters, noun))
        never_by_variable = {r.variable: r.n_clusters_all_missing for r in diag.overview}
        share = f"{100 * (1 - diag.settings.structural_share):.0f}%"
        for gap in diag.gap_summary:
            if gap.n_structural:
                never = never_by_variable.get(gap.variable)
                n_gap, m = int(gap.n_structural), int(gap.n_clusters)
                where = (f"never recorded in {n_gap} of {m} {noun}s" if is_number(never) and int(never) == n_gap else
                         f"never or almost never recorded (for at most {share} of patients) in {n_gap} of {m} "
                         f"{noun}s" + (f", never in {int(never)}" if is_number(never) and never else ""))
                out.append(f"{gap.variable} is {where} (structural gaps: {join_names(gap.structural_clusters or ())}); "
                           "its values there can only be borrowed from other " + noun + "s.")
    if cc is not None:
        kept = cc.n_complete / cc.n_all if cc.n_all else None
        text = (f"Complete-case analysis keeps {count_text(cc.n_complete, mc)} of {count_text(cc.n_all, mc)} "
                f"patients ({percent(kept)})")
        if cc.clusters_lost:
            text += (f" and loses {len(cc.clusters_lost)} of {cc.n_clusters} {noun}s entirely "
                     f"({join_names(cc.clusters_lost)}): their patients are not represented at all.")
        else:
            text += f"; every {noun} keeps at least one complete case."
        out.append(text)
    return out


def _shift(ev: ReportEvidence) -> list:
    cc = ev["complete_case"]
    if cc is None:
        return []
    out = []
    if is_number(cc.outcome_complete_cases) and is_number(cc.outcome_all):
        if ev.params.outcome_family == "binomial":
            what = (f"the {ev.params.outcome} rate is {percent(cc.outcome_complete_cases)} among complete cases "
                    f"against {percent(cc.outcome_all)}")
        else:
            what = (f"the mean {ev.params.outcome} is {cc.outcome_complete_cases:.3g} among complete cases "
                    f"against {cc.outcome_all:.3g}")
        out.append(f"The estimand shifts under complete-case analysis: {what} in all patients.")
    big = [r for r in cc.shift if is_number(r.smd) and abs(r.smd) > SMD_THRESHOLD]
    if big:
        parts = [f"{r.variable}{'=' + str(r.level) if r.level else ''} (standardised difference {r.smd:.2f})"
                 for r in big]
        out.append(f"Complete cases differ from all patients by more than {SMD_THRESHOLD} SD in "
                   f"{join_names(parts)}.")
    elif cc.shift:
        out.append(f"No variable's distribution shifts by more than {SMD_THRESHOLD} SD among complete cases.")
    return out


def _across_methods(ev: ReportEvidence) -> list:
    focus = ev.focus
    if not len(ev.estimates):
        return [f"No estimate of the {focus} coefficient is available: estimates.csv is absent."]
    rows = focus_rows(ev.estimates, focus)
    if rows.empty:
        return [f"No estimate of the {focus} coefficient is available (estimates.csv has none)."]
    out = []
    # a categorical focus: each level against the reference level, the missing level (step 2's
    # missing-category model) said for what it is, after the levels
    cc = ev["complete_case"]
    levels = tuple(cc.focus_levels) if cc is not None else ()
    against = f" against {focus} = {levels[0]}" if levels else ""
    missing_level = []
    for term, block in rows.groupby("term", sort=False):
        distrusted = distrusted_methods(ev)
        parts = [f"{method_label(r['method'])}"
                 + (f" (not trusted: {distrusted[r['method']]})" if r["method"] in distrusted else "")
                 + f" {estimate_text(r)}" for _, r in block.iterrows()]
        if levels and term == cc.indicator_term:
            missing_level.append(f"Patients without a recorded {focus} ({term}{against}, missing-category "
                                 f"model): {estimate_text(block.iloc[0])}.")
            continue
        text = f"The {term} coefficient{against} by method: " + "; ".join(parts) + "."
        if len(block) > 1:
            lo, hi = block.loc[block["estimate"].idxmin()], block.loc[block["estimate"].idxmax()]
            text += (f" It ranges from {lo['estimate']:.3f} ({method_label(lo['method'])}) to "
                     f"{hi['estimate']:.3f} ({method_label(hi['method'])}).")
        out.append(text)
    out.extend(missing_level)
    if ev["joint_model"] is None:
        out.append("The joint Bayesian model (step 4) is absent from this report, so it is not in this comparison.")
    return out


def _borrowing(ev: ReportEvidence) -> list:
    joint, noun = ev["joint_model"], ev.noun
    if joint is None:
        return ["Which " + noun + "s borrow most from the others is not assessed: the joint Bayesian model "
                "(step 4) is absent from this report."]
    pooled = [r for r in joint.partial_pooling if is_number(r.shrinkage)]
    if not pooled:
        return ["The joint model reports no partial pooling of the focus variable (it is complete)."]
    never = [r for r in pooled if not r.measured]
    partly = sorted((r for r in pooled if r.measured), key=lambda r: -r.shrinkage)
    out = []
    if partly:
        out.append("In the joint model, the " + noun + "s that borrow most from the others (largest shrinkage "
                   "of their own level towards the average; 0 = own data only, 1 = the average " + noun + ") are "
                   + join_names([f"{r.cluster} ({r.shrinkage:.2f})" for r in partly[:3]]) + ".")
    if never:
        out.append(f"{len(never)} {noun}(s) never recorded the focus variable and borrow entirely "
                   f"({join_names([r.cluster for r in never])}).")
    return out


def _verdict(ev: ReportEvidence) -> list:
    sens = ev["sensitivity"]
    if sens is None:
        return ["Sensitivity analysis (step 5) is absent from this report: no verdict on robustness is given."]
    return [f"Sensitivity verdict: {sens.verdict}" if sens.verdict else "The sensitivity step recorded no verdict."]


def executive_summary(ev: ReportEvidence) -> list:
    """The executive summary's sentences."""
    executive = _who(ev) + _shift(ev)
    if ev.focus:
        executive += _across_methods(ev)
    executive += _borrowing(ev) + _verdict(ev)
    for key in ("diagnose", "complete_case", "imputation"):
        if ev[key] is None:
            name = get_step(key).summary_name
            executive.append(f"{name[0].upper() + name[1:]} is absent from this report; nothing here rests on it.")
    return executive


def audit_summary(output_dir: str | Path, *, params, versions: dict, hmlib_version: str,
                  python_version: str, focus_sd: float | None = None) -> AuditSummary:
    """Generate the summary sections of ``report.html`` from a report folder.

    Parameters
    ----------
    output_dir : str or pathlib.Path
        ``reports/<name>/`` with ``artifacts/`` and ``estimates.csv``.
    params : hmlib.params.Params
        The params as run (names of outcome, cluster, predictors, focus; seed; privacy).
    versions : dict
        Package versions (:func:`hmlib.report.assemble.package_versions`).
    hmlib_version, python_version : str
    focus_sd : float, optional
        SD of the recorded focus values (the default unit of its effect in the key messages).

    Returns
    -------
    AuditSummary

    Examples
    --------
    >>> summary = audit_summary("reports/demo", params=p, versions=v,
    ...                         hmlib_version="0.1.0", python_version="3.12.3")  # doctest: +SKIP
    >>> summary.executive[0]  # doctest: +SKIP
    'The extract has 3,000 patients in 30 sites.'
    """
    ev = collect_evidence(output_dir, params=params, versions=versions, hmlib_version=hmlib_version,
                          python_version=python_version, focus_sd=focus_sd)
    table = missing_table(ev["diagnose"], ev.min_cell) if ev["diagnose"] is not None else pd.DataFrame()
    return AuditSummary(key_messages=key_messages(ev), executive=executive_summary(ev), methods=methods_paragraphs(ev),
                        checklist=checklist(ev, table), missing_table=table, absent=ev.absent, focus=ev.focus)
