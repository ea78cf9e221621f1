"""Small text helpers shared by the steps and the report.

Generated sentences name things the way a clinical reader would: a cluster
column called ``site`` makes clusters "sites" in the text.

Examples
--------
>>> cluster_noun("Clinic")
'clinic'
>>> cluster_noun("sch")
'cluster'
"""

from __future__ import annotations

__all__ = ["cluster_noun", "CLUSTER_WORDS"]

CLUSTER_WORDS = {"site", "hospital", "clinic", "centre", "center", "school", "practice", "ward",
                 "unit", "patient", "country", "region", "hub", "facility", "trust", "department"}


def cluster_noun(column: str) -> str:
    """The word for one cluster in generated text: the column's name when it is
    a plain word such as ``site`` or ``Clinic``, else ``"cluster"``."""
    word = str(column).strip().lower()
    return word if word in CLUSTER_WORDS else "cluster"
