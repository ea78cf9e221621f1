"""One profile per cluster: its story, gathered from the five steps.

A cluster's story is spread over the report: its missingness (step 1), how
many of its patients complete-case analysis keeps (step 2), whether the
pooled imputation model reproduces it (step 3's transport check), how far
the joint model shrinks it (step 4) and whether leaving it out moves the
sensitivity verdict (step 5). This section gathers them: an overview table
(one row per cluster) and a folded profile per cluster, opened from a
picker (or by a link to ``#site-<name>``).

Everything comes from the step artifacts as published, so the privacy
rules hold by construction: a count below ``privacy.min_cell`` is already
``"suppressed"`` (or ``None``) in the artifacts, and this module only
formats published values, derives nothing from them, and says
"suppressed" where they are. Missing steps leave their part out with a
sentence.
"""

from __future__ import annotations

import html
import re

import pandas as pd

from hmlib.methods import method_label
from hmlib.report.labels import ColumnLabel
from hmlib.report.tables import prepare_table, significant, slug, table_html
from hmlib.steps import get_step
from hmlib.wording import is_number

__all__ = ["site_profiles_html", "profile_id", "SiteFacts", "site_facts"]

_SUPPRESSED = "suppressed"


def profile_id(cluster) -> str:
    """The id of a cluster's profile (``site-site-04``)."""
    return f"site-{slug(cluster, 60)}"


def _num(value, digits: int = 3) -> str:
    return significant(value, digits) if is_number(value) else (_SUPPRESSED if value == _SUPPRESSED else "")


def _pct(value) -> str:
    return f"{100 * float(value):.1f}%" if is_number(value) else (_SUPPRESSED if value == _SUPPRESSED else "")


class SiteFacts:
    """The published facts of every cluster, read from the step artifacts of one report folder.

    Attributes
    ----------
    clusters : list of str
        Every cluster, in the order of step 1's table (or step 2's, or step 4's).
    focus : str or None
    missing : dict
        ``{cluster: [ClusterRow, ...]}`` of step 1 (incomplete variables only).
    retention : dict
        ``{cluster: row dict}`` of step 2's published retention table.
    transport : dict
        ``{cluster: [row dict per method]}`` of step 3's published transport check.
    pooling : dict
        ``{cluster: PartialPoolingRow}`` of step 4.
    scenarios : list
        Step 5's ``ScenarioRecord`` rows; ``grid`` its estimates, ``primary`` the primary's.
    """

    def __init__(self, output_dir):
        diagnose = get_step("diagnose").read_artifact(output_dir)
        complete = get_step("complete_case").read_artifact(output_dir)
        imputation = get_step("imputation").read_artifact(output_dir)
        joint = get_step("joint_model").read_artifact(output_dir)
        sensitivity = get_step("sensitivity").read_artifact(output_dir)
        self.focus = None
        self.missing: dict = {}
        #: a categorical focus's reference level (step 4 pools the share of patients outside it), else None
        self.reference_level = None
        if diagnose is not None:
            self.focus = diagnose.settings.focus
            if diagnose.focus_levels is not None and diagnose.focus_levels.levels:
                self.reference_level = str(diagnose.focus_levels.levels[0])
            incomplete = set(diagnose.incomplete_variables)
            for row in diagnose.by_cluster:
                if row.variable in incomplete:
                    self.missing.setdefault(str(row.cluster), []).append(row)
        self.retention = {str(r["cluster"]): r for r in (complete.retention if complete is not None else [])}
        self.transport: dict = {}
        self.transport_methods: tuple = ()
        if imputation is not None and imputation.transport is not None:
            self.transport_methods = tuple(imputation.transport.methods)
            for r in imputation.transport.table:
                self.transport.setdefault(str(r["cluster"]), []).append(r)
        self.pooling = {str(r.cluster): r for r in (joint.partial_pooling if joint is not None else ())}
        if joint is not None and self.focus is None:
            self.focus = joint.focus
        self.scenarios = list(sensitivity.scenarios) if sensitivity is not None else []
        self.grid = pd.DataFrame(sensitivity.grid) if sensitivity is not None else pd.DataFrame()
        self.primary = pd.DataFrame(sensitivity.primary) if sensitivity is not None else pd.DataFrame()
        self.focus_term = sensitivity.focus_terms[0] if sensitivity is not None and sensitivity.focus_terms else None
        self.n_influential = sensitivity.settings.n_influential if sensitivity is not None else 0
        self.has_steps = {"diagnose": diagnose is not None, "complete_case": complete is not None,
                          "imputation": imputation is not None, "joint_model": joint is not None,
                          "sensitivity": sensitivity is not None}
        order = list(self.missing) or list(self.retention) or list(self.pooling)
        self.clusters = sorted(dict.fromkeys([*order, *self.retention, *self.pooling]), key=_natural)

    def focus_row(self, cluster):
        """Step 1's row of the focus variable in ``cluster`` (or None)."""
        for row in self.missing.get(cluster, []):
            if row.variable == self.focus:
                return row
        return None

    def focus_estimate(self, scenario: str):
        """``(estimate, ci_lower, ci_upper)`` of the focus term in a scenario (``"primary"`` for the primary)."""
        if self.focus_term is None:
            return None
        if scenario == "primary":
            rows = self.primary.loc[self.primary["term"] == self.focus_term] if len(self.primary) else self.primary
        else:
            grid = self.grid
            rows = grid.loc[(grid["scenario"] == scenario) & (grid["term"] == self.focus_term)] if len(grid) else grid
        if not len(rows):
            return None
        r = rows.iloc[0]
        return r["estimate"], r["ci_lower"], r["ci_upper"]


