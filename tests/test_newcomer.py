"""The newcomer path (issue 12): a fresh clone of the committed HEAD, `make reproduce` from nothing but committed
files, at a tiny scope (embedded category weave, AVAGA-R_u and AE-L2, the smoke profile's 1 epoch at 64 px, the
analysis notebooks 05-07 included); then a second call that skips everything; then a broken analysis notebook,
reported as failed by two calls in a row.

The clone's own code runs (``PYTHONPATH=<clone>``) with this venv's python; the Makefile's venv set-up is bypassed
(``PY=``, ``STAMP=`` marked old with ``-o``), nothing is installed. Only what the runs need is generated: the weave
category of the embedded set at its default location, with fewer images (12 train, 8 test) to keep the wall time
low; the pipeline uses a generated copy it finds as is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from avaga_lib.paths import project_root
from avaga_lib.reporting.reference import ANCHOR

ROOT = project_root()
BROKEN = "06_threshold_study.ipynb"
SCOPE = ["CATEGORIES=weave", "RUNS=AVAGA-R_u,AE-L2"]


def _env(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("AVAGA_PROJECT_ROOT", "MAKEFLAGS", "MAKELEVEL", "MFLAGS", "PYTHONPATH")}
    return {**env, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "1"}


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=120).stdout


def _make_reproduce(clone: Path) -> subprocess.CompletedProcess[str]:
    stamp = ".venv-set-up-elsewhere"  # the reproduce target's venv prerequisite, declared old: never built here
    cmd = ["make", "--no-print-directory", "-o", stamp, "reproduce", f"PY={sys.executable}", f"STAMP={stamp}", *SCOPE]
    return subprocess.run(cmd, cwd=clone, env=_env(clone), capture_output=True, text=True, timeout=900, check=False)


def _break_notebook(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nb.cells.insert(2, nbformat.v4.new_code_cell('raise RuntimeError("deliberately broken by test_newcomer")'))
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the project's committed HEAD with a small embedded category weave generated."""
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout: there is no committed HEAD to clone")
    head = _git("rev-parse", "HEAD").strip()
    dest = tmp_path_factory.mktemp("newcomer") / "clone"
    _git("clone", "-q", "--no-hardlinks", str(ROOT), str(dest))
    _git("checkout", "-q", "--detach", head, cwd=dest)
    make_data = ("from avaga_lib import paths; from avaga_lib.data.synthetic import generate_dataset; "
                 "generate_dataset(paths.embedded_root(), categories=['weave'], n_train=12, n_test_good=4, "
                 "n_test_bad=4, size=64)")
    subprocess.run([sys.executable, "-c", make_data], cwd=dest, env=_env(dest), capture_output=True, text=True,
                   check=True, timeout=300)
    assert (dest / "data" / "embedded" / "weave" / "train" / "good").is_dir()
    return dest


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_fresh_clone_reproduce_then_skip_then_broken_notebook(clone: Path) -> None:
    results = clone / "results"
    # git pre-fills no run output: only the benchmark, geometry and GPU-study summaries and the references (the cpu
    # study's in results/cpu)
    assert sorted(p.name for p in results.iterdir()) == ["bench", "cpu", "geometry", "gpu_study", "reference"]
    assert [p.name for p in (results / "cpu").iterdir()] == ["reference"]
    assert sorted(p.name for p in (results / "gpu_study").iterdir()) == ["summary.json", "summary.md"]
    assert sorted(p.name for p in (results / "geometry").iterdir()) == ["summary.csv", "summary.md"]

    first = _make_reproduce(clone)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-4000:]
    head = "\n".join(first.stdout.splitlines()[:8])  # make's echo of the command, then the pipeline's first lines
    assert "not evidence about the paper's claims" in head and head.index("not evidence") < head.index("planned")
    assert "2 ran, 0 skipped" in out
    for run in ("AVAGA-R_u-seed0", "AE-L2-seed0"):
        assert (results / "embedded" / "weave" / run / "metrics.json").exists()
    assert (results / "report.html").stat().st_size > 10_000
    assert "## Reproduced vs reference" in (results / "REPORT.md").read_text()
    assert f"see results/REPORT.md#{ANCHOR}" in first.stdout.splitlines()[-1]  # the one summary line, last
    assert _git("status", "--porcelain", "--untracked-files=all", cwd=clone) == ""  # every output is ignored

    status_file = results / "runs" / "report" / "status.json"
    status = status_file.read_bytes()
    second = _make_reproduce(clone)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert "0 ran, 2 skipped" in second.stdout and "report: up to date" in second.stdout
    assert "executing" not in second.stdout and status_file.read_bytes() == status  # nothing re-executed

    _break_notebook(clone / "notebooks" / BROKEN)
    for attempt in (1, 2):
        broken = _make_reproduce(clone)
        out = broken.stdout + broken.stderr
        assert broken.returncode != 0, f"call {attempt} after breaking {BROKEN} exited 0:\n{out[-4000:]}"
        assert f"FAILED {BROKEN}: RuntimeError: deliberately broken by test_newcomer" in out
        assert json.loads(status_file.read_text())[BROKEN]["status"] == "failed"
