"""The report's executive summary, methods paragraph and reviewer checklist.

Everything here is generated from one report folder's aggregated results:
``artifacts/<step>.json`` and ``estimates.csv`` (see :mod:`hmlib.results`).
No number is typed by hand and nothing is computed from patient rows; a step
whose artifact is absent is *said* to be absent, and none of its findings is
guessed.

The checklist follows the reporting items reviewers expect for missing data:

- Sterne JAC et al. (2009). Multiple imputation for missing data in
  epidemiological and clinical research: potential and pitfalls. BMJ
  338:b2393 (box "reporting of analyses with missing data");
- STROBE (von Elm et al. 2007) items 12c (how missing data were addressed)
  and 14b (number of participants with missing data for each variable);
- TRIPOD (Collins et al. 2015) items 9 (how missing data were handled, with
  details of any imputation) and 13b (participants with missing data for
  predictors and outcome).

Number formats (the tests re-derive them from the artifacts): coefficients
and their intervals ``.3f``; shares as percentages ``.1f``; SDs, ICCs,
standardised differences and fractions of missing information ``.2f``;
degrees of freedom ``.1f``. Counts between 1 and ``min_cell - 1`` are never
printed (``fewer than <min_cell>``), as in :func:`hmlib.privacy.suppress_counts`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.privacy import suppress_counts
from hmlib.results import read_estimates
from hmlib.stats.complete_case import SMD_THRESHOLD as _SMD_THRESHOLD
from hmlib.wording import cluster_noun
from hmlib.steps import STEPS, get_step

__all__ = ["AuditSummary", "ChecklistItem", "audit_summary", "METHOD_LABELS",
           "focus_terms"]

#: Methods of ``estimates.csv`` compared in the summary, in this order.
METHOD_LABELS = {
    "complete_case": "complete case",
    "missing_indicator": "missing indicator",
    "flat_mi": "flat MI",
    "stratified_mi": "stratified MI",
    "fixed_effects_mi": "fixed-effects MI",
    "multilevel_mi": "multilevel MI",
    "joint_bayes": "joint Bayesian model",
    "joint_bayes:not_converged": "joint Bayesian model (NOT CONVERGED: do not report)",
}

_GUIDE_M_PER_FMI = 100  # White, Royston & Wood (2011): m at least 100 x FMI


@dataclass(frozen=True)
class ChecklistItem:
    """One reporting item: what reviewers ask, where it comes from, and this report's answer."""

    item: str
    guideline: str
    text: str


@dataclass
class AuditSummary:
    """Generated text of the summary sections of one report.

    Attributes
    ----------
    executive : list of str
        Sentences of the executive summary (plain text, not escaped).
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

    executive: list = field(default_factory=list)
    methods: list = field(default_factory=list)
    checklist: list = field(default_factory=list)
    missing_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    absent: list = field(default_factory=list)
    focus: str | None = None


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def _is_num(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def _count(value, min_cell: int) -> str:
    """A count as text, or ``fewer than <min_cell>`` when it is a small cell."""
    if not _is_num(value):
        return "a suppressed number of"
    value = int(round(value))
    if 0 < value < min_cell:
        return f"fewer than {min_cell}"
    return f"{value:,}"


def _pct(share) -> str:
    return f"{100 * share:.1f}%" if _is_num(share) else "suppressed"


def _names(items, limit: int = 6) -> str:
    items = [str(i) for i in items]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _p(p) -> str:
    if not _is_num(p):
        return "p not available"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def focus_terms(terms, focus: str | None) -> list[str]:
    """Terms of ``estimates.csv`` that belong to the focus variable (``x`` or ``x[level]``)."""
    if not focus:
        return []
    return [t for t in terms if t == focus or str(t).startswith(f"{focus}[")]


def _interval_word(method: str) -> str:
    return "95% CrI" if str(method).startswith("joint_bayes") else "95% CI"


def _estimate_text(row) -> str:
    return (f"{row['estimate']:.3f} ({_interval_word(row['method'])} {row['ci_lower']:.3f} "
            f"to {row['ci_upper']:.3f})")


def _load(output_dir: Path) -> dict:
    found = {}
    for step in STEPS:
        record = step.read_artifact(output_dir)
        if record is not None:
            found[step.key] = record.to_json()
    return found


# --------------------------------------------------------------------------
# the sections
# --------------------------------------------------------------------------
def _missing_table(diag: dict, min_cell: int) -> pd.DataFrame:
    """Amount missing per variable from step 1's (already suppressed) overview, suppressed again."""
    rows = []
    for r in diag.get("overview", []):
        rows.append({"variable": r["variable"], "n": r.get("n"), "n_missing": r.get("n_missing"),
                     "n_observed": r.get("n_observed"),
                     "share_missing": r.get("share_missing"),
                     "clusters_with_missing": r.get("n_clusters_any_missing"),
                     "clusters_never_recorded": r.get("n_clusters_all_missing")})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    for col in ("n", "n_missing", "n_observed", "clusters_with_missing", "clusters_never_recorded"):
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


