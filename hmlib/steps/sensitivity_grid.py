"""From scenario outcomes to step 5's grid: every outcome judged against its reference.

:mod:`hmlib.steps.sensitivity_scenarios` runs the scenarios; this module
turns what they gave into the tables of :class:`hmlib.steps.sensitivity.SensitivityResult`:

- :func:`assemble_grid`: the tidy scenario x term grid, each term judged
  against the scenario's reference by the step's rule (:class:`hmlib.steps.sensitivity_rule.ConclusionRule`:
  the interval's decision about no effect and the move against a clinically
  relevant difference; the intercept is not judged, a cluster SD only by how
  far it moved), and
  the table of scenarios;
- :func:`bisection_tasks`: the tipping-point refinements that the delta grid
  calls for (a side whose grid changes the conclusion);
- :func:`tipping_points`: the tipping point of each delta mode and side, and
  the delta curve (primary, grid and bisection points).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.stats.sensitivity import first_change_on_grid, tipping_point_summary
from hmlib.steps.sensitivity_focus import focus_row, focus_value, term_list
from hmlib.steps.sensitivity_rule import ConclusionRule
from hmlib.steps.sensitivity_scenarios import DELTA_MODES, ScenarioOutcome, SensitivitySettings

__all__ = ["assemble_grid", "bisection_tasks", "tipping_points"]


def _grid_rows(outcome: ScenarioOutcome, reference_rows: pd.DataFrame | None, rule: ConclusionRule) -> pd.DataFrame:
    """One scenario's rows of the grid, each term judged against the reference's (a failed one: one row)."""
    sc = outcome.scenario
    base = {"scenario": sc.name, "family": sc.family, "reference": sc.reference, "status": outcome.status}
    if outcome.status != "ok":
        return pd.DataFrame([{**base, "term": None, "estimate": np.nan, "std_error": np.nan, "ci_lower": np.nan,
                              "ci_upper": np.nan, "n_patients": np.nan, "n_clusters": np.nan,
                              "changed_conclusion": False, "change_reason": outcome.reason}])
    rows = outcome.estimates.copy()
    reasons = []
    for r in rows.itertuples():
        ref, judge = None, rule.change_rule(str(r.term))  # None for the intercept: it states no conclusion
        if reference_rows is not None and judge is not None:
            match = reference_rows.loc[reference_rows["term"] == r.term]
            ref = match.iloc[0] if len(match) else None
        if ref is None:
            reasons.append("")
            continue
        reasons.append(judge(r.estimate, r.ci_lower, r.ci_upper, ref.estimate, ref.ci_lower, ref.ci_upper))
    rows["changed_conclusion"] = [bool(x) for x in reasons]
    rows["change_reason"] = reasons
    for key, value in reversed(list(base.items())):
        rows.insert(0, key, value)
    return rows


def _grid_points(plan: list, outcomes: dict, family: str, sign: float, focus_terms) -> list:
    """``(delta_sd, value or None)`` of one delta family on one side of 0 (value as :func:`focus_value`)."""
    points = []
    for sc in plan:
        if sc.family == family and np.sign(sc.options["delta_sd"]) == sign:
            out = outcomes[sc.name]
            points.append((sc.options["delta_sd"], focus_value(out.estimates, focus_terms) if out.status == "ok"
                           else None))
    return points


def bisection_tasks(plan: list, outcomes: dict, reference: dict, s: SensitivitySettings, focus_term,
                    rule: ConclusionRule) -> list:
    """The refinements the delta grid calls for: one per mode and side whose grid changes the conclusion.

    Parameters
    ----------
    plan : list of Scenario
    outcomes : dict
        :class:`ScenarioOutcome` by scenario name (every delta scenario).
    reference : dict
        The primary's focus ``estimate, ci_lower, ci_upper`` (one dict per term for several, :func:`focus_reference`).
    s : SensitivitySettings
    focus_term : str or list of str
        The focus term(s) judged (a categorical focus: every non-reference level).
    rule : ConclusionRule
        When a term's conclusion changes (each term against its own relevant difference).

    Returns
    -------
    list of tuple
        ``((mode, sign), task)`` with ``task`` as :func:`hmlib.steps.sensitivity_scenarios.run_bisection_task`
        takes it; empty when ``s.bisection_steps`` is 0.
    """
    tasks = []
    for family, mode in DELTA_MODES.items():
        for sign in (1.0, -1.0):
            found = first_change_on_grid(_grid_points(plan, outcomes, family, sign, focus_term), reference,
                                         rule.focus_rule(focus_term))
            if found is not None and s.bisection_steps > 0:
                tasks.append(((mode, sign), (mode, sign, found[0], found[1], reference)))
    return tasks


def _focus_change(rows: pd.DataFrame, terms: list) -> tuple[bool, str]:
    """Whether a scenario changes the conclusion about any focus term, and why (the first such term's reason)."""
    for term in terms:
        focus = rows.loc[rows["term"] == term]
        if len(focus) and focus["changed_conclusion"].iloc[0]:
            reason = focus["change_reason"].iloc[0]
            return True, reason if len(terms) == 1 else f"{term}: {reason}"
    focus = rows.loc[rows["term"] == terms[0]]
    return False, focus["change_reason"].iloc[0] if len(focus) else ""


def assemble_grid(plan: list, outcomes: dict, primary_rows: pd.DataFrame, rule: ConclusionRule,
                  focus_term) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tidy grid (scenario x term, each judged against its reference) and the table of scenarios.

    Parameters
    ----------
    plan : list of Scenario
        In report order (the order of the tables).
    outcomes : dict
        :class:`ScenarioOutcome` by scenario name. A scenario whose reference
        failed gets a note saying so.
    primary_rows : pandas.DataFrame
        The primary analysis (the reference of scenarios whose reference is ``"primary"``).
    rule : ConclusionRule
        When a term's conclusion changes.
    focus_term : str or list of str
        The term(s) whose conclusion the scenario table reports: a scenario
        changes it when any of them changes (its reason prefixed by the term
        when there are several).

    Returns
    -------
    grid, scenarios : pandas.DataFrame
        As :attr:`hmlib.steps.sensitivity.SensitivityResult.grid` and ``.scenarios``.
    """
    grid_parts, scenario_rows = [], []
    for sc in plan:
        out = outcomes[sc.name]
        if sc.reference == "primary":
            ref_rows = primary_rows
        else:
            ref_out = outcomes.get(sc.reference)
            ref_rows = ref_out.estimates if ref_out is not None and ref_out.status == "ok" else None
        rows = _grid_rows(out, ref_rows, rule)
        if sc.reference != "primary" and ref_rows is None and out.status == "ok":
            out.notes.append(f"Its reference {sc.reference} failed, so no conclusion is compared.")
        grid_parts.append(rows)
        changed, why = _focus_change(rows, term_list(focus_term))
        d = out.details
        scenario_rows.append({
            "scenario": sc.name, "family": sc.family, "reference": sc.reference, "status": out.status,
            "reason": out.reason, "n_clusters_excluded": d.get("n_clusters_excluded", 0),
            "n_patients_excluded": d.get("n_patients_excluded", 0),
            "excluded_clusters": list(d.get("excluded_clusters", [])),
            "delta_sd": d.get("delta_sd", np.nan), "delta_units": d.get("delta_units", np.nan),
            "joint_fit": d.get("how", ""),
            "changed_conclusion": changed, "change_reason": why,
            "notes": list(out.notes), "seconds": out.seconds, "cpu_seconds": out.cpu_seconds})
    grid = pd.concat(grid_parts, ignore_index=True) if grid_parts else pd.DataFrame(
        columns=["scenario", "family", "reference", "status", "term", "estimate", "std_error", "ci_lower",
                 "ci_upper", "n_patients", "n_clusters", "changed_conclusion", "change_reason"])
    scenarios = pd.DataFrame(scenario_rows, columns=[
        "scenario", "family", "reference", "status", "reason", "n_clusters_excluded", "n_patients_excluded",
        "excluded_clusters", "delta_sd", "delta_units", "joint_fit", "changed_conclusion", "change_reason", "notes",
        "seconds", "cpu_seconds"])
    return grid, scenarios


def tipping_points(plan: list, outcomes: dict, bisections: dict, grid: pd.DataFrame, reference: dict,
                   s: SensitivitySettings, focus_term, observed_sd: float,
                   rule: ConclusionRule) -> tuple[dict, pd.DataFrame, list]:
    """Tipping points by mode and side, the delta curve and notes on refinements that failed.

    Parameters
    ----------
    plan, outcomes, reference, s, focus_term, rule
        As :func:`bisection_tasks`.
    bisections : dict
        :func:`hmlib.steps.sensitivity_scenarios.run_bisection_task`'s answers by ``(mode, sign)``.
    grid : pandas.DataFrame
        :func:`assemble_grid`'s grid.
    observed_sd : float
        Units per delta: the SD of the observed focus values (1 for a
        categorical focus, whose delta is a log odds ratio).

    Returns
    -------
    tipping : dict
        ``{mode: {"positive" | "negative": summary}}``
        (:func:`hmlib.stats.sensitivity.tipping_point_summary`).
    delta_curve : pandas.DataFrame
        ``mode, term, delta_sd, delta_units, estimate, ci_lower, ci_upper,
        changed, source`` (``"primary"``, ``"grid"`` or ``"bisection"``), by
        mode, term and delta (one curve per focus term).
    notes : list of str
    """
    tipping, curve, notes = {}, [], []
    terms = term_list(focus_term)
    several = len(terms) > 1
    references = reference if several else {terms[0]: reference}
    for fam, mode in DELTA_MODES.items():
        if fam not in s.families:
            continue
        deltas = [sc.options["delta_sd"] for sc in plan if sc.family == fam]
        for term in terms:
            curve.append({"mode": mode, "term": term, "delta_sd": 0.0, "delta_units": 0.0, **references[term],
                          "changed": False, "source": "primary"})
        for sc in plan:
            if sc.family == fam and outcomes[sc.name].status == "ok":
                for term in terms:
                    r = focus_row(outcomes[sc.name].estimates, term)
                    why = grid.loc[(grid["scenario"] == sc.name) & (grid["term"] == term), "change_reason"].iloc[0]
                    curve.append({"mode": mode, "term": term, "delta_sd": sc.options["delta_sd"],
                                  "delta_units": sc.options["delta_sd"] * observed_sd, "estimate": float(r.estimate),
                                  "ci_lower": float(r.ci_lower), "ci_upper": float(r.ci_upper), "changed": bool(why),
                                  "source": "grid"})
        tipping[mode] = {}
        for sign, side in ((1.0, "positive"), (-1.0, "negative")):
            b = bisections.get((mode, sign))
            if b is not None and b.get("error"):
                notes.append(f"The tipping point ({mode}, {side} delta) could not be refined: {b['error']}; "
                             "the grid bracket is reported.")
            found = first_change_on_grid(_grid_points(plan, outcomes, fam, sign, terms), reference,
                                         rule.focus_rule(terms))
            grid_max = max((abs(d) for d in deltas if np.sign(d) == sign), default=0.0)
            tipping[mode][side] = tipping_point_summary(sign, grid_max, found, b, observed_sd)
            for ev in (b or {}).get("evaluations", []):
                curve.append({"mode": mode, "term": ev.get("term") or terms[0], "delta_sd": ev["delta"],
                              "delta_units": ev["delta"] * observed_sd, "estimate": ev["estimate"],
                              "ci_lower": ev["ci_lower"], "ci_upper": ev["ci_upper"], "changed": bool(ev["change"]),
                              "source": "bisection"})
    delta_curve = (pd.DataFrame(curve).sort_values(["mode", "term", "delta_sd"], kind="stable").reset_index(drop=True)
                   if curve else pd.DataFrame(columns=["mode", "term", "delta_sd", "delta_units", "estimate",
                                                       "ci_lower", "ci_upper", "changed", "source"]))
    return tipping, delta_curve, notes
