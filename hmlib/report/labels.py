"""Human column labels for the report's tables: the one label table.

Steps name their table columns for code (``n_missing``, ``icc_latent``,
``sd_ci_lower``); the reader sees "Missing", "Latent ICC", "95% CI". The
names are translated here, once, when :func:`hmlib.report.display.table`
shows a table, so no step renames its columns and every table of the report
uses the same words.

Each code name maps to a :class:`ColumnLabel`: the text (with
``{cluster}``/``{clusters}`` filled by the report's cluster noun, e.g.
"site"/"sites", capitalised where the label starts with it) and the kind of
value, which decides how a cell is written (:mod:`hmlib.report.tables`):

- ``count``: whole numbers with thousands separators;
- ``share``: a proportion written as a percentage (the label says ``(%)``);
- ``number``: significant digits;
- ``pvalue``: two significant digits, ``<0.001`` below;
- ``flag``: yes / no;
- ``text``: as is (lists joined with commas).

Where the same code name means different things in different tables (in the
gap summary ``n_complete`` counts clusters, in the retention table patients)
the label depends on a marker column of the table (:data:`CONTEXT_LABELS`).
Columns named after an analysis method (``flat_mi``, ``flat_mi: bias (SD)``)
and the cells of a ``method`` column take the method's label from
:mod:`hmlib.methods`. Unknown names are shown with underscores as spaces.

Examples
--------
>>> column_label("icc_latent").text
'Latent ICC'
>>> column_label("n_clusters_any_missing", noun="site").text
'Sites with any missing'
>>> column_label("n_complete", columns=["n_all", "n_complete"]).text
'Complete cases'
>>> column_label("flat_mi: bias (SD)").text
'flat MI: bias (SD)'
"""

from __future__ import annotations

from dataclasses import dataclass

from hmlib.methods import METHODS, method_label

__all__ = ["ColumnLabel", "LABELS", "CONTEXT_LABELS", "INTERVAL_PAIRS", "DELTA_SCALE_LABELS",
           "DROPOUT_FORM_LABELS", "column_label", "method_cell", "KINDS"]

#: How a cell of a column is written.
KINDS = ("count", "share", "number", "pvalue", "flag", "text")


@dataclass(frozen=True)
class ColumnLabel:
    """A column as the reader sees it.

    Attributes
    ----------
    text : str
        The header (cluster noun filled in).
    kind : str or None
        One of :data:`KINDS`; None: decided from the values.
    """

    text: str
    kind: str | None = None


def _L(text: str, kind: str | None = None) -> ColumnLabel:
    return ColumnLabel(text, kind)


