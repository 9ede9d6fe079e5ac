"""Write ``notebooks/*.ipynb`` from their jupytext ``py:percent`` sources (the sources are what we edit and lint).

``python tools/sync_notebooks.py`` (``make notebooks``) rewrites every notebook whose source changed;
``--check`` only lists the ones that differ and exits 1 (``tests/test_notebooks.py`` runs the same check).
Cell ids are the cell's position (``c00``, ``c01``, ...), outputs are empty and the only cell metadata kept is
``tags`` (papermill's ``parameters`` tag), so a regeneration changes nothing unless a source did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jupytext
import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def build(source: Path) -> nbformat.NotebookNode:
    """The output-free notebook of one ``py:percent`` source, with stable cell ids."""
    nb = jupytext.read(source, fmt="py:percent")
    nb.metadata = nbformat.NotebookNode({"kernelspec": KERNELSPEC, "language_info": {"name": "python"}})
    nb.nbformat, nb.nbformat_minor = 4, 5
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"c{i:02d}"
        tags = cell.get("metadata", {}).get("tags")
        cell["metadata"] = nbformat.NotebookNode({"tags": tags} if tags else {})
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
    nbformat.validate(nb)
    return nb


def render(source: Path) -> str:
    """The ``.ipynb`` text of a source, byte-stable."""
    return nbformat.writes(build(source)) + "\n"


def sync(directory: Path = NOTEBOOKS_DIR, check: bool = False) -> list[Path]:
    """Notebooks that differ from their source; written unless ``check``."""
    stale: list[Path] = []
    for source in sorted(directory.glob("[0-9][0-9]_*.py")):
        target = source.with_suffix(".ipynb")
        text = render(source)
        if not target.exists() or target.read_text() != text:
            stale.append(target)
            if not check:
                target.write_text(text)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list notebooks that differ from their source; exit 1")
    args = parser.parse_args(argv)
    stale = sync(check=args.check)
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(NOTEBOOKS_DIR.parent)))
    if args.check and stale:
        print("run `make notebooks` to regenerate them from notebooks/*.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
