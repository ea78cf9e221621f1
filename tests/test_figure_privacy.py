"""Counts below privacy.min_cell never reach the reader through figures: neither in labels nor in the drawn data
(issue #12: "Site 28 (n=1)" in the predictive check; exact retention shares of sites whose table row is suppressed).

FIG-PRIV-001  the predictive-check figure labels a suppressed cluster 'n suppressed' and draws no observed value
FIG-PRIV-002  the retention figure leaves out clusters whose share is suppressed, and says how many
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hmlib.figures.complete_case import retention_plot
from hmlib.figures.joint_model import ppc_by_cluster
from hmlib.figures.style import caption_of
from hmlib.privacy import SUPPRESSED_LABEL


def _texts(fig) -> list[str]:
    out = [t.get_text() for ax in fig.axes for t in ax.get_yticklabels() + ax.get_xticklabels()]
    return (out + [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
            + [caption_of(fig)[1]])


def test_fig_priv_001_predictive_check():
    """FIG-PRIV-001: one cluster with 1 observed value (suppressed in the published table) and one with 40."""
    ppc = pd.DataFrame({
        "cluster": ["Site 28", "Site 07"], "n_observed": [SUPPRESSED_LABEL, 40],
        "observed_mean": [SUPPRESSED_LABEL, 2.5], "replicated_mean": [2.0, 2.4],
        "replicated_mean_lower": [1.0, 2.0], "replicated_mean_upper": [3.0, 2.8],
        "p_mean": [SUPPRESSED_LABEL, 0.4]})
    fig = ppc_by_cluster(ppc, focus="lactate")
    labels = _texts(fig)
    assert "Site 28 (n suppressed)" in labels and "Site 07 (n=40)" in labels
    assert not any("n=1)" in t for t in labels)
    drawn = np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[0].collections if hasattr(c, "get_offsets")
                            and len(c.get_offsets())])
    assert 2.5 in drawn  # the published observed mean is drawn; the suppressed one cannot be


def test_fig_priv_002_retention():
    """FIG-PRIV-002: a 100-patient cluster with 5 dropped (its share would give back the 5) is not drawn."""
    published = pd.DataFrame({
        "cluster": ["A", "B", "C"], "n_all": [100, 200, 150], "n_complete": [SUPPRESSED_LABEL, 150, 120],
        "n_dropped": [SUPPRESSED_LABEL, 50, 30], "retained": [SUPPRESSED_LABEL, 0.75, 0.8],
        "lost": [False, False, False]})
    fig = retention_plot(published, overall_share=0.8, min_cell=11)
    labels = _texts(fig)
    assert "A" not in labels and "B" in labels and "C" in labels
    assert any("1 cluster(s) not shown" in t for t in labels)
