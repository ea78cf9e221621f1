"""Names from the data in figures: any script, any length (issue #12).

FIG-TEXT-001  a 470-character cluster name is shortened with an ellipsis in tick labels; titles are not cut
FIG-TEXT-002  CJK names are drawn with an installed CJK font (no missing-glyph boxes), when one is installed
"""

from __future__ import annotations

import io
import warnings

import pandas as pd
import pytest
from matplotlib import font_manager

from hmlib.figures import style
from hmlib.figures.diagnose import missingness_heatmap


def test_fig_text_001_long_names():
    """FIG-TEXT-001: label() keeps at most MAX_LABEL_CHARS characters and ends a shortened name with an ellipsis;
    the heatmap's tick labels use it."""
    long_name = "Regional Hospital " + "x" * 452
    assert len(style.label(long_name)) == style.MAX_LABEL_CHARS and style.label(long_name).endswith("…")
    assert style.label("Site 01") == "Site 01"
    assert style.title("A " * 50).count("\n") >= 1 and "…" not in style.title("A " * 50)
    heat = pd.DataFrame({"lactate": [0.5, 0.2]}, index=[long_name, "Site 02"])
    fig = missingness_heatmap(heat, cluster_noun="site")
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert max(len(t) for t in ticks) <= style.MAX_LABEL_CHARS


def test_fig_text_002_cjk_names():
    """FIG-TEXT-002: with a CJK font installed (Debian fonts-droid-fallback, which make test installs), a figure
    with Chinese and Japanese site names renders without 'missing from font' warnings."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not set(style.FALLBACK_FONTS) & installed:
        pytest.skip("no CJK font installed (apt-get install fonts-droid-fallback; make test does it as root)")
    heat = pd.DataFrame({"乳酸": [0.5, 0.2]}, index=["北京协和医院", "東京病院"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig = missingness_heatmap(heat, cluster_noun="site")
        fig.savefig(io.BytesIO(), format="png")
    assert not [w for w in caught if "missing from font" in str(w.message)]