#: Code name -> label. ``{cluster}`` / ``{clusters}`` are filled with the report's cluster noun.
LABELS: dict[str, ColumnLabel] = {
    # identifiers
    "variable": _L("Variable", "text"), "cluster": _L("{Cluster}", "text"), "term": _L("Term", "text"),
    "method": _L("Method", "text"), "covariate": _L("Covariate", "text"), "component": _L("Component", "text"),
    "level": _L("Level", "text"), "summary": _L("Summary", "text"), "pattern": _L("Missing variables", "text"),
    "model": _L("Model", "text"), "parameter": _L("Parameter", "text"), "applies_to": _L("Applies to", "text"),
    "prior": _L("Prior", "text"), "scale": _L("Scale", "text"), "status": _L("Status", "text"),
    "reason": _L("Reason", "text"), "description": _L("Description", "text"), "notes": _L("Notes", "text"),
    "scenario": _L("Scenario", "text"), "family": _L("Family", "text"), "reference": _L("Against", "text"),
    "mode": _L("Shift applied", "text"), "direction": _L("Direction", "text"), "change": _L("What changed", "text"),
    "change_reason": _L("Why it changed", "text"), "joint_fit": _L("Joint model", "text"),
    # counts
    "n": _L("Patients", "count"), "n_patients": _L("Patients", "count"), "n_all": _L("Patients", "count"),
    "n_missing": _L("Missing", "count"), "n_observed": _L("Observed", "count"),
    "n_clusters": _L("{Clusters}", "count"), "n_clusters_any_missing": _L("{Clusters} with any missing", "count"),
    "n_clusters_all_missing": _L("{Clusters} never recording it", "count"),
    "n_complete": _L("Complete cases", "count"), "n_dropped": _L("Dropped", "count"),
    "n_missing_variables": _L("Variables missing", "count"), "n_patterns": _L("Patterns pooled", "count"),
    "count": _L("Patients", "count"), "n_clusters_excluded": _L("{Clusters} left out", "count"),
    "n_patients_excluded": _L("Patients left out", "count"), "n_used": _L("Patients used", "count"),
    "n_sporadic": _L("{Clusters} with sporadic gaps", "count"),
    "n_structural": _L("{Clusters} with structural gaps", "count"),
    "n_missing_structural": _L("Missing in structural gaps", "count"),
    # shares (written as percentages)
    "share_missing": _L("Missing (%)", "share"), "share": _L("Share (%)", "share"),
    "retained": _L("Kept (%)", "share"), "share_before": _L("Share of all patients (%)", "share"),
    "share_after": _L("Share of complete cases (%)", "share"),
    "share_of_missing_structural": _L("Of the missing, in structural gaps (%)", "share"),
    "coverage": _L("Coverage (%)", "share"),
    # estimates
    "estimate": _L("Estimate", "number"), "std_error": _L("SE", "number"), "truth": _L("Truth", "number"),
    "before_missing": _L("Before values went missing", "number"),
    "covers_truth": _L("Interval covers truth", "flag"),
    "cluster_sd": _L("{Cluster} SD (logit)", "number"), "icc_latent": _L("Latent ICC", "number"),
    "lrt_statistic": _L("LR statistic", "number"), "p_value": _L("p", "pvalue"),
    "scale_sd": _L("SD of the covariate", "number"), "log_odds_ratio": _L("Log odds ratio", "number"),
    "odds_ratio": _L("Odds ratio per SD", "number"),
    "all_patients": _L("All patients", "number"), "complete_cases": _L("Complete cases", "number"),
    "smd": _L("Standardised difference", "number"),
    "raw": _L("Own estimate", "number"), "raw_se": _L("Own SE", "number"),
    "pooled": _L("Partially pooled", "number"), "shrinkage": _L("Shrinkage (0 own, 1 pooled)", "number"),
    "seconds": _L("Time (s)", "number"), "max_rhat": _L("Largest R-hat", "number"), "rhat": _L("R-hat", "number"),
    "fmi": _L("Fraction of missing information", "number"), "riv": _L("Relative increase in variance", "number"),
    "lambda": _L("Variance share due to missing values", "number"), "df": _L("Degrees of freedom", "number"),
    "outcome_sd": _L("Outcome {cluster} SD", "number"), "outcome_icc": _L("Outcome ICC", "number"),
    "focus_sd": _L("Focus variable {cluster} SD", "number"), "focus_icc": _L("Focus variable ICC", "number"),
    "never_observed": _L("Never measured", "flag"), "measured": _L("Measured", "flag"),
    "raw_mean": _L("Observed mean", "number"), "raw_effect": _L("Own effect", "number"),
    "pooled_effect": _L("Pooled effect", "number"), "pooled_effect_sd": _L("Pooled effect SD", "number"),
    "pooled_mean": _L("Pooled mean", "number"), "pooled_mean_sd": _L("Pooled mean SD", "number"),
    "excluded_clusters": _L("{Clusters} left out (names)", "text"),
    "delta_sd": _L("Shift (SD)", "number"), "delta_units": _L("Shift (units)", "number"),
    "changed_conclusion": _L("Conclusion changed", "flag"), "found": _L("Found", "flag"),
    "bracket_sd": _L("Bracket (SD)", "text"), "grid_max_sd": _L("Largest shift tried (SD)", "number"),
    "structural_clusters": _L("{Clusters} with structural gaps (names)", "text"),
    # levels above the cluster (step 1's partition by level and structural gaps per higher unit)
    "n_units": _L("Units", "count"), "variance_share": _L("Share of latent variance (%)", "share"),
    "two_level_sd": _L("{Cluster} SD without the levels above", "number"),
    "n_units_structural": _L("Units with structural gaps", "count"),
    "structural_units": _L("Units with structural gaps (names)", "text"),
    "n_clusters_in_structural": _L("{Clusters} in them", "count"),
    "converged": _L("Converged", "flag"), "flagged": _L("Flagged", "text"),
    # interval ends shown alone (as a pair they are one column, :data:`INTERVAL_PAIRS`)
    "ci_lower": _L("95% CI lower"), "ci_upper": _L("95% CI upper"), "sd_ci_lower": _L("SD 95% CI lower"),
    "sd_ci_upper": _L("SD 95% CI upper"), "outcome_sd_lower": _L("Outcome SD 95% CI lower"),
    "outcome_sd_upper": _L("Outcome SD 95% CI upper"), "focus_icc_min": _L("Focus ICC, lowest imputation"),
    "focus_icc_max": _L("Focus ICC, highest imputation"),
}

