"""The reviewer checklist: the reporting items reviewers expect for missing data, answered with this report's numbers.

The items follow:

- Sterne JAC et al. (2009). Multiple imputation for missing data in
  epidemiological and clinical research: potential and pitfalls. BMJ
  338:b2393 (box "reporting of analyses with missing data");
- STROBE (von Elm et al. 2007) items 12c (how missing data were addressed)
  and 14b (number of participants with missing data for each variable);
- TRIPOD (Collins et al. 2015) items 9 (how missing data were handled, with
  details of any imputation) and 13b (participants with missing data for
  predictors and outcome).

Each item is one function of the typed evidence (:mod:`hmlib.report.evidence`);
an item whose step is absent says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from hmlib.methods import method_label
from hmlib.report.evidence import ReportEvidence, estimate_text, focus_rows, focus_terms
from hmlib.steps import STEPS
from hmlib.wording import count_text, is_number, join_names, p_text, percent

__all__ = ["ChecklistItem", "checklist"]

_GUIDE_M_PER_FMI = 100  # White, Royston & Wood (2011): m at least 100 x FMI


@dataclass(frozen=True)
class ChecklistItem:
    """One reporting item: what reviewers ask, where it comes from, and this report's answer."""

    item: str
    guideline: str
    text: str


def _amount(ev: ReportEvidence, table: pd.DataFrame) -> ChecklistItem:
    mc = ev.min_cell
    if ev["diagnose"] is not None and len(table):
        parts, complete = [], []
        for _, r in table.iterrows():
            if is_number(r["n_missing"]) and r["n_missing"] == 0:
                complete.append(str(r["variable"]))
            elif not is_number(r["n_missing"]):
                parts.append(f"{r['variable']}: suppressed (counts below {mc} are not shown)")
            else:
                parts.append(f"{r['variable']} {count_text(r['n_missing'], mc)} of {count_text(r['n'], mc)} "
                             f"({percent(r['share_missing'])})")
        text = ("Missing values: " + ("; ".join(parts) if parts else "none") + "."
                + (f" Complete: {join_names(complete, 20)}." if complete else "")
                + " The table above gives the counts.")
    else:
        text = "Not reported: step 1 (diagnose) is absent."
    return ChecklistItem("Amount of missing data per variable", "Sterne 2009; STROBE 14b; TRIPOD 13b", text)


def _by_cluster(ev: ReportEvidence) -> ChecklistItem:
    diag, noun, focus = ev["diagnose"], ev.noun, ev.focus
    if diag is None:
        return ChecklistItem(f"Missing data by {noun}", "Sterne 2009; STROBE 14b",
                             "Not reported: step 1 (diagnose) is absent.")
    shares = [r.share_missing for r in diag.by_cluster if r.variable == focus and is_number(r.share_missing)]
    cv = diag.cluster_variation.get(focus)
    fun = diag.funnels.get(focus)
    bits = []
    if shares:
        bits.append(f"{focus} is missing in {percent(min(shares))} to {percent(max(shares))} of patients per {noun} "
                    f"({len(shares)} {noun}s with publishable shares)")
    if cv is not None:
        bits.append(f"between-{noun} SD of its missingness {cv.cluster_sd:.2f} on the logit scale "
                    f"(latent ICC {cv.icc_latent:.2f}, {p_text(cv.p_value)})")
    if fun is not None:
        bits.append(f"{len(fun.above)} {noun}s above and {len(fun.below)} below the 99.8% funnel limits")
    text = ("; ".join(bits) + ".") if bits else f"No by-{noun} summary of {focus} is available."
    return ChecklistItem(f"Missing data by {noun}", "Sterne 2009; STROBE 14b", text)


def _reasons(ev: ReportEvidence) -> ChecklistItem:
    diag, noun, focus, p = ev["diagnose"], ev.noun, ev.focus, ev.params
    preds = []
    if diag is not None and focus in diag.missingness_predictors:
        for r in diag.missingness_predictors[focus].table:
            if is_number(r.ci_lower) and is_number(r.ci_upper) and (r.ci_lower > 1 or r.ci_upper < 1):
                preds.append(f"{r.term} (OR per SD {r.odds_ratio:.2f})")
    text = ("The extract records no reason why a value is missing; reasons must come from the data owners. "
            f"Every imputation method and the joint model assume the values are missing at random given the "
            f"variables in the imputation model (the outcome, "
            f"{', '.join([*p.predictors, *p.cluster_covariates])}) and, for the hierarchical methods, the {noun}.")
    if preds:
        text += f" Observed predictors of missing {focus}: {join_names(preds)}; these are in the imputation model."
    elif diag is not None:
        text += f" No observed covariate clearly predicts that {focus} is missing."
    text += (f" MAR would break if {focus} were left unmeasured because of its own unrecorded value (for example "
             f"not measured when it was expected to be normal), or for {noun}-level reasons tied to the outcome "
             f"beyond the {noun}'s random intercept; the MNAR sensitivity analysis below probes the first.")
    return ChecklistItem("Reasons for missingness and the assumption made", "Sterne 2009; STROBE 12c", text)