def _who(diag, cc, min_cell, noun) -> tuple[list, dict]:
    """Sentences on who is represented and who is not."""
    out, facts = [], {}
    if diag:
        out.append(f"The extract has {_count(diag.get('n_patients'), min_cell)} patients in "
                   f"{_count(diag.get('n_clusters'), min_cell)} {noun}s.")
        for gap in diag.get("gap_summary", []):
            if gap.get("n_structural"):
                out.append(
                    f"{gap['variable']} is never recorded in {int(gap['n_structural'])} of "
                    f"{int(gap['n_clusters'])} {noun}s (structural gaps: {_names(gap['structural_clusters'])}); "
                    "its values there can only be borrowed from other " + noun + "s.")
    if cc:
        lost = cc.get("clusters_lost", [])
        n_all, n_cc = cc.get("n_all"), cc.get("n_complete")
        kept = n_cc / n_all if _is_num(n_all) and _is_num(n_cc) and n_all else None
        text = (f"Complete-case analysis keeps {_count(n_cc, min_cell)} of {_count(n_all, min_cell)} patients "
                f"({_pct(kept)})")
        if lost:
            text += (f" and loses {len(lost)} of {cc.get('n_clusters')} {noun}s entirely "
                     f"({_names(lost)}): their patients are not represented at all.")
        else:
            text += f"; every {noun} keeps at least one complete case."
        out.append(text)
        facts["kept_share"] = kept
    return out, facts


def _shift(cc, outcome) -> list:
    if not cc:
        return []
    out = []
    if _is_num(cc.get("outcome_complete_cases")) and _is_num(cc.get("outcome_all")):
        out.append(f"The estimand shifts under complete-case analysis: the {outcome} rate is "
                   f"{_pct(cc['outcome_complete_cases'])} among complete cases against {_pct(cc['outcome_all'])} "
                   "in all patients.")
    big = [r for r in cc.get("shift", []) if _is_num(r.get("smd")) and abs(r["smd"]) > _SMD_THRESHOLD]
    if big:
        parts = [f"{r['variable']}{'=' + str(r['level']) if r.get('level') else ''} "
                 f"(standardised difference {r['smd']:.2f})" for r in big]
        out.append(f"Complete cases differ from all patients by more than {_SMD_THRESHOLD} SD in "
                   f"{_names(parts)}.")
    elif cc.get("shift"):
        out.append(f"No variable's distribution shifts by more than {_SMD_THRESHOLD} SD among complete cases.")
    return out


def _focus_rows(estimates: pd.DataFrame, focus) -> pd.DataFrame:
    terms = focus_terms(estimates["term"].unique(), focus)
    rows = estimates.loc[estimates["method"].isin(METHOD_LABELS) & estimates["term"].isin(terms)].copy()
    rows["order"] = rows["method"].map(list(METHOD_LABELS).index)
    return rows.sort_values(["term", "order"])


