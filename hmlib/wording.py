"""Small text helpers shared by the steps and the report.

Generated sentences name things the way a clinical reader would: a cluster
column called ``site`` makes clusters "sites" in the text; a count between 1
and ``min_cell - 1`` is never printed ("fewer than 11"), as in
:func:`hmlib.privacy.suppress_counts`.

Examples
--------
>>> cluster_noun("Clinic")
'clinic'
>>> cluster_noun("sch")
'cluster'
>>> count_text(3, 11), count_text(2111, 11)
('fewer than 11', '2,111')
>>> join_names(["Site 01", "Site 02", "Site 03"])
'Site 01, Site 02 and Site 03'
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["cluster_noun", "CLUSTER_WORDS", "level_noun", "row_noun", "plural", "is_number", "count_text", "percent", "join_names", "p_text",
           "not_estimable_note", "few_clusters_caveat", "FEW_CLUSTERS"]

#: With fewer clusters than this, a between-cluster SD is barely estimable.
FEW_CLUSTERS = 5

CLUSTER_WORDS = {"site", "hospital", "clinic", "centre", "center", "school", "practice", "ward",
                 "unit", "patient", "country", "region", "hub", "facility", "trust", "department", "subject",
                 "participant"}


def cluster_noun(column: str) -> str:
    """The word for one cluster in generated text: the column's name when it is
    a plain word such as ``site`` or ``Clinic`` (an identifier suffix such as
    ``_id`` or ``_code`` dropped: ``patient_id`` is a patient), else ``"cluster"``.

    Examples
    --------
    >>> cluster_noun("Clinic"), cluster_noun("patient_id"), cluster_noun("hospital_code"), cluster_noun("grp")
    ('clinic', 'patient', 'hospital', 'cluster')
    """
    word = str(column).strip().lower()
    for suffix in ("_id", "_code", "_no", "id"):
        if word.endswith(suffix) and word[:-len(suffix)].rstrip("_") in CLUSTER_WORDS:
            word = word[:-len(suffix)].rstrip("_")
            break
    return word if word in CLUSTER_WORDS else "cluster"


def level_noun(level: str) -> str:
    """The word for one unit of a level in generated text: the column's label when it is a plain word
    (``country``), else ``<label> unit``.

    Examples
    --------
    >>> level_noun("Country"), level_noun("reg_id")
    ('country', 'reg_id unit')
    """
    noun = cluster_noun(level)
    return noun if noun != "cluster" else f"{level} unit"


def row_noun(time: str | bool | None) -> str:
    """The word for one row of the extract in generated text.

    With a visit ``time`` in the params each row is a visit of a patient (the
    cluster), so counts of rows are counts of visits; without one each row is a
    patient. ``time`` is the params' time column, or whether a step's result
    was described over time.

    Examples
    --------
    >>> row_noun("week"), row_noun(None), row_noun(True)
    ('visit', 'patient', 'visit')
    """
    return "visit" if time else "patient"


def plural(noun: str) -> str:
    """The plural of a unit's name in generated text (``country`` -> ``countries``, ``site`` -> ``sites``).

    Examples
    --------
    >>> plural("country"), plural("hospital"), plural("reg_id unit")
    ('countries', 'hospitals', 'reg_id units')
    """
    if noun.endswith("y") and noun[-2:-1] not in set("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def is_number(value) -> bool:
    """A finite real number (not a bool, not NaN, not a suppression label)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
            and math.isfinite(value))


def count_text(value, min_cell: int) -> str:
    """A count as text; ``fewer than <min_cell>`` for a small cell; ``a suppressed number of`` when absent."""
    if not is_number(value):
        return "a suppressed number of"
    value = int(round(value))
    if 0 < value < min_cell:
        return f"fewer than {min_cell}"
    return f"{value:,}"


def percent(share) -> str:
    """A share as a percentage with one decimal, or ``suppressed``."""
    return f"{100 * share:.1f}%" if is_number(share) else "suppressed"


def join_names(items, limit: int = 6) -> str:
    """``a, b and c``; with more than ``limit`` items, the first ``limit`` and how many more."""
    items = [str(i) for i in items]
    if len(items) > limit:
        return ", ".join(items[:limit]) + f" and {len(items) - limit} more"
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def p_text(p) -> str:
    """``p < 0.001``, ``p = 0.042`` or ``p not available``."""
    if not is_number(p):
        return "p not available"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def not_estimable_note(model: str, terms) -> str:
    """The sentence for a model with separated (diverging) terms."""
    return (f"The {model} is not estimable: the data are separated in {join_names(terms)} (a category or "
            "combination of predictors that always or never has the outcome), so those estimates diverge. Its "
            "rows in estimates.csv are flagged ':not_estimable' and it is not reported as a result; merge the "
            "sparse categories or drop the predictor.")


def few_clusters_caveat(n_clusters: int, noun: str = "cluster") -> str:
    """The warning shown wherever a between-cluster SD is shown with fewer than :data:`FEW_CLUSTERS` clusters
    (empty otherwise)."""
    if not is_number(n_clusters) or n_clusters >= FEW_CLUSTERS:
        return ""
    return (f"Only {int(n_clusters)} {noun}s: every between-{noun} SD and ICC in this report is barely estimable "
            f"from so few (it can come out as 0 or far too large); read them with caution.")
