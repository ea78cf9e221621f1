"""Rendering executed notebooks and joining them into ``report.html``.

The report is one self-contained HTML file (images embedded, no network
needed): a title block, a table of contents, each step's narrative and
figures (code hidden unless ``--show-code``), a plain "not built yet" section
for steps that do not exist yet, and a reproducibility appendix.

Everything that comes from the data or the params is HTML-escaped before it
is placed in markdown; tables are rendered by pandas with escaping on.
"""

from __future__ import annotations

import html
import json
import platform
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import nbformat

from hmlib import __version__
from hmlib.results import atomic_write_text

__all__ = ["render_notebook", "assemble_report", "write_index", "package_versions"]

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


def _exporter(show_code: bool):
    from nbconvert import HTMLExporter

    return HTMLExporter(template_name="lab", exclude_input=not show_code,
                        exclude_input_prompt=True, exclude_output_prompt=True,
                        embed_images=True)


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
    return atomic_write_text(dest, body)


def _markdown(text: str):
    return nbformat.v4.new_markdown_cell(text)


def assemble_report(registry, output_dir: str | Path, *, show_code: bool = False,
                    step_seconds: dict | None = None) -> Path:
    """Join the executed step notebooks into ``report.html`` (written atomically).

    Parameters
    ----------
    registry : hmlib.data.Registry
        The checked inputs (for the title block and the appendix).
    output_dir : pathlib.Path
        ``reports/<name>/``; executed notebooks are read from its
        ``notebooks/`` folder.
    show_code : bool
    step_seconds : dict, optional
        Run time of each step executed in this run.
    """
    from hmlib.runner import STEPS, is_built

    output_dir = Path(output_dir)
    params = registry.params
    esc = html.escape
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cells = [_markdown(
        f"# Missing-data audit: {esc(params.name)}\n\n"
        f"Data: `{esc(params.data.name)}` (SHA-256 `{registry.data_sha256[:16]}…`), "
        f"{registry.n_patients:,} patients in {registry.n_clusters:,} clusters "
        f"(`{esc(params.cluster)}`); outcome `{esc(params.outcome)}` ({params.outcome_family}); "
        f"focus variable `{esc(str(params.focus))}`.  \n"
        f"Generated {now} by hmlib {__version__}"
        f"{' in fast mode (small settings: not for reporting)' if params.fast else ''}."
    )]
    toc = ["## Contents", ""]
    body: list = []
    for step in STEPS:
        toc.append(f"{step.number}. [{esc(step.title)}](#{step.anchor})")
        executed = output_dir / "notebooks" / step.notebook
        anchor = f'<a id="{step.anchor}"></a>'
        heading = f"{anchor}\n\n## {step.number}. {esc(step.title)}"
        if is_built(step) and executed.is_file():
            body.append(_markdown(anchor))  # the notebook's own first cell is the section heading
            nb = nbformat.read(str(executed), as_version=4)
            body.extend(_report_cells(nb) if not show_code else nb.cells)
        elif is_built(step):
            body.append(_markdown(
                f"{heading}\n\n**Not run in this report.** Run it with "
                f"`hmreport run {esc(str(params.source.name))} --only {step.key}`."))
        else:
            body.append(_markdown(
                f"{heading}\n\n**Not built yet** in hmlib {__version__} (planned in issue "
                f"#{step.issue}). No result of this step is shown, and nothing in this report "
                "should be read as its finding."))
    toc.append(f"{len(STEPS) + 1}. [Reproducibility](#reproducibility)")
    cells.append(_markdown("\n".join(toc)))
    cells.extend(body)

    versions = package_versions()
    params_text = json.dumps(params.raw, indent=1, sort_keys=True, default=str)
    seconds = step_seconds or {}
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()) or "no step executed in this run"
    cells.append(_markdown(
        '<a id="reproducibility"></a>\n\n'
        f"## {len(STEPS) + 1}. Reproducibility\n\n"
        f"- hmlib {__version__}; Python {platform.python_version()} on {esc(platform.platform())}\n"
        f"- Packages: {esc(', '.join(f'{k} {v}' for k, v in versions.items()))}\n"
        f"- Input file: `{esc(params.data.name)}`, SHA-256 `{registry.data_sha256}`\n"
        f"- Seed: {params.seed}; step run times: {esc(timing)}\n"
        f"- Params as run (`{esc(params.source.name)}`):\n\n"
        f"<pre>{esc(params_text)}</pre>\n"
    ))
    report_nb = nbformat.v4.new_notebook(cells=cells)
    report_nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    report_nb.metadata["language_info"] = {"name": "python", "version": sys.version.split()[0]}
    page, _ = _exporter(show_code).from_notebook_node(
        report_nb, resources={"metadata": {"name": f"Missing-data audit: {params.name}"}})
    return atomic_write_text(output_dir / "report.html", page)


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
