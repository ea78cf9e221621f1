"""Rendering executed notebooks and joining them into ``report.html``.

The report is one self-contained HTML file (images embedded, no script or
style fetched from the network: the nbconvert template's require.js, MathJax
and mermaid loaders are left out): a title block (with ``estimates.csv``
as a download inside the page), the key messages and the findings step by
step, how to read the report, each step's narrative and figures (code hidden
unless ``--show-code``), a plain "not built yet" section for steps that do
not exist yet, the methods, the limitations and reporting checklist
(:mod:`hmlib.report.summary`), a profile per cluster
(:mod:`hmlib.report.site_profiles`), the glossary (its terms linked from
their first use, :mod:`hmlib.report.glossary`) and a reproducibility
appendix. The contents panel, the numbering of figures and tables and the
page style are added to nbconvert's page by
:func:`hmlib.report.page.finish_page`.

Everything that comes from the data or the params is HTML-escaped before it
is placed in markdown; tables are rendered by pandas with escaping on.
"""

from __future__ import annotations

import html
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nbformat
import pandas as pd

from hmlib import __version__
from hmlib.report.glossary import glossary_html, how_to_read_html, link_first_uses
from hmlib.report.labels import ColumnLabel
from hmlib.report.page import CONTENTS_SLOT, finish_page
from hmlib.report.site_profiles import site_profiles_html
from hmlib.report.summary import audit_summary
from hmlib.report.tables import data_uri, prepare_table, table_html
from hmlib.results import atomic_write_text
from hmlib.steps import STEPS, get_step
from hmlib.wording import cluster_noun, plural, row_noun

__all__ = ["render_notebook", "assemble_report", "write_index", "package_versions", "git_commit",
           "step_run_times"]

_REPORT_PACKAGES = ("numpy", "scipy", "pandas", "statsmodels", "pymc", "nutpie", "arviz",
                    "matplotlib", "seaborn", "papermill", "nbconvert")
_HIDDEN_TAGS = {"parameters", "injected-parameters", "remove-from-report"}


def package_versions() -> dict[str, str]:
    """Versions of the packages the report depends on."""
    found = {}
    for name in _REPORT_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# The lab template loads require.js, MathJax and mermaid from a CDN. The report
# uses none of them, and a reviewer may open it offline (or behind a proxy
# that blocks the CDN, which shows up as console errors): leave them out.
_OFFLINE_TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _exporter(show_code: bool):
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", exclude_input=not show_code,
                        exclude_input_prompt=True, exclude_output_prompt=True,
                        embed_images=True,
                        extra_loaders=[DictLoader({"hmlib_offline.html.j2": _OFFLINE_TEMPLATE})],
                        template_file="hmlib_offline.html.j2")


def git_commit(path: str | Path | None = None) -> str:
    """The git commit of the hmlib checkout (``<sha>``, ``<sha> with uncommitted changes``),
    or ``not a git checkout``."""
    repo = Path(path) if path is not None else Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return "not a git checkout"
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "a git checkout, but git could not read its commit"
    return f"{sha} with uncommitted changes" if dirty else sha


def step_run_times(output_dir: str | Path, step_seconds: dict | None = None) -> list[dict]:
    """Run time of each executed step, this run's or, for steps not re-run, the earlier one's.

    Times of this run come from ``step_seconds``; the others from the
    papermill record in the executed notebook (``metadata.papermill``), so
    ``--only`` keeps the earlier steps' times.

    Returns
    -------
    list of dict
        ``step, seconds, finished, this_run, fast`` per executed step, in step order.
    """
    output_dir = Path(output_dir)
    step_seconds = step_seconds or {}
    rows = []
    for step in STEPS:
        executed = output_dir / "notebooks" / step.notebook
        if not executed.is_file():
            continue
        try:
            meta = json.loads(executed.read_text(encoding="utf-8")).get("metadata", {}).get("papermill", {})
        except (OSError, ValueError):
            meta = {}
        seconds = step_seconds.get(step.key, meta.get("duration"))
        rows.append({"step": step.key, "seconds": seconds, "finished": meta.get("end_time"),
                     "this_run": step.key in step_seconds,
                     "fast": (meta.get("parameters") or {}).get("fast")})
    return rows


