"""The figures' one style at reading size (issue #13, "Figures"): captions, 9-point text, A4 width, no overlaps.

FIG-STYLE-001  the heatmap's rows are ordered as its caption says: by the share missing of the most incomplete
               variable (then the next), most missing first; suppressed cells sort last
FIG-STYLE-002  the checks can fail: crowded tick labels are counted as overlapping, a 7-point text is found
FIG-STYLE-003  step 1's figures on a simulated registry: captioned, text of 9 points or more, at most A4 wide,
               no overlapping tick labels
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
