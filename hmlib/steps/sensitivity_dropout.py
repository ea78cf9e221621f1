"""Step 5 with repeated measures (#16): the MNAR delta after dropout, and leaving out early dropouts.

When the params name a visit ``time`` (visits within patients: the cluster
is the patient) two scenario families join those of
:mod:`hmlib.steps.sensitivity_scenarios`. Without ``time`` neither is
planned, and step 5 runs as before (same scenarios, same estimates).

``delta-dropout``
    The usual clinical fear about repeated measures: patients leave the
    study because they are doing worse, so their values after leaving are
    worse than MAR predicts from what was recorded before. The primary
    multilevel imputation's completed data sets are shifted (no
    re-imputation): every imputed value of the variable that lies after the
    patient's last recorded visit of it (a post-dropout cell,
    :func:`hmlib.stats.dropout_delta.dropout_cells`; intermittent gaps and
    patients who never record it are not shifted) moves by ``delta``, the
    same at every later visit (the constant form of
    :mod:`hmlib.stats.dropout_delta`, the default), or, with the params'
    ``sensitivity: {dropout_delta_form: growing}``, by ``delta`` times the
    time since the patient's last recorded visit of it in visit intervals
    (the growing form: the median time between a patient's consecutive
    visits, :func:`hmlib.stats.dropout_delta.visit_interval`, so one
    interval after the last recorded visit the shift is ``delta``, two
    intervals after it ``2 delta``). ``delta`` runs over step 5's grid
    ``deltas_sd`` in SDs of the variable's recorded values (per visit
    interval in the growing form; also reported in its units); the
    analysis model of the report (with the params'
    ``random_slopes`` and ``higher_levels``) is re-fitted on each completed
    set and pooled by Rubin's rules. The shifted variable is the outcome (a
    gaussian outcome with post-dropout cells), and also the focus predictor
    when it is numeric, varies between a patient's visits and has
    post-dropout cells. The primary analysis leaves out the rows whose
    outcome was imputed (von Hippel's multiple imputation, then deletion),
    and so would never see a shifted outcome: this family analyses the
    imputed outcome rows too, and its reference is its own ``delta = 0``
    analysis with them kept (scenario ``delta-dropout:0sd``, itself shown
    against the primary but not judged: keeping or deleting imputed
    outcomes is not an assumption about missingness). The tipping point of
    each shifted variable is found as for the other delta families: the
    smallest ``|delta|`` on the grid at which step 5's rule says the focus
    conclusion changed, refined by bisection (the grid points run as
    scenarios, the bisections as tasks; the sequential equivalent is
    :func:`hmlib.stats.dropout_delta.dropout_tipping_point`).
``early-dropout``
    Patients who dropped out early (they have post-dropout cells of the
    outcome and their last recorded outcome is before the median visit
    time of the registry's rows, i.e. they left in the first half of
    follow-up) are left out with all their visits, and imputation and
    analysis are re-run (as the exclusion family does for clusters,
    :func:`hmlib.steps.sensitivity_scenarios.exclude_units`; the chains
    start cold). Asks: does the answer rest on the patients whose later
    course is entirely imputed?
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.stats.dropout_delta import dropout_cells, recorded_sd, visit_interval
from hmlib.stats.pooling import analyse_imputations
from hmlib.stats.sensitivity import first_change_on_grid, refine_tipping_point, shift_imputed, tipping_point_summary
from hmlib.steps.sensitivity_focus import focus_reference, focus_row, focus_terms, focus_value
from hmlib.steps.sensitivity_scenarios import (Scenario, ScenarioContext, ScenarioOutcome, contract_rows,
                                               exclude_units, plan_scenarios, run_bisection_task, run_scenario_task,
                                               set_scenario_context)

__all__ = ["DROPOUT_DELTA", "EARLY_DROPOUT", "REFERENCE", "EARLY_SCENARIO", "recorded_sd", "dropout_variables",
           "early_dropout_patients", "plan_dropout", "plan_all", "dropout_plan_notes", "dropout_time_unit",
           "shift_per_cell", "shifted_after_dropout", "dropout_evaluate",
           "run_task", "run_bisection", "dropout_bisection_tasks", "dropout_tipping_points", "delta_meaning",
           "dropout_sentences", "dropout_narrative", "dropout_methods_text",
           "dropout_introduction"]

DROPOUT_DELTA = "delta-dropout"
EARLY_DROPOUT = "early-dropout"
#: The reference scenario of the delta after dropout: delta 0, imputed outcomes kept.
REFERENCE = "delta-dropout:0sd"
EARLY_SCENARIO = "exclude-early-dropout"


# --------------------------------------------------------------------------
# What applies
# --------------------------------------------------------------------------
def _time_varying(frame: pd.DataFrame, variable: str, cluster: str) -> bool:
    counts = frame.dropna(subset=[variable]).groupby(cluster, observed=True)[variable].nunique()
    return bool((counts > 1).any())


def dropout_variables(registry) -> dict:
    """The variables the delta after dropout shifts here: ``{variable: DropoutCells}`` (empty without ``time``).

    Parameters
    ----------
    registry : hmlib.data.Registry

    Returns
    -------
    dict
        The outcome (gaussian, with post-dropout cells) first, then the focus
        when numeric (not 0/1), time-varying and with post-dropout cells.
    """
    p = registry.params
    if p.time is None:
        return {}
    frame, out = registry.frame, {}
    candidates = []
    if p.outcome_family == "gaussian":
        candidates.append(p.outcome)
    focus = p.focus
    if (focus and focus != p.outcome and registry.kinds.get(focus) == "numeric"
            and not frame[focus].dropna().isin([0, 1]).all() and _time_varying(frame, focus, p.cluster)):
        candidates.append(focus)
    for variable in candidates:
        cells = dropout_cells(frame, variable, cluster=p.cluster, time=p.time)
        if cells.n_cells:
            out[variable] = cells
    return out


def early_dropout_patients(registry) -> tuple[list, object]:
    """Patients who dropped out of the outcome before the median visit time, and that time.

    Returns
    -------
    patients : list
        Labels (sorted) of the patients with post-dropout outcome cells whose last recorded outcome is strictly
        before ``cutoff``; empty without ``time``.
    cutoff : object
        The median of the time over the registry's rows (None without ``time``).
    """
    p = registry.params
    if p.time is None:
        return [], None
    frame = registry.frame
    cutoff = frame[p.time].median()
    cells = dropout_cells(frame, p.outcome, cluster=p.cluster, time=p.time)
    dropped = pd.unique(frame.loc[cells.mask, p.cluster])
    last = frame.loc[frame[p.outcome].notna()].groupby(p.cluster, observed=True)[p.time].max()
    early = [c for c in dropped if c in last.index and last.loc[c] < cutoff]
    return sorted(early, key=str), cutoff


def plan_dropout(registry, settings) -> list[Scenario]:
    """The scenarios of the dropout families that ``settings`` asks for (none without ``time``).

    Parameters
    ----------
    registry : hmlib.data.Registry
    settings : hmlib.steps.sensitivity_scenarios.SensitivitySettings

    Returns
    -------
    list of Scenario
        ``delta-dropout:0sd`` (reference ``primary``), then ``delta-dropout:<variable>:<delta>sd`` for each
        shifted variable and grid value (reference ``delta-dropout:0sd``); ``exclude-early-dropout``.
    """
    plan = []
    if DROPOUT_DELTA in settings.families:
        variables = dropout_variables(registry)
        grid = sorted(set(float(d) for d in settings.deltas_sd) - {0.0})
        if variables and grid:
            plan.append(Scenario(REFERENCE, DROPOUT_DELTA, options={"variable": None, "delta_sd": 0.0}))
        for variable in variables if grid else ():
            for d in grid:
                plan.append(Scenario(f"{DROPOUT_DELTA}:{variable}:{d:+g}sd", DROPOUT_DELTA, reference=REFERENCE,
                                     options={"variable": variable, "delta_sd": d}))
    if EARLY_DROPOUT in settings.families and early_dropout_patients(registry)[0]:
        plan.append(Scenario(EARLY_SCENARIO, EARLY_DROPOUT))
    return plan


def plan_all(registry, settings) -> list[Scenario]:
    """Every scenario of step 5: :func:`~hmlib.steps.sensitivity_scenarios.plan_scenarios` and :func:`plan_dropout`,
    in the order of the settings' families."""
    order = {family: k for k, family in enumerate(settings.families)}
    return sorted(plan_scenarios(registry, settings) + plan_dropout(registry, settings),
                  key=lambda sc: order[sc.family])


