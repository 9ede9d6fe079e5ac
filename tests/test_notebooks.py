"""The committed notebooks are exactly what their jupytext sources generate (no hand edits, no outputs)."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import papermill

ROOT = Path(__file__).resolve().parents[1]


def _sync_module():
    spec = importlib.util.spec_from_file_location("sync_notebooks", ROOT / "tools" / "sync_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_matches_its_source() -> None:
    sync = _sync_module()
    sources = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    assert len(sources) == 7, "one py:percent source per numbered notebook"
    assert sync.sync(ROOT / "notebooks", check=True) == [], "run `make notebooks` after editing notebooks/*.py"


def test_generated_notebooks_are_stable_and_output_free(tmp_path: Path) -> None:
    sync = _sync_module()
    source = tmp_path / "01_demo.py"
    source.write_text('# %% [markdown]\n# # Demo\n\n# %% tags=["parameters"]\nx: int = 1  # a parameter\n\n'
                      "# %%\nprint(x)\n")
    assert sync.sync(tmp_path) == [tmp_path / "01_demo.ipynb"]
    first = (tmp_path / "01_demo.ipynb").read_text()
    assert sync.sync(tmp_path) == [], "a second run with no source change writes nothing"
    nb = json.loads(first)
    assert [c["id"] for c in nb["cells"]] == ["c00", "c01", "c02"]
    assert nb["cells"][1]["metadata"] == {"tags": ["parameters"]}
    assert all(c.get("outputs", []) == [] for c in nb["cells"])
    source.write_text(source.read_text().replace("x: int = 1", "x: int = 2"))
    assert sync.sync(tmp_path, check=True) == [tmp_path / "01_demo.ipynb"], "an edited source is reported stale"


def test_papermill_reads_every_declared_parameter() -> None:
    # papermill parses the parameters cell line by line with a regex: a declaration it cannot parse (an "=" in the
    # line's comment) is left out, and a run that passes that name gets "Passed unknown parameter" in its log
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        tree = ast.parse("".join(cell["source"]))
        declared = [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]
        declared += [t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)]
        assert declared, path.name
        assert sorted(papermill.inspect_notebook(str(path))) == sorted(declared), path.name