def _across_methods(estimates, focus, present) -> list:
    rows = _focus_rows(estimates, focus)
    if rows.empty:
        return [f"No estimate of the {focus} coefficient is available (estimates.csv has none)."]
    out = []
    for term, block in rows.groupby("term", sort=False):
        parts = [f"{METHOD_LABELS[r['method']]} {_estimate_text(r)}" for _, r in block.iterrows()]
        text = f"The {term} coefficient by method: " + "; ".join(parts) + "."
        if len(block) > 1:
            lo, hi = block.loc[block["estimate"].idxmin()], block.loc[block["estimate"].idxmax()]
            text += (f" It ranges from {lo['estimate']:.3f} ({METHOD_LABELS[lo['method']]}) to "
                     f"{hi['estimate']:.3f} ({METHOD_LABELS[hi['method']]}).")
        out.append(text)
    if "joint_model" not in present:
        out.append("The joint Bayesian model (step 4) is absent from this report, so it is not in this comparison.")
    return out


def _borrowing(joint, noun, min_cell) -> list:
    if not joint:
        return ["Which " + noun + "s borrow most from the others is not assessed: the joint Bayesian model "
                "(step 4) is absent from this report."]
    pooled = [r for r in joint.get("partial_pooling", []) if _is_num(r.get("shrinkage"))]
    if not pooled:
        return ["The joint model reports no partial pooling of the focus variable (it is complete)."]
    # "measured" survives small-cell suppression of the counts (artifacts before it have only n_observed)
    def measured(r):
        return r["measured"] if "measured" in r else (r["n_observed"] > 0 if _is_num(r.get("n_observed")) else None)

    never = [r for r in pooled if measured(r) is False]
    partly = sorted((r for r in pooled if measured(r)), key=lambda r: -r["shrinkage"])
    out = []
    if partly:
        top = partly[:3]
        out.append("In the joint model, the " + noun + "s that borrow most from the others (largest shrinkage "
                   "of their own level towards the average; 0 = own data only, 1 = the average " + noun + ") are "
                   + _names([f"{r['cluster']} ({r['shrinkage']:.2f})" for r in top]) + ".")
    if never:
        out.append(f"{len(never)} {noun}(s) never recorded the focus variable and borrow entirely "
                   f"({_names([r['cluster'] for r in never])}).")
    return out


def _verdict(sens) -> list:
    if not sens:
        return ["Sensitivity analysis (step 5) is absent from this report: no verdict on robustness is given."]
    out = [f"Sensitivity verdict: {sens['verdict']}" if sens.get("verdict") else
           "The sensitivity step recorded no verdict."]
    return out


