"""The figures' one style at reading size (issue #13, "Figures"): captions, 9-point text, A4 width, no overlaps.

FIG-STYLE-001  the heatmap's rows are ordered as its caption says: by the share missing of the most incomplete
               variable (then the next), most missing first; suppressed cells sort last
FIG-STYLE-002  the checks can fail: crowded tick labels are counted as overlapping, a 7-point text is found
FIG-STYLE-003  step 1's figures on a simulated registry: captioned, text of 9 points or more, at most A4 wide,
               no overlapping tick labels
FIG-STYLE-004  the categorical focus's figures (steps 1-5: levels by cluster, level shares, imputed levels, levels
               in never-measuring clusters, the log-odds tipping-point curve) follow the same rules
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from hmlib.figures import diagnose as diagnose_figures
from hmlib.figures import style


def _drawn(fig):
    fig.savefig(io.BytesIO(), format="png", bbox_inches="tight")
    return fig


def test_fig_style_001_heatmap_order():
    """FIG-STYLE-001: a site with 55% of lactate missing comes before one with 31% although their means over
    lactate and sbp (27.5% with sbp at 0%, 31% with sbp suppressed) would order them the other way; ties on lactate
    are broken by sbp; a suppressed lactate cell goes last."""
    heat = pd.DataFrame({"sbp": [0.0, np.nan, 0.05, 0.0, 0.5],
                         "lactate": [0.55, 0.31, 0.10, 0.10, np.nan]},
                        index=["Site 13", "Site 03", "Site 10", "Site 02", "Site 99"])
    fig = diagnose_figures.missingness_heatmap(heat, cluster_noun="site")
    rows = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert rows == ["Site 13", "Site 03", "Site 10", "Site 02", "Site 99"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["lactate", "sbp"]
    key, text = style.caption_of(fig)
    assert key == "missingness-heatmap" and "ordered by the share missing of lactate (then sbp)" in text


def test_fig_style_002_checks_can_fail():
    """FIG-STYLE-002: 40 long tick labels on a 3-inch axis overlap (counted > 0); a 7-point annotation is the
    smallest font."""
    fig, ax = style.new_figure(3, 2)
    ax.set_xticks(range(40), [f"label {i}" for i in range(40)])
    ax.text(0.5, 0.5, "small", fontsize=7)
    _drawn(fig)
    assert style.overlapping_ticks(fig) > 0
    assert style.smallest_font(fig) == 7


@pytest.fixture(scope="module")
def step1_figures():
    from hmlib.simulate.registries import small_registry
    from hmlib.steps.diagnose import diagnose

    frame = small_registry()
    result = diagnose(frame, cluster="site", outcome="died", outcome_family="binomial",
                      predictors=["age", "sex", "lab"], min_cell=5, cluster_noun="site")
    figures = result.figures()
    return [fig for section in figures.values() for fig in section]


def test_fig_style_003_step1_figures(step1_figures):
    """FIG-STYLE-003: each figure of step 1 has a key and a caption of a sentence or more, no text under 9 points,
    a drawn width of at most MAX_WIDTH_IN inches (so print does not shrink it) and no overlapping tick labels."""
    assert len(step1_figures) >= 3
    for fig in step1_figures:
        key, text = style.caption_of(fig)
        assert key and len(text) > 40, key
        _drawn(fig)
        assert style.smallest_font(fig) >= style.MIN_FONT_PT, key
        assert fig.get_figwidth() <= style.MAX_WIDTH_IN + 1e-9, key
        assert style.overlapping_ticks(fig) == 0, key


def _check(fig):
    key, text = style.caption_of(fig)
    assert key and len(text) > 40, key
    _drawn(fig)
    assert style.smallest_font(fig) >= style.MIN_FONT_PT, key
    assert fig.get_figwidth() <= style.MAX_WIDTH_IN + 1e-9, key
    assert style.overlapping_ticks(fig) == 0, key
    assert not (fig._suptitle and fig._suptitle.get_text()), key      # a caption, not a drawn title
    return key


def test_fig_style_004_categorical_figures(tmp_path):
    """FIG-STYLE-004: the figures a categorical focus adds (cat-a/cat-b) are captioned, have no drawn title,
    no text under 9 points, are at most MAX_WIDTH_IN wide and have no overlapping tick labels: step 1's levels
    by cluster and step 2's level shares on the 3-level reference registry (tests/results/categorical_registry.csv),
    step 3's observed vs imputed level shares, step 4's levels in never-measuring clusters and step 5's
    tipping-point curve (one line per level, log-odds scale) on tables shaped as the steps publish them."""
    from types import SimpleNamespace

    import yaml

    from conftest import REFERENCE
    from hmlib.data import load_registry
    from hmlib.figures import imputation as imputation_figures
    from hmlib.figures import joint_model as joint_figures
    from hmlib.figures import sensitivity as sensitivity_figures
    from hmlib.params import load_params
    from hmlib.steps.complete_case import complete_case_check
    from hmlib.steps.diagnose import diagnose_registry

    (tmp_path / "p.yaml").write_text(yaml.safe_dump({
        "name": "t", "data": str(REFERENCE / "categorical_registry.csv"), "seed": 1, "cluster": "site",
        "outcome": "outcome", "outcome_family": "binomial", "predictors": ["lactate_band", "age", "severity"],
        "focus": "lactate_band"}))
    registry = load_registry(load_params(tmp_path / "p.yaml"))
    keys = [_check(diagnose_registry(registry).figures()["by_cluster"][-1])]
    keys.append(_check(complete_case_check(registry).figures()["shift"][-1]))

    levels = ["high", "normal", "raised"]
    rows = [{"cluster": c, "source": source, "level": level, "share": share}
            for c in ("Site 07", "Site 12", "Site 31")
            for source in ("observed", "flat_mi", "fixed_effects_mi", "multilevel_mi")
            for level, share in zip(levels, (0.2, 0.5, 0.3)) if not (c == "Site 31" and source == "observed")]
    clusters = pd.DataFrame({"cluster": ["Site 07", "Site 12", "Site 31"], "n_missing": [120, "suppressed", 64],
                             "never_observed": [False, False, True]})
    keys.append(_check(imputation_figures.level_distribution_plot(pd.DataFrame(rows), clusters,
                                                                  focus="lactate_band", levels=levels)))

    unmeasured = {"clusters": ["Site 31", "Site 33"], "n_patients": 140, "levels": levels,
                  "imputed": {"mean": 1.0}, "observed": {"mean": 1.1},
                  "histogram": {"edges": [-0.5, 0.5, 1.5, 2.5], "imputed_density": [0.25, 0.45, 0.3],
                                "observed_density": [0.2, 0.5, 0.3]}}
    keys.append(_check(joint_figures.imputed_distribution(unmeasured, focus="lactate_band")))

    deltas = np.linspace(-2, 2, 9)
    curve = pd.DataFrame([{"mode": mode, "term": term, "delta_sd": d, "estimate": base + 0.3 * d,
                           "ci_lower": base + 0.3 * d - 0.4, "ci_upper": base + 0.3 * d + 0.4,
                           "source": "primary" if d == 0 else "grid", "changed": base + 0.3 * d - 0.4 > 0}
                          for mode in ("global", "cluster") for term, base in
                          (("lactate_band[normal]", -1.2), ("lactate_band[raised]", -0.6)) for d in deltas])
    result = SimpleNamespace(delta_curve=curve, delta_scale="log odds", focus="lactate_band",
                             focus_terms=["lactate_band[normal]", "lactate_band[raised]"], observed_sd=float("nan"),
                             settings=SimpleNamespace(null_value=0.0),
                             tipping={"global": {"positive": {"found": True, "delta_sd": 1.33}}})
    fig = sensitivity_figures.tipping_point_curve(result)
    keys.append(_check(fig))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["lactate_band[normal]", "lactate_band[raised]"]
    assert "odds ratio" in style.caption_of(fig)[1]
    assert keys == ["level-mix-lactate_band", "level-shares", "imputed-distributions-levels",
                    "imputed-unmeasured", "tipping-point"]


def test_fig_style_005_separated_labels_do_not_overlap():
    """FIG-STYLE-005: 20 leader-lined labels on one point (20 sites at the same missing share in a funnel plot of
    hundreds of sites: the trial-shaped registry's case) end with no two label texts overlapping, each label
    moved only vertically; leader lines are not counted as text (style.text_extent)."""
    fig, ax = style.new_figure(6.8, 4.3)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1)
    notes = [ax.annotate(f"site {k:03d}", (50, 0.5), xytext=(5, 3), textcoords="offset points",
                         fontsize=style.SMALL_FONT_PT, arrowprops={"arrowstyle": "-", "lw": 0.4})
             for k in range(20)]
    _drawn(fig)
    assert style.overlapping_ticks(fig) > 0          # stacked on one point: the check sees it
    style.separate_labels(fig, notes)
    _drawn(fig)
    assert style.overlapping_ticks(fig) == 0
    assert {n.xyann[0] for n in notes} == {5}
    assert len({round(n.xyann[1], 3) for n in notes}) == 20
