"""The params YAML: what the user tells hmlib about their registry.

A params file names the data file, the cluster column, the outcome and the
predictors. It is read and checked here, before any expensive work: unknown
keys are errors (a typo such as ``predictor:`` must not pass silently), paths
are resolved against the YAML's own folder, and every message says what is
wrong and how to fix it.

Example
-------
.. code-block:: yaml

    name: demo
    data: ../data/demo/demo_registry.csv
    cluster: site
    outcome: mortality_30d
    outcome_family: binomial
    predictors: [age, sex, severity, lactate, sbp]
    cluster_covariates: [site_type]
    focus: lactate
    seed: 20261127
    privacy: {min_cell: 11, pseudonymize_clusters: false}
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hmlib.exceptions import ParamsError

__all__ = ["Params", "PrivacySettings", "DiagnoseSettings", "JointModelSettings", "EffectUnit", "SensitivityParams",
           "load_params", "params_from_mapping", "KEYS", "DEFAULT_ODDS_RATIO_RATIO", "DEFAULT_OUTCOME_SD_SHARE",
           "check_relevant_difference"]

#: Every key a params file may have, with a one-line description (used in
#: error messages and in the README).
KEYS: dict[str, str] = {
    "name": "report name; output goes to reports/<name>/ (letters, digits, - and _)",
    "data": "CSV or Parquet file; a relative path resolves against the YAML's folder",
    "truth": "optional JSON of known true values (simulated data), shown next to estimates",
    "cluster": "the column that identifies the cluster (site, school, patient)",
    "outcome": "the outcome column",
    "outcome_family": "binomial (0/1 outcome) or gaussian (continuous outcome)",
    "predictors": "list of patient-level predictor columns (numeric or categorical)",
    "categorical": "optional list of predictors or cluster covariates to treat as categorical even if numbers",
    "ordinal": "optional categorical predictors whose levels are ordered: [gcs_band], or {gcs_band: [mild, severe]}",
    "higher_levels": "optional list of columns for levels above the cluster (e.g. [country])",
    "random_slopes": "optional list of numeric predictors (usually the visit time) whose effect varies between "
                     "clusters: (1 + week | patient) in the analysis and imputation models",
    "time": "optional visit time column (numbers such as weeks, or dates) when the clusters are patients seen "
            "at several visits: step 1 then describes missingness over time",
    "cluster_covariates": "optional list of cluster-level columns (constant within a cluster)",
    "focus": "the incomplete predictor the narrative centres on (default: most missing)",
    "seed": "integer seed for every random step (default 2026)",
    "fast": "true for small settings (tests, quick looks); default false",
    "privacy": "{min_cell: 11, pseudonymize_clusters: false} (pseudonymize_clusters defaults to true with "
               "time: the clusters are then patients)",
    "diagnose": "{structural_share: 0.9} share missing above which a cluster's gap is structural",
    "encoding": "text encoding of a CSV file (default utf-8; e.g. latin-1 for older SAS exports)",
    "missing_codes": "optional list of further values that mean 'missing' (e.g. ['-99', 'not done'])",
    "effect_units": "optional {variable: {per: 100, unit: kcal}}: report effects per this many units "
                    "(default: per SD of the recorded values)",
    "joint_model": "{time_budget_minutes: 20} minutes the joint model may take in all when it extends its sampling "
                   "to pass the convergence gate (0: never extend; default 20, fast runs 0); "
                   "{missingness_submodel: auto} true or false: whether the joint model has its shared-parameter "
                   "missingness submodel (default auto: on, except for visits in patients, with time or "
                   "random_slopes, where a visit's value missing because of that visit's outcome biased the "
                   "coefficients)",
    "sensitivity": "{relevant_difference: 1.25} clinically relevant difference per reported unit of the focus: "
                   "a ratio of odds ratios > 1 (binary outcome; default 1.25) or a difference in outcome units "
                   "(continuous outcome; default 0.1 SD of the outcome); {dropout_delta_form: growing} with "
                   "'time': the MNAR delta after dropout grows with the time since the last recorded visit "
                   "(default constant: the same at every later visit)",
}
_PRIVACY_KEYS = {"min_cell", "pseudonymize_clusters"}
_DIAGNOSE_KEYS = {"structural_share"}
_JOINT_KEYS = {"time_budget_minutes", "missingness_submodel"}
_SENSITIVITY_KEYS = {"relevant_difference", "dropout_delta_form"}
#: Forms of the MNAR delta after dropout (:data:`hmlib.stats.dropout_delta.SHIFT_FORMS`).
DROPOUT_DELTA_FORMS = ("constant", "growing")
#: Default clinically relevant difference for a binary outcome: an odds ratio 1.25 times larger (or smaller)
#: per reported unit of the predictor.
DEFAULT_ODDS_RATIO_RATIO = 1.25
#: Default clinically relevant difference for a continuous outcome: 0.1 SD of the recorded outcome per
#: reported unit of the predictor.
DEFAULT_OUTCOME_SD_SHARE = 0.1
_FAMILIES = ("binomial", "gaussian")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class PrivacySettings:
    """Disclosure control for everything the report shows.

    Attributes
    ----------
    min_cell : int
        Counts from 1 to ``min_cell - 1`` are suppressed (with complementary
        suppression). Default 11, the threshold used by many registries.
    pseudonymize_clusters : bool
        Replace cluster labels by stable pseudonyms in every output. Default
        False, except with ``time`` in the params: the clusters are then
        patients, whose study IDs the report should not print (set it to
        false explicitly to keep them).
    """

    min_cell: int = 11
    pseudonymize_clusters: bool = False


@dataclass(frozen=True)
class DiagnoseSettings:
    """Settings of step 1 (diagnose).

    Attributes
    ----------
    structural_share : float
        A cluster whose share of missing values of a variable is above this
        (or equal to 1) has a *structural* gap rather than a sporadic one.
    """

    structural_share: float = 0.9


@dataclass(frozen=True)
class EffectUnit:
    """The unit a numeric predictor's effect is reported per: ``per`` units of ``unit`` (e.g. 100 kcal)."""

    per: float
    unit: str = ""

    @property
    def text(self) -> str:
        """``per 100 kcal``, ``per 1 mmol/L``, ``per 2.5``."""
        return f"per {self.per:g}" + (f" {self.unit}" if self.unit else "")


