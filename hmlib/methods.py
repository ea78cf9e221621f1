"""One table of the analysis methods that ``estimates.csv`` compares.

Order, label, colour and interval name of each method live here and nowhere
else: the report's summary, the figures of every step and the tables read
them. A method key may carry a flag suffix (``joint_bayes:not_converged``):
the flag is part of the label wherever the method is named.

Examples
--------
>>> method_label("multilevel_mi")
'multilevel MI'
>>> method_label("joint_bayes:not_converged")
'joint Bayesian model (NOT CONVERGED: do not report)'
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Method", "METHODS", "NOT_CONVERGED", "NOT_ESTIMABLE", "FLAGS", "method_label", "method_colour", "method_order",
           "interval_name", "base_method", "OBSERVED_COLOUR", "DEFAULT_COLOUR"]

#: Suffix of a method whose fit failed its convergence gate.
NOT_CONVERGED = "not_converged"
#: Suffix of a method whose fit has diverging (non-estimable) terms, e.g. under separation.
NOT_ESTIMABLE = "not_estimable"
#: Colour of observed (not imputed) values in figures.
OBSERVED_COLOUR = "#404040"
#: Colour of a method not in the table.
DEFAULT_COLOUR = "#1f78b4"


@dataclass(frozen=True)
class Method:
    """One analysis method.

    Attributes
    ----------
    key : str
        As in ``estimates.csv``.
    label : str
        Plain-language name.
    colour : str
        Its colour in every figure.
    bayesian : bool
        Intervals are credible intervals (CrI), not confidence intervals.
    """

    key: str
    label: str
    colour: str
    bayesian: bool = False


#: In report order: from the simplest to the most complete handling.
METHODS: tuple[Method, ...] = (
    Method("complete_case", "complete case", "#7f7f7f"),
    Method("missing_indicator", "missing indicator", "#a6761d"),
    Method("locf", "last observation carried forward", "#b15928"),
    Method("flat_mi", "flat MI", "#d95f02"),
    Method("stratified_mi", "stratified MI", "#e6ab02"),
    Method("fixed_effects_mi", "fixed-effects MI", "#7570b3"),
    Method("multilevel_mi", "multilevel MI", "#1b9e77"),
    Method("joint_bayes", "joint Bayesian model", "#1b6ca8", bayesian=True),
)
_BY_KEY = {m.key: m for m in METHODS}
_FLAG_TEXT = {NOT_CONVERGED: "NOT CONVERGED: do not report",
              NOT_ESTIMABLE: "NOT ESTIMABLE (separation): do not report"}
#: Every flag a method key can carry.
FLAGS = tuple(_FLAG_TEXT)


def base_method(key: str) -> str:
    """The method without its flag (``joint_bayes:not_converged`` -> ``joint_bayes``)."""
    return str(key).split(":", 1)[0]


def method_label(key: str) -> str:
    """Plain-language name of a method key, with its flag spelled out."""
    base, _, flag = str(key).partition(":")
    label = _BY_KEY[base].label if base in _BY_KEY else base
    return f"{label} ({_FLAG_TEXT.get(flag, flag)})" if flag else label


def method_colour(key: str) -> str:
    """The method's colour (flags keep the method's colour)."""
    method = _BY_KEY.get(base_method(key))
    return method.colour if method else DEFAULT_COLOUR


def method_order(keys) -> list:
    """``keys`` without repeats, table methods first in table order, then the others as given."""
    keys = list(dict.fromkeys(keys))
    rank = {m.key: k for k, m in enumerate(METHODS)}
    known = sorted((k for k in keys if base_method(k) in rank), key=lambda k: (rank[base_method(k)], k))
    return known + [k for k in keys if base_method(k) not in rank]


def interval_name(key: str) -> str:
    """``95% CrI`` for Bayesian methods, ``95% CI`` for the others."""
    method = _BY_KEY.get(base_method(key))
    return "95% CrI" if method is not None and method.bayesian else "95% CI"