def dropout_plan_notes(registry, settings) -> list[str]:
    """Why the delta after dropout does not run although the params have ``time`` (empty otherwise)."""
    p = registry.params
    if p.time is None or DROPOUT_DELTA not in settings.families or dropout_variables(registry):
        return []
    why = (f"the outcome {p.outcome} is binary" if p.outcome_family != "gaussian"
           else f"{p.outcome} has no missing value after a patient's last recorded visit of it")
    return [f"The MNAR delta after dropout did not run: {why} (and the focus {p.focus} has no post-dropout value "
            "to shift)."]


# --------------------------------------------------------------------------
# Running the scenarios
# --------------------------------------------------------------------------
def dropout_time_unit(registry) -> tuple[float, str]:
    """The growing delta's time unit: the visit interval and how to say it.

    Returns
    -------
    interval : float
        :func:`hmlib.stats.dropout_delta.visit_interval` (days for a datetime time column).
    words : str
        ``"<interval> units of <time>"`` (the time column's unit is not known: ``"2 units of week"`` for a
        column ``week``), or ``"<interval> days"`` for dates.
    """
    p = registry.params
    interval = visit_interval(registry.frame, cluster=p.cluster, time=p.time)
    dates = pd.api.types.is_datetime64_any_dtype(registry.frame[p.time])
    return interval, (f"{_fmt(interval)} days" if dates else f"{_fmt(interval)} units of {p.time}")


