"""The report's methods section: the analysis model, each step's paragraph(s), the software.

Each step writes its own paragraph(s) from its typed artifact
(``Step.methods_text``); a step whose artifact is absent gets its
``Step.absent_methods_text``.
"""

from __future__ import annotations

from hmlib.report.evidence import ReportEvidence
from hmlib.report.key_messages import PRIMARY_RULE, STRENGTH_RULE
from hmlib.steps import STEPS

__all__ = ["methods_paragraphs"]


def _analysis_model(ev: ReportEvidence) -> str:
    p = ev.params
    fam = {"binomial": "logistic", "gaussian": "linear"}.get(p.outcome_family, p.outcome_family)
    slopes = tuple(getattr(p, "random_slopes", ()))
    if slopes:
        named = " and ".join(slopes)
        higher = f", and a random intercept per {' and per '.join(p.higher_levels)} above it" if p.higher_levels \
            else ""
        return (f"Analysis model: a {fam} mixed model of {p.outcome} on {', '.join(p.predictors)}, with a random "
                f"intercept and a random slope on {named} per {ev.noun} ({p.cluster}), correlated (unstructured "
                f"covariance: ({' + '.join(('1', *slopes))} | {p.cluster})){higher}. The report gives the SD of "
                f"the intercepts (at {named} = 0), the SD of each slope (per unit of {named}) and their correlation. "
                "Fitted by maximum likelihood (hmlib.stats.mixed.fit_mixed: Laplace for logistic, profiled "
                "likelihood for linear models; slope columns standardised inside and reported on the data's scale).")
    if p.higher_levels:
        higher = " and ".join(p.higher_levels)
        return (f"Analysis model: a {fam} mixed model of {p.outcome} on {', '.join(p.predictors)}, with nested random "
                f"intercepts per {ev.noun} ({p.cluster}) and per {higher}: each {ev.noun} varies around the unit it "
                "belongs to, each unit around the one above it, the top one around the overall mean, and the report "
                "gives one SD per level. Fitted by maximum likelihood (hmlib.stats.mixed: Laplace for logistic, "
                "profiled likelihood for linear models; adaptive quadrature does not extend to nested random "
                "effects).")
    return (f"Analysis model: a random-intercept {fam} model of {p.outcome} on {', '.join(p.predictors)}, with a "
            f"random intercept per {ev.noun} ({p.cluster}), fitted by maximum likelihood (hmlib.stats.mixed: Laplace "
            "or adaptive Gauss-Hermite for logistic, profiled likelihood for linear models).")


def _software(ev: ReportEvidence) -> str:
    v, p = ev.versions, ev.params
    soft = ", ".join(f"{k} {v[k]}" for k in ("numpy", "scipy", "pandas", "statsmodels", "pymc", "nutpie") if k in v)
    return (f"Software: hmlib {ev.hmlib_version} (Python {ev.python_version}; {soft}). Seed {p.seed} for every "
            f"random step{'; fast mode (small settings, not for reporting)' if p.fast else ''}.")


def _key_message_rules() -> str:
    return (f"Key messages: the primary analysis is {PRIMARY_RULE}. Effects of a numeric focus variable are shown "
            "per the unit named in the params (effect_units), by default per SD of its recorded values; for a "
            "binary outcome as odds ratios. The one-word strength of evidence follows this rule: "
            f"{STRENGTH_RULE}.")


def methods_paragraphs(ev: ReportEvidence) -> list:
    """The methods section's paragraphs, in step order."""
    paras = [_analysis_model(ev), _key_message_rules()]
    for step in STEPS:
        record = ev[step.key]
        paras += step.methods_text(record, ev) if record is not None else [step.absent_methods_text]
    return paras + [_software(ev)]