@dataclass(frozen=True)
class JointModelSettings:
    """Settings of step 4 (the joint model).

    Attributes
    ----------
    time_budget_minutes : float or None
        Minutes the joint model may take in all when its sampling is
        extended automatically to pass the convergence gate (0: never
        extend); None: the run size's default
        (:attr:`hmlib.settings.RunSizes.joint_time_budget_minutes`).
    missingness_submodel : bool or None
        Whether the joint model has its shared-parameter missingness
        submodel; None (``auto``): on unless the params give ``time`` or
        ``random_slopes`` (:func:`hmlib.steps.joint_model.missingness_submodel_on`).
    """

    time_budget_minutes: float | None = None
    missingness_submodel: bool | None = None


@dataclass(frozen=True)
class SensitivityParams:
    """Settings of step 5 (sensitivity analysis).

    Attributes
    ----------
    relevant_difference : float or None
        The clinically relevant difference per reported unit of the focus
        variable (``effect_units``, else 1 SD): a ratio of odds ratios > 1 for
        a binary outcome, a difference in outcome units for a continuous one;
        None: the default (1.25, or 0.1 SD of the outcome).
    dropout_delta_form : {"constant", "growing"}
        With ``time``: the MNAR delta after dropout is the same at every
        visit after a patient's last recorded one (``"constant"``, default)
        or grows with the time since it (``"growing"``: ``delta`` SDs per
        visit interval, :mod:`hmlib.steps.sensitivity_dropout`).
    """

    relevant_difference: float | None = None
    dropout_delta_form: str = "constant"