def shift_per_cell(registry, cells, units: float, form: str) -> np.ndarray:
    """Per row of the registry: the shift of a post-dropout cell (0 elsewhere), in the variable's units.

    ``form="constant"``: ``units`` on every post-dropout cell; ``"growing"``: ``units`` times the time since the
    patient's last recorded visit of the variable, in visit intervals (:func:`dropout_time_unit`).
    """
    if form == "constant":
        return np.where(cells.mask, units, 0.0)
    interval = dropout_time_unit(registry)[0]
    return np.where(cells.mask, units * cells.time_since_last / interval, 0.0)


def shifted_after_dropout(registry, imputation, variable: str, delta_sd: float, form: str = "constant") -> tuple:
    """The imputation with the post-dropout imputed values of ``variable`` shifted by ``delta_sd`` SDs.

    Parameters
    ----------
    registry : hmlib.data.Registry
        The incomplete data the imputation completed (params ``time`` set).
    imputation : hmlib.stats.imputation.ImputationResult
    variable : str
        A numeric variable.
    delta_sd : float
        In SDs of its recorded values (:func:`recorded_sd`); per visit interval in the growing form.
    form : {"constant", "growing"}
        :func:`shift_per_cell`.

    Returns
    -------
    shifted : hmlib.stats.imputation.ImputationResult
        :func:`hmlib.stats.sensitivity.shift_imputed` with the shift only on the post-dropout cells
        (:func:`hmlib.stats.dropout_delta.dropout_cells`): what
        :func:`hmlib.stats.dropout_delta.shift_after_dropout` does to the completed sets.
    units : float
        ``delta_sd`` in the variable's units (per visit interval in the growing form).
    cells : hmlib.stats.dropout_delta.DropoutCells
    """
    p = registry.params
    cells = dropout_cells(registry.frame, variable, cluster=p.cluster, time=p.time)
    units = float(delta_sd) * recorded_sd(registry.frame[variable])
    return shift_imputed(imputation, variable, shift_per_cell(registry, cells, units, form)), units, cells


def dropout_evaluate(ctx: ScenarioContext, variable: str | None, delta_sd: float) -> tuple[pd.DataFrame, dict]:
    """The analysis with the post-dropout imputed values of ``variable`` shifted by ``delta_sd`` SDs.

    Parameters
    ----------
    ctx : ScenarioContext
        Its primary imputation is shifted (not redrawn).
    variable : str or None
        None (or ``delta_sd = 0``): no shift.
    delta_sd : float
        In SDs of the recorded values of ``variable``.

    Returns
    -------
    rows : pandas.DataFrame
        The report's analysis model (random slopes and higher levels of the params) on every shifted completed
        set, imputed outcomes kept, pooled by Rubin's rules (contract columns without ``method``).
    details : dict
        ``delta_sd, delta_units`` and, when shifted, ``n_cells, n_patients_dropped_out``.
    """
    reg, p = ctx.registry, ctx.registry.params
    imputation, details = ctx.primary_imputation, {"delta_sd": float(delta_sd), "delta_units": 0.0}
    if variable is not None and delta_sd != 0:
        imputation, units, cells = shifted_after_dropout(reg, imputation, variable, delta_sd,
                                                         form=ctx.settings.dropout_form)
        details.update(delta_units=units, n_cells=cells.n_cells, n_patients_dropped_out=cells.n_patients_dropped_out)
    pooled = analyse_imputations(imputation, outcome=p.outcome, predictors=list(p.predictors), cluster=p.cluster,
                                 family=p.outcome_family, levels=reg.levels, level=ctx.settings.level,
                                 delete_imputed_outcomes=False, higher_levels=p.higher_levels,
                                 random_slopes=p.random_slopes)
    return contract_rows(pooled.to_frame()), details