#: ``(code name, marker column) -> label``: used when the table also has the marker column.
CONTEXT_LABELS: dict[tuple[str, str], ColumnLabel] = {
    # gap summary: counts of clusters, not patients
    ("n_complete", "n_sporadic"): _L("{Clusters} without gaps", "count"),
    ("n_missing", "n_sporadic"): _L("Missing values", "count"),
    # missingness patterns: the share of patients with the pattern
    ("share", "pattern"): _L("Patients (%)", "share"),
    # step 1's partition by level: the SD of a level's intercepts
    ("sd", "variance_share"): _L("SD (logit)", "number"),
}

#: Step 5's tipping-point table by delta scale (``SensitivityResult.delta_scale``), passed as ``labels=`` to
#: :func:`hmlib.report.display.table`: a categorical focus is shifted on the log-odds scale, so its ``delta_sd``,
#: ``bracket_sd`` and ``grid_max_sd`` are log odds ratios, not SDs, and ``odds_ratio`` is ``e^delta``.
DELTA_SCALE_LABELS: dict[str, dict[str, ColumnLabel]] = {
    "SD": {},
    "log odds": {"delta_sd": _L("Shift (log odds ratio)", "number"),
                 "bracket_sd": _L("Bracket (log odds ratio)", "text"),
                 "grid_max_sd": _L("Largest shift tried (log odds ratio)", "number"),
                 "odds_ratio": _L("Odds ratio e^shift", "number")},
}

#: Step 5's tipping-point table of the delta after dropout by its form (``SensitivitySettings.dropout_form``),
#: passed as ``labels=``: in the growing form a shift is per visit interval since the last recorded visit.
DROPOUT_FORM_LABELS: dict[str, dict[str, ColumnLabel]] = {
    "constant": {},
    "growing": {"delta_sd": _L("Shift (SD per interval)", "number"),
                "delta_units": _L("Shift (units per interval)", "number"),
                "bracket_sd": _L("Bracket (SD per interval)", "text"),
                "grid_max_sd": _L("Largest shift tried (SD per interval)", "number")},
}

#: Lower/upper column pairs shown as one "a to b" column: ``(lower, upper) -> header``.
INTERVAL_PAIRS: dict[tuple[str, str], str] = {
    ("ci_lower", "ci_upper"): "95% CI",
    ("sd_ci_lower", "sd_ci_upper"): "95% CI",
    ("outcome_sd_lower", "outcome_sd_upper"): "95% CI",
    ("focus_icc_min", "focus_icc_max"): "Range over imputations",
}

_METHOD_KEYS = {m.key for m in METHODS}


def _fill(text: str, noun: str) -> str:
    plural = noun if noun.endswith("s") else noun + "s"
    return (text.replace("{Cluster}", noun[:1].upper() + noun[1:]).replace("{cluster}", noun)
            .replace("{Clusters}", plural[:1].upper() + plural[1:]).replace("{clusters}", plural))


def method_cell(value) -> str:
    """A method key as the reader sees it (``multilevel_mi`` -> ``multilevel MI``); other text unchanged."""
    text = str(value)
    return method_label(text) if text.split(":", 1)[0] in _METHOD_KEYS else text


def column_label(name, *, noun: str = "cluster", columns=()) -> ColumnLabel:
    """The reader's label of column ``name``.

    Parameters
    ----------
    name : str
        The column's code name.
    noun : str
        The report's word for one cluster (``"site"``).
    columns : sequence of str
        All columns of the table (for :data:`CONTEXT_LABELS`).

    Returns
    -------
    ColumnLabel
    """
    key = str(name)
    for marker in columns:
        found = CONTEXT_LABELS.get((key, str(marker)))
        if found is not None:
            return ColumnLabel(_fill(found.text, noun), found.kind)
    if key in LABELS:
        found = LABELS[key]
        return ColumnLabel(_fill(found.text, noun), found.kind)
    head, sep, rest = key.partition(": ")
    if head.split(":", 1)[0] in _METHOD_KEYS:
        label = method_label(head)
        return ColumnLabel(f"{label}{sep}{rest}" if sep else label,
                           "share" if rest == "coverage" else None)
    return ColumnLabel(key.replace("_", " ") if "_" in key and " " not in key else key)
