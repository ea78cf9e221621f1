"""When a step-5 scenario changes the conclusion: the clinically relevant difference, resolved per term.

The rule itself is plain statistics (:func:`hmlib.stats.sensitivity.conclusion_change`):
a scenario changes the conclusion about a coefficient when (a) its 95%
interval's decision about no effect flips and the estimate moved by at least
half the clinically relevant difference ``R``, (b) the estimate moved by at
least ``R``, or (c) it changed direction with both intervals excluding no
effect. This module turns the params' ``sensitivity.relevant_difference``,
stated on the scale the report shows effects on, into ``R`` on each
coefficient's own scale:

- binomial outcome: a ratio of odds ratios ``r > 1`` per reported unit
  (default 1.25: an odds ratio 25% larger or smaller), i.e. a difference of
  ``log(r)`` (0.223) in the log odds ratio per reported unit;
- gaussian outcome: a difference in outcome units per reported unit
  (default 0.1 SD of the recorded outcome).

The reported unit of a numeric predictor is the params' ``effect_units``
(e.g. per 100 kcal), else one SD of its recorded values; a level of a
categorical predictor is compared with the reference level (unit 1). So a
coefficient per raw unit has ``R = log(r) / per`` (binomial) or
``R = d / per`` (gaussian). A cluster SD (``sd(<cluster>)``, on the link
scale) is judged by (b) only, with the link-scale difference ``log(r)`` or
``d``; the intercept is not judged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from hmlib.artifacts import Record
from hmlib.exceptions import ParamsError
from hmlib.params import DEFAULT_ODDS_RATIO_RATIO, DEFAULT_OUTCOME_SD_SHARE, check_relevant_difference
from hmlib.stats.sensitivity import ChangeRule

__all__ = ["NEGLIGIBLE_SHARE", "ConclusionRule", "resolve_conclusion_rule"]

#: A significance flip counts only with a move of at least this share of the relevant difference.
NEGLIGIBLE_SHARE = 0.5


@dataclass(frozen=True)
class ConclusionRule(Record):
    """The rule step 5 judged every scenario by, with its thresholds (recorded in the artifact).

    Attributes
    ----------
    outcome_family : str
    scale : {"odds ratio", "difference"}
        The scale ``relevant_difference`` is stated on.
    relevant_difference : float
        As stated: a ratio of odds ratios (binomial) or a difference in outcome units (gaussian), per
        reported unit of the predictor.
    source : {"params", "default"}
    outcome_sd : float or None
        SD of the recorded outcome (gaussian; the default is a share of it).
    link_difference : float
        The relevant difference on the link scale per reported unit (``log(r)`` or ``d``).
    negligible_share : float
        A significance flip counts with a move of at least this share of the relevant difference.
    focus_term : str
    focus_unit_text : str
        The focus variable's reported unit (``per 1 SD (1.33) of lactate``, ``per 100 kcal of calories``).
    thresholds : dict
        ``{term: R}`` on each coefficient's own scale (per raw unit), for every judged term.
    text : str
        The rule in words, for the methods and the verdict.
    null_value : float
        The null of the coefficients (0 on the link scale).
    """

    outcome_family: str
    scale: str
    relevant_difference: float
    source: str
    outcome_sd: float | None
    link_difference: float
    negligible_share: float
    focus_term: str
    focus_unit_text: str
    thresholds: dict[str, float]
    text: str
    null_value: float = 0.0

    def change_rule(self, term: str) -> ChangeRule | None:
        """The bound rule for ``term`` (None: not judged, e.g. the intercept)."""
        threshold = self.thresholds.get(term)
        if threshold is None:
            return None
        return ChangeRule(relevant_difference=threshold, negligible_share=self.negligible_share,
                          null_value=self.null_value, use_null=not str(term).startswith("sd("))

    def focus_rule(self, terms):
        """The rule of the focus term(s) as :func:`hmlib.stats.sensitivity.judge_value` takes it.

        One term (a string, or a list of one): its :class:`ChangeRule`; several
        (a categorical focus, one term per non-reference level): ``{term: ChangeRule}``.
        """
        terms = [terms] if isinstance(terms, str) else list(terms)
        if len(terms) == 1:
            return self.change_rule(terms[0])
        return {term: self.change_rule(term) for term in terms}

    @property
    def focus_threshold(self) -> float:
        """``R`` of the focus coefficient, per raw unit."""
        return self.thresholds[self.focus_term]

    def threshold_text(self) -> str:
        """``an odds ratio 1.25 times larger or smaller per 1 SD (1.33) of lactate`` (the stated difference)."""
        if self.scale == "odds ratio":
            return f"an odds ratio {self.relevant_difference:.3g} times larger or smaller {self.focus_unit_text}"
        sd = (f" ({self.relevant_difference / self.outcome_sd:.2g} SD of the outcome)"
              if self.outcome_sd and self.outcome_sd > 0 else "")
        return f"a difference of {self.relevant_difference:.3g}{sd} {self.focus_unit_text}"


def _unit(registry, variable: str) -> tuple[float, str]:
    """The reported unit of a numeric predictor: ``(per, words)``."""
    p = registry.params
    unit = p.effect_units.get(variable)
    if unit is not None:
        return float(unit.per), f"{unit.text} of {variable}"
    values = registry.frame[variable].dropna() if variable in registry.frame else None
    sd = float(values.std(ddof=1)) if values is not None and len(values) > 1 else float("nan")
    if np.isfinite(sd) and sd > 0:
        return sd, f"per 1 SD ({sd:.3g}) of {variable}"
    return 1.0, f"per unit of {variable}"


def _per(registry, term: str) -> float | None:
    """Units of the predictor per reported unit of ``term``; None for a term that is not judged."""
    if term == "Intercept" or term.startswith("cor(") or (term.startswith("sd(") and "|" in term):
        return None  # random-slope SDs and correlations are reported, not judged (per unit of time, no scale)
    if term.startswith("sd("):
        return 1.0
    variable = term.split("[", 1)[0]
    if "[" in term or registry.kinds.get(variable) != "numeric":
        return 1.0
    return _unit(registry, variable)[0]


def resolve_conclusion_rule(registry, terms, focus_term, relevant_difference: float | None = None,
                            negligible_share: float = NEGLIGIBLE_SHARE, null_value: float = 0.0) -> ConclusionRule:
    """The rule with its thresholds for ``terms`` of the analysis model on ``registry``.

    Parameters
    ----------
    registry : hmlib.data.Registry
    terms : iterable of str
        Terms of the analysis model (``Intercept`` is not judged).
    focus_term : str or list of str
        The focus variable's term, or its terms (a categorical focus: one per
        non-reference level, each judged with unit 1, the level against the
        reference level); the first is :attr:`ConclusionRule.focus_term`.
    relevant_difference : float, optional
        On the reported scale (module docstring); default 1.25 (binomial) or
        0.1 SD of the recorded outcome (gaussian).
    negligible_share : float
    null_value : float

    Returns
    -------
    ConclusionRule
    """
    p = registry.params
    family = p.outcome_family
    stated = check_relevant_difference(relevant_difference, family)
    outcome_sd = None
    if family == "binomial":
        value = DEFAULT_ODDS_RATIO_RATIO if stated is None else stated
        link = math.log(value)
    else:
        outcome_sd = float(registry.frame[p.outcome].dropna().std(ddof=1))
        value = DEFAULT_OUTCOME_SD_SHARE * outcome_sd if stated is None else stated
        link = value
        if not (math.isfinite(link) and link > 0):
            raise ParamsError(f"the outcome {p.outcome} has no spread, so the default clinically relevant "
                              "difference (0.1 SD) is 0; set sensitivity.relevant_difference in the params.")
    focus_list = [focus_term] if isinstance(focus_term, str) else [str(t) for t in focus_term]
    focus_term = focus_list[0]
    thresholds = {}
    for term in dict.fromkeys([*terms, *focus_list]):
        per = _per(registry, str(term))
        if per is not None:
            thresholds[str(term)] = link / per
    focus_variable = focus_term.split("[", 1)[0]
    unit_text = (_unit(registry, focus_variable)[1] if "[" not in focus_term
                 else f"for each level of {focus_variable} against its reference level")
    rule = ConclusionRule(outcome_family=family, scale="odds ratio" if family == "binomial" else "difference",
                          relevant_difference=float(value), source="default" if stated is None else "params",
                          outcome_sd=outcome_sd, link_difference=float(link), negligible_share=float(negligible_share),
                          focus_term=focus_term, focus_unit_text=unit_text, thresholds=thresholds, text="",
                          null_value=float(null_value))
    return _with_text(rule)


def _with_text(rule: ConclusionRule) -> ConclusionRule:
    where = ("the default" if rule.source == "default" else "set by sensitivity.relevant_difference in the params")
    variable = rule.focus_term.split("[", 1)[0]
    levels = "[" in rule.focus_term
    per_unit = ("" if levels
                else f", i.e. {rule.focus_threshold:.3g} per unit of {variable} on the coefficient's scale")
    link = (f"{rule.link_difference:.3g} on the log-odds scale" if rule.scale == "odds ratio"
            else f"{rule.link_difference:.3g} in outcome units") + per_unit
    about = f"any level of {variable} (each against the reference level)" if levels else rule.focus_term
    text = (f"A scenario changes the conclusion about {about} when (a) its 95% interval's decision about "
            f"no effect flips (it now includes or now excludes no effect) and the estimate moved by at least "
            f"{'half' if rule.negligible_share == 0.5 else f'{rule.negligible_share:g} times'} the clinically "
            f"relevant difference; (b) the estimate moved by at least "
            f"the clinically relevant difference; or (c) the estimate changed direction with both intervals "
            f"excluding no effect. The clinically relevant difference is {rule.threshold_text()} ({where}; "
            f"{link}). The relative "
            "change of an estimate is not used: an estimate near zero can double without any clinical meaning. "
            "A cluster SD is judged by (b) on the link scale; the intercept is not judged.")
    return dataclasses.replace(rule, text=text)