def _software(ev: ReportEvidence) -> ChecklistItem:
    v = ev.versions
    text = f"hmlib {ev.hmlib_version}; Python {ev.python_version}; statsmodels {v.get('statsmodels', 'unknown')}"
    if ev["joint_model"] is not None:
        text += f"; joint model in PyMC {v.get('pymc', 'unknown')} sampled with nutpie {v.get('nutpie', 'unknown')}"
    else:
        text += "; the joint model (PyMC/nutpie) was not run"
    return ChecklistItem("Method and software", "Sterne 2009; TRIPOD 9; STROBE 12c", text + ".")


def _focus_fmi(imp, focus: str | None, field_name: str) -> list:
    return [r for r in imp.fmi if r.term in focus_terms([r.term], focus) and is_number(getattr(r, field_name))]


def _imputations(ev: ReportEvidence) -> ChecklistItem:
    imp = ev["imputation"]
    if imp is None:
        return ChecklistItem("Number of imputations", "Sterne 2009; TRIPOD 9",
                             "Not applicable: step 3 (multiple imputation) is absent.")
    text = f"m = {imp.m} imputed data sets per method, {imp.iterations} iterations each."
    fmi = _focus_fmi(imp, ev.focus, "fmi")
    if fmi:
        worst = max(fmi, key=lambda r: r.fmi)
        need = math.ceil(_GUIDE_M_PER_FMI * worst.fmi)
        text += (f" Largest fraction of missing information for {worst.term}: {worst.fmi:.2f} "
                 f"({method_label(worst.method)}); the rule m >= 100 x FMI "
                 f"(White, Royston & Wood 2011) asks for about {need}"
                 + (", so Monte Carlo error in the pooled results is not negligible." if imp.m < need
                    else ", which is met."))
    return ChecklistItem("Number of imputations", "Sterne 2009; TRIPOD 9", text)


def _hierarchy(ev: ReportEvidence) -> ChecklistItem:
    imp = ev["imputation"]
    if imp is None:
        text = "Not applicable: step 3 (multiple imputation) is absent."
    else:
        text = "; ".join(f"{method_label(m.method)}: {m.description}" for m in imp.methods) + "."
        notes = [n for m in imp.methods for n in m.notes]
        if notes:
            text += " Notes: " + " ".join(notes)
    return ChecklistItem("How the imputation model handled the hierarchy", "Sterne 2009; TRIPOD 9", text)


def _diagnostics(ev: ReportEvidence) -> ChecklistItem:
    imp, joint, noun = ev["imputation"], ev["joint_model"], ev.noun
    bits = []
    if imp is not None:
        rh = [r.rhat for r in imp.rhat if is_number(r.rhat)]
        bits.append(f"imputation chains: largest R-hat {max(rh):.2f}" if rh else
                    "imputation chains: R-hat not computable (too few iterations per chain)")
        if imp.transport is not None:
            for method, flagged in imp.transport.flagged.items():
                bits.append(f"transport check ({method_label(method)}): {len(flagged)} of "
                            f"{imp.transport.n_checked} {noun}s not reproduced when masked")
    if joint is not None:
        bits.append(f"joint model: {joint.convergence_message}")
    text = ("; ".join(bits) + ".") if bits else "No imputation diagnostics: steps 3 and 4 are absent."
    return ChecklistItem("Diagnostics of the imputations", "Sterne 2009", text)


def _pooling(ev: ReportEvidence) -> ChecklistItem:
    imp = ev["imputation"]
    if imp is None:
        text = "Not applicable: step 3 (multiple imputation) is absent."
    else:
        fmi = _focus_fmi(imp, ev.focus, "df")
        text = ("Rubin's rules with Barnard-Rubin small-sample degrees of freedom"
                + (": for " + ", ".join(f"{method_label(r.method)} df {r.df:.1f}" for r in fmi) if fmi else "")
                + ".")
    return ChecklistItem("Pooling", "Sterne 2009", text)


def _against_complete_case(ev: ReportEvidence) -> ChecklistItem:
    est, mc, noun = ev.estimates, ev.min_cell, ev.noun
    rows = focus_rows(est, ev.focus) if len(est) else pd.DataFrame()
    cc_row = rows.loc[rows["method"] == "complete_case"] if len(rows) else rows
    sens = ev["sensitivity"]
    primary = sens.primary_method if sens is not None else ("multilevel_mi" if ev["imputation"] is not None else None)
    pr_row = rows.loc[rows["method"] == primary] if len(rows) and primary else pd.DataFrame()
    if len(cc_row) and len(pr_row):
        a, b = cc_row.iloc[0], pr_row.iloc[0]
        text = (f"{a['term']}: complete case {estimate_text(a)} on {count_text(a['n_patients'], mc)} {ev.rows} in "
                f"{int(a['n_clusters'])} {noun}s; {method_label(primary)} {estimate_text(b)} on "
                f"{count_text(b['n_patients'], mc)} {ev.rows} in {int(b['n_clusters'])} {noun}s "
                f"(difference {b['estimate'] - a['estimate']:+.3f}).")
    elif len(cc_row):
        text = (f"Only the complete-case estimate is available ({estimate_text(cc_row.iloc[0])}); "
                "no imputation was run to compare it with.")
    elif len(rows) and rows["method"].str.startswith("complete_case:").any():
        text = ("The complete-case model is flagged as not estimable or not converged (see estimates.csv); "
                "no comparison is made with it.")
    elif ev["complete_case"] is not None:
        text = "Not available: the complete-case model could not be fitted (see section 2)."
    else:
        text = "Not available: the complete-case step is absent."
    return ChecklistItem("Comparison with complete-case analysis", "Sterne 2009", text)