def _natural(text):
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text))]


def _hidden(row, name: str) -> str:
    """A value step 1 left out: "suppressed" when its small-cell rule hid it, blank otherwise."""
    return _SUPPRESSED if name in row.suppressed else ""


def site_facts(output_dir) -> SiteFacts:
    """The published per-cluster facts of a report folder (:class:`SiteFacts`)."""
    return SiteFacts(output_dir)


# --------------------------------------------------------------------------
# One cluster's profile
# --------------------------------------------------------------------------
def _missing_part(facts: SiteFacts, cluster: str, noun: str) -> str:
    esc = html.escape
    rows = facts.missing.get(cluster)
    if not facts.has_steps["diagnose"]:
        return "<p>Step 1 (diagnose) has not run.</p>"
    if not rows:
        return f"<p>No analysis variable is missing in this {esc(noun)}.</p>"
    body = []
    for r in rows:
        share = _pct(r.share_missing) if is_number(r.share_missing) else _hidden(r, "share_missing")
        ci = (f"{_pct(r.ci_lower)} to {_pct(r.ci_upper)}" if is_number(r.ci_lower) and is_number(r.ci_upper)
              else "")
        count = _num(r.n_missing) if is_number(r.n_missing) else _hidden(r, "n_missing")
        body.append(f"<tr><td class='hm-text'>{esc(str(r.variable))}</td><td class='hm-num'>{esc(count)}</td>"
                    f"<td class='hm-num'>{esc(share)}</td><td class='hm-num'>{esc(ci)}</td>"
                    f"<td class='hm-text'>{esc(r.gap_type or '')}</td>"
                    f"<td class='hm-text'>{esc(r.funnel_position or '')}</td></tr>")
    size = rows[0].n
    lead = f"<p>{esc(_num(size))} patients.</p>" if is_number(size) else ""
    return (f"{lead}<table class='hm-table'><thead><tr><th class='hm-text'>Variable</th><th class='hm-num'>Missing"
            "</th><th class='hm-num'>Missing (%)</th><th class='hm-num'>95% CI</th><th class='hm-text'>Gap</th>"
            f"<th class='hm-text'>Funnel plot</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def _retention_part(facts: SiteFacts, cluster: str, noun: str) -> str:
    if not facts.has_steps["complete_case"]:
        return "<p>Step 2 (complete-case check) has not run.</p>"
    r = facts.retention.get(cluster)
    if r is None:
        return f"<p>This {html.escape(noun)} has no row in the retention table.</p>"
    if r.get("lost"):
        return (f"<p>Lost entirely: none of its {_num(r.get('n_all'))} patients is a complete case, so "
                f"complete-case analysis leaves this {html.escape(noun)} out.</p>")
    if r.get("retained") == _SUPPRESSED:
        return ("<p>Its counts are suppressed (a number below the small-cell threshold could be recovered "
                "from them).</p>")
    return (f"<p>Complete-case analysis keeps {_num(r.get('n_complete'))} of its {_num(r.get('n_all'))} patients "
            f"({_pct(r.get('retained'))}); its share of the analysed patients is {_pct(r.get('share_after'))}, "
            f"against {_pct(r.get('share_before'))} of all patients.</p>")


def _transport_part(facts: SiteFacts, cluster: str, noun: str) -> str:
    if not facts.has_steps["imputation"]:
        return "<p>Step 3 (imputation) has not run.</p>"
    rows = facts.transport.get(cluster)
    if not rows:
        return (f"<p>Not part of the transport check (it checks the {html.escape(noun)}s with most observed "
                "values of the focus variable).</p>")
    parts = []
    for r in rows:
        bias, cover = r.get("bias_sd"), r.get("coverage")
        if not is_number(bias):
            parts.append(f"{method_label(r['method'])}: suppressed (fewer values than the small-cell threshold)")
            continue
        flag = "flagged" if r.get("flagged") else "not flagged"
        parts.append(f"{method_label(r['method'])}: mean imputed minus mean observed {float(bias):+.2f} SD, "
                     f"{_pct(cover)} of masked values inside their intervals ({flag})")
    return ("<p>Masked and imputed from the other " + html.escape(noun) + "s: "
            + html.escape("; ".join(parts)) + ".</p>")


def _pooling_part(facts: SiteFacts, cluster: str, noun: str) -> str:
    if not facts.has_steps["joint_model"]:
        return "<p>Step 4 (joint model) has not run.</p>"
    r = facts.pooling.get(cluster)
    if r is None:
        return f"<p>This {html.escape(noun)} is not in the joint model's partial-pooling table.</p>"
    focus = html.escape(str(facts.focus))
    shrink = r.shrinkage
    if not r.measured:
        return (f"<p>Never measured {focus}: its level is drawn entirely from the other {html.escape(noun)}s "
                f"(pooled effect {_num(r.pooled_effect)}, posterior SD {_num(r.pooled_effect_sd)}).</p>")
    how = ("keeps its own level" if is_number(shrink) and shrink < 0.2 else
           "is pulled most of the way to the average" if is_number(shrink) and shrink > 0.6 else
           "is pulled part of the way to the average")
    own = (f"own effect {_num(r.raw_effect)}" if is_number(r.raw_effect)
           else "own effect suppressed (few observed values)")
    mean = (f"its share of patients whose {focus} is not '{html.escape(facts.reference_level)}'"
            if facts.reference_level is not None else f"its mean {focus}")
    return (f"<p>Cluster effect on {focus}: {own}, partially pooled {_num(r.pooled_effect)} "
            f"(shrinkage {_num(shrink, 2)}: it {how}); posterior SD of {mean} "
            f"{_num(r.pooled_mean_sd)}.</p>")


def _sensitivity_part(facts: SiteFacts, cluster: str, noun: str) -> str:
    if not facts.has_steps["sensitivity"]:
        return "<p>Step 5 (sensitivity analysis) has not run.</p>"
    esc = html.escape
    term = esc(str(facts.focus_term))
    primary = facts.focus_estimate("primary")
    leave = [s for s in facts.scenarios if s.family == "leave-out" and cluster in s.excluded_clusters]
    excluded = [s for s in facts.scenarios if s.family != "leave-out" and cluster in s.excluded_clusters]
    parts = []
    for s in leave:
        est = facts.focus_estimate(s.scenario)
        if s.status != "ok" or est is None:
            parts.append(f"Leaving it out failed: {esc(s.reason)}.")
            continue
        verdict = "changes the conclusion" if s.changed_conclusion else "does not change the conclusion"
        base = f" (primary {_num(primary[0])})" if primary else ""
        parts.append(f"Leaving it out moves the {term} coefficient to {_num(est[0])} (95% CI {_num(est[1])} to "
                     f"{_num(est[2])}){base} and {verdict}.")
    if not leave:
        parts.append(f"Not among the {facts.n_influential} best-documented {esc(noun)}s left out one at a time.")
    if excluded:
        names = ", ".join(esc(s.scenario) for s in excluded)
        changed = [s.scenario for s in excluded if s.changed_conclusion]
        tail = (f"; the conclusion changes in {esc(', '.join(changed))}" if changed
                else "; none of them changes the conclusion")
        parts.append(f"Left out in {len(excluded)} exclusion scenario(s) ({names}){tail}.")
    else:
        parts.append("Kept in every exclusion scenario.")
    return "<p>" + " ".join(parts) + "</p>"


def _profile_html(facts: SiteFacts, cluster: str, noun: str) -> str:
    esc = html.escape
    focus_row = facts.focus_row(cluster)
    bits = []
    if focus_row is not None:
        share = _pct(focus_row.share_missing) if focus_row.share_missing is not None else _SUPPRESSED
        bits.append(f"{facts.focus} missing {share}")
    retention = facts.retention.get(cluster)
    if retention is not None:
        bits.append("lost in complete-case analysis" if retention.get("lost")
                    else f"kept {_pct(retention.get('retained'))}")
    summary = f"{esc(str(cluster))}" + (f" <span class='hm-site-gist'>({esc('; '.join(bits))})</span>" if bits else "")
    parts = [("Missing values", _missing_part), ("Complete-case analysis", _retention_part),
             ("Imputation: transport check", _transport_part), ("Joint model: partial pooling", _pooling_part),
             ("Sensitivity analysis", _sensitivity_part)]
    # h5: the parts of a profile are not sections of the report (the contents panel lists h2 to h4)
    body = "".join(f"<h5>{title}</h5>{part(facts, cluster, noun)}" for title, part in parts)
    return (f'<details class="hm-site" id="{profile_id(cluster)}"><summary>{summary}</summary>{body}'
            '<p class="hm-totop"><a href="#site-profiles">Back to the site list</a></p></details>')


def _overview_table(facts: SiteFacts) -> pd.DataFrame:
    rows = []
    for cluster in facts.clusters:
        focus_row = facts.focus_row(cluster)
        retention = facts.retention.get(cluster, {})
        pooling = facts.pooling.get(cluster)
        leave = [s for s in facts.scenarios if s.family == "leave-out" and cluster in s.excluded_clusters]
        excluded = [s for s in facts.scenarios if s.family != "leave-out" and cluster in s.excluded_clusters]
        flagged = [method_label(r["method"]) for r in facts.transport.get(cluster, []) if r.get("flagged")]
        rows.append({
            "cluster": cluster,
            "n": focus_row.n if focus_row is not None else retention.get("n_all"),
            "focus_missing": (focus_row.share_missing if focus_row is not None and focus_row.share_missing is not None
                              else (_SUPPRESSED if focus_row is not None else None)),
            "retained": retention.get("retained"),
            "shrinkage": pooling.shrinkage if pooling is not None else None,
            "transport_flagged": ", ".join(flagged) if facts.transport.get(cluster) else "not checked",
            "excluded_in": len(excluded),
            "leave_out": ("changes the conclusion" if any(s.changed_conclusion for s in leave)
                          else "no change" if leave else ""),
        })
    return pd.DataFrame(rows)


def site_profiles_html(output_dir, *, number: int, noun: str = "cluster", min_cell: int = 11) -> str:
    """The profiles section (markdown cell content): heading, overview table, picker and one profile per cluster.

    Parameters
    ----------
    output_dir : pathlib.Path
        The report folder (its artifacts are read).
    number : int
        Section number.
    noun : str
        The report's word for a cluster.
    min_cell : int
        The small-cell threshold (named in the text; the artifacts already apply it).
    """
    esc = html.escape
    facts = site_facts(output_dir)
    title = f"{noun[:1].upper() + noun[1:]} profiles"
    head = f'<a id="site-profiles"></a>\n\n## {number}. {esc(title)}\n\n'
    if not facts.clusters:
        return head + f"<p>No step has written a per-{esc(noun)} table yet.</p>\n"
    focus = str(facts.focus)
    prepared = prepare_table(_overview_table(facts), noun=noun, labels={
        "focus_missing": ColumnLabel(f"{focus} missing (%)", "share"),
        "retained": ColumnLabel("Kept by complete-case analysis (%)", "share"),
        "shrinkage": ColumnLabel("Joint-model shrinkage", "number"),
        "transport_flagged": ColumnLabel("Transport check flags", "text"),
        "excluded_in": ColumnLabel("Left out in exclusion scenarios", "count"),
        "leave_out": ColumnLabel("Leaving it out", "text")})
    table = table_html(prepared, caption=f"Every {noun} at a glance: the focus variable's missingness, complete-case "
                       f"retention, shrinkage in the joint model, the imputation transport check and the "
                       f"sensitivity scenarios that leave it out (counts below {min_cell} suppressed)",
                       key="site-overview", collapse_rows=10 ** 6)
    options = "".join(f'<option value="{profile_id(c)}">{esc(str(c))}</option>' for c in facts.clusters)
    picker = (f'<div class="hm-site-picker"><label for="hm-site-picker">Open the profile of a {esc(noun)}: </label>'
              f'<select id="hm-site-picker"><option value="">choose a {esc(noun)}</option>{options}</select></div>')
    intro = (f"<p>Each {esc(noun)}'s story from the five steps, read from their published tables (counts below "
             f"{min_cell} are suppressed there and here). Choose a {esc(noun)} below, or open its profile from "
             "the list.</p>")
    profiles = "".join(_profile_html(facts, c, noun) for c in facts.clusters)
    note = ('<p class="hm-print-only"><em>The per-' + esc(noun) + " profiles are in the HTML report.</em></p>")
    return head + f'<div class="hm-site-profiles">{intro}{table}{picker}{profiles}{note}</div>\n'