def _methods(diag, cc, imp, joint, sens, p, versions, hmlib_version, present) -> list:
    paras = []
    fam = {"binomial": "logistic", "gaussian": "linear"}.get(p["outcome_family"], p["outcome_family"])
    noun = p["noun"]
    preds = ", ".join(p["predictors"])
    paras.append(
        f"Analysis model: a random-intercept {fam} model of {p['outcome']} on {preds}, with a random "
        f"intercept per {noun} ({p['cluster']}), fitted by maximum likelihood (hmlib.stats.mixed: Laplace or adaptive "
        "Gauss-Hermite for logistic, profiled likelihood for linear models).")
    if diag:
        paras.append(
            f"Missingness was described per variable and per {noun} (Wilson intervals; funnel plots with exact "
            "binomial limits); a structural gap is a " + noun + " where at least "
            f"{100 * diag['settings']['structural_share']:.0f}% of a variable is missing. The between-{noun} "
            "variation of each missingness indicator was estimated with a random-intercept logistic model and "
            "tested with a boundary-corrected likelihood-ratio test; predictors of missingness were separated "
            "into within- and between-" + noun + " components.")
    else:
        paras.append("Step 1 (diagnose) is absent: missingness was not described in this report.")
    if cc:
        paras.append(
            f"Complete-case analysis used the {_count(cc.get('n_complete'), p['min_cell'])} patients with every "
            "model variable recorded; the estimand shift was measured by standardised differences between "
            "complete cases and all patients; a missing-indicator model was fitted for comparison.")
    else:
        paras.append("Step 2 (complete-case check) is absent from this report.")
    if imp:
        descs = "; ".join(f"{METHOD_LABELS.get(m['method'], m['method'])}: {m['description']}"
                          for m in imp.get("methods", []))
        paras.append(
            f"Multiple imputation: {len(imp.get('methods', []))} imputation models ({descs}), each with "
            f"m = {imp['m']} imputed data sets and {imp['iterations']} iterations, the outcome included as a "
            "predictor of the missing values. Each completed data set was analysed with the analysis model and "
            "the estimates pooled by Rubin's rules with Barnard-Rubin degrees of freedom (the cluster SD on the "
            "log scale).")
    else:
        paras.append("Step 3 (multiple imputation) is absent from this report.")
    if joint:
        s = joint.get("settings", {})
        paras.append(
            f"Joint Bayesian model: outcome and incomplete predictors modelled jointly with {noun} random "
            f"intercepts and a missingness submodel, in PyMC {versions.get('pymc', 'unknown')}, sampled with "
            f"nutpie {versions.get('nutpie', 'unknown')} ({s.get('chains', '?')} chains x {s.get('draws', '?')} "
            f"draws after {s.get('tune', '?')} tuning, seed {s.get('seed', '?')}); "
            f"{joint.get('convergence_message', 'convergence not recorded')}")
    else:
        paras.append("Step 4 (joint Bayesian model) is absent from this report.")
    if sens:
        st = sens.get("settings", {})
        paras.append(
            f"Sensitivity analysis around the primary method ({METHOD_LABELS.get(sens.get('primary_method'), sens.get('primary_method'))}): "
            f"scenario families {', '.join(st.get('families', []))}; MNAR delta adjustment of the imputed "
            f"{sens.get('focus')} values by {', '.join(f'{d:g}' for d in st.get('deltas_sd', []))} observed SDs, "
            f"the same in every {noun} and in proportion to each {noun}'s missingness, with tipping points "
            "searched by bisection.")
        priors = [sc for sc in sens.get("scenarios", []) if sc.get("family") == "prior" and sc.get("status") == "ok"]
        if priors:
            how = [sc.get("joint_fit") for sc in priors]
            n_weighted, n_refit = how.count("importance reweighting"), how.count("refit")
            paras.append(
                f"Priors on the joint model's cluster SDs: {', '.join(str(sc['scenario']).split(':', 1)[-1] for sc in priors)}; "
                f"{n_weighted} by Pareto-smoothed importance reweighting of the step-4 posterior draws "
                f"(Vehtari et al. 2024), {n_refit} refitted (the weights were unreliable or no draws were saved), "
                "the rest the step-4 fit itself.")
    else:
        paras.append("Step 5 (sensitivity analysis) is absent from this report.")
    soft = ", ".join(f"{k} {versions[k]}" for k in ("numpy", "scipy", "pandas", "statsmodels", "pymc", "nutpie")
                     if k in versions)
    paras.append(f"Software: hmlib {hmlib_version} (Python {p['python']}; {soft}). Seed {p['seed']} for every "
                 f"random step{'; fast mode (small settings, not for reporting)' if p['fast'] else ''}.")
    return paras


