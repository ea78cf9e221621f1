"""Step 5's verdict and narrative, written only from the scenarios that ran.

A scenario family that did not run cannot support a verdict. This module
first states, family by family, what ran (:func:`family_coverage`: ran,
partly, failed, skipped, not requested, not applicable; for the MNAR delta
families also the range of delta checked without a gap from 0 on both
sides), then writes:

- :func:`verdict`: ``"not robust: ..."`` when a scenario that ran changes the
  conclusion (by the step's rule, :mod:`hmlib.steps.sensitivity_rule`: the
  interval's decision about no effect and a clinically relevant difference)
  or a tipping point lies within the plausible range of delta, naming what
  did not run; the missing-indicator model's move away from the primary is
  named as not counted (it is biased by design); ``"incomplete: ..."`` when nothing that ran
  changes it but a family that applies did not run, or the MNAR families
  did not cover the plausible range, naming what is missing and why;
  ``"robust: ..."`` only when every applicable family ran and the MNAR
  check covered the plausible range (both name the clinically relevant
  difference the scenarios were judged against);
- :func:`narrative`: the verdict, the range of the focus coefficient over the
  successful scenarios, one sentence per delta mode that ran (the tipping
  point, or the range of delta checked without one), what delta means for a
  categorical focus, the exclusions, and one sentence per failed scenario
  and per family that did not run;
- with repeated measures (:mod:`hmlib.steps.sensitivity_dropout`), the
  delta after dropout: a tipping point within ``plausible_delta_sd`` SDs of
  the shifted variable makes the verdict "not robust"; any other is stated
  in the verdict, not counted. The dropout families are listed only where
  they were planned (params ``time`` and values missing after dropout).

The functions take a :class:`hmlib.steps.sensitivity.SensitivityResult`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.stats.sensitivity import category_delta_text
from hmlib.steps.sensitivity_dropout import dropout_narrative, dropout_sentences
from hmlib.steps.sensitivity_scenarios import DELTA_FAMILIES, DELTA_MODES, DROPOUT_FAMILIES, FAMILIES
from hmlib.wording import count_text

__all__ = ["FAMILY_TEXT", "FamilyRecord", "family_coverage", "tipping_sentence", "verdict", "narrative",
           "delta_meaning"]

#: Plain-language name of each family, for the verdict.
FAMILY_TEXT = {
    "exclusion": "excluding clusters with many missing values",
    "stratified": "imputing separately by cluster type",
    "prior": "the prior on the cluster SDs of the joint model",
    "indicator": "a common vs cluster-varying effect of being unmeasured",
    "delta-global": "values missing not at random (same shift in every cluster)",
    "delta-cluster": "values missing not at random (larger shifts where more is missing)",
    "leave-out": "single well-documented clusters",
    "delta-dropout": "values missing not at random after dropout (shifted after each patient's last recorded visit)",
    "early-dropout": "leaving out patients who dropped out early",
    "prior-vs-primary": "the joint Bayesian model instead of multiple imputation",
    "indicator-vs-primary": "the missing-indicator model instead of multiple imputation",
}
#: Why a requested family has no scenario at all.
_NOT_APPLICABLE = {
    "exclusion": "no exclusion threshold was set",
    "stratified": "no cluster covariate gives a cluster type to impute by",
    "prior": "no prior was set",
    "indicator": "no indicator model was planned",
    "delta-global": "the delta grid is empty",
    "delta-cluster": "the delta grid is empty",
    "leave-out": "no cluster was chosen to leave out",
    "delta-dropout": "no visit time, or nothing missing after dropout",
    "early-dropout": "no visit time, or no patient dropped out before the median visit time",
}


@dataclass(frozen=True)
class FamilyRecord(Record):
    """What ran of one scenario family (``families_run`` of step 5's artifact).

    Attributes
    ----------
    family : str
    status : {"ran", "partly", "failed", "skipped", "not requested", "not applicable"}
        Every scenario ran; some failed; all failed; the run skipped the
        family (``reason`` says why); the settings did not ask for it; it has
        no scenario here.
    n_planned, n_ok : int
    reason : str
        Why it did not (fully) run ("" when it ran).
    checked_delta : float or None
        Delta families: the largest ``|delta|`` up to which every grid value
        on both sides of 0 ran (None for the other families).
    """

    family: str
    status: str
    n_planned: int
    n_ok: int
    reason: str
    checked_delta: float | None

    @property
    def missing(self) -> bool:
        """The family applies here but gave no result."""
        return self.status in ("failed", "skipped", "not requested")


def _checked_delta(scenarios: pd.DataFrame) -> float:
    """Largest |delta| up to which every grid value on both sides ran (0 when a side has none)."""
    reach = []
    for sign in (1.0, -1.0):
        side = scenarios.loc[np.sign(scenarios["delta_sd"]) == sign]
        side = side.iloc[np.argsort(np.abs(side["delta_sd"].to_numpy()), kind="stable")]
        checked = 0.0
        for row in side.itertuples():
            if row.status != "ok":
                break
            checked = abs(float(row.delta_sd))
        reach.append(checked)
    return float(min(reach))


def _reasons(rows: pd.DataFrame) -> str:
    reasons = list(dict.fromkeys(str(r).strip().rstrip(".") for r in rows.loc[rows["status"] == "failed", "reason"]
                                 if str(r).strip()))
    return "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} other reason(s)" if len(reasons) > 3 else "")


def family_coverage(result) -> list:
    """One :class:`FamilyRecord` per family of :data:`~hmlib.steps.sensitivity_scenarios.FAMILIES`, in that order."""
    table = result.scenarios
    out = []
    for fam in FAMILIES:
        rows = table.loc[table["family"] == fam]
        n_planned, n_ok = len(rows), int((rows["status"] == "ok").sum())
        if fam in DROPOUT_FAMILIES and n_planned == 0:
            continue        # repeated measures only (params time), and then only with dropout: not listed otherwise
        checked = _checked_delta(rows) if fam in DELTA_FAMILIES and n_ok else (0.0 if fam in DELTA_FAMILIES else None)
        if fam in result.skipped:
            status, reason = "skipped", str(result.skipped[fam]).rstrip(".")
        elif fam not in result.settings.families:
            status, reason = "not requested", "not in the settings' families"
        elif n_planned == 0:
            status, reason = "not applicable", _NOT_APPLICABLE[fam]
        elif n_ok == 0:
            status, reason = "failed", _reasons(rows)
        elif n_ok < n_planned:
            status, reason = "partly", _reasons(rows)
        else:
            status, reason = "ran", ""
        out.append(FamilyRecord(fam, status, n_planned, n_ok, reason, checked))
    return out


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _plausible(result) -> float:
    s = result.settings
    return s.plausible_log_odds if result.delta_scale == "log odds" else s.plausible_delta_sd


def _range_text(result, bound: float) -> str:
    """``+/-0.5 SD (+/-0.31 units)`` or ``odds ratios 0.5 to 2 (+/-0.69 on the log-odds scale)``."""
    if result.delta_scale == "log odds":
        return f"odds ratios {math.exp(-bound):.2g} to {math.exp(bound):.2g} (+/-{bound:.2f} on the log-odds scale)"
    return f"+/-{bound:g} SD (+/-{_fmt(bound * result.observed_sd)} units)"


def delta_meaning(result, delta: float | None = None) -> str | None:
    """What delta means for a categorical focus, in plain words (None for a numeric focus)."""
    if result.delta_scale != "log odds":
        return None
    delta = _plausible(result) if delta is None else delta
    return category_delta_text(result.focus, delta, reference=result.focus_reference or "the reference level",
                               ordinal=result.focus_ordinal)


def tipping_sentence(result, mode: str) -> tuple[str, bool]:
    """The tipping point of one delta mode in words, and whether it lies within the plausible range.

    Empty when the mode's family gave no result (what did not run is said elsewhere).
    """
    family = next(f for f, m in DELTA_MODES.items() if m == mode)
    coverage = {c.family: c for c in family_coverage(result)}[family]
    sides = result.tipping.get(mode, {})
    if not sides or coverage.n_ok == 0:
        return "", False
    label = ("the same shift in every cluster" if mode == "global"
             else "shifts proportional to clusters' missingness")
    found = [(d, i) for d, i in sides.items() if i.get("found")]
    if not found:
        text = f"MNAR ({label}): no delta within {_range_text(result, coverage.checked_delta)} changes the conclusion"
        grid_max = max((abs(x) for x in result.delta_grid), default=0.0)
        if coverage.checked_delta < grid_max:
            text += f"; larger shifts, up to {grid_max:g}, did not all run ({coverage.reason})"
        return text + ".", False
    direction, info = min(found, key=lambda item: abs(item[1]["delta_sd"]))
    fragile = abs(info["delta_sd"]) <= _plausible(result)
    term = info.get("term") or result.focus_terms[0]
    if result.delta_scale == "log odds":
        where = delta_meaning(result, info["delta_sd"])
    else:
        where = (f"unrecorded {result.focus} values are {'higher' if info['delta_sd'] > 0 else 'lower'} than "
                 f"imputed by {_fmt(abs(info['delta_units']))} units ({abs(info['delta_sd']):.2f} SD of the observed "
                 "values)")
    text = (f"MNAR ({label}): the conclusion changes ({info['change']}) when {where}; there the {term} "
            f"coefficient is {_fmt(info['estimate'])} (95% CI {_fmt(info['ci_lower'])} to {_fmt(info['ci_upper'])}).")
    return text, fragile


def _not_counted(result) -> str:
    """The missing-indicator model's disagreement with the primary, named but not counted (biased by design)."""
    changed = result.changed()
    rows = changed.loc[(changed["family"] == "indicator") & (changed["reference"] == "primary")]
    several = len(result.focus_terms) > 1
    return "".join(f" Not counted: the missing-indicator model (biased by design) gives "
                   f"{f'{r.term} ' if several else ''}{_fmt(r.estimate)} ({_fmt(r.ci_lower)} to {_fmt(r.ci_upper)}; "
                   f"{r.change_reason})." for r in rows.itertuples())


def _changes(result) -> list:
    """Per family (or change of method), the scenarios that changed the conclusion, in words.

    The missing-indicator model compared with the primary is left out: it is biased by design, so its move away
    from the primary is named (:func:`_not_counted`), never what the conclusion depends on.
    """
    changed = result.changed()
    changed = changed.loc[~((changed["family"] == "indicator") & (changed["reference"] == "primary"))]
    key = np.where(changed["family"].isin(["prior", "indicator"]) & (changed["reference"] == "primary"),
                   changed["family"] + "-vs-primary", changed["family"])
    parts = []
    for fam, rows in changed.groupby(key, sort=False):
        items = [f"{r.scenario}: {r.term} {_fmt(r.estimate)} ({_fmt(r.ci_lower)} to {_fmt(r.ci_upper)}; "
                 f"{r.change_reason}{'' if r.reference == 'primary' else ' vs ' + r.reference})"
                 for r in rows.itertuples()] if len(result.focus_terms) > 1 else \
                [f"{r.scenario}: {_fmt(r.estimate)} ({_fmt(r.ci_lower)} to {_fmt(r.ci_upper)}; "
                 f"{r.change_reason}{'' if r.reference == 'primary' else ' vs ' + r.reference})"
                 for r in rows.itertuples()]
        if fam == "leave-out":
            names = ", ".join(dict.fromkeys(str(r.scenario).split(":", 1)[1].replace("=", " ")
                                            for r in rows.itertuples()))
            parts.append(f"single well-documented clusters ({names}): " + "; ".join(items))
        else:
            parts.append(f"{FAMILY_TEXT[fam]}: " + "; ".join(items))
    return parts


def _family_range(result, family: str, bound: float) -> str:
    """:func:`_range_text`, or for the delta after dropout in SDs of the shifted variable(s)."""
    if family != "delta-dropout":
        return _range_text(result, bound)
    return " and ".join(f"+/-{bound:g} SD of {v} (+/-{_fmt(bound * info['scale'])} units)"
                        for v, info in getattr(result, "dropout", {}).items()) or f"+/-{bound:g} SD"


def _missing_text(missing: list) -> str:
    return "; ".join(f"{FAMILY_TEXT[c.family]} ({c.status}: {c.reason})" for c in missing)


def verdict(result) -> str:
    """``"robust: ..."``, ``"not robust: ..."`` or ``"incomplete: ..."`` from what ran (module docstring)."""
    prim = result.primary_focus()
    head = (f"Primary ({result.primary_method}): {result.focus_terms[0]} {_fmt(prim.estimate)} "
            f"(95% CI {_fmt(prim.ci_lower)} to {_fmt(prim.ci_upper)})"
            + (f", and {len(result.focus_terms) - 1} more level(s) of {result.focus}" if len(result.focus_terms) > 1
               else "") + ".")
    coverage = family_coverage(result)
    missing = [c for c in coverage if c.missing]
    plausible = _plausible(result)
    short_mnar = [c for c in coverage if c.family in DELTA_FAMILIES and not c.missing and c.status != "not applicable"
                  and (c.checked_delta or 0.0) < (result.settings.plausible_delta_sd if c.family == "delta-dropout"
                                                   else plausible)]
    parts = _changes(result)
    fragile_mnar = [text for text, fragile in (tipping_sentence(result, m) for m in ("global", "cluster")) if fragile]
    failed = result.scenarios.loc[result.scenarios["status"] == "failed", "scenario"].tolist()
    tail = (f" {len(failed)} scenario(s) failed and are not counted: {', '.join(failed)}." if failed else "") \
        + _not_counted(result)
    not_run = f" Not assessed: {_missing_text(missing)}." if missing else ""
    if fragile_mnar:
        parts.append(f"the MAR assumption (tipping point within {_range_text(result, plausible)}): "
                     + " ".join(fragile_mnar).rstrip("."))
    fragile_dropout = [text for text, fragile in dropout_sentences(result) if fragile]
    # the dropout tipping points outside the plausible range (or none found) are stated, not counted
    after_text = "".join(f" {text}" for text, fragile in dropout_sentences(result) if not fragile)
    if fragile_dropout:
        parts.append(f"the MAR assumption after dropout (tipping point within "
                     f"{_family_range(result, 'delta-dropout', result.settings.plausible_delta_sd)}): "
                     + " ".join(fragile_dropout).rstrip("."))
    if parts:
        return (f"not robust: {head} The conclusion depends on " + "; and on ".join(parts)
                + f".{after_text}{not_run}{tail}")
    ok = result.scenarios.loc[result.scenarios["status"] == "ok"]
    ran = [c.family for c in coverage if c.n_ok]
    summary = (f"No scenario that ran changes the conclusion ({len(ok)} scenarios in "
               f"{len(ran)} famil{'y' if len(ran) == 1 else 'ies'}: {', '.join(ran) or 'none'}; judged against a "
               f"clinically relevant difference of {result.rule.threshold_text()}, rule in Methods)")
    if missing or short_mnar:
        mnar_missing = [c for c in missing if c.family in DELTA_FAMILIES]
        what = []
        if mnar_missing:
            what.append("no MNAR scenario ran for " + _missing_text(mnar_missing)
                        + (f", so robustness to {result.focus} values missing not at random is not assessed (the "
                           "delta after dropout is stated next)" if after_text else
                           ", so robustness to values missing not at random is not assessed"))
        for c in short_mnar:
            bound = result.settings.plausible_delta_sd if c.family == "delta-dropout" else plausible
            what.append(f"{FAMILY_TEXT[c.family]} was checked only within "
                        f"{_family_range(result, c.family, c.checked_delta)}, short of the plausible "
                        f"{_family_range(result, c.family, bound)} ({c.reason or 'grid too small'})")
        others = [c for c in missing if c.family not in DELTA_FAMILIES]
        if others:
            what.append(f"{_missing_text(others)} did not run")
        return f"incomplete: {head} {summary}; but " + "; ".join(what) + f".{after_text}{tail}"
    after = (f", nor a shift after dropout within "
             f"{_family_range(result, 'delta-dropout', result.settings.plausible_delta_sd)}"
             if any(c.family == "delta-dropout" and c.n_ok for c in coverage) else "")
    return (f"robust: {head} {summary}, and no departure from MAR within {_range_text(result, plausible)}{after} "
            f"does.{after_text}{tail}")


def narrative(result) -> list[str]:
    """Generated sentences, each stating a finding with its numbers, only from scenarios that ran."""
    prim = result.primary_focus()
    g = result.grid.loc[(result.grid["term"] == result.focus_terms[0]) & (result.grid["status"] == "ok")]
    out = [verdict(result)]
    if len(g):
        lo, hi = g.loc[g["estimate"].idxmin()], g.loc[g["estimate"].idxmax()]
        out.append(f"Across {len(g)} successful scenarios the {result.focus_terms[0]} coefficient ranges from "
                   f"{_fmt(lo.estimate)} ({lo.scenario}) to {_fmt(hi.estimate)} ({hi.scenario}); "
                   f"the primary estimate is {_fmt(prim.estimate)}.")
    tipping = [text for text, _ in (tipping_sentence(result, m) for m in ("global", "cluster")) if text]
    out.extend(tipping)
    meaning = delta_meaning(result)
    if tipping and meaning:
        out.append(f"What delta means here, for example: {meaning}; delta = 0 is missing at random, and a "
                   "negative delta assumes lower odds instead.")
    out.extend(dropout_narrative(result))
    ex = result.scenarios.loc[(result.scenarios["family"] == "exclusion") & (result.scenarios["status"] == "ok")]
    patients = getattr(result, "clusters_are_patients", False)   # then a number of clusters is one of patients
    for r in ex.itertuples():
        n = int(r.n_clusters_excluded)
        out.append(f"{r.scenario}: {count_text(n, result.min_cell) if patients else n} cluster(s) excluded.")
    for r in result.scenarios.loc[result.scenarios["status"] == "failed"].itertuples():
        out.append(f"Scenario {r.scenario} failed: {str(r.reason).strip().rstrip('.')}.")
    for c in family_coverage(result):
        if c.missing or c.status == "not applicable":
            out.append(f"Not run: {FAMILY_TEXT[c.family]} ({c.status}: {c.reason}).")
    return out + list(result.notes)
