"""The report's key messages: the bottom line in about 150 words, on the clinical scale.

Written from the typed evidence (:mod:`hmlib.report.evidence`) only, in this order:

1. the recommended primary analysis and the rule that chose it (:func:`primary_method`);
2. the focus variable's effect on the clinical scale: an odds ratio for a binary
   outcome, a difference for a continuous one, per the params' ``effect_units``
   (default: per SD of the recorded values, said), with its 95% interval;
3. how far the other methods disagree, on the same scale, leaving out (and
   naming) the methods the report itself distrusts;
4. with levels above the cluster (``higher_levels``), how the primary
   analysis splits the between-cluster variation of the outcome between the
   levels (:func:`variance_shares`, :func:`level_message`), and at which level the focus variable's
   missingness varies most (step 1's partition by level);
5. who is not represented (patients and sites complete-case analysis loses,
   the estimand shift);
6. the sensitivity verdict in plain words, with MAR spelled out (with repeated measures, also how far
   the values after a patient's dropout may depart from MAR);
7. one word for the strength of evidence, with its rule (:func:`evidence_strength`).

A message whose step is absent says so in a few words instead of guessing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from hmlib.methods import base_method, method_label
from hmlib.report.evidence import ReportEvidence, focus_rows
from hmlib.stats.complete_case import SMD_THRESHOLD
from hmlib.wording import count_text, is_number, join_names, percent

__all__ = ["EffectScale", "effect_scale", "primary_method", "evidence_strength", "key_messages", "distrusted_methods",
           "PRIMARY_RULE", "STRENGTH_RULE", "DISTRUSTED_BY_DESIGN", "significant", "variance_shares",
           "level_message"]

#: The rule that chooses the primary analysis (also printed in the methods).
PRIMARY_RULE = ("multilevel multiple imputation when it ran and is not flagged (it keeps every patient and models "
                "the between-site variation of the outcome and of the incomplete variables); otherwise the joint "
                "Bayesian model when it converged; otherwise none")
#: The rule of the one-word strength of evidence (also printed in the methods).
STRENGTH_RULE = ("strong: the primary 95% interval excludes no effect, every trusted method agrees on the "
                 "direction and the sensitivity analysis finds the conclusion robust; moderate: the interval "
                 "excludes no effect but the methods disagree on the direction or the conclusion is not robust; "
                 "weak: the interval includes no effect; not assessed: no primary analysis")
#: Methods never counted in the comparison, with why.
DISTRUSTED_BY_DESIGN = {"missing_indicator": "biased by design",
                        "locf": "single imputation: intervals too narrow, values assumed unchanged"}
_FLAG_WORDS = {"not_converged": "not converged", "not_estimable": "not estimable"}


def significant(value: float, digits: int = 3) -> str:
    """A number to ``digits`` significant digits (``0.000214``, ``1.43``, ``2,150``), not fixed decimals."""
    if not is_number(value):
        return "not available"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:,.{decimals}f}"


@dataclass(frozen=True)
class EffectScale:
    """How the focus variable's coefficient is shown: its multiplier and the words for it.

    Attributes
    ----------
    per : float
        Units of the predictor per reported effect (the coefficient is multiplied by it).
    unit_text : str
        ``per 1 SD (1.33) of lactate``, ``per 100 kcal of calories``, or ``for female vs male``.
    odds_ratio : bool
        Binary outcome: effects are odds ratios (exp of the scaled coefficient).
    """

    per: float
    unit_text: str
    odds_ratio: bool

    def effect(self, coefficient: float) -> float:
        """The coefficient on this scale."""
        value = coefficient * self.per
        return math.exp(value) if self.odds_ratio else value

    @property
    def name(self) -> str:
        return "odds ratio" if self.odds_ratio else "difference"


def effect_scale(ev: ReportEvidence, term: str) -> EffectScale:
    """The scale of ``term`` (the focus variable, or one of its levels ``focus[level]``)."""
    p = ev.params
    odds = p.outcome_family == "binomial"
    focus = ev.focus
    if term != focus:  # a level of a categorical focus, against the reference level
        level = term[len(focus) + 1:-1] if term.startswith(f"{focus}[") else term
        reference = ev.focus_reference
        against = f"{focus} {reference}" if reference else "the reference level"
        return EffectScale(1.0, f"for {focus} {level} vs {against}", odds)
    unit = p.effect_units.get(focus)
    if unit is not None:
        return EffectScale(unit.per, f"{unit.text} of {focus}", odds)
    if is_number(ev.focus_sd) and ev.focus_sd > 0:
        return EffectScale(ev.focus_sd, f"per 1 SD ({significant(ev.focus_sd)}) of {focus}", odds)
    return EffectScale(1.0, f"per unit of {focus}", odds)


def _flagged(method: str) -> bool:
    return ":" in str(method)


def primary_method(ev: ReportEvidence) -> str | None:
    """The recommended primary analysis by :data:`PRIMARY_RULE` (a method key of estimates.csv), or None."""
    methods = set(ev.estimates["method"]) if len(ev.estimates) else set()
    if "multilevel_mi" in methods:
        return "multilevel_mi"
    if "joint_bayes" in methods:
        return "joint_bayes"
    return None


def _effect_text(scale: EffectScale, row) -> str:
    lo, hi = sorted((scale.effect(row["ci_lower"]), scale.effect(row["ci_upper"])))
    interval = "95% CrI" if base_method(row["method"]) == "joint_bayes" else "95% CI"
    return f"{scale.name} {significant(scale.effect(row['estimate']))} ({interval} {significant(lo)} to {significant(hi)})"


def distrusted_methods(ev: ReportEvidence) -> dict:
    """Methods the report itself distrusts, with the reason (by design, flags, the step's own concerns)."""
    out = dict(DISTRUSTED_BY_DESIGN)
    imp = ev["imputation"]
    if imp is not None:
        for record in imp.methods:
            if record.status != "ok":
                out[record.method] = "failed"
            elif any(is_number(v) for v in (record.extrapolated or {}).values()):
                out[record.method] = "extrapolates"
    return out


def _primary_and_spread(ev: ReportEvidence) -> tuple[list, dict]:
    """Messages 1-3, and the facts the strength of evidence needs."""
    primary = primary_method(ev)
    if primary is None:
        return (["No primary analysis can be recommended: neither multilevel imputation nor the joint model has "
                 "results in this report."], {})
    rows = focus_rows(ev.estimates, ev.focus)
    out = [f"Primary analysis: {method_label(primary)}, by the rule in Methods (it keeps every patient and "
           f"models the differences between {ev.noun}s)."]
    facts = {"primary": primary, "excludes_null": [], "directions": set()}
    distrusted = distrusted_methods(ev)
    for term, block in rows.groupby("term", sort=False):
        scale = effect_scale(ev, term)
        prim = block.loc[block["method"] == primary]
        if prim.empty:
            continue
        p = prim.iloc[0]
        out.append(f"Effect of {term if term != ev.focus else ev.focus} on {ev.params.outcome}: "
                   f"{_effect_text(scale, p)} {scale.unit_text}.")
        facts["excludes_null"].append(p["ci_lower"] > 0 or p["ci_upper"] < 0)
        facts["directions"].add(math.copysign(1, p["estimate"]))
        others = block.loc[(block["method"] != primary) & ~block["method"].map(_flagged)
                           & ~block["method"].isin(distrusted)]
        if len(others):
            effects = others.assign(effect=others["estimate"].map(scale.effect))
            lo, hi = effects.loc[effects["effect"].idxmin()], effects.loc[effects["effect"].idxmax()]
            facts["directions"].update(math.copysign(1, e) for e in others["estimate"])
            text = (f"Other methods: {scale.name}s {significant(lo['effect'])} ({method_label(lo['method'])}) "
                    f"to {significant(hi['effect'])} ({method_label(hi['method'])})")
            left_out = sorted({m for m in block["method"] if m in distrusted or _flagged(m)})
            if left_out:
                text += "; not counted: " + join_names(
                    [f"{method_label(base_method(m))} ({distrusted.get(m) or _FLAG_WORDS.get(m.split(':')[-1], 'flagged')})"
                     for m in left_out])
            out.append(text + ".")
    return out, facts


def variance_shares(estimates: pd.DataFrame, method: str, levels) -> dict:
    """Each level's share of the between-cluster variance of the outcome under one method.

    Parameters
    ----------
    estimates : pandas.DataFrame
        ``estimates.csv``.
    method : str
    levels : sequence of str
        The levels, outermost first, the cluster last (rows ``sd(<level>)``).

    Returns
    -------
    dict
        ``{level: share}`` (summing to 1), in the order of ``levels``; empty
        when a level's SD is missing or every SD is 0.
    """
    rows = estimates.loc[estimates["method"] == method].set_index("term")["estimate"]
    sds = [rows.get(f"sd({level})") for level in levels]
    if any(not is_number(sd) for sd in sds):
        return {}
    total = sum(sd ** 2 for sd in sds)
    return {level: sd ** 2 / total for level, sd in zip(levels, sds)} if total > 0 else {}


def level_message(ev: ReportEvidence) -> list:
    """Message 4: the outcome's variation and the focus's missingness by level (only with ``higher_levels``)."""
    diag = ev.artifacts.get("diagnose")
    higher = list(getattr(getattr(diag, "settings", None), "higher_levels", ())
                  or getattr(ev.params, "higher_levels", ()) or ())
    if not higher:
        return []
    primary = primary_method(ev)
    if primary is None:
        return []
    levels = [*higher, ev.params.cluster]
    shares = variance_shares(ev.estimates, primary, levels)
    if not shares:
        return []
    parts = [f"{percent(shares[lv])} lies between {lv} units" for lv in higher]
    text = (f"Of the between-{ev.noun} variation in {ev.params.outcome} ({method_label(primary)}), "
            f"{', '.join(parts)} and {percent(shares[ev.params.cluster])} between {ev.noun}s within them")
    partition = getattr(diag, "level_variation", {}).get(ev.focus) if diag is not None else None
    if partition is not None:
        top = max(partition.table, key=lambda row: row.sd)
        if top.sd > 0:
            where = f"{ev.noun}s" if top.level == ev.params.cluster else f"{top.level} units"
            text += f"; missingness of {ev.focus} varies most between {where} (step 1)"
    return [text + "."]


def _not_represented(ev: ReportEvidence) -> list:
    cc = ev["complete_case"]
    if cc is None:
        return ["Who complete-case analysis would leave out is not assessed (step 2 is absent)."]
    lost = cc.n_all - cc.n_complete
    text = (f"Complete-case analysis would drop {count_text(lost, ev.min_cell)} patients "
            f"({percent(lost / cc.n_all if cc.n_all else None)})")
    if cc.clusters_lost:
        text += f" and {len(cc.clusters_lost)} of {cc.n_clusters} {ev.noun}s entirely ({join_names(cc.clusters_lost, 3)})"
    big = [r.variable for r in cc.shift if is_number(r.smd) and abs(r.smd) > SMD_THRESHOLD]
    if big:
        text += f"; they differ from all patients in {join_names(sorted(set(big)), 4)}"
    return [text + "."]


def _sensitivity(ev: ReportEvidence) -> tuple[list, str | None]:
    sens = ev["sensitivity"]
    mar = f"missing at random (MAR: missingness explained by the recorded variables and the {ev.noun})"
    if sens is None:
        return ([f"Every method assumes the unrecorded values are {mar}; the sensitivity analysis (step 5) is "
                 "absent, so departures from it were not examined."], None)
    word = sens.verdict.split(":", 1)[0].strip()
    if sens.delta_scale == "log odds":
        return _sensitivity_categorical(ev, sens, word, mar)
    plausible = sens.settings.plausible_delta_sd
    if word == "robust":
        found = sorted(abs(t.delta_sd) for t in sens.tipping if t.found and is_number(t.delta_sd))
        tried = max((abs(d) for d in sens.settings.deltas_sd), default=plausible)
        reach = (f"up to {tried:g} SD (the largest shift tried)" if not found else
                 f"up to {plausible:g} SD (it would change at {found[0]:.2g} SD)")
        return ([f"The conclusion holds if unrecorded {ev.focus} values are {mar}, and still if they are {reach} "
                 "higher or lower than MAR implies."], "robust")
    if word == "not robust":
        found = [t for t in sens.tipping if t.found and is_number(t.delta_sd) and abs(t.delta_sd) <= plausible]
        how = (f"it changes if the unrecorded values are {join_names([f'{abs(t.delta_sd):.2g} SD {t.direction}' for t in found])} "
               "than MAR implies" if found else "it changes in some scenarios (section 5 names them)")
        return ([f"The conclusion assumes the unrecorded {ev.focus} values are {mar}: {how}."], "not robust")
    return ([f"The sensitivity analysis is {word}: {sens.verdict.split(':', 1)[-1].strip()[:200]}"], word)


def _sensitivity_categorical(ev: ReportEvidence, sens, word: str, mar: str) -> tuple[list, str | None]:
    """As :func:`_sensitivity` for a categorical focus, whose deltas are log odds (shown as odds ratios)."""
    reference = f" ({ev.focus_reference})" if ev.focus_reference else ""
    odds = f"the odds of each unrecorded {ev.focus} category against the reference{reference}"
    plausible = sens.settings.plausible_log_odds
    if word == "robust":
        found = sorted(abs(t.delta_sd) for t in sens.tipping if t.found and is_number(t.delta_sd))
        tried = max((abs(d) for d in sens.settings.deltas_log_odds), default=plausible)
        reach = (f"up to {significant(math.exp(tried), 2)} times (the largest shift tried)" if not found else
                 f"up to {significant(math.exp(plausible), 2)} times (it would change at "
                 f"{significant(math.exp(found[0]), 2)} times)")
        return ([f"The conclusion holds if unrecorded {ev.focus} values are {mar}, and still if {odds} are "
                 f"{reach} higher or lower than MAR implies."], "robust")
    if word == "not robust":
        found = [t for t in sens.tipping if t.found and is_number(t.delta_sd) and abs(t.delta_sd) <= plausible]
        how = (f"it changes if {odds} are " + join_names(
            [f"{significant(math.exp(abs(t.delta_sd)), 2)} times {'higher' if t.delta_sd > 0 else 'lower'}"
             for t in found]) + " than MAR implies" if found else "it changes in some scenarios (section 5 names them)")
        return ([f"The conclusion assumes the unrecorded {ev.focus} values are {mar}: {how}."], "not robust")
    return ([f"The sensitivity analysis is {word}: {sens.verdict.split(':', 1)[-1].strip()[:200]}"], word)


def evidence_strength(facts: dict, verdict: str | None) -> str:
    """One word by :data:`STRENGTH_RULE`."""
    if not facts:
        return "not assessed"
    if not all(facts["excludes_null"]) or not facts["excludes_null"]:
        return "weak"
    if len(facts["directions"]) > 1 or verdict != "robust":
        return "moderate"
    return "strong"


def _dropout_message(ev: ReportEvidence) -> list:
    """With repeated measures: how far the values after a patient's dropout may depart from MAR before the
    conclusion changes (step 5's delta after dropout), one sentence per shifted variable."""
    sens = ev["sensitivity"]
    by_variable: dict = {}
    for t in getattr(sens, "dropout_tipping", ()) or ():
        by_variable.setdefault(str(t.mode).split(":", 1)[-1], []).append(t)
    settings = getattr(sens, "settings", None)
    growing = getattr(settings, "dropout_form", "constant") == "growing"
    per = " per visit interval since their last recorded visit" if growing else ""
    out = []
    for variable, tips in by_variable.items():
        found = [t for t in tips if t.found and is_number(t.delta_sd)]
        if found:
            t = min(found, key=lambda t: abs(t.delta_sd))
            units = f" ({abs(t.delta_units):.3g} {variable} units)" if is_number(t.delta_units) else ""
            out.append(f"After a patient's dropout: the conclusion changes if their unrecorded {variable} values "
                       f"are {abs(t.delta_sd):.2g} SD{units} {'higher' if t.delta_sd > 0 else 'lower'} than "
                       f"MAR implies{per}.")
        else:
            tried = max(t.grid_max_sd for t in tips)
            out.append(f"After a patient's dropout: no shift of their unrecorded {variable} values up to {tried:g} SD "
                       f"higher or lower than MAR implies{per} changes the conclusion.")
    return out


def key_messages(ev: ReportEvidence) -> list[str]:
    """The key messages (module docstring), about 150 words."""
    primary, facts = _primary_and_spread(ev)
    sensitivity, verdict = _sensitivity(ev)
    sensitivity = [*sensitivity, *_dropout_message(ev)]
    strength = evidence_strength(facts, verdict)
    return [*primary, *level_message(ev), *_not_represented(ev), *sensitivity,
            f"Strength of evidence: {strength} (rule in Methods)."]