def _after_dropout(sens) -> str:
    """The delta after dropout (repeated measures), when it ran: its tipping points, or the shifts without one."""
    if not any(f.family == "delta-dropout" and f.n_ok for f in sens.families_run):
        return ""
    found = [t for t in sens.dropout_tipping if t.found and is_number(t.delta_sd)]
    unit = "SD per visit interval" if getattr(sens.settings, "dropout_form", "constant") == "growing" else "SD"
    if found:
        return " Tipping points after dropout: " + "; ".join(
            f"{t.mode.split(':', 1)[1]} {t.direction} shift of {t.delta_sd:+.2f} {unit} ({t.delta_units:+.3g} units)"
            for t in found) + "."
    names = join_names(list(dict.fromkeys(t.mode.split(":", 1)[1] for t in sens.dropout_tipping)))
    reach = next(f.checked_delta or 0.0 for f in sens.families_run if f.family == "delta-dropout")
    return f" No tipping point after dropout within the shifts that ran (+/-{reach:g} {unit} of {names})."


def _mnar(ev: ReportEvidence) -> ChecklistItem:
    sens = ev["sensitivity"]
    if sens is None:
        text = "Not done: step 5 (sensitivity analysis) is absent, so departures from MAR were not examined."
        return ChecklistItem("Sensitivity to missing not at random", "Sterne 2009", text)
    ok = [s for s in sens.scenarios if s.status == "ok"]
    # the missing-indicator model against the primary is biased by design: named, not counted (as in the verdict)
    biased = [s.scenario for s in ok if s.changed_conclusion and s.family == "indicator" and s.reference == "primary"]
    changed = [s.scenario for s in ok if s.changed_conclusion and s.scenario not in biased]
    log_odds = sens.delta_scale == "log odds"
    found = [t for t in sens.tipping if t.found and is_number(t.delta_sd)]
    text = (f"{len(ok)} of {len(sens.scenarios)} scenarios ran; {len(changed)} changed the conclusion by a "
            "clinically relevant difference" + (f" ({join_names(changed)})" if changed else "")
            + (f"; not counted: {join_names(biased)} (the missing-indicator model, biased by design)" if biased
               else "") + ". ")
    # only delta scenarios that ran may support a sentence about MNAR
    mnar = [f for f in sens.families_run if f.family in ("delta-global", "delta-cluster")]
    ran = [f for f in mnar if f.n_ok]
    if found:
        text += "Tipping points: " + "; ".join(
            (f"{t.mode} {t.direction} shift to an odds ratio of {t.odds_ratio:.2f} (log odds {t.delta_sd:+.2f})"
             if log_odds else f"{t.mode} {t.direction} shift of {t.delta_sd:+.2f} SD") for t in found) + "."
    elif ran:
        reach = min(f.checked_delta or 0.0 for f in ran)
        text += (f"No tipping point within odds ratios {math.exp(-reach):.2g} to {math.exp(reach):.2g} of "
                 f"{ev.focus} for unrecorded against recorded patients." if log_odds else
                 f"No tipping point within the shifts that ran (+/-{reach:g} observed SDs of {ev.focus}).")
    text += _after_dropout(sens)
    missing = [f for f in mnar if not f.n_ok]
    if missing:
        text += " Not run: " + "; ".join(f"{f.family} ({f.status}: {f.reason})" for f in missing) + "."
    return ChecklistItem("Sensitivity to missing not at random", "Sterne 2009", text)


def _completeness(ev: ReportEvidence) -> list:
    absent = [s.summary_name for s in STEPS if ev[s.key] is None]
    if not absent and not ev.params.fast:
        return []
    bits = []
    if absent:
        bits.append(f"absent from this report: {join_names(absent, 10)}")
    if ev.params.fast:
        bits.append("run in fast mode (small numbers of imputations and draws): not for reporting")
    text = "; ".join(bits)
    return [ChecklistItem("Completeness of this report", "", text[0].upper() + text[1:] + ".")]


def checklist(ev: ReportEvidence, table: pd.DataFrame) -> list:
    """The checklist items, in the order reviewers read them; ``table`` is the amount-missing table."""
    return [_amount(ev, table), _by_cluster(ev), _reasons(ev), _software(ev), _imputations(ev), _hierarchy(ev),
            _diagnostics(ev), _pooling(ev), _against_complete_case(ev), _mnar(ev), *_completeness(ev)]
