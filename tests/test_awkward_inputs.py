"""A corpus of awkward inputs, as users bring them: each gets a clear error or a sensible, announced reading.

AWK-<group>-<nnn>, one row per case of :data:`CASES`:

- ``error``: checking the inputs (``load_registry(load_params(...))``, nothing fitted) raises
  ParamsError/DataError and the message matches the pattern (it names the problem and the fix);
- ``notice``: the inputs load and a notice with that code matches the pattern (the reading is said);
- ``ok``: the inputs load and ``check(registry)`` holds (the right answer, silently where nothing changed).

Groups: YAML (the params file), FILE (the data file as a file), VALUE (what is in the cells), CLUSTER (the
cluster ids and levels). The input files are compared byte for byte before and after every case: input
data are never modified. Run-level cases (interrupts, stale results, output folders) are in test_runner.py;
model-level cases (separation, collinearity, data without missing values) in the step tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import small_registry
from hmlib.data import load_registry
from hmlib.exceptions import DataError, HmlibError, ParamsError
from hmlib.params import load_params

BASE_PARAMS = {"name": "case", "data": "registry.csv", "cluster": "site", "outcome": "died",
               "outcome_family": "binomial", "predictors": ["age", "sex", "lab"], "seed": 3}


@dataclass
class Case:
    """One awkward input: how to make it, and what must happen."""

    id: str
    what: str
    make: Callable  # (tmp_path) -> params path
    expect: str  # "error" | "notice" | "ok"
    pattern: str = ""
    code: str = ""
    check: Callable | None = None


# ---------------------------------------------------------------------------- builders
def _frame() -> pd.DataFrame:
    return small_registry()


def write(tmp: Path, frame: pd.DataFrame | None = None, text: str | bytes | None = None, params: dict | None = None,
          yaml_text: str | None = None, name: str = "registry.csv") -> Path:
    """Write a data file (a frame, or raw text/bytes) and a params file; return the params path."""
    data = tmp / name
    if text is not None:
        data.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    elif name.endswith(".parquet"):
        (_frame() if frame is None else frame).to_parquet(data, index=False)
    else:
        (_frame() if frame is None else frame).to_csv(data, index=False)
    path = tmp / "case.yaml"
    if yaml_text is not None:
        path.write_text(yaml_text)
    else:
        p = {**BASE_PARAMS, "data": name, **(params or {})}
        path.write_text(yaml.safe_dump({k: v for k, v in p.items() if v is not None}, sort_keys=False))
    return path


def csv_text(frame: pd.DataFrame | None = None, sep: str = ",", decimal: str = ".") -> str:
    return (_frame() if frame is None else frame).to_csv(index=False, sep=sep, decimal=decimal)


def with_values(column: str, values: dict, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """The base frame with ``column`` as text and some rows replaced ({row: text})."""
    frame = _frame() if frame is None else frame
    frame[column] = frame[column].astype(object)
    for row, value in values.items():
        frame.loc[row, column] = value
    return frame


def yaml_case(text: str) -> Callable:
    return lambda tmp: write(tmp, yaml_text=text)


BASE_YAML = ("name: case\ndata: registry.csv\ncluster: site\noutcome: died\noutcome_family: binomial\n"
             "predictors: [age, sex, lab]\n")


def params_case(**overrides) -> Callable:
    return lambda tmp: write(tmp, params=overrides)


def frame_case(make_frame: Callable, **params) -> Callable:
    return lambda tmp: write(tmp, frame=make_frame(), params=params)


def text_case(make_text: Callable, **params) -> Callable:
    return lambda tmp: write(tmp, text=make_text(), params=params)


def _truth(content: str | None) -> Callable:
    def make(tmp):
        if content is not None:
            (tmp / "truth.json").write_text(content)
        return write(tmp, params={"truth": "truth.json"})
    return make


def _latin1_text() -> bytes:
    frame = _frame()
    frame["sex"] = frame["sex"].replace({"female": "féminin"})
    return frame.to_csv(index=False).encode("latin-1")


def _levels(n: int) -> pd.DataFrame:
    frame = _frame()
    frame["sex"] = [f"L{i % n}" for i in range(len(frame))]
    return frame


def _parquet(frame_fn: Callable, **params) -> Callable:
    return lambda tmp: write(tmp, frame=frame_fn(), name="registry.parquet", params=params)


def _float_sites() -> pd.DataFrame:
    frame = _frame()
    frame["site"] = frame["site"].str[1:].astype(float) + 1.0
    return frame


def _int_sites() -> pd.DataFrame:
    frame = _frame()
    frame["site"] = frame["site"].str[1:].astype(int)
    return frame


def _zero_padded_sites() -> pd.DataFrame:
    frame = _frame()
    frame["site"] = np.where(np.arange(len(frame)) < 150, "003", "3")
    return frame


def _spaced_sites() -> pd.DataFrame:
    frame = _frame()
    frame["site"] = frame["site"].astype(object)
    frame.loc[frame.index[:10], "site"] = frame["site"].iloc[:10] + " "
    return frame


def _two_sites() -> pd.DataFrame:
    frame = _frame()
    frame["site"] = np.where(np.arange(len(frame)) % 2 == 0, "A", "B")
    return frame


def _site_type_varies() -> pd.DataFrame:
    frame = _frame()
    frame.loc[0, "site_type"] = "B" if frame.loc[0, "site_type"] == "A" else "A"
    return frame


def _crossed_country() -> pd.DataFrame:
    frame = _frame()
    frame["country"] = np.where(np.arange(len(frame)) % 2 == 0, "NL", "BE")
    return frame


def _nested_country() -> pd.DataFrame:
    frame = _frame()
    frame["country"] = np.where(frame["site"].str[1:].astype(int) < 6, "NL", "BE")
    return frame


def _two_higher(crossed: bool = False, same: bool = False) -> pd.DataFrame:
    """Sites in regions in countries; ``crossed``: regions span both countries; ``same``: region = country."""
    frame = _nested_country()
    number = frame["site"].str[1:].astype(int)
    frame["region"] = np.where(number % 3 == 0, "R1", "R2") if crossed else (
        frame["country"] + "-all" if same else frame["country"] + np.where(number % 2 == 0, "-a", "-b"))
    return frame


def _singleton() -> pd.DataFrame:
    frame = _frame()
    return pd.concat([frame, frame.iloc[[0]].assign(site="LONE")], ignore_index=True)


def _gap() -> pd.DataFrame:
    frame = _frame()
    frame.loc[frame["site"] == "S03", "lab"] = np.nan
    return frame


def _complete_lab() -> pd.DataFrame:
    frame = _frame()
    frame["lab"] = frame["lab"].fillna(2.0)
    return frame


def _bool_outcome() -> pd.DataFrame:
    frame = _frame()
    frame["died"] = frame["died"].astype(bool)
    return frame


def _codes(column: str, code: str, rows=range(0, 40, 3)) -> Callable:
    return lambda: with_values(column, {r: code for r in rows})


def _many_missing_cluster_ids() -> pd.DataFrame:
    return with_values("site", {r: "" for r in range(0, 240, 10)})


# ---------------------------------------------------------------------------- checks
def _level_count(column: str, n: int) -> Callable:
    return lambda reg: len(reg.levels[column]) == n


def _numeric(column: str) -> Callable:
    return lambda reg: reg.kinds[column] == "numeric" and reg.frame[column].dtype == float


def _n_missing(column: str, n: int) -> Callable:
    return lambda reg: int(reg.frame[column].isna().sum()) == n


def _clusters(n: int) -> Callable:
    return lambda reg: reg.n_clusters == n


def _cluster_labels(expected: set) -> Callable:
    return lambda reg: set(reg.frame["site"].unique()) == expected


CASES = [
    # ------------------------------------------------------------------ the params file (YAML)
    Case("AWK-YAML-001", "a key given twice: the last one would silently win",
         yaml_case(BASE_YAML + "outcome: age\n"), "error", r"key 'outcome' is given twice \(lines 4 and 7\)"),
    Case("AWK-YAML-002", "a nested key given twice",
         yaml_case(BASE_YAML + "privacy:\n  min_cell: 5\n  min_cell: 11\n"), "error", r"'min_cell' is given twice"),
    Case("AWK-YAML-003", "a typo in a key", yaml_case(BASE_YAML + "focs: lab\n"), "error",
         r"unknown key 'focs'. Did you mean 'focus'\?"),
    Case("AWK-YAML-004", "predictors written as one text value with commas",
         yaml_case(BASE_YAML.replace("[age, sex, lab]", "age, sex, lab")), "error",
         r"write a list of column names: predictors: \[age, sex, lab\]"),
    Case("AWK-YAML-005", "a single predictor written as text", params_case(predictors="lab"), "ok",
         check=lambda reg: reg.params.predictors == ("lab",)),
    Case("AWK-YAML-006", "predictors as a number", yaml_case(BASE_YAML.replace("[age, sex, lab]", "3")),
         "error", r"'predictors' must be a list of column names"),
    Case("AWK-YAML-007", "no data key", yaml_case(BASE_YAML.replace("data: registry.csv\n", "")), "error",
         r"the key 'data' is missing"),
    Case("AWK-YAML-008", "no outcome_family", yaml_case(BASE_YAML.replace("outcome_family: binomial\n", "")),
         "error", r"the key 'outcome_family' is missing"),
    Case("AWK-YAML-009", "outcome family in capitals", params_case(outcome_family="Binomial"), "error",
         r"'outcome_family' must be one of binomial, gaussian"),
    Case("AWK-YAML-010", "an unknown family", params_case(outcome_family="poisson"), "error",
         r"'outcome_family' must be one of binomial, gaussian"),
    Case("AWK-YAML-011", "tabs for indentation", yaml_case(BASE_YAML + "privacy:\n\tmin_cell: 5\n"), "error",
         r"is not valid YAML at line \d+"),
    Case("AWK-YAML-012", "an unclosed bracket", yaml_case(BASE_YAML.replace("lab]", "lab")), "error",
         r"is not valid YAML"),
    Case("AWK-YAML-013", "an empty params file", yaml_case(""), "error", r"is empty; see params/demo.yaml"),
    Case("AWK-YAML-014", "a list instead of a mapping", yaml_case("- name\n- data\n"), "error",
         r"must be a mapping of keys"),
    Case("AWK-YAML-015", "a params file in Latin-1",
         lambda tmp: _latin1_yaml(tmp), "error", r"not a UTF-8 text file"),
    Case("AWK-YAML-016", "the same column in two roles", params_case(predictors=["age", "site"]), "error",
         r"column 'site' is given both as cluster and as predictors"),
    Case("AWK-YAML-017", "a categorical column that is not a predictor", params_case(categorical=["weight"]),
         "error", r"'categorical' names \['weight'\]"),
    Case("AWK-YAML-018", "a predictor listed twice", params_case(predictors=["age", "age", "lab"]), "error",
         r"more than once"),
    Case("AWK-YAML-019", "a focus that is not a predictor", params_case(focus="weight"), "error",
         r"'focus' must be one of the predictors"),
    Case("AWK-YAML-020", "a negative seed", params_case(seed=-5), "error", r"'seed' must be a non-negative"),
    Case("AWK-YAML-021", "a decimal seed", params_case(seed=2.5), "error", r"'seed' must be a non-negative"),
    Case("AWK-YAML-022", "fast given as yes-text", yaml_case(BASE_YAML + "fast: 'yes'\n"), "error",
         r"'fast' must be true or false"),
    Case("AWK-YAML-023", "min_cell zero", params_case(privacy={"min_cell": 0}), "error",
         r"'privacy.min_cell' must be a whole number >= 1"),
    Case("AWK-YAML-024", "min_cell as a decimal", params_case(privacy={"min_cell": 5.5}), "error",
         r"'privacy.min_cell' must be a whole number"),
    Case("AWK-YAML-025", "pseudonymize as text", params_case(privacy={"pseudonymize_clusters": "no"}), "error",
         r"'privacy.pseudonymize_clusters' must be true or false"),
    Case("AWK-YAML-026", "structural share above 1", params_case(diagnose={"structural_share": 1.5}), "error",
         r"'diagnose.structural_share' must be a number in \(0, 1\]"),
    Case("AWK-YAML-027", "a report name with a space", params_case(name="my report"), "error",
         r"'name' must be letters, digits"),
    Case("AWK-YAML-028", "a report name with a slash", params_case(name="../x"), "error",
         r"'name' must be letters, digits"),
    Case("AWK-YAML-029", "an Excel workbook as data", params_case(data="registry.xlsx"), "error",
         r"'data' must be a .csv or .parquet file"),
    Case("AWK-YAML-030", "a data file that does not exist", params_case(data="nowhere.csv"), "error",
         r"data file not found: .*nowhere.csv"),
    Case("AWK-YAML-031", "an encoding that is not text", params_case(encoding=8), "error",
         r"'encoding' must be an encoding name"),
    Case("AWK-YAML-032", "an unknown encoding", params_case(encoding="klingon"), "error",
         r"unknown encoding 'klingon'"),
    Case("AWK-YAML-033", "missing codes as a mapping", params_case(missing_codes={"a": 1}), "error",
         r"'missing_codes' must be a list of values"),
    Case("AWK-YAML-034", "a truth file that does not exist", _truth(None), "error",
         r"the truth file .*truth.json named in the params does not exist"),
    Case("AWK-YAML-035", "a truth file that is not JSON", _truth("{terms: 1"), "error",
         r"the truth file truth.json is not valid JSON"),
    Case("AWK-YAML-036", "a truth file without terms", _truth('{"lab": 0.5}'), "error",
         r"needs a 'terms' object"),
    Case("AWK-YAML-037", "a truth file with text values", _truth('{"terms": {"lab": "half"}}'), "error",
         r"non-numeric true values for \['lab'\]"),
    Case("AWK-YAML-038", "a valid truth file", _truth('{"terms": {"lab": 0.5}}'), "ok",
         check=lambda reg: reg.params.truth is not None),
    Case("AWK-YAML-039", "a cluster column missing from the file", params_case(cluster="hospital"), "error",
         r"column 'hospital' named in case.yaml is not in registry.csv"),
    Case("AWK-YAML-040", "a column name in the wrong case", params_case(predictors=["Age", "sex", "lab"]),
         "error", r"column 'Age' .* Did you mean 'age'\?"),
    # ------------------------------------------------------------------ the data file as a file
    Case("AWK-FILE-001", "an empty file", text_case(lambda: ""), "error", r"is empty \(0 bytes\)"),
    Case("AWK-FILE-002", "a header and no rows", text_case(lambda: "site,site_type,age,sex,lab,died\n"), "error",
         r"has a header but no rows"),
    Case("AWK-FILE-003", "a PNG saved as .csv", text_case(lambda: b"\x89PNG\r\n\x1a\n\x00\x00garbage"), "error",
         r"holds binary data, not comma-separated text"),
    Case("AWK-FILE-004", "a semicolon-separated export", text_case(lambda: csv_text(sep=";")), "notice",
         r"read as a semicolon-separated file", code="delimiter"),
    Case("AWK-FILE-005", "a tab-separated export", text_case(lambda: csv_text(sep="\t")), "notice",
         r"read as a tab-separated file", code="delimiter"),
    Case("AWK-FILE-006", "a Latin-1 export read as UTF-8", text_case(_latin1_text), "error",
         r"not valid utf-8: line \d+, column \d+ holds byte 0xE9 .* 'encoding: latin-1'"),
    Case("AWK-FILE-007", "a Latin-1 export with its encoding named", text_case(_latin1_text, encoding="latin-1"),
         "ok", check=lambda reg: "féminin" in reg.levels["sex"]),
    Case("AWK-FILE-008", "UTF-8 with a byte-order mark (Excel)", text_case(lambda: "\ufeff" + csv_text()), "ok",
         check=_clusters(12)),
    Case("AWK-FILE-009", "duplicate column headers",
         text_case(lambda: csv_text().replace("lab,died", "lab,lab", 1)), "error",
         r"duplicate column header\(s\): 'lab'"),
    Case("AWK-FILE-010", "a column without a header",
         text_case(lambda: csv_text().replace("sex,lab", "sex,", 1)), "error", r"column 5 has no header"),
    Case("AWK-FILE-011", "Windows line endings", text_case(lambda: csv_text().replace("\n", "\r\n")), "ok",
         check=_numeric("lab")),
    Case("AWK-FILE-012", "a row with an extra field",
         text_case(lambda: csv_text().replace("\n", ",extra\n", 3).replace(",extra", "", 1)), "error",
         r"cannot read registry.csv as a comma-separated file: line 2 has 7 fields but the header has 6"),
    Case("AWK-FILE-013", "blank lines at the end", text_case(lambda: csv_text() + "\n\n\n"), "ok",
         check=lambda reg: reg.n_patients == 300),
    Case("AWK-FILE-014", "quoted fields holding commas",
         frame_case(lambda: _frame().assign(sex=lambda f: f["sex"].map({"female": "female, adult",
                                                                         "male": "male, adult"}))),
         "ok", check=lambda reg: reg.levels["sex"] == ["female, adult", "male, adult"]),
    Case("AWK-FILE-015", "a Parquet extract", _parquet(_frame), "ok", check=_numeric("lab")),
    Case("AWK-FILE-016", "Parquet with float cluster ids (17.0)", _parquet(_float_sites), "ok",
         check=lambda reg: "1" in set(reg.frame["site"]) and not any("." in s for s in reg.frame["site"])),
    Case("AWK-FILE-017", "Parquet with integer cluster ids", _parquet(_int_sites), "ok",
         check=lambda reg: reg.frame["site"].map(type).eq(str).all()),
    Case("AWK-FILE-018", "a damaged Parquet file", lambda tmp: write(tmp, text=b"PAR1garbagePAR1",
                                                                      name="registry.parquet"), "error",
         r"cannot read .*registry.parquet.* valid Parquet file"),
    Case("AWK-FILE-019", "a semicolon export with decimal commas",
         text_case(lambda: csv_text(sep=";", decimal=",")), "notice",
         r"'lab' is written with decimal commas \(e.g. '\d+,\d+'\); read as decimal numbers", code="decimal-comma"),
    Case("AWK-FILE-020", "Parquet with booleans as the outcome", _parquet(_bool_outcome), "ok",
         check=lambda reg: set(reg.frame["died"].dropna().unique()) <= {0.0, 1.0}),
    # ------------------------------------------------------------------ values in the cells
    Case("AWK-VALUE-001", "SAS missing '.' in a numeric column", frame_case(_codes("lab", ".")), "notice",
         r"In 'lab', '\.' \(\d+\) were read as missing values", code="missing-codes"),
    Case("AWK-VALUE-002", "SAS missing '.' is missing, not a category", frame_case(_codes("lab", ".")), "ok",
         check=_numeric("lab")),
    Case("AWK-VALUE-003", "'NA' text", frame_case(_codes("lab", "NA")), "notice", r"'NA' \(\d+\)",
         code="missing-codes"),
    Case("AWK-VALUE-004", "'n/a' text", frame_case(_codes("age", "n/a")), "ok", check=_numeric("age")),
    Case("AWK-VALUE-005", "'?' for unknown", frame_case(_codes("age", "?")), "ok", check=_numeric("age")),
    Case("AWK-VALUE-006", "'-' for not done", frame_case(_codes("age", "-")), "ok", check=_numeric("age")),
    Case("AWK-VALUE-007", "Stata extended missing '.a'", frame_case(_codes("age", ".a")), "ok",
         check=_numeric("age")),
    Case("AWK-VALUE-008", "Excel '#N/A'", frame_case(_codes("age", "#N/A")), "ok", check=_numeric("age")),
    Case("AWK-VALUE-009", "'NULL' from a database", frame_case(_codes("age", "NULL")), "ok", check=_numeric("age")),
    Case("AWK-VALUE-010", "'None' from Python", frame_case(_codes("age", "None")), "ok", check=_numeric("age")),
    Case("AWK-VALUE-011", "missing codes in a 0/1 outcome", frame_case(_codes("died", ".")), "ok",
         check=lambda reg: set(reg.frame["died"].dropna().unique()) <= {0.0, 1.0}),
    Case("AWK-VALUE-012", "a code for missing in a categorical column", frame_case(_codes("sex", "NA")), "ok",
         check=lambda reg: reg.levels["sex"] == ["female", "male"]),
    Case("AWK-VALUE-013", "a registry's own code '-99', named in the params",
         frame_case(_codes("age", "-99", rows=range(0, 60, 2)), missing_codes=[-99]), "ok",
         check=_n_missing("age", 30)),
    Case("AWK-VALUE-014", "'-99' not named is a number", frame_case(_codes("age", "-99", rows=range(0, 60, 2))),
         "ok", check=_n_missing("age", 0)),
    Case("AWK-VALUE-015", "decimal commas in a comma-separated file (quoted)",
         frame_case(lambda: with_values("lab", {r: f"{v:.2f}".replace(".", ",") for r, v in
                                                 _frame()["lab"].dropna().items()})), "notice",
         r"decimal commas", code="decimal-comma"),
    Case("AWK-VALUE-016", "decimal commas read as numbers",
         frame_case(lambda: with_values("lab", {r: f"{v:.2f}".replace(".", ",") for r, v in
                                                 _frame()["lab"].dropna().items()})), "ok",
         check=lambda reg: abs(reg.frame["lab"].mean() - _frame()["lab"].round(2).mean()) < 1e-9),
    Case("AWK-VALUE-017", "decimal commas mixed with decimal points",
         frame_case(lambda: with_values("lab", {0: "1,5", 1: "2.5"})), "error",
         r"column 'lab' holds numbers but 1 value\(s\) are text, e.g. '1,5'"),
    Case("AWK-VALUE-018", "a few text values among numbers (a small file)",
         frame_case(lambda: with_values("lab", {0: "abc", 3: "high"})), "error",
         r"column 'lab' holds numbers but 2 value\(s\) are text, e.g. 'abc', 'high'.*missing_codes"),
    Case("AWK-VALUE-019", "'inf' in a numeric column", frame_case(lambda: with_values("lab", {0: "inf"})), "error",
         r"column 'lab' holds 1 infinite value\(s\)"),
    Case("AWK-VALUE-020", "'-Infinity' in a numeric column",
         frame_case(lambda: with_values("age", {5: "-Infinity"})), "error", r"infinite value"),
    Case("AWK-VALUE-021", "'1e999' overflows to infinity", frame_case(lambda: with_values("age", {5: "1e999"})),
         "error", r"infinite value"),
    Case("AWK-VALUE-022", "scientific notation", frame_case(lambda: with_values("lab", {0: "1.5e0", 1: "2E-1"})),
         "ok", check=lambda reg: reg.frame.loc[0, "lab"] == 1.5 and reg.frame.loc[1, "lab"] == 0.2),
    Case("AWK-VALUE-023", "numbers with surrounding spaces", frame_case(lambda: with_values("age", {0: " 42 "})),
         "ok", check=lambda reg: reg.frame.loc[0, "age"] == 42.0),
    Case("AWK-VALUE-024", "TRUE/FALSE outcome", frame_case(lambda: _frame().assign(
        died=lambda f: f["died"].map({1: "TRUE", 0: "FALSE"}))), "ok",
         check=lambda reg: reg.frame["died"].mean() == _frame()["died"].mean()),
    Case("AWK-VALUE-025", "yes/no outcome", frame_case(lambda: _frame().assign(
        died=lambda f: f["died"].map({1: "yes", 0: "no"}))), "error",
         r"the outcome 'died' must be 0/1 .* e.g. 'yes', 'no'"),
    Case("AWK-VALUE-026", "a 1/2-coded outcome", frame_case(lambda: _frame().assign(died=lambda f: f["died"] + 1)),
         "error", r"must be 0/1 for outcome_family: binomial, but \d+ value\(s\) are not, e.g. '2'"),
    Case("AWK-VALUE-027", "an outcome missing everywhere",
         frame_case(lambda: _frame().assign(died=np.nan)), "error", r"the outcome 'died' is missing in every row"),
    Case("AWK-VALUE-028", "a constant outcome", frame_case(lambda: _frame().assign(died=0)), "error",
         r"the outcome 'died' takes a single value \(0\)"),
    Case("AWK-VALUE-029", "a text outcome with a gaussian family",
         frame_case(lambda: _frame().assign(died=lambda f: f["died"].map({1: "high", 0: "low"})),
                    outcome_family="gaussian"), "error", r"the outcome 'died' is text .* but outcome_family is gaussian"),
    Case("AWK-VALUE-030", "a constant predictor", frame_case(lambda: _frame().assign(age=50)), "error",
         r"predictor 'age' takes a single value \(50\)"),
    Case("AWK-VALUE-031", "a predictor missing everywhere", frame_case(lambda: _frame().assign(lab=np.nan)),
         "error", r"predictor 'lab' is missing in all 300 rows"),
    Case("AWK-VALUE-032", "an identifier as a predictor", frame_case(lambda: _levels(120)), "error",
         r"predictor 'sex' is text with 120 different values .* at most 50"),
    Case("AWK-VALUE-033", "labels that differ only in case", frame_case(lambda: with_values(
        "sex", {0: "MALE", 1: "Male"})), "notice", r"'sex' has labels that differ only in letter case \('MALE' / "
                                                   r"'Male' / 'male'\)", code="case-variants"),
    Case("AWK-VALUE-034", "a numeric code kept numeric unless listed", frame_case(lambda: _frame().assign(
        grade=lambda f: (np.arange(len(f)) % 3) + 1), predictors=["age", "grade", "lab"]), "ok",
         check=_numeric("grade")),
    Case("AWK-VALUE-035", "a numeric code listed as categorical", frame_case(lambda: _frame().assign(
        grade=lambda f: (np.arange(len(f)) % 3) + 1), predictors=["age", "grade", "lab"], categorical=["grade"]),
         "ok", check=lambda reg: reg.levels["grade"] == ["1", "2", "3"]),
    Case("AWK-VALUE-036", "text with a few number-like labels",
         frame_case(lambda: with_values("sex", {0: "1", 1: "2"})), "notice",
         r"'sex' is mostly text; the values that look like numbers", code="numbers-in-text"),
    Case("AWK-VALUE-037", "cells holding only spaces are missing", frame_case(lambda: with_values("age", {0: "   "})),
         "ok", check=lambda reg: np.isnan(reg.frame.loc[0, "age"])),
    Case("AWK-VALUE-038", "negative numbers stay numbers", frame_case(lambda: with_values("lab", {0: "-1.5"})),
         "ok", check=lambda reg: reg.frame.loc[0, "lab"] == -1.5),
    Case("AWK-VALUE-039", "an outcome coded 1.0/0.0", frame_case(lambda: _frame().assign(
        died=lambda f: f["died"].astype(float))), "ok", check=_numeric("died")),
    Case("AWK-VALUE-040", "the focus variable without missing values",
         frame_case(_complete_lab, focus="lab"), "notice", r"focus variable 'lab' has no missing values",
         code="focus-complete"),
    Case("AWK-VALUE-041", "a variable never recorded in one site", frame_case(_gap), "notice",
         r"'lab' is never recorded in 1 of 12 clusters", code="structural-gap"),
    Case("AWK-VALUE-042", "a small count of missing codes is not printed",
         frame_case(_codes("lab", ".", rows=[0, 1, 2])), "notice", r"'\.' \(fewer than 11\)", code="missing-codes"),
    Case("AWK-VALUE-043", "an error message shows values as written, not numpy reprs",
         frame_case(lambda: _frame().assign(age=50.0)), "error", r"single value \(50\)"),
    # ------------------------------------------------------------------ cluster ids and levels
    Case("AWK-CLUSTER-001", "leading zeros: '003' and '3' are two sites", frame_case(_zero_padded_sites), "ok",
         check=_cluster_labels({"003", "3"})),
    Case("AWK-CLUSTER-002", "a stray space after a site label", frame_case(_spaced_sites), "notice",
         r"In 'site', labels that differed only by spaces .* 'S00'", code="trimmed-labels"),
    Case("AWK-CLUSTER-003", "stray spaces do not make a second site", frame_case(_spaced_sites), "ok",
         check=_clusters(12)),
    Case("AWK-CLUSTER-004", "numeric site ids are text (no '17.0')", frame_case(_int_sites), "ok",
         check=lambda reg: reg.frame["site"].map(type).eq(str).all() and "0" in set(reg.frame["site"])),
    Case("AWK-CLUSTER-005", "rows without a site id", frame_case(_many_missing_cluster_ids), "notice",
         r"24 row\(s\) have no value in the cluster column 'site'", code="missing-cluster-id"),
    Case("AWK-CLUSTER-006", "a missing-code site id ('NA') counts as missing",
         frame_case(lambda: with_values("site", {0: "NA"})), "notice", r"fewer than 11 row\(s\) have no value",
         code="missing-cluster-id"),
    Case("AWK-CLUSTER-007", "a single site", frame_case(lambda: _frame().assign(site="A")), "error",
         r"has a single value \('A'\); a hierarchical model needs at least two clusters"),
    Case("AWK-CLUSTER-008", "two sites: the SD is barely estimable", frame_case(_two_sites), "notice",
         r"Only 2 clusters: every between-cluster SD and ICC in this report is barely estimable", code="few-clusters"),
    Case("AWK-CLUSTER-009", "a site with one patient", frame_case(_singleton), "notice",
         r"1 of 13 clusters have a single patient", code="singleton-clusters"),
    Case("AWK-CLUSTER-010", "a cluster covariate that varies within a site",
         frame_case(_site_type_varies, cluster_covariates=["site_type"]), "error",
         r"cluster covariate 'site_type' varies within 1 cluster\(s\) \(e.g. cluster 'S00'"),
    Case("AWK-CLUSTER-011", "sites not nested in countries", frame_case(_crossed_country, higher_levels=["country"]),
         "error", r"clusters are not nested in 'country'"),
    Case("AWK-CLUSTER-012", "sites nested in countries", frame_case(_nested_country, higher_levels=["country"]),
         "ok", check=_clusters(12)),
    Case("AWK-CLUSTER-013", "site ids empty everywhere", frame_case(lambda: _frame().assign(site="")), "error",
         r"the cluster column 'site' is empty in every row"),
    Case("AWK-CLUSTER-015", "two higher levels crossed", frame_case(lambda: _two_higher(crossed=True),
                                                                      higher_levels=["region", "country"]),
         "error", r"higher levels 'region' and 'country' are not nested in each other"),
    Case("AWK-CLUSTER-016", "two higher levels group identically", frame_case(lambda: _two_higher(same=True),
                                                                              higher_levels=["country", "region"]),
         "error", r"higher levels 'country' and 'region' group the clusters identically; keep one"),
    Case("AWK-CLUSTER-017", "sites in regions in countries", frame_case(_two_higher,
                                                                        higher_levels=["region", "country"]),
         "ok", check=_clusters(12)),
    Case("AWK-CLUSTER-018", "a higher level with two units", frame_case(_nested_country, higher_levels=["country"]),
         "notice", r"'country' has only 2 unit\(s\): the SD between them .* barely estimable .* adding it to "
                   r"'predictors' and 'categorical'", code="few-higher-units"),
    Case("AWK-VALUE-044", "one predictor is another in other units (collinear)",
         frame_case(lambda: _frame().assign(lab_mg=lambda f: f["lab"] * 18.0), predictors=["age", "lab", "lab_mg"]),
         "error", r"the predictors are collinear, so the analysis model cannot be estimated: .*'lab', 'lab_mg' are "
                  r"linearly dependent"),
    Case("AWK-VALUE-045", "a 0/1 column that duplicates a category (collinear)",
         frame_case(lambda: _frame().assign(male=lambda f: (f["sex"] == "male").astype(int)),
                    predictors=["age", "sex", "male", "lab"]), "error", r"'sex\[male\]', 'male' are linearly dependent"),
    Case("AWK-VALUE-046", "predictors collinear only among the complete cases",
         frame_case(lambda: _frame().assign(z=lambda f: np.where(f["lab"].isna(), 1.0, 0.0) * f["age"]),
                    predictors=["age", "z", "lab"]), "notice",
         r"Among the \d+ complete cases the predictors are collinear .*'z'", code="collinear-complete-cases"),
    Case("AWK-CLUSTER-014", "pseudonymised sites", frame_case(_frame, privacy={"pseudonymize_clusters": True}),
         "ok", check=lambda reg: not set(reg.frame["site"]) & set(_frame()["site"])),
]


def _latin1_yaml(tmp: Path) -> Path:
    path = write(tmp)
    path.write_bytes((BASE_YAML + "# café\n").encode("latin-1"))
    return path


def _data_files(tmp: Path) -> dict:
    return {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}


def test_awk_000_corpus_is_large_and_ids_unique():
    """AWK-000: at least 100 cases, each with its own ID."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_awkward_input(case: Case, tmp_path):
    """AWK-*: each awkward input gets its error, its notice, or the right reading (table above); the input
    files are byte-identical afterwards."""
    params = case.make(tmp_path)
    before = _data_files(tmp_path)
    if case.expect == "error":
        with pytest.raises((ParamsError, DataError, HmlibError)) as err:
            load_registry(load_params(params))
        assert re.search(case.pattern, str(err.value)), str(err.value)
        assert "np." not in str(err.value) and "Traceback" not in str(err.value)
    else:
        registry = load_registry(load_params(params))
        if case.expect == "notice":
            found = [n.message for n in registry.notices if n.code == case.code]
            assert any(re.search(case.pattern, m) for m in found), found or [n.message for n in registry.notices]
        else:
            assert case.check(registry), case.what
    assert _data_files(tmp_path) == before
