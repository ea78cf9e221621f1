"""Step 2's CONSORT-style flow as published: the counts of :mod:`hmlib.stats.patient_flow`, small ones suppressed.

The flow is one additive line: patients in the extract = patients newly
excluded for each model variable (in the model's order) + patients in the
complete-case analysis, and the excluded total = the sum of the exclusions.
A count from 1 to ``min_cell - 1`` is suppressed. Complements are chosen by
:func:`hmlib.privacy.suppress_counts` among the exclusions against their
total first (so the complete-case count stays shown where it can); when the
excluded total must be hidden, the complete-case count is hidden with it
(both add up to the published extract size). The first variable's exclusions
are all its missing values, which step 1 publishes when there are at least
``min_cell``: such a count is shown and never hidden as a complement. No
hidden count can then be recovered by subtraction. Every hidden count
is shown as the range a reader can infer from the published ones (``1 to
U``, where ``U`` is the hidden sum less one per other hidden count), so a
small count and its complement look alike. Cluster counts are not patient
counts and are shown as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from hmlib.artifacts import Record
from hmlib.privacy import suppress_counts
from hmlib.stats.patient_flow import PatientFlow

__all__ = ["FlowExclusion", "FlowRecord", "published_flow"]


@dataclass(frozen=True)
class FlowExclusion(Record):
    """Patients newly excluded for a missing value of one model variable.

    ``n_excluded`` is a count, or the text ``"1 to U"`` when suppressed.
    """

    variable: str
    n_excluded: int | str
    suppressed: bool


@dataclass(frozen=True)
class FlowRecord(Record):
    """The published flow from the extract to the complete-case and the imputation analyses.

    Attributes
    ----------
    n_patients, n_clusters : int
        The extract; also what multilevel imputation and the joint model analyse.
    exclusions : tuple of FlowExclusion
        In the model's order (outcome first); a patient missing several
        variables is counted under the first.
    n_excluded, n_complete : int or str
        Patients excluded in all, and in the complete-case analysis (``"1 to U"`` when suppressed).
    n_clusters_complete, n_clusters_lost : int
        Clusters in the complete-case analysis, and clusters without a complete case.
    min_cell : int
    any_suppressed : bool
    """

    n_patients: int
    n_clusters: int
    exclusions: tuple[FlowExclusion, ...]
    n_excluded: int | str
    n_complete: int | str
    n_clusters_complete: int
    n_clusters_lost: int
    min_cell: int
    any_suppressed: bool

    def note(self) -> str:
        """The sentence that explains suppressed counts ("" when none is)."""
        if not self.any_suppressed:
            return ""
        return (f"Counts from 1 to {self.min_cell - 1} are suppressed, together with as many other counts as "
                "needed so that none can be recovered by subtraction; each hidden count is shown as the range a "
                "reader can infer (1 to the hidden total less one per other hidden count).")

    def sentence(self, noun: str = "cluster", rows: str = "patients") -> str:
        """The flow in one sentence, with its numbers (``rows``: ``"visits"`` when rows are visits)."""
        def n(value) -> str:  # a count with thousands separators; a suppressed one as its range
            return f"{value:,}" if isinstance(value, (int, np.integer)) else str(value)

        parts = [f"{n(e.n_excluded)} for a missing {e.variable}" for e in self.exclusions if e.n_excluded != 0]
        one = rows[:-1]
        lost = (f"; {self.n_clusters_lost} {noun}(s) lose every {one}" if self.n_clusters_lost else "")
        return (f"Of {self.n_patients:,} {rows} in {self.n_clusters} {noun}s in the extract, complete-case "
                f"analysis excludes {n(self.n_excluded)} ({', '.join(parts) or 'none'}; a {one} missing several "
                f"variables is counted once, under the first in the model's order) and analyses {n(self.n_complete)} "
                f"{rows} in {self.n_clusters_complete} {noun}s{lost}. Multilevel imputation and the joint model "
                f"analyse all {self.n_patients:,} {rows} in {self.n_clusters} {noun}s.")


def _ranges(values: np.ndarray, hidden: np.ndarray, relations: list, total: int) -> list:
    """Each cell as its count, or ``"1 to U"`` with ``U`` the tightest bound a published relation gives."""
    out = []
    for j, value in enumerate(values):
        if not hidden[j]:
            out.append(int(value))
            continue
        bound = total
        for members, rel_total in relations:
            if j not in members or rel_total is None:
                continue
            hidden_members = [m for m in members if hidden[m]]
            shown_sum = sum(values[m] for m in members if not hidden[m])
            bound = min(bound, int(rel_total - shown_sum - (len(hidden_members) - 1)))
        out.append(f"1 to {bound:,}")
    return out


def published_flow(flow: PatientFlow, min_cell: int) -> FlowRecord:
    """The flow with small counts suppressed (module docstring).

    Parameters
    ----------
    flow : hmlib.stats.patient_flow.PatientFlow
    min_cell : int

    Returns
    -------
    FlowRecord
    """
    names = [f"excluded_{i}" for i in range(len(flow.exclusions))]
    excluded = flow.exclusions["n_excluded"].astype(int).tolist()
    k = len(names)
    # The first variable's exclusions are all its missing values, which step 1 publishes unless they are few: a
    # count of at least min_cell there is public, so it is shown here and never used as a complement.
    first_public = k > 0 and not 0 < excluded[0] < min_cell
    free = names[1:] if first_public else names
    # The exclusions first, against their published total: complements are other exclusions where possible,
    # so the complete-case count stays shown. A hidden excluded total hides the complete-case count with it
    # (the two add up to the published extract size).
    values = np.array([*excluded, flow.n_complete, flow.n_excluded], dtype=float)
    hidden = np.zeros(values.size, dtype=bool)
    if free:
        rest = flow.n_excluded - (excluded[0] if first_public else 0)
        table = pd.DataFrame([[*excluded[k - len(free):], rest]], columns=[*free, "rest"])
        safe = suppress_counts(table, free, min_cell, total_column="rest", parts=[free], column_totals=False)
        hidden[k - len(free):k] = safe.mask[free].iloc[0].to_numpy(dtype=bool)
        hidden[k + 1] = bool(safe.mask["rest"].iloc[0]) and rest > 0
    hidden[k] = hidden[k + 1] or 0 < flow.n_complete < min_cell
    hidden[k + 1] |= hidden[k]
    candidates = values[k - len(free):k]
    if hidden[k] and not hidden[:k].any() and candidates.any():
        # else the exclusions would add up to the hidden total
        hidden[k - len(free) + int(np.argmax(candidates))] = True
    # Published relations among the cells: n_excluded + n_complete = N, sum(excluded) + n_complete = N, and
    # sum(excluded) = n_excluded (known only when n_excluded is shown).
    relations = [([k + 1, k], flow.n_patients), ([*range(k), k], flow.n_patients),
                 (list(range(k)), None if hidden[k + 1] else values[k + 1])]
    shown = _ranges(values, hidden, relations, flow.n_patients)
    exclusions = tuple(FlowExclusion(variable=str(v), n_excluded=shown[i], suppressed=bool(hidden[i]))
                       for i, v in enumerate(flow.exclusions["variable"]))
    return FlowRecord(n_patients=flow.n_patients, n_clusters=flow.n_clusters, exclusions=exclusions,
                      n_excluded=shown[k + 1], n_complete=shown[k], n_clusters_complete=flow.n_clusters_complete,
                      n_clusters_lost=flow.n_clusters_lost, min_cell=int(min_cell), any_suppressed=bool(hidden.any()))