def _report_cells(nb) -> list:
    """Cells of an executed notebook as the reader should see them.

    Parameter cells are dropped and stderr streams (library warnings, sampler
    chatter) are removed: they are kept in the executed notebook for the
    analyst, not shown to the reviewer.
    """
    cells = []
    for cell in nb.cells:
        if _HIDDEN_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue
        if cell.cell_type == "code":
            cell = nbformat.from_dict(dict(cell))
            cell.outputs = [o for o in cell.get("outputs", [])
                            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        cells.append(cell)
    return cells


def render_notebook(path: str | Path, dest: str | Path, *, show_code: bool = False) -> Path:
    """Render one executed notebook to a self-contained HTML file."""
    nb = nbformat.read(str(path), as_version=4)
    if not show_code:
        nb.cells = _report_cells(nb)
    body, _ = _exporter(show_code).from_notebook_node(
        nb, resources={"metadata": {"name": Path(path).stem}})
    return atomic_write_text(dest, finish_page(body, title=Path(path).stem))


def _markdown(text: str):
    return nbformat.v4.new_markdown_cell(text)


def _text(value) -> str:
    """Escaped text for an HTML block: no newline, so markdown never ends the block early."""
    return html.escape(" ".join(str(value).split()))


def _summary_html(summary) -> str:
    keys = "".join(f"<li>{_text(sentence)}</li>" for sentence in summary.key_messages)
    items = "".join(f"<li>{_text(sentence)}</li>" for sentence in summary.executive)
    return ('<a id="key-messages"></a>\n\n## Key messages\n\n'
            f'<div class="hm-key-messages"><ul>{keys}</ul></div>\n\n'
            '<a id="executive-summary"></a>\n\n## Findings step by step\n\n'
            f'<div class="hm-summary"><ul>{items}</ul>'
            "<p><em>Every number above is read from this report's step artifacts and estimates.csv.</em></p>"
            "</div>\n")


def _missing_table_html(table, noun: str) -> str:
    """The summary's missing-values table as a report table block (labels, CSV; suppressed cells say so)."""
    if table is None or not len(table):
        return ""
    shown = table[["variable", "n", "n_missing", "share_missing", "clusters_with_missing",
                   "clusters_never_recorded"]].astype(object).where(lambda t: t.notna(), "suppressed")
    prepared = prepare_table(shown, noun=noun, labels={
        "clusters_with_missing": ColumnLabel(f"{noun.capitalize()}s with any missing", "count"),
        "clusters_never_recorded": ColumnLabel(f"{noun.capitalize()}s never recording it", "count")})
    return table_html(prepared, caption="Missing values by variable (counts below the small-cell threshold "
                      "suppressed)", key="summary-missing", collapse_rows=None)


def _methods_html(summary, number: int) -> str:
    paras = "".join(f"<p>{_text(p)}</p>" for p in summary.methods)
    return f'<a id="methods"></a>\n\n## {number}. Methods\n\n<div class="hm-methods">{paras}</div>\n'


def _limitations_html(summary, number: int, noun: str = "cluster") -> str:
    checklist = pd.DataFrame([{"item": c.item, "guideline": c.guideline, "answer": c.text}
                              for c in summary.checklist], columns=["item", "guideline", "answer"])
    prepared = prepare_table(checklist, long_text_below=False, labels={  # the answers are the table
        "item": ColumnLabel("Item", "text"), "guideline": ColumnLabel("Guideline", "text"),
        "answer": ColumnLabel("This report", "text")})
    return (f'<a id="limitations"></a>\n\n## {number}. Limitations and reporting checklist\n\n'
            '<div class="hm-limitations"><p>The items reviewers expect for missing data (Sterne et al. 2009, '
            "BMJ 338:b2393; STROBE 12c and 14b; TRIPOD 9 and 13b), answered with this report's numbers.</p>"
            f"{_missing_table_html(summary.missing_table, noun)}"
            f"{table_html(prepared, caption='Reporting checklist', key='checklist', collapse_rows=None)}</div>\n")


def _timing_html(rows) -> str:
    if not rows:
        return "no step has been executed"
    parts = []
    for r in rows:
        seconds = f"{r['seconds']:.1f} s" if isinstance(r["seconds"], (int, float)) else "time not recorded"
        when = "this run" if r["this_run"] else f"earlier run, finished {r['finished'] or 'at an unrecorded time'}"
        fast = "" if r["fast"] is None else (", fast mode" if r["fast"] else ", full settings")
        parts.append(f"{r['step']} {seconds} ({when}{fast})")
    return "; ".join(parts)


def _estimates_link(output_dir: Path) -> str:
    """``estimates.csv`` as a download inside the page (a data URI: the report stays one file)."""
    path = output_dir / "estimates.csv"
    if not path.is_file():
        return "no estimates.csv was written"
    text = path.read_text(encoding="utf-8")
    rows = max(len(text.splitlines()) - 1, 0)
    return (f'<a class="hm-estimates-link" download="estimates.csv" href="{data_uri(text)}">'
            f"estimates.csv</a> ({rows} rows: every method's estimates, one row per term)")


def _title_cell(registry, output_dir: Path, now: str):
    params = registry.params
    esc = html.escape
    return _markdown(
        f"# Missing-data audit: {esc(params.name)}\n\n"
        f"Data: `{esc(params.data.name)}` (SHA-256 `{registry.data_sha256[:16]}…`), "
        f"{registry.n_patients:,} {plural(row_noun(params.time))} in {registry.n_clusters:,} clusters "
        f"(`{esc(params.cluster)}`); outcome `{esc(params.outcome)}` ({params.outcome_family}); "
        f"focus variable `{esc(str(params.focus))}`.  \n"
        f"Generated {now} by hmlib {__version__}"
        f"{' in fast mode (small settings: not for reporting)' if params.fast else ''}. "
        f"Download: {_estimates_link(output_dir)}.")


def _step_cells(output_dir: Path, params, show_code: bool) -> list:
    """Each step's cells, or its "not run" / "not built yet" section."""
    esc = html.escape
    body: list = []
    for step in STEPS:
        executed = output_dir / "notebooks" / step.notebook
        anchor = f'<a id="{step.anchor}"></a>'
        heading = f"{anchor}\n\n## {step.number}. {esc(step.title)}"
        if step.is_built and executed.is_file():
            body.append(_markdown(anchor))  # the notebook's own first cell is the section heading
            nb = nbformat.read(str(executed), as_version=4)
            body.extend(_report_cells(nb) if not show_code else nb.cells)
        elif step.is_built:
            body.append(_markdown(
                f"{heading}\n\n**Not run in this report.** Run it with "
                f"`hmreport run {esc(str(params.source.name))} --only {step.key}`."))
        else:
            body.append(_markdown(
                f"{heading}\n\n**Not built yet** in hmlib {__version__} (its notebook "
                f"`{esc(step.notebook)}` is absent). No result of this step is shown, and nothing in "
                "this report should be read as its finding."))
    return body


def _reproducibility_cell(registry, output_dir: Path, number: int, versions: dict, step_seconds):
    params = registry.params
    esc = html.escape
    # params as run: the file's values with the --fast override and the resolved focus
    params_text = json.dumps(params.as_run(), indent=1, sort_keys=True, default=str)
    timing = _timing_html(step_run_times(output_dir, step_seconds))
    joint = get_step("joint_model").read_artifact(output_dir)
    joint_seed = joint.settings.seed if joint is not None else None
    seeds = f"params seed {params.seed} (every imputation, the transport check and the sensitivity scenarios)"
    if joint_seed is not None:
        seeds += f"; joint model sampler seed {joint_seed}"
    return _markdown(
        '<a id="reproducibility"></a>\n\n'
        f"## {number}. Reproducibility\n\n"
        f"- hmlib {__version__}, git commit: {esc(git_commit())}\n"
        f"- Python {platform.python_version()} ({esc(sys.implementation.name)}) on {esc(platform.platform())}, "
        f"{esc(platform.machine())}\n"
        f"- Packages: {esc(', '.join(f'{k} {v}' for k, v in versions.items()))}\n"
        f"- Input file: `{esc(params.data.name)}`, SHA-256 `{registry.data_sha256}`\n"
        f"- Results: {_estimates_link(output_dir)}\n"
        f"- Seeds: {esc(seeds)}\n"
        f"- Step run times: {esc(timing)}\n"
        f"- Params as run (`{esc(params.source.name)}`, with the command line's `--fast` and the resolved "
        "focus applied):\n\n"
        f"<pre>{esc(params_text)}</pre>\n"
    )


def assemble_report(registry, output_dir: str | Path, *, show_code: bool = False,
                    step_seconds: dict | None = None) -> Path:
    """Join the executed step notebooks into ``report.html`` (written atomically).

    Parameters
    ----------
    registry : hmlib.data.Registry
        The checked inputs (for the title block and the appendix).
    output_dir : pathlib.Path
        ``reports/<name>/``; executed notebooks are read from its
        ``notebooks/`` folder, artifacts and ``estimates.csv`` for the
        summary sections (:func:`hmlib.report.summary.audit_summary`) and the
        cluster profiles (:func:`hmlib.report.site_profiles.site_profiles_html`).
    show_code : bool
    step_seconds : dict, optional
        Run time of each step executed in this run (steps not re-run keep the
        time recorded in their executed notebook).
    """
    output_dir = Path(output_dir)
    params = registry.params
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    versions = package_versions()
    focus = registry.frame[params.focus] if params.focus in registry.frame else None
    focus_sd = float(focus.std()) if focus is not None and registry.kinds.get(params.focus) == "numeric" else None
    summary = audit_summary(output_dir, params=params, versions=versions, hmlib_version=__version__,
                            python_version=platform.python_version(), focus_sd=focus_sd)
    noun = cluster_noun(params.cluster)
    n_methods, n_limits, n_sites, n_glossary, n_repro = (len(STEPS) + k for k in (1, 2, 3, 4, 5))
    cells = [_title_cell(registry, output_dir, now), _markdown(_summary_html(summary)),
             _markdown('<a id="how-to-read"></a>\n\n## How to read this report\n\n' + how_to_read_html()),
             _markdown(CONTENTS_SLOT), *_step_cells(output_dir, params, show_code),
             _markdown(_methods_html(summary, n_methods)),
             _markdown(_limitations_html(summary, n_limits, noun)),
             _markdown(site_profiles_html(output_dir, number=n_sites, noun=noun,
                                          min_cell=int(params.privacy.min_cell))),
             _markdown(f'<a id="glossary"></a>\n\n## {n_glossary}. Glossary\n\n' + glossary_html()),
             _reproducibility_cell(registry, output_dir, n_repro, versions, step_seconds)]
    report_nb = nbformat.v4.new_notebook(cells=cells)
    report_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    report_nb.metadata["language_info"] = {"name": "python", "version": sys.version.split()[0]}
    title = f"Missing-data audit: {params.name}"
    page, _ = _exporter(show_code).from_notebook_node(report_nb, resources={"metadata": {"name": title}})
    page, _ = link_first_uses(page, start_marker='id="key-messages"', stop_marker='id="glossary"')
    return atomic_write_text(output_dir / "report.html", finish_page(page, title=title))


def write_index(reports_root: str | Path, results) -> Path:
    """Write ``index.html`` linking the reports of several params files."""
    reports_root = Path(reports_root)
    rows = "\n".join(
        f'<li><a href="{html.escape(r.name)}/report.html">{html.escape(r.name)}</a> ({r.status})</li>'
        for r in results)
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>hmlib reports</title></head>"
        f"<body><h1>Missing-data audit reports</h1><ul>\n{rows}\n</ul></body></html>\n"
    )
    return atomic_write_text(reports_root / "index.html", page)