@dataclass(frozen=True)
class Params:
    """A validated params file. Build it with :func:`load_params`.

    Attributes
    ----------
    name : str
        Report name; output folder ``reports/<name>/``.
    source : pathlib.Path
        The YAML file these params were read from (absolute).
    data : pathlib.Path
        The data file (absolute).
    truth : pathlib.Path or None
        Optional JSON file of true values (simulated data).
    cluster, outcome : str
        Column names.
    outcome_family : {"binomial", "gaussian"}
    predictors : tuple of str
        Patient-level predictors, in the user's order.
    categorical : tuple of str
        Predictors or cluster covariates forced to be categorical.
    ordinal : dict
        ``{predictor: levels lowest first, or None}``: categorical predictors
        whose levels are ordered (the joint model gives them a cumulative
        logit submodel). None: numbers-as-text in numeric order, otherwise
        the levels' sorted order. Checked against the data by
        :func:`hmlib.data.load_registry`.
    higher_levels, cluster_covariates : tuple of str
    time : str or None
        The visit time column (numbers or dates) when the clusters are
        patients seen at several visits; step 1 describes missingness over
        it (:mod:`hmlib.steps.diagnose_time`). It may also be a predictor.
        Checked against the data by :func:`hmlib.data.load_registry`.
    random_slopes : tuple of str
        Numeric predictors with a random slope per cluster, correlated with
        its intercept: ``(1 + week | patient)`` in the analysis model of
        every step and in the multilevel imputation (issue #16). Checked
        against the data (complete, varying within clusters) by
        :func:`hmlib.data.load_registry`.
    focus : str or None
        The incomplete predictor the narrative centres on; ``None`` means
        "the predictor with most missing values", resolved once the data are
        read (:func:`hmlib.data.load_registry`).
    seed : int
    fast : bool
    privacy : PrivacySettings
    diagnose : DiagnoseSettings
    joint_model : JointModelSettings
    sensitivity : SensitivityParams
    encoding : str
        Encoding of a CSV data file.
    missing_codes : tuple of str
        Further values read as missing (beyond :data:`hmlib.reading.MISSING_CODES`).
    effect_units : dict
        ``{variable: EffectUnit}``: the unit an effect of a numeric predictor is reported per (the key
        messages, the summary); variables not listed are reported per SD of their recorded values.
    raw : dict
        The params as written in the file (for the reproducibility appendix).
    """

    name: str
    source: Path
    data: Path
    cluster: str
    outcome: str
    outcome_family: str
    predictors: tuple[str, ...]
    truth: Path | None = None
    categorical: tuple[str, ...] = ()
    ordinal: dict = field(default_factory=dict)
    higher_levels: tuple[str, ...] = ()
    cluster_covariates: tuple[str, ...] = ()
    focus: str | None = None
    time: str | None = None
    random_slopes: tuple[str, ...] = ()
    seed: int = 2026
    fast: bool = False
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    diagnose: DiagnoseSettings = field(default_factory=DiagnoseSettings)
    joint_model: JointModelSettings = field(default_factory=JointModelSettings)
    sensitivity: SensitivityParams = field(default_factory=SensitivityParams)
    encoding: str = "utf-8"
    missing_codes: tuple[str, ...] = ()
    effect_units: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def model_columns(self) -> tuple[str, ...]:
        """Every column the analysis uses, cluster first, without repeats."""
        cols = [self.cluster, *self.higher_levels, self.outcome, *self.predictors,
                *self.cluster_covariates]
        return tuple(dict.fromkeys(cols))

    @property
    def read_columns(self) -> tuple[str, ...]:
        """The columns read from the data file: :attr:`model_columns`, then ``time`` when it is not among them."""
        return tuple(dict.fromkeys([*self.model_columns, *([self.time] if self.time else [])]))

    def as_run(self) -> dict:
        """The params as run: the file's values with ``--fast``, the seed and the resolved focus applied."""
        values = dict(self.raw)
        values.update(fast=bool(self.fast), focus=self.focus, seed=self.seed)
        return values

    @property
    def fingerprint(self) -> str:
        """SHA-256 of :meth:`as_run`: results made with other params carry another fingerprint."""
        text = json.dumps(self.as_run(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def with_overrides(self, **changes: Any) -> "Params":
        """Return a copy with some fields changed (e.g. ``fast=True``)."""
        return replace(self, **changes)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML lets the last one win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ParamsError(
                    f"the key '{key}' is given twice (lines {seen[key]} and {key_node.start_mark.line + 1}); "
                    "YAML would silently keep the last one. Keep one of them."
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _string_list(value: Any, key: str, source: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        if "," in value:
            names = ", ".join(v.strip() for v in value.split(",") if v.strip())
            raise ParamsError(
                f"{source}: '{key}' is one text value {value!r}; write a list of column names: "
                f"{key}: [{names}]."
            )
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ParamsError(
            f"{source}: '{key}' must be a list of column names, e.g. {key}: [age, sex]; "
            f"got {value!r}."
        )
    duplicated = sorted({v for v in value if value.count(v) > 1})
    if duplicated:
        raise ParamsError(f"{source}: '{key}' names {duplicated} more than once; list each column once.")
    return tuple(value)


def _required_string(raw: dict, key: str, source: str) -> str:
    if key not in raw or raw[key] is None:
        raise ParamsError(f"{source}: the key '{key}' is missing; add it ({KEYS[key]}).")
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ParamsError(f"{source}: '{key}' must be a non-empty text value ({KEYS[key]}); got {value!r}.")
    return value


def _sub_mapping(raw: dict, key: str, allowed: set[str], source: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ParamsError(f"{source}: '{key}' must be a mapping such as {KEYS[key]}; got {value!r}.")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ParamsError(
            f"{source}: unknown key '{key}.{unknown[0]}'.{_suggest(str(unknown[0]), allowed)} "
            f"Allowed under '{key}': {', '.join(sorted(allowed))}."
        )
    return value


def load_params(path: str | Path, *, fast: bool | None = None) -> Params:
    """Read and check a params YAML file.

    Only the file itself is checked here (keys, types, roles); the data are
    checked against it by :func:`hmlib.data.load_registry`.

    Parameters
    ----------
    path : str or pathlib.Path
        The YAML file.
    fast : bool, optional
        Overrides the file's ``fast`` setting when given (``--fast``).

    Returns
    -------
    Params

    Raises
    ------
    ParamsError
        The file is missing, is not valid YAML, has unknown keys, lacks a
        required key, or has a value of the wrong kind. The message names the
        key and the fix.
    """
    source = Path(path).expanduser().resolve()
    return params_from_mapping(_read_yaml(source), source=source, fast=fast)


def params_from_mapping(raw: dict, *, source: Path, origin: str | None = None, base_dir: Path | None = None,
                        fast: bool | None = None) -> Params:
    """Check a params mapping (a params file's content, or a notebook's parameters) and build :class:`Params`.

    Parameters
    ----------
    raw : dict
        Keys and values as in a params YAML file.
    source : pathlib.Path
        Where the params come from (:attr:`Params.source`; its stem is the
        default ``name``).
    origin : str, optional
        How error messages name that place (default: ``source``).
    base_dir : pathlib.Path, optional
        Folder that relative ``data`` and ``truth`` paths resolve against
        (default: ``source``'s folder).
    fast : bool, optional
        Overrides ``raw``'s ``fast``.

    Raises
    ------
    ParamsError
        As :func:`load_params`.
    """
    where = origin or str(source)
    base_dir = source.parent if base_dir is None else Path(base_dir)
    unknown = sorted(str(k) for k in raw if k not in KEYS)
    if unknown:
        key = unknown[0]
        raise ParamsError(
            f"{where}: unknown key '{key}'.{_suggest(key, KEYS)} Allowed keys: {', '.join(KEYS)}."
        )

    name = raw.get("name")
    if name is None:
        name = source.stem
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ParamsError(
            f"{where}: 'name' must be letters, digits, '-' or '_' (it names the folder "
            f"reports/<name>/); got {name!r}."
        )

    data_text = _required_string(raw, "data", where)
    data = (base_dir / data_text).resolve()
    if data.suffix.lower() not in {".csv", ".parquet", ".pq"}:
        raise ParamsError(f"{where}: 'data' must be a .csv or .parquet file; got {data_text!r}.")
    truth = None
    if raw.get("truth") is not None:
        truth = (base_dir / _required_string(raw, "truth", where)).resolve()

    roles = _roles(raw, where)
    settings = _settings(raw, where, fast)
    stray = [v for v in settings["effect_units"] if v not in roles["predictors"]]
    if stray:
        raise ParamsError(f"{where}: 'effect_units' names {stray}, which are not in 'predictors'.")
    sensitivity_raw = _sub_mapping(raw, "sensitivity", _SENSITIVITY_KEYS, where)
    relevant = check_relevant_difference(sensitivity_raw.get("relevant_difference"), roles["outcome_family"],
                                         f"{where}: sensitivity.relevant_difference")
    form = _dropout_delta_form(sensitivity_raw.get("dropout_delta_form"), roles["time"], where)
    return Params(name=name, source=source, data=data, truth=truth, **roles, **settings,
                  sensitivity=SensitivityParams(relevant, form), raw=dict(raw))


def _dropout_delta_form(value, time, where: str) -> str:
    """``sensitivity.dropout_delta_form`` checked: one of :data:`DROPOUT_DELTA_FORMS`, and only with ``time``."""
    if value is None:
        return "constant"
    if value not in DROPOUT_DELTA_FORMS:
        raise ParamsError(f"{where}: 'sensitivity.dropout_delta_form' must be one of {list(DROPOUT_DELTA_FORMS)}; "
                          f"got {value!r}.")
    if time is None and value != "constant":
        raise ParamsError(f"{where}: 'sensitivity.dropout_delta_form: {value}' needs repeated measures: name the "
                          "visit time column with 'time:' (visits within patients), or remove the setting.")
    return value


def check_relevant_difference(value, outcome_family: str, where: str = "sensitivity.relevant_difference"):
    """A clinically relevant difference as a float (None stays None), or a ParamsError saying what is valid.

    A binary outcome takes a ratio of odds ratios > 1 (e.g. 1.25); a
    continuous outcome a difference > 0 in outcome units.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParamsError(f"'{where}' must be a number; got {value!r}.")
    if outcome_family == "binomial" and not value > 1:
        hint = f" For a ratio below 1 give its inverse ({1 / value:.3g})." if 0 < value < 1 else ""
        raise ParamsError(f"'{where}' is a ratio of odds ratios for a binary outcome and must be > 1 "
                          f"(e.g. {DEFAULT_ODDS_RATIO_RATIO}: an odds ratio 25% larger or smaller per reported "
                          f"unit of the focus); got {value!r}.{hint}")
    if not value > 0:
        raise ParamsError(f"'{where}' is a difference in outcome units per reported unit of the focus and must be "
                          f"> 0 (default {DEFAULT_OUTCOME_SD_SHARE} SD of the outcome); got {value!r}.")
    return float(value)


def _read_yaml(source: Path) -> dict:
    """The params file as a mapping; ParamsError naming the line for broken YAML or a repeated key."""
    if not source.is_file():
        raise ParamsError(f"params file not found: {source}. Check the path (e.g. params/demo.yaml).")
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except ParamsError as exc:
        raise ParamsError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParamsError(
            f"{source} is not valid YAML{where}: {problem}. Check indentation, colons and "
            "brackets (lists are written [a, b] or as '- a' lines)."
        ) from None
    except UnicodeDecodeError:
        raise ParamsError(f"{source} is not a UTF-8 text file; save it as UTF-8 YAML.") from None
    if raw is None:
        raise ParamsError(f"{source} is empty; see params/demo.yaml for an example.")
    if not isinstance(raw, dict):
        raise ParamsError(f"{source} must be a mapping of keys (name: ..., data: ...); got {type(raw).__name__}.")

    return raw


def _roles(raw: dict, source: str) -> dict:
    """Cluster, outcome, family, predictors and the other column roles, each column in one role."""
    cluster = _required_string(raw, "cluster", source)
    outcome = _required_string(raw, "outcome", source)
    family = _required_string(raw, "outcome_family", source)
    if family not in _FAMILIES:
        raise ParamsError(
            f"{source}: 'outcome_family' must be one of {', '.join(_FAMILIES)}; got {family!r}."
            f"{_suggest(family, _FAMILIES)}"
        )
    if "predictors" not in raw:
        raise ParamsError(f"{source}: the key 'predictors' is missing; add it ({KEYS['predictors']}).")
    predictors = _string_list(raw["predictors"], "predictors", source)
    if not predictors:
        raise ParamsError(f"{source}: 'predictors' is empty; name at least one predictor column.")
    categorical = _string_list(raw.get("categorical"), "categorical", source)
    higher = _string_list(raw.get("higher_levels"), "higher_levels", source)
    cluster_cov = _string_list(raw.get("cluster_covariates"), "cluster_covariates", source)

    roles = {"cluster": [cluster], "outcome": [outcome], "predictors": list(predictors),
             "higher_levels": list(higher), "cluster_covariates": list(cluster_cov)}
    seen: dict[str, str] = {}
    for role, cols in roles.items():
        for col in cols:
            if col in seen:
                raise ParamsError(
                    f"{source}: column '{col}' is given both as {seen[col]} and as {role}; "
                    "each column has one role."
                )
            seen[col] = role
    stray = [c for c in categorical if c not in predictors and c not in cluster_cov]
    if stray:
        raise ParamsError(
            f"{source}: 'categorical' names {stray}, which are not in 'predictors' or 'cluster_covariates'."
        )

    ordinal = _ordinal(raw.get("ordinal"), predictors, source)
    time = _time_column(raw.get("time"), roles, source)
    slopes = _string_list(raw.get("random_slopes"), "random_slopes", source)
    for col in slopes:
        if col not in predictors:
            raise ParamsError(f"{source}: 'random_slopes' names '{col}', which is not in 'predictors'; a random "
                              f"slope varies a predictor's effect between clusters, so add '{col}' to 'predictors' "
                              "too (its average effect).")
        if col in categorical or col in (ordinal or {}):
            raise ParamsError(f"{source}: 'random_slopes' names '{col}', which is categorical; a random slope needs "
                              "a numeric predictor such as the visit time.")

    focus = raw.get("focus")
    if focus is not None:
        if not isinstance(focus, str) or focus not in predictors:
            raise ParamsError(
                f"{source}: 'focus' must be one of the predictors ({', '.join(predictors)}); got {focus!r}."
                f"{_suggest(str(focus), predictors)}"
            )

    return {"cluster": cluster, "outcome": outcome, "outcome_family": family, "predictors": predictors,
            "categorical": categorical, "ordinal": ordinal, "higher_levels": higher,
            "cluster_covariates": cluster_cov, "focus": focus, "time": time, "random_slopes": slopes}


def _time_column(value: Any, roles: dict, source: str) -> str | None:
    """``time``: one column name, not the cluster, outcome, a higher level or a cluster covariate (it may be a
    predictor, e.g. week in a model of change over weeks)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ParamsError(f"{source}: 'time' must be one column name, the visit time (e.g. time: week or "
                          f"time: visit_date); got {value!r}.")
    for role in ("cluster", "outcome", "higher_levels", "cluster_covariates"):
        if value in roles[role]:
            raise ParamsError(f"{source}: 'time' is '{value}', which is also given as {role}; the time must be "
                              "its own column that varies between a patient's visits (it may also be a predictor).")
    return value


def _ordinal(value: Any, predictors: tuple, source: Path) -> dict:
    """``ordinal`` as ``{predictor: tuple of levels or None}`` (a list of names, or names mapped to their order)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        out = {}
        for col, order in value.items():
            if order is not None and (not isinstance(order, list) or not order
                                      or not all(isinstance(v, (str, int, float)) for v in order)):
                raise ParamsError(f"{source}: 'ordinal.{col}' must list its levels from lowest to highest, e.g. "
                                  f"{col}: [mild, moderate, severe]; got {order!r}.")
            out[str(col)] = None if order is None else tuple(_code_text(v) for v in order)
    else:
        out = {col: None for col in _string_list(value, "ordinal", source)}
    stray = [c for c in out if c not in predictors]
    if stray:
        raise ParamsError(f"{source}: 'ordinal' names {stray}, which are not in 'predictors'; an ordinal variable "
                          "is a categorical predictor.")
    return out


def _settings(raw: dict, source: str, fast: bool | None) -> dict:
    """Seed, fast, privacy, diagnose, joint model, encoding and missing codes, checked."""
    seed = raw.get("seed", 2026)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ParamsError(f"{source}: 'seed' must be a non-negative whole number; got {seed!r}.")
    fast_value = raw.get("fast", False)
    if not isinstance(fast_value, bool):
        raise ParamsError(f"{source}: 'fast' must be true or false; got {fast_value!r}.")
    if fast is not None:
        fast_value = bool(fast)

    privacy_raw = _sub_mapping(raw, "privacy", _PRIVACY_KEYS, source)
    min_cell = privacy_raw.get("min_cell", 11)
    if isinstance(min_cell, bool) or not isinstance(min_cell, int) or min_cell < 1:
        raise ParamsError(f"{source}: 'privacy.min_cell' must be a whole number >= 1; got {min_cell!r}.")
    # with a visit time the clusters are patients: their IDs are pseudonymised unless the file says otherwise
    pseudo = privacy_raw.get("pseudonymize_clusters", raw.get("time") is not None)
    if not isinstance(pseudo, bool):
        raise ParamsError(f"{source}: 'privacy.pseudonymize_clusters' must be true or false; got {pseudo!r}.")

    diagnose_raw = _sub_mapping(raw, "diagnose", _DIAGNOSE_KEYS, source)
    share = diagnose_raw.get("structural_share", 0.9)
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise ParamsError(
            f"{source}: 'diagnose.structural_share' must be a number in (0, 1]; got {share!r}."
        )

    joint_raw = _sub_mapping(raw, "joint_model", _JOINT_KEYS, source)
    budget = joint_raw.get("time_budget_minutes")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget >= 0
                               or budget == float("inf")):
        raise ParamsError(f"{source}: 'joint_model.time_budget_minutes' must be a number of minutes >= 0 "
                          f"(0: never extend the sampling); got {budget!r}.")
    submodel = joint_raw.get("missingness_submodel", "auto")
    if submodel != "auto" and not isinstance(submodel, bool):
        raise ParamsError(f"{source}: 'joint_model.missingness_submodel' must be true, false or auto; "
                          f"got {submodel!r}.")

    encoding = raw.get("encoding", "utf-8")
    if not isinstance(encoding, str) or not encoding.strip():
        raise ParamsError(f"{source}: 'encoding' must be an encoding name such as utf-8 or latin-1; got {encoding!r}.")
    codes = raw.get("missing_codes") or []
    if not isinstance(codes, list) or not all(isinstance(c, (str, int, float)) and not isinstance(c, bool)
                                              for c in codes):
        raise ParamsError(f"{source}: 'missing_codes' must be a list of values, e.g. ['-99', 'not done']; "
                          f"got {codes!r}.")

    units = _effect_units(raw.get("effect_units"), source)
    return {"seed": seed, "fast": fast_value, "effect_units": units,
            "privacy": PrivacySettings(min_cell=min_cell, pseudonymize_clusters=pseudo),
            "diagnose": DiagnoseSettings(structural_share=float(share)),
            "joint_model": JointModelSettings(None if budget is None else float(budget),
                                              None if submodel == "auto" else submodel),
            "encoding": encoding.strip(),
            "missing_codes": tuple(_code_text(c) for c in codes)}


def _effect_units(value, source: str) -> dict:
    """``effect_units`` checked: each variable maps to ``{per: number > 0, unit: text}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ParamsError(f"{source}: 'effect_units' must map variables to a unit, e.g. "
                          "effect_units: {{calories: {{per: 100, unit: kcal}}}}; got {value!r}.".format(value=value))
    units = {}
    for var, spec in value.items():
        if isinstance(spec, (int, float)) and not isinstance(spec, bool):
            spec = {"per": spec}
        if not isinstance(spec, dict) or set(spec) - {"per", "unit"}:
            raise ParamsError(f"{source}: effect_units.{var} must be {{per: <number>, unit: <text>}}; got {spec!r}.")
        per, unit = spec.get("per", 1), spec.get("unit", "")
        if isinstance(per, bool) or not isinstance(per, (int, float)) or not per > 0:
            raise ParamsError(f"{source}: effect_units.{var}.per must be a number > 0; got {per!r}.")
        if not isinstance(unit, str):
            raise ParamsError(f"{source}: effect_units.{var}.unit must be text such as 'kcal'; got {unit!r}.")
        units[str(var)] = EffectUnit(float(per), unit.strip())
    return units


def _code_text(code) -> str:
    """A missing code as it is written in a file (``-99``, not ``-99.0``)."""
    if isinstance(code, float) and code.is_integer():
        return str(int(code))
    return str(code).strip()
