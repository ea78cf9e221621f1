"""Steps 4 and 5 end to end on the demo with its focus (lactate) cut into three ordered levels (fast settings).

Issue 17 part B: before, a three-level focus stopped step 4 ("the joint model
sums out incomplete binary predictors only") and made step 5's MNAR family
fail while the verdict still said "robust".

Test IDs
--------
CAT-E2E-001   demo, lactate in 3 ordered levels: step 4 sums the missing levels out over an ordinal submodel and
              writes its artifact and draws; step 5 reuses and reweights those draws (refitting a prior whose weights
              are unreliable), runs the MNAR delta on the log-odds scale,
              and its verdict names every family that did not run; the report's summary repeats that verdict and its
              checklist states the MNAR result as odds ratios, its key message never in SDs
"""

from __future__ import annotations

import platform

import numpy as np
import pandas as pd
import pytest
import yaml

from hmlib.cli import main
from hmlib.report.summary import audit_summary
from hmlib.steps import joint_model as step4
from hmlib.steps import sensitivity as step5
from hmlib.steps.base import StepContext
from hmlib.steps.sensitivity_verdict import FAMILY_TEXT

pytestmark = pytest.mark.slow


def test_cat_e2e_001_steps_4_and_5_on_the_demo_with_a_three_level_focus(tmp_path):
    """CAT-E2E-001: see the module docstring."""
    assert main(["demo", "--root", str(tmp_path)]) == 0
    params = yaml.safe_load((tmp_path / "params" / "demo.yaml").read_text())
    frame = pd.read_csv((tmp_path / "params" / params["data"]).resolve())
    observed = frame["lactate"].dropna()
    cuts = observed.quantile([1 / 3, 2 / 3]).to_numpy()
    band = np.where(frame["lactate"].isna(), np.nan, 1 + np.searchsorted(cuts, frame["lactate"].to_numpy()))
    frame["lactate"] = pd.array(band, dtype="Int64")
    data = tmp_path / "data" / "demo_banded.csv"
    frame.to_csv(data, index=False)
    params.update(name="banded", data=str(data), focus="lactate", fast=True,
                  categorical=sorted(set(params.get("categorical") or []) | {"lactate"}), ordinal=["lactate"])
    params.pop("truth", None)                        # the truth is of the numeric lactate
    path = tmp_path / "params" / "banded.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))

    ctx = StepContext.open(path, tmp_path / "reports" / "banded")
    assert ctx.registry.kinds["lactate"] == "categorical" and ctx.registry.levels["lactate"] == ["1", "2", "3"]
    joint = step4.run(ctx)
    record = step4.JointModelArtifact.read(ctx.output_dir)
    assert record.settings.categorical_summed_out == {"lactate": "ordinal"}
    assert {r["term"] for r in record.estimates} >= {"lactate[2]", "lactate[3]"}
    assert "ordinal (cumulative logit) submodel" in " ".join(record.narrative)
    assert (ctx.output_dir / "artifacts" / step4.POSTERIOR_FILE).is_file()
    del joint

    result = step5.run(ctx)
    sens = step5.SensitivityArtifact.read(ctx.output_dir)
    assert sens.delta_scale == "log odds" and sens.focus_terms == ("lactate[2]", "lactate[3]")
    families = {f.family: f for f in sens.families_run}
    assert families["delta-global"].n_ok > 0 and families["delta-cluster"].n_ok > 0
    assert families["prior"].n_ok == 4                      # from step 4's draws (a prior whose weights are
    how = [s.joint_fit for s in sens.scenarios if s.family == "prior"]   # unreliable is refitted, and says so)
    assert how.count("step 4 fit") == 1 and set(how) <= {"step 4 fit", "importance reweighting", "refit"}
    for fam in families.values():
        if fam.missing:
            assert FAMILY_TEXT[fam.family] in sens.verdict and not sens.verdict.startswith("robust")
    assert any("higher lactate than recorded patients like them" in s for s in sens.narrative)
    assert result.verdict() == sens.verdict

    summary = audit_summary(ctx.output_dir, params=ctx.params, versions={}, hmlib_version="test",
                            python_version=platform.python_version())
    assert f"Sensitivity verdict: {sens.verdict}" in summary.executive
    mnar = next(i for i in summary.checklist if i.item == "Sensitivity to missing not at random")
    assert "odds ratio" in mnar.text and " SD" not in mnar.text
    sensitivity_message = next(m for m in summary.key_messages if "missing at random (MAR:" in m)
    assert " SD" not in sensitivity_message          # log-odds deltas, never said in SDs (SENS-CAT-006)