def _checklist(diag, cc, imp, joint, sens, p, versions, hmlib_version, table) -> list:
    noun, mc, focus = p["noun"], p["min_cell"], p["focus"]
    items = []

    # amount missing
    if diag and len(table):
        parts = []
        for _, r in table.iterrows():
            if _is_num(r["n_missing"]) and r["n_missing"] == 0:
                continue
            if not _is_num(r["n_missing"]):
                parts.append(f"{r['variable']}: suppressed (counts below {mc} are not shown)")
                continue
            parts.append(f"{r['variable']} {_count(r['n_missing'], mc)} of {_count(r['n'], mc)} "
                         f"({_pct(r['share_missing'])})")
        complete = [str(r["variable"]) for _, r in table.iterrows() if _is_num(r["n_missing"]) and r["n_missing"] == 0]
        text = ("Missing values: " + ("; ".join(parts) if parts else "none") + "."
                + (f" Complete: {_names(complete, 20)}." if complete else "")
                + " The table above gives the counts.")
    else:
        text = "Not reported: step 1 (diagnose) is absent."
    items.append(ChecklistItem("Amount of missing data per variable", "Sterne 2009; STROBE 14b; TRIPOD 13b", text))

    # by cluster
    if diag:
        shares = [r["share_missing"] for r in diag.get("by_cluster", [])
                  if r.get("variable") == focus and _is_num(r.get("share_missing"))]
        cv = diag.get("cluster_variation", {}).get(focus)
        fun = diag.get("funnels", {}).get(focus, {})
        bits = []
        if shares:
            bits.append(f"{focus} is missing in {_pct(min(shares))} to {_pct(max(shares))} of patients per {noun} "
                        f"({len(shares)} {noun}s with publishable shares)")
        if cv:
            bits.append(f"between-{noun} SD of its missingness {cv['cluster_sd']:.2f} on the logit scale "
                        f"(latent ICC {cv['icc_latent']:.2f}, {_p(cv['p_value'])})")
        if fun:
            bits.append(f"{len(fun.get('above', []))} {noun}s above and {len(fun.get('below', []))} below the "
                        "99.8% funnel limits")
        text = ("; ".join(bits) + ".") if bits else f"No by-{noun} summary of {focus} is available."
    else:
        text = "Not reported: step 1 (diagnose) is absent."
    items.append(ChecklistItem(f"Missing data by {noun}", "Sterne 2009; STROBE 14b", text))

    # reasons and assumptions
    preds = []
    if diag:
        mp = diag.get("missingness_predictors", {}).get(focus, {})
        for r in mp.get("table", []):
            if _is_num(r.get("ci_lower")) and _is_num(r.get("ci_upper")) and (r["ci_lower"] > 1 or r["ci_upper"] < 1):
                preds.append(f"{r['term']} (OR per SD {r['odds_ratio']:.2f})")
    text = ("The extract records no reason why a value is missing; reasons must come from the data owners. "
            f"Every imputation method and the joint model assume the values are missing at random given the "
            f"variables in the imputation model (the outcome, {', '.join(p['predictors'] + p['cluster_covariates'])}) "
            f"and, for the "
            f"hierarchical methods, the {noun}.")
    if preds:
        text += f" Observed predictors of missing {focus}: {_names(preds)}; these are in the imputation model."
    elif diag:
        text += f" No observed covariate clearly predicts that {focus} is missing."
    text += (f" MAR would break if {focus} were left unmeasured because of its own unrecorded value (for example "
             f"not measured when it was expected to be normal), or for {noun}-level reasons tied to the outcome "
             f"beyond the {noun}'s random intercept; the MNAR sensitivity analysis below probes the first.")
    items.append(ChecklistItem("Reasons for missingness and the assumption made", "Sterne 2009; STROBE 12c", text))

    # method and software
    text = f"hmlib {hmlib_version}; Python {p['python']}; statsmodels {versions.get('statsmodels', 'unknown')}"
    if joint:
        text += f"; joint model in PyMC {versions.get('pymc', 'unknown')} sampled with nutpie {versions.get('nutpie', 'unknown')}"
    else:
        text += "; the joint model (PyMC/nutpie) was not run"
    items.append(ChecklistItem("Method and software", "Sterne 2009; TRIPOD 9; STROBE 12c", text + "."))

    # number of imputations
    if imp:
        fmi = [r for r in imp.get("fmi", []) if r.get("term") in focus_terms([r.get("term")], focus)
               and _is_num(r.get("fmi"))]
        text = f"m = {imp['m']} imputed data sets per method, {imp['iterations']} iterations each."
        if fmi:
            worst = max(fmi, key=lambda r: r["fmi"])
            need = math.ceil(_GUIDE_M_PER_FMI * worst["fmi"])
            text += (f" Largest fraction of missing information for {worst['term']}: {worst['fmi']:.2f} "
                     f"({METHOD_LABELS.get(worst['method'], worst['method'])}); the rule m >= 100 x FMI "
                     f"(White, Royston & Wood 2011) asks for about {need}"
                     + (", so Monte Carlo error in the pooled results is not negligible." if imp["m"] < need
                        else ", which is met."))
    else:
        text = "Not applicable: step 3 (multiple imputation) is absent."
    items.append(ChecklistItem("Number of imputations", "Sterne 2009; TRIPOD 9", text))

    # hierarchy in the imputation model
    if imp:
        parts = [f"{METHOD_LABELS.get(m['method'], m['method'])}: {m['description']}" for m in imp.get("methods", [])]
        notes = [n for m in imp.get("methods", []) for n in m.get("notes", [])]
        text = "; ".join(parts) + "."
        if notes:
            text += " Notes: " + " ".join(notes)
    else:
        text = "Not applicable: step 3 (multiple imputation) is absent."
    items.append(ChecklistItem("How the imputation model handled the hierarchy", "Sterne 2009; TRIPOD 9", text))

    # diagnostics
    bits = []
    if imp:
        rh = [r["rhat"] for r in imp.get("rhat", []) if _is_num(r.get("rhat"))]
        bits.append(f"imputation chains: largest R-hat {max(rh):.2f}" if rh else
                    "imputation chains: R-hat not computable (too few iterations per chain)")
        tr = imp.get("transport") or {}
        for method, flagged in (tr.get("flagged") or {}).items():
            bits.append(f"transport check ({METHOD_LABELS.get(method, method)}): {len(flagged)} of "
                        f"{tr.get('n_checked')} {noun}s not reproduced when masked")
    if joint:
        bits.append(f"joint model: {joint.get('convergence_message', 'not recorded')}")
    text = ("; ".join(bits) + ".") if bits else "No imputation diagnostics: steps 3 and 4 are absent."
    items.append(ChecklistItem("Diagnostics of the imputations", "Sterne 2009", text))

    # pooling
    if imp:
        fmi = [r for r in imp.get("fmi", []) if r.get("term") in focus_terms([r.get("term")], focus)
               and _is_num(r.get("df"))]
        text = ("Rubin's rules with Barnard-Rubin small-sample degrees of freedom"
                + (": for " + ", ".join(f"{METHOD_LABELS.get(r['method'], r['method'])} df {r['df']:.1f}"
                                        for r in fmi) if fmi else "") + ".")
    else:
        text = "Not applicable: step 3 (multiple imputation) is absent."
    items.append(ChecklistItem("Pooling", "Sterne 2009", text))

    # comparison with complete cases
    est = p["estimates"]
    rows = _focus_rows(est, focus) if len(est) else pd.DataFrame()
    cc_row = rows.loc[rows["method"] == "complete_case"] if len(rows) else rows
    primary = (sens or {}).get("primary_method") or ("multilevel_mi" if imp else None)
    pr_row = rows.loc[rows["method"] == primary] if len(rows) and primary else pd.DataFrame()
    if len(cc_row) and len(pr_row):
        a, b = cc_row.iloc[0], pr_row.iloc[0]
        text = (f"{a['term']}: complete case {_estimate_text(a)} on {_count(a['n_patients'], mc)} patients in "
                f"{int(a['n_clusters'])} {noun}s; {METHOD_LABELS.get(primary, primary)} {_estimate_text(b)} on "
                f"{_count(b['n_patients'], mc)} patients in {int(b['n_clusters'])} {noun}s "
                f"(difference {b['estimate'] - a['estimate']:+.3f}).")
    elif len(cc_row):
        text = (f"Only the complete-case estimate is available ({_estimate_text(cc_row.iloc[0])}); "
                "no imputation was run to compare it with.")
    else:
        text = "Not available: the complete-case step is absent."
    items.append(ChecklistItem("Comparison with complete-case analysis", "Sterne 2009", text))

    # MNAR sensitivity
    if sens:
        sc = sens.get("scenarios", [])
        ok = [s for s in sc if s.get("status") == "ok"]
        changed = [s["scenario"] for s in ok if s.get("changed_conclusion")]
        found = [t for t in sens.get("tipping", []) if t.get("found") and _is_num(t.get("delta_sd"))]
        deltas = sens.get("settings", {}).get("deltas_sd", [])
        text = (f"{len(ok)} of {len(sc)} scenarios ran; {len(changed)} changed the conclusion"
                + (f" ({_names(changed)})" if changed else "") + ". ")
        if found:
            text += "Tipping points: " + "; ".join(
                f"{t['mode']} {t['direction']} shift of {t['delta_sd']:+.2f} SD" for t in found) + "."
        elif deltas:
            text += (f"No tipping point within the shifts tried ({min(deltas):+g} to {max(deltas):+g} observed SDs "
                     f"of {focus}).")
    else:
        text = "Not done: step 5 (sensitivity analysis) is absent, so departures from MAR were not examined."
    items.append(ChecklistItem("Sensitivity to missing not at random", "Sterne 2009", text))

    absent = [s.summary_name for s in STEPS if s.key in p["absent"]]
    if absent or p["fast"]:
        bits = []
        if absent:
            bits.append(f"absent from this report: {_names(absent, 10)}")
        if p["fast"]:
            bits.append("run in fast mode (small numbers of imputations and draws): not for reporting")
        text = "; ".join(bits)
        items.append(ChecklistItem("Completeness of this report", "", text[0].upper() + text[1:] + "."))
    return items


