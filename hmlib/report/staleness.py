"""A step run on its own marks the assembled report stale; the next ``hmreport run`` clears it.

``hmreport run`` executes the notebooks in a staging folder and replaces the
report folder's results only together with ``report.html``. A notebook run
on its own (in JupyterLab, or by papermill outside ``hmreport``) writes its
artifact and its rows of ``estimates.csv`` straight into the report folder:
from then on ``report.html`` (and the step's rendered ``NN_key.html`` and
executed notebook) no longer show what the folder's results say.

Such a run writes :data:`STALE_NAME` into the report folder, one line per
step, naming the step, the time and the command that rebuilds the report.
Rebuilding ``report.html`` at the end of the notebook instead would not help:
the report embeds each step's *executed notebook*, and a kernel cannot read
the notebook that JupyterLab is showing, so the rebuilt report would show
the step's old section beside its new numbers. The marker is read by

- ``hmreport run``, which reruns the marked steps even under ``--only`` (so
  that their sections agree with their results) and removes the marker once
  the new report is in place;
- ``hmreport status``, which lists every report folder with its state;
- the notebook itself, which says so under its setup cell.

A run by ``hmreport`` is recognised by its progress channel
(:data:`hmlib.progress.CHANNEL_NAME`), which exists only in a staging folder.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from hmlib.results import atomic_write_text

__all__ = ["STALE_NAME", "mark_report_stale", "steps_run_alone", "clear_stale_mark", "report_state"]

#: The marker file in a report folder.
STALE_NAME = "STALE"
_LINE = re.compile(r"^- (?P<key>[A-Za-z0-9_]+): run on its own")


def _has_report(output_dir: Path, notebook: str) -> bool:
    return (output_dir / "report.html").is_file() or (output_dir / "notebooks" / notebook).is_file()


def mark_report_stale(output_dir: str | Path, step, params_source: str | Path) -> str | None:
    """Mark the report in ``output_dir`` stale after ``step`` ran on its own; returns the notice, or None.

    Nothing is written when the folder holds no assembled report and no
    executed notebook of the step (nothing can disagree with the new results).
    """
    output_dir = Path(output_dir)
    if not _has_report(output_dir, step.notebook):
        return None
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = f"hmreport run {params_source}"
    path = output_dir / STALE_NAME
    kept = [line for line in _lines(path) if _key(line) != step.key]
    kept.append(f"- {step.key}: run on its own at {now} ({step.notebook}); its results in artifacts/ and "
                f"estimates.csv are newer than report.html and {step.rendered_name}.")
    header = (f"report.html in this folder is STALE: it does not show the results of the steps below. "
              f"Rebuild it with: {command}")
    atomic_write_text(path, "\n".join([header, *kept]) + "\n")
    return (f"This step ran on its own: report.html in {output_dir} no longer shows its results and is marked "
            f"stale ({STALE_NAME}). Rebuild the report with: {command}")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    return [line for line in text.splitlines() if _key(line)]


def _key(line: str) -> str | None:
    match = _LINE.match(line)
    return match.group("key") if match else None


def steps_run_alone(output_dir: str | Path) -> list[str]:
    """Keys of the steps the marker names (run on their own since the last report), in file order."""
    return [_key(line) for line in _lines(Path(output_dir) / STALE_NAME)]


def clear_stale_mark(output_dir: str | Path) -> None:
    """Remove the marker (a new report shows every result)."""
    (Path(output_dir) / STALE_NAME).unlink(missing_ok=True)


def report_state(output_dir: str | Path) -> str:
    """One line on a report folder: its last run's status and, if any, the steps run on their own since."""
    output_dir = Path(output_dir)
    try:
        status = json.loads((output_dir / "run-status.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        status = {}
    state = status.get("status", "never run by hmreport")
    when = status.get("finished") or status.get("started")
    text = f"{output_dir.name}: {state}" + (f" ({when})" if when else "")
    if not (output_dir / "report.html").is_file():
        text += "; no report.html"
    alone = steps_run_alone(output_dir)
    if alone:
        text += f"; STALE: {', '.join(alone)} run on their own since report.html was written"
    return text
