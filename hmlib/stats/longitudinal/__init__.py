"""Missingness over time in visits within patients: by visit, over calendar time, by pattern, by history (#16).

Every function takes a visit-level frame (one row per patient and visit, in
any order; never modified) and column names, and returns a frozen result
object whose tables hold aggregates only: no row of it describes one
patient. Counts of patients from 1 to ``min_cell - 1`` mark their row
``suppressed`` and ``to_frame()`` blanks such rows (the primary suppression
of :mod:`hmlib.privacy`; complementary suppression, for totals published
elsewhere, belongs to the step that publishes, with
:func:`hmlib.privacy.suppress_counts`, which stats may not import).

Modules
-------
``visits``        input checks and time order (:func:`prepare_visits`), the trailing run, small cells
``patterns``      intermittent versus monotone (dropout) sequences per patient, counted per variable
``over_time``     missing rates by visit and per calendar period, with the change-point screen
``change_point``  the binomial likelihood-ratio scan for one change point, permutation p-value
``dropout``       time to dropout: Kaplan-Meier share still observed by visit, overall and by site
``history``       MAR-on-history screens: dropout or missed visits on time, last value, outcome so far

Input rules
-----------
- Rows are sorted by patient and time here; the input's order never matters.
- ``time`` is numeric (weeks, days, visit number) or datetime (then days
  since the earliest date for time since the first visit; calendar periods by
  ``freq``). It must vary within at least one patient (else it is a
  patient-level column: DataError).
- Duplicate ``(patient, time)`` rows are a *warning* (:class:`hmlib.exceptions.DataWarning`),
  not an error: registries often hold two records of one visit, and
  refusing them would stop the whole report. They are collapsed into one
  visit (a variable counts as observed if any of the rows has it) and
  counted in each result's ``n_duplicate_rows``.
- Missed visits are seen only when they are rows (a full grid of scheduled
  visits, as ``cdystonia.csv``); with only the visits that took place
  (``pbcseq.csv``) the diagnostics describe item missingness at those visits.

Terms
-----
Trailing run
    A patient's missing values of a variable from some visit to the last
    visit. It starts the *dropout* when the variable was observed before.
Intermittent
    Missing at a visit followed later by an observed value.
Change point
    The split of the calendar periods into two with the largest binomial
    likelihood ratio (Worsley 1983), p-value by permutation of the missing
    values over visits (multivariate hypergeometric; visits treated as
    exchangeable, so a screen).
MAR on history
    Missingness depending on what was observed before (Little 1995); the
    screens fit ``fit_random_intercept`` logistic models and cannot tell MAR
    from MNAR (Molenberghs et al. 2008).

References
----------
Little RJA (1995). JASA 90:1112-1121. Molenberghs G et al. (2008). JRSS B
70:371-388. Worsley KJ (1983). Biometrika 70:455-464. Kaplan EL, Meier P
(1958). JASA 53:457-481. Wilson EB (1927). JASA 22:209-212.
"""

from __future__ import annotations

from hmlib.stats.longitudinal.change_point import ChangePointResult, binomial_change_point
from hmlib.stats.longitudinal.dropout import DropoutResult, kaplan_meier, time_to_dropout
from hmlib.stats.longitudinal.history import HistoryScreenResult, missingness_history_screen
from hmlib.stats.longitudinal.over_time import (CalendarRatesResult, VisitRatesResult, missingness_by_visit,
                                                missingness_over_calendar_time)
from hmlib.stats.longitudinal.patterns import (PATTERNS, PatternResult, classify_sequences,
                                               missingness_patterns_over_time)
from hmlib.stats.longitudinal.visits import Visits, prepare_visits, trailing_run

__all__ = [
    "Visits",
    "prepare_visits",
    "trailing_run",
    "PATTERNS",
    "classify_sequences",
    "PatternResult",
    "missingness_patterns_over_time",
    "VisitRatesResult",
    "missingness_by_visit",
    "CalendarRatesResult",
    "missingness_over_calendar_time",
    "ChangePointResult",
    "binomial_change_point",
    "DropoutResult",
    "kaplan_meier",
    "time_to_dropout",
    "HistoryScreenResult",
    "missingness_history_screen",
]