def audit_summary(output_dir: str | Path, *, params, versions: dict, hmlib_version: str,
                  python_version: str) -> AuditSummary:
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
    output_dir = Path(output_dir)
    art = _load(output_dir)
    diag, cc, imp = art.get("diagnose"), art.get("complete_case"), art.get("imputation")
    joint, sens = art.get("joint_model"), art.get("sensitivity")
    absent = [s.key for s in STEPS if s.key not in art]
    estimates = read_estimates(output_dir / "estimates.csv")
    min_cell = int(params.privacy.min_cell)
    noun = cluster_noun(params.cluster)
    focus = str(params.focus) if params.focus else None
    p = {"outcome": params.outcome, "outcome_family": params.outcome_family, "cluster": params.cluster,
         "predictors": list(params.predictors),
         "cluster_covariates": list(getattr(params, "cluster_covariates", ()) or ()), "focus": focus, "noun": noun, "min_cell": min_cell,
         "seed": params.seed, "fast": bool(params.fast), "python": python_version, "absent": absent,
         "estimates": estimates}

    summary = AuditSummary(absent=absent, focus=focus)
    who, _ = _who(diag, cc, min_cell, noun)
    executive = list(who)
    executive += _shift(cc, params.outcome)
    if focus:
        executive += _across_methods(estimates, focus, art) if len(estimates) else \
            [f"No estimate of the {focus} coefficient is available: estimates.csv is absent."]
    executive += _borrowing(joint, noun, min_cell)
    executive += _verdict(sens)
    for key in ("diagnose", "complete_case", "imputation"):
        if key in absent:
            name = get_step(key).summary_name
            executive.append(f"{name[0].upper() + name[1:]} is absent from this report; nothing here rests on it.")
    summary.executive = executive
    summary.missing_table = _missing_table(diag, min_cell) if diag else pd.DataFrame()
    summary.methods = _methods(diag, cc, imp, joint, sens, p, versions, hmlib_version, art)
    summary.checklist = _checklist(diag, cc, imp, joint, sens, p, versions, hmlib_version, summary.missing_table)
    return summary
