"""Shared by the ``make_*.py`` notebook generators: build a notebook from cells, check it, write it.

Notebooks are saved without outputs (CI runs them top to bottom: tests/test_notebooks.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook


def build(cells: Sequence[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    """A Python 3 notebook holding ``cells`` (no outputs)."""
    nb = new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write(path: Path, cells: Sequence[nbformat.NotebookNode], argv: Sequence[str] | None = None) -> None:
    """Validate and write the notebook to ``path``; with ``--execute`` in ``argv`` run it once first
    (nbclient, outputs not saved)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--execute" in argv:
        from nbclient import NotebookClient

        t0 = time.perf_counter()
        NotebookClient(build(cells), timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        print(f"executed top to bottom in {time.perf_counter() - t0:.1f} s")
    nb = build(cells)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    print("wrote", path)