def _run_delta_dropout(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    rows, details = dropout_evaluate(ctx, scenario.options["variable"], scenario.options["delta_sd"])
    return ScenarioOutcome(scenario, "ok", estimates=rows, details=details)


def _run_early_dropout(ctx: ScenarioContext, scenario: Scenario) -> ScenarioOutcome:
    patients, cutoff = early_dropout_patients(ctx.registry)
    outcome = exclude_units(ctx, scenario, patients)
    # who dropped out early is not published: the record keeps their number, not their identifiers
    outcome.details["excluded_clusters"] = []
    outcome.details["cutoff"] = cutoff.isoformat() if hasattr(cutoff, "isoformat") else float(cutoff)
    return outcome


_RUNNERS = {DROPOUT_DELTA: _run_delta_dropout, EARLY_DROPOUT: _run_early_dropout}


def run_task(scenario: Scenario, context: ScenarioContext | None = None) -> ScenarioOutcome:
    """Run any scenario of step 5 (:func:`~hmlib.steps.sensitivity_scenarios.run_scenario_task`, with this module's
    runners for the dropout families)."""
    return run_scenario_task(scenario, context, runner=_RUNNERS.get(scenario.family))


def run_bisection(task: tuple, context: ScenarioContext | None = None) -> dict:
    """Refine one tipping point: a dropout task (``("dropout", variable, sign, lo, hi, reference)``) here, any other
    by :func:`~hmlib.steps.sensitivity_scenarios.run_bisection_task`.

    Returns
    -------
    dict
        ``mode`` (``dropout:<variable>``), ``sign, lo, hi, evaluations``; on an error the grid bracket, no
        evaluations and ``error``.
    """
    if task[0] != "dropout":
        return run_bisection_task(task, context)
    _, variable, sign, lo, hi, reference = task
    ctx = context if context is not None else set_scenario_context(None)   # this process's context ...
    if context is None:
        set_scenario_context(ctx)                                            # ... left in place
    mode = f"dropout:{variable}"
    try:
        terms = focus_terms(ctx.registry)
        refined = refine_tipping_point(lambda d: focus_value(dropout_evaluate(ctx, variable, d)[0], terms), lo, hi,
                                       sign, reference, ctx.rule.focus_rule(terms), steps=ctx.settings.bisection_steps)
        return {"mode": mode, "sign": sign, **refined}
    except Exception as exc:  # noqa: BLE001 - the grid bracket is kept, the refinement is not
        return {"mode": mode, "sign": sign, "lo": lo, "hi": hi, "evaluations": [],
                "error": f"{type(exc).__name__}: {exc}"}


# --------------------------------------------------------------------------
# Tipping points
# --------------------------------------------------------------------------
def _grid(plan: list, outcomes: dict, variable: str, sign: float, terms) -> list:
    return [(sc.options["delta_sd"], focus_value(outcomes[sc.name].estimates, terms)
             if outcomes[sc.name].status == "ok" else None)
            for sc in plan if sc.family == DROPOUT_DELTA and sc.options["variable"] == variable
            and np.sign(sc.options["delta_sd"]) == sign]


def _variables(plan: list) -> list:
    return list(dict.fromkeys(sc.options["variable"] for sc in plan
                              if sc.family == DROPOUT_DELTA and sc.options["variable"] is not None))


def _reference(outcomes: dict, terms):
    out = outcomes.get(REFERENCE)
    return focus_reference(out.estimates, terms) if out is not None and out.status == "ok" else None


def dropout_bisection_tasks(plan: list, outcomes: dict, terms, rule, bisection_steps: int) -> list:
    """``((mode, sign), task)`` for each shifted variable and side whose grid changes the focus conclusion.

    ``task`` as :func:`run_bisection` takes it; ``mode`` is ``dropout:<variable>``. Empty when the reference
    (``delta-dropout:0sd``) failed or ``bisection_steps`` is 0.
    """
    reference = _reference(outcomes, terms)
    if reference is None or bisection_steps <= 0:
        return []
    tasks = []
    for variable in _variables(plan):
        for sign in (1.0, -1.0):
            found = first_change_on_grid(_grid(plan, outcomes, variable, sign, terms), reference,
                                         rule.focus_rule(terms))
            if found is not None:
                tasks.append(((f"dropout:{variable}", sign), ("dropout", variable, sign, found[0], found[1],
                                                              reference)))
    return tasks


def _curve_rows(mode: str, terms, delta: float, scale: float, value, change: bool, source: str) -> list:
    values = value if isinstance(value, dict) else {terms[0]: value}
    return [{"mode": mode, "term": term, "delta_sd": float(delta), "delta_units": float(delta) * scale,
             "estimate": v[0], "ci_lower": v[1], "ci_upper": v[2], "changed": bool(change), "source": source}
            for term, v in values.items()]


def dropout_tipping_points(plan: list, outcomes: dict, bisections: dict, registry, rule,
                           form: str = "constant") -> tuple[dict, list, list]:
    """The tipping point of each shifted variable, its curve and notes.

    Parameters
    ----------
    plan : list of Scenario
    outcomes : dict
        :class:`ScenarioOutcome` by name.
    bisections : dict
        :func:`run_bisection`'s answers by ``(mode, sign)``.
    registry : hmlib.data.Registry
    rule : hmlib.steps.sensitivity_rule.ConclusionRule
    form : {"constant", "growing"}
        The settings' ``dropout_form``, recorded per variable.

    Returns
    -------
    dropout : dict
        ``{variable: {"scale", "n_cells", "n_patients_dropped_out", "form", "interval", "interval_words",
        "tipping": {"positive" | "negative": summary}}}`` (:func:`hmlib.stats.sensitivity.tipping_point_summary`,
        in SDs of the variable's recorded values; ``interval`` and its words the growing form's time unit,
        :func:`dropout_time_unit`, None in the constant form).
    curve : list of dict
        Rows of the delta curve (mode ``dropout:<variable>``; source ``reference``, ``grid`` or ``bisection``).
    notes : list of str
    """
    terms = focus_terms(registry)
    reference = _reference(outcomes, terms)
    out, curve, notes = {}, [], []
    variables = _variables(plan)
    if variables and reference is None:
        return out, curve, [f"The delta after dropout has no tipping point: its reference {REFERENCE} failed."]
    judge = rule.focus_rule(terms)
    interval, words = dropout_time_unit(registry) if form == "growing" and variables else (None, None)
    for variable in variables:
        mode, scale = f"dropout:{variable}", recorded_sd(registry.frame[variable])
        cells = dropout_cells(registry.frame, variable, cluster=registry.params.cluster, time=registry.params.time)
        ref_value = focus_value(outcomes[REFERENCE].estimates, terms)
        curve += _curve_rows(mode, terms, 0.0, scale, ref_value, False, "reference")
        tipping = {}
        for sign, side in ((1.0, "positive"), (-1.0, "negative")):
            points = _grid(plan, outcomes, variable, sign, terms)
            found = first_change_on_grid(points, reference, judge)
            b = bisections.get((mode, sign))
            if b is not None and b.get("error"):
                notes.append(f"The tipping point after dropout ({variable}, {side} delta) could not be refined: "
                             f"{b['error']}; the grid bracket is reported.")
            grid_max = max((abs(d) for d, _ in points), default=0.0)
            tipping[side] = tipping_point_summary(sign, grid_max, found, b, scale)
            for d, value in points:
                if value is not None:
                    changed = bool(first_change_on_grid([(d, value)], reference, judge))
                    curve += _curve_rows(mode, terms, d, scale, value, changed, "grid")
            for ev in (b or {}).get("evaluations", []):
                curve.append({"mode": mode, "term": ev.get("term") or terms[0], "delta_sd": ev["delta"],
                              "delta_units": ev["delta"] * scale, "estimate": ev["estimate"],
                              "ci_lower": ev["ci_lower"], "ci_upper": ev["ci_upper"], "changed": bool(ev["change"]),
                              "source": "bisection"})
        out[variable] = {"scale": scale, "n_cells": cells.n_cells,
                         "n_patients_dropped_out": cells.n_patients_dropped_out, "form": form, "interval": interval,
                         "interval_words": words, "tipping": tipping}
    return out, curve, notes


# --------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------
def _fmt(x: float) -> str:
    return f"{x:.3g}"


def delta_meaning(variable: str, units: float, *, outcome: bool, per: str | None = None) -> str:
    """What a delta after dropout means, in plain words (``per``: the growing form's visit interval in words).

    Examples
    --------
    >>> delta_meaning("twstrs", -3.2, outcome=True)
    'patients who left the study would have scored 3.2 twstrs units lower at every later visit than MAR predicts'
    >>> delta_meaning("x", 0.5, outcome=False)
    'patients who left the study would have had x values 0.5 units higher at every later visit than MAR predicts'
    >>> delta_meaning("twstrs", -3.2, outcome=True, per="4 units of week")
    'patients who left the study would have scored 3.2 twstrs units lower than MAR predicts for every 4 units of \
week since their last recorded visit (6.4 lower two intervals after it)'
    """
    amount = _fmt(abs(units))
    what = f"scored {amount} {variable} units" if outcome else f"had {variable} values {amount} units"
    direction = "higher" if units > 0 else "lower"
    if per is None:
        return f"patients who left the study would have {what} {direction} at every later visit than MAR predicts"
    return (f"patients who left the study would have {what} {direction} than MAR predicts for every {per} since "
            f"their last recorded visit ({_fmt(2 * abs(units))} {direction} two intervals after it)")


def _per(info: dict) -> str | None:
    return info.get("interval_words") if info.get("form") == "growing" else None


def _sd_unit(info: dict) -> str:
    """``"SD"``, or ``"SD per <interval>"`` in the growing form."""
    per = _per(info)
    return "SD" if per is None else f"SD per {per}"


def _checked(result, variable: str) -> float:
    """Largest |delta| up to which every grid value of ``variable`` ran on both sides (0 if a side has none)."""
    table = result.scenarios
    rows = table.loc[table["scenario"].str.startswith(f"{DROPOUT_DELTA}:{variable}:")]
    reach = []
    for sign in (1.0, -1.0):
        side = rows.loc[np.sign(rows["delta_sd"]) == sign]
        checked = 0.0
        for row in side.iloc[np.argsort(np.abs(side["delta_sd"].to_numpy()), kind="stable")].itertuples():
            if row.status != "ok":
                break
            checked = abs(float(row.delta_sd))
        reach.append(checked)
    return float(min(reach))


def dropout_sentences(result) -> list[tuple[str, bool]]:
    """Per shifted variable: its tipping point after dropout in words, and whether it lies within the plausible
    range (``plausible_delta_sd`` SDs of the variable); empty when the family gave no result."""
    out = []
    plausible = result.settings.plausible_delta_sd
    for variable, info in getattr(result, "dropout", {}).items():
        found = [(side, t) for side, t in info["tipping"].items() if t.get("found")]
        checked, scale = _checked(result, variable), info["scale"]
        per, unit = _per(info), _sd_unit(info)
        label = (f"MNAR after dropout ({variable} shifted after each patient's last recorded visit"
                 + (", the shift growing with the time since it)" if per else ")"))
        if not found:
            out.append((f"{label}: no delta within +/-{checked:g} {unit} (+/-{_fmt(checked * scale)} {variable} "
                        "units) changes the conclusion.", False))
            continue
        _, t = min(found, key=lambda item: abs(item[1]["delta_sd"]))
        term = t.get("term") or result.focus_terms[0]
        where = delta_meaning(variable, t["delta_units"], outcome=variable == result.outcome, per=per)
        out.append((f"{label}: the conclusion changes ({t['change']}) at a tipping point of {t['delta_sd']:+.2f} "
                    f"{unit} ({t['delta_units']:+.3g} {variable} units), i.e. if {where}; there the {term} "
                    "coefficient is "
                    f"{_fmt(t['estimate'])} (95% CI {_fmt(t['ci_lower'])} to {_fmt(t['ci_upper'])}).",
                    abs(t["delta_sd"]) <= plausible))
    return out


def dropout_narrative(result) -> list[str]:
    """The sentences of the dropout families that ran: the reference, the tipping points, early dropouts."""
    out = []
    grid = result.grid
    ref = grid.loc[(grid["scenario"] == REFERENCE) & (grid["status"] == "ok")]
    sentences = dropout_sentences(result)
    if len(ref) and sentences:
        r = focus_row(ref, result.focus_terms[0])
        prim = result.primary_focus()
        out.append(f"The delta after dropout is judged against its own delta = 0 analysis, which keeps the rows with "
                   f"an imputed outcome (the primary analysis leaves them out, so it would never see a shifted "
                   f"outcome): there the {result.focus_terms[0]} coefficient is {_fmt(r.estimate)} (95% CI "
                   f"{_fmt(r.ci_lower)} to {_fmt(r.ci_upper)}), against the primary's {_fmt(prim.estimate)}.")
        out.extend(text for text, _ in sentences)
        example = next(iter(result.dropout))
        units = result.settings.plausible_delta_sd * result.dropout[example]["scale"]
        info = result.dropout[example]
        out.append(f"What delta means here, for example: delta = -{result.settings.plausible_delta_sd:g} "
                   f"{_sd_unit(info)} says "
                   f"{delta_meaning(example, -units, outcome=example == result.outcome, per=_per(info))}; "
                   "delta = 0 is MAR.")
    early = result.scenarios.loc[(result.scenarios["scenario"] == EARLY_SCENARIO)
                                 & (result.scenarios["status"] == "ok")]
    for r in early.itertuples():
        n = int(r.n_clusters_excluded)
        count = f"{n}" if n >= result.min_cell or n == 0 else f"fewer than {result.min_cell}"
        out.append(f"{EARLY_SCENARIO}: {count} patient(s) whose last recorded {result.outcome} came before the "
                   "median visit time (they dropped out in the first half of follow-up) were left out with all "
                   "their visits, and imputation and analysis re-run.")
    return out


def dropout_introduction(form: str) -> str:
    """What step 5's section on the delta after dropout does, in words, for the delta's ``form``.

    Examples
    --------
    >>> "the same at every later visit" in dropout_introduction("constant")
    True
    >>> "per visit interval" in dropout_introduction("growing")
    True
    """
    how = ("by delta, the same at every later visit, in SDs of the variable's recorded values" if form == "constant"
           else "by delta per visit interval (the median time between a patient's consecutive visits) times the "
                "intervals since the patient's last recorded visit, in SDs of the variable's recorded values, so "
                "the shift grows with the time away")
    return ("Every imputed value after a patient's last recorded visit (not intermittent gaps) is shifted "
            f"{how} (delta_units: in its own units; the outcome, and a time-varying focus). The primary "
            "imputation is shifted, not redrawn, and the analysis model re-fitted with the rows whose outcome was "
            "imputed kept (the primary analysis leaves them out, so it would never see a shifted outcome): the "
            "reference is that analysis at delta = 0 (scenario delta-dropout:0sd). A negative delta says that "
            "patients who left the study would have scored lower than MAR predicts; ask whether a shift as large "
            "as the tipping point is plausible for this registry.")


def dropout_methods_text(record) -> str:
    """The methods sentence of the dropout families that ran (``""`` when none did), from step 5's record."""
    ran = {f.family for f in record.families_run if f.n_ok}
    parts = []
    if DROPOUT_DELTA in ran:
        variables = ", ".join(dict.fromkeys(t.mode.split(":", 1)[1] for t in record.dropout_tipping))
        grid = ", ".join(f"{d:g}" for d in record.settings.deltas_sd)
        form = ("(the same at every later visit; " if record.settings.dropout_form == "constant" else
                "per visit interval (the median time between a patient's consecutive visits) times the intervals "
                "since the patient's last recorded visit, a shift growing with the time away (")
        parts.append(f"MNAR delta adjustment after dropout: the primary imputation's imputed values of {variables} "
                     "after each patient's last recorded visit were shifted by "
                     f"{grid} SDs of the recorded values {form}intermittent gaps not "
                     "shifted; no re-imputation), and the analysis model re-fitted with the imputed outcome rows "
                     "kept, its reference the unshifted analysis with them kept; tipping points searched by "
                     "bisection")
    if EARLY_DROPOUT in ran:
        parts.append("patients whose last recorded outcome came before the median visit time (early dropout) "
                     "left out, and imputation (cold start) and analysis re-run")
    return ("; ".join(parts) + ".") if parts else ""
