"""A run's papermill subprocess (avaga_lib/orchestration/notebook_exec.py through job.run_papermill): papermill's
behaviour, and
a log without ipykernel's "running over TCP without encryption" line, every other line kept."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import nbformat
import pytest

from avaga_lib.orchestration import job
from avaga_lib.paths import project_root
from avaga_lib.plan import RunSpec, plan_runs

# a stand-in for notebooks 03/04: writes the run's metrics.json, says something on stdout and as a warning (stderr)
_CELLS = (
    'run_dir: str = ""  # where metrics.json goes\nfail: bool = False  # raise in the next cell\n',
    "import json, pathlib, warnings\n"
    "print('training the run')\n"
    "warnings.warn('a warning of the run itself')\n"
    "if fail:\n"
    "    raise ValueError('the run broke')\n"
    "pathlib.Path(run_dir).mkdir(parents=True, exist_ok=True)\n"
    "(pathlib.Path(run_dir) / 'metrics.json').write_text(json.dumps({'iou': 0.5}))\n",
)


def _spec(tmp_path: Path, fail: bool) -> RunSpec:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python",
                                                           "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell(_CELLS[0], metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(_CELLS[1])]
    notebook = tmp_path / "tiny.ipynb"
    nbformat.write(nb, notebook)
    spec = plan_runs(project_root() / "params" / "smoke.yaml", categories="weave", runs="AE-L2",
                     results_dir=tmp_path / "results", overrides={"device": "cpu"})[0]
    out = tmp_path / "runs" / ("failed.ipynb" if fail else "ok.ipynb")
    return dataclasses.replace(spec, notebook=notebook, parameters={"run_dir": str(spec.run_dir), "fail": fail},
                               output_notebook=out, log=out.with_suffix(".log"))


@pytest.mark.timeout(300)
def test_run_log_has_no_unencrypted_transport_warning_and_keeps_the_rest(tmp_path: Path) -> None:
    spec = _spec(tmp_path, fail=False)
    assert job.papermill_command(spec, job.DEFAULT_KERNEL)[1:3] == ["-m", job.NOTEBOOK_RUNNER]
    out = job.run_papermill(spec)
    log = spec.log.read_text()
    assert out.status == "ok", log
    assert (spec.run_dir / "metrics.json").is_file() and spec.output_notebook.is_file()
    assert "without encryption" not in log
    assert "Passed unknown parameter" not in log
    assert "training the run" in log and "a warning of the run itself" in log  # nothing else is hidden
    assert "Executing Cell 2" in log  # papermill's own progress lines, as before


@pytest.mark.timeout(300)
def test_a_failing_run_still_fails_with_its_error(tmp_path: Path) -> None:
    spec = _spec(tmp_path, fail=True)
    out = job.run_papermill(spec)
    assert out.status == "failed"
    assert out.error == "ValueError: the run broke"
    assert spec.output_notebook.is_file()  # the executed notebook is kept for reading, as papermill's CLI does
