"""Rewrite the papermill ``parameters`` cell of every step notebook from hmlib's parameter list.

Run after adding a params key (``hmlib.params.KEYS``):

    PYTHONPATH=. .venv/bin/python tools/sync_parameters_cells.py

tests/test_notebook_parameters.py (NB-PARAM-001) fails until the cells agree
with :func:`hmlib.report.parameters.parameters_cell_source`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from hmlib.report.parameters import parameters_cell_source

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def main() -> int:
    source = parameters_cell_source()
    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            print(f"{path.name}: expected one cell tagged 'parameters', found {len(cells)}", file=sys.stderr)
            return 1
        if cells[0].source != source:
            cells[0].source = source
            nbformat.write(nb, path)
            print(f"rewrote the parameters cell of {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
