"""Last observation carried forward as step 3's named comparator (params ``time``, issue #16).

Test IDs
--------
LOCF-STEP-001  the comparator is planned only with ``time`` in the params, after the four multiple imputations
LOCF-STEP-002  its estimates are the analysis model (random slopes and higher levels included) fitted once to
               last_observation_carried_forward's completed frame: the same coefficients and standard errors,
               between-imputation variance 0, m = 1; it fills the outcome and the time-varying predictors only
LOCF-STEP-003  the notes say how many values were carried and left missing (small counts suppressed) and that the
               standard errors are too small; the FMI table leaves the single imputation out; the key messages
               never count it among the trusted methods
LOCF-STEP-004  the methods text keeps "m imputed data sets" for the multiple imputations and describes LOCF apart
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hmlib.data import load_registry
from hmlib.params import load_params
from hmlib.report.key_messages import DISTRUSTED_BY_DESIGN
from hmlib.simulate.longitudinal import longitudinal_registry
from hmlib.stats.design import fit_analysis_model
from hmlib.stats.imputation.carried_forward import last_observation_carried_forward
from hmlib.steps.imputation import default_methods, methods_text
from hmlib.steps.imputation_locf import carried_columns, locf_spec, run_locf
from hmlib.steps.imputation_result import ImputationStepResult

PARAMS = ("name: t\ndata: d.csv\ncluster: patient\nhigher_levels: [site]\noutcome: y\noutcome_family: gaussian\n"
          "predictors: [x, month, age]\nfocus: x\nrandom_slopes: [month]\nseed: 1\n")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    folder = tmp_path_factory.mktemp("locf")
    frame = longitudinal_registry(4, n_sites=10, n_patients=200, n_visits=6).drop(columns=["visit"])
    rng = np.random.default_rng(1)
    age = pd.Series(rng.normal(60, 10, frame["patient"].nunique()).round(), index=frame["patient"].unique())
    frame["age"] = frame["patient"].map(age)
    frame.loc[frame["patient"] % 9 == 0, "age"] = np.nan          # a patient-level predictor, missing per patient
    frame.to_csv(folder / "d.csv", index=False)
    (folder / "p.yaml").write_text(PARAMS + "time: date\n")
    return load_registry(load_params(folder / "p.yaml"))


def test_locf_step_001_planned_only_with_time():
    """LOCF-STEP-001: see the module docstring."""
    without = [m.label for m in default_methods("patient")]
    with_time = [m.label for m in default_methods("patient", time_column="week")]
    assert without == ["flat_mi", "stratified_mi", "fixed_effects_mi", "multilevel_mi"]
    assert with_time == [*without, "locf"]


def test_locf_step_002_the_single_fit(registry):
    """LOCF-STEP-002: see the module docstring."""
    p = registry.params
    run = run_locf(registry, locf_spec(p.cluster, p.time))
    assert run.ok, run.reason
    frame = registry.frame.assign(date=registry.time_values.to_numpy())
    assert carried_columns(frame, p) == ["x", "y"]          # age is constant within patients: nothing to carry
    done = last_observation_carried_forward(frame, columns=["x", "y"], cluster="patient", time="date").completed
    fit = fit_analysis_model(done, outcome="y", predictors=["x", "month", "age"], cluster="patient",
                             family="gaussian", levels=registry.levels, higher_levels=["site"],
                             random_slopes=["month"])
    expected = fit.to_frame().set_index("term")
    got = run.pooled.to_frame().set_index("term")
    assert list(got.index) == list(expected.index)
    for term in fit.term_names:
        assert got.loc[term, "estimate"] == pytest.approx(expected.loc[term, "estimate"], rel=1e-12)
        assert got.loc[term, "std_error"] == pytest.approx(expected.loc[term, "std_error"], rel=1e-9)
    for term in ("sd(site)", "sd(patient)", "sd(month|patient)", "cor(month|patient)"):
        assert got.loc[term, "estimate"] == pytest.approx(expected.loc[term, "estimate"], rel=1e-9)
    assert run.pooled.m == 1 and np.all(run.pooled.between == 0)
    assert got["n_patients"].iloc[0] == fit.n_obs


def test_locf_step_003_notes_fmi_and_key_messages(registry):
    """LOCF-STEP-003: see the module docstring."""
    p = registry.params
    run = run_locf(registry, locf_spec(p.cluster, p.time))
    text = " ".join(run.notes + list(run.pooled.notes))
    assert "value(s) carried forward" in text and "left missing" in text and "too small" in text
    result = ImputationStepResult.__new__(ImputationStepResult)   # only its runs matter to the FMI table
    result.runs = [run]
    assert result.fmi_table().empty
    assert "locf" in DISTRUSTED_BY_DESIGN


def test_locf_step_004_methods_text(registry):
    """LOCF-STEP-004: see the module docstring."""

    class _Method:
        def __init__(self, spec):
            self.method, self.description = spec.label, spec.description

    class _Record:
        methods = [_Method(s) for s in default_methods("patient", time_column="date")]
        m, iterations = 20, 10

    class _Ev:
        noun = "patient"

    paras = methods_text(_Record(), _Ev())
    assert paras[0].startswith("Multiple imputation: 4 imputation models") and "last observation" not in paras[0]
    assert "Last observation carried forward (LOCF)" in paras[1] and "fitted once" in paras[1]
