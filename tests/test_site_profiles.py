"""Per-cluster profiles (issue #13, "Navigation"): one site's story from the five steps, within the privacy rules.

SITE-PROFILE-001  every cluster of the demo has one profile with its five parts, and the overview lists it
SITE-PROFILE-002  a cluster whose counts are suppressed in a step's published table shows "suppressed", never
                  the hidden count or a share that gives it back
SITE-PROFILE-003  a leave-out scenario's estimate is the one in the sensitivity artifact
SITE-PROFILE-004  without the later steps' artifacts each part says the step has not run
"""

from __future__ import annotations

import re
import shutil

import pytest

from hmlib.report.site_profiles import profile_id, site_facts, site_profiles_html
from hmlib.report.tables import significant
from test_report import rendered_demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    return rendered_demo(tmp_path_factory)[1]


def _profile(section: str, cluster: str) -> str:
    start = section.index(f'id="{profile_id(cluster)}"')
    return section[start:section.index("</details>", start)]


def test_site_profile_001_every_cluster(demo_folder):
    """SITE-PROFILE-001: 30 profiles (one per site, unique ids), each with its five headings, and 30 overview
    rows."""
    section = site_profiles_html(demo_folder, number=8, noun="site", min_cell=11)
    ids = re.findall(r'<details class="hm-site" id="([^"]+)"', section)
    assert len(ids) == len(set(ids)) == 30
    for cluster in site_facts(demo_folder).clusters:
        text = _profile(section, cluster)
        for part in ("Missing values", "Complete-case analysis", "Imputation: transport check",
                     "Joint model: partial pooling", "Sensitivity analysis"):
            assert f"<h5>{part}</h5>" in text, (cluster, part)
    overview = section.split('id="tbl-site-overview"')[1].split("</table>")[0]
    assert overview.count("<tr>") == 31


def test_site_profile_002_suppressed_counts_stay_hidden(demo_folder):
    """SITE-PROFILE-002: for every site whose retention counts are suppressed in step 2's artifact, the profile
    prints no complete-case count and says they are suppressed; a site whose focus count is suppressed in step
    1 shows 'suppressed' in its missingness row and no share."""
    facts = site_facts(demo_folder)
    section = site_profiles_html(demo_folder, number=8, noun="site", min_cell=11)
    hidden = [c for c, r in facts.retention.items() if r.get("n_complete") == "suppressed"]
    assert hidden, "the demo has sites with suppressed retention counts"
    for cluster in hidden:
        text = _profile(section, cluster)
        assert "counts are suppressed" in text
        assert "Complete-case analysis keeps" not in text
    hidden_focus = [c for c in facts.clusters
                    if facts.focus_row(c) is not None and facts.focus_row(c).share_missing is None]
    assert hidden_focus
    for cluster in hidden_focus:
        row = _profile(section, cluster).split(f"<td class='hm-text'>{facts.focus}</td>")[1].split("</tr>")[0]
        count, share, interval = re.findall(r"<td[^>]*>([^<]*)</td>", row)[:3]
        assert (count, share, interval) == ("suppressed", "suppressed", "")


def test_site_profile_003_leave_out_estimate(demo_folder):
    """SITE-PROFILE-003: the leave-out scenario of a best-documented site quotes the focus estimate of that
    scenario from the sensitivity artifact."""
    facts = site_facts(demo_folder)
    leave = [s for s in facts.scenarios if s.family == "leave-out" and s.status == "ok"]
    assert leave
    scenario = leave[0]
    cluster = scenario.excluded_clusters[0]
    estimate = facts.focus_estimate(scenario.scenario)
    text = _profile(site_profiles_html(demo_folder, number=8, noun="site"), cluster)
    assert f"coefficient to {significant(estimate[0])} (95% CI {significant(estimate[1])}" in text


def test_site_profile_004_missing_steps(demo_folder, tmp_path):
    """SITE-PROFILE-004: with only step 1's artifact, each later part says its step has not run."""
    copy = tmp_path / "copy"
    shutil.copytree(demo_folder, copy)
    for step in ("complete_case", "imputation", "joint_model", "sensitivity"):
        (copy / "artifacts" / f"{step}.json").unlink()
    section = site_profiles_html(copy, number=8, noun="site")
    text = _profile(section, site_facts(copy).clusters[0])
    for step in ("Step 2", "Step 3", "Step 4", "Step 5"):
        assert f"{step} (" in text and "has not run" in text
