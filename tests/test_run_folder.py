"""The run folder: its contract read back (:mod:`avaga_lib.run_folder`), and nothing finished is lost (issue 22).

A run folder written by ``save_run`` reads back through :class:`RunFolder` (config, metrics, finished marker), and
no module but :mod:`avaga_lib.run_folder` spells a file name of the contract. Under the run-folder lock, a second
study waits for the lock and then skips what the first finished; a run of another dataset root never replaces a
finished run of the same category name; a finished run is replaced only once its replacement finished.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from avaga_lib.config import RunConfig, config_hash, make_config
from avaga_lib.evaluation.evaluate import EvalResult
from avaga_lib.io import read_json, write_json
from avaga_lib.orchestration import job
from avaga_lib.paths import PACKAGE_DIR, project_root
from avaga_lib.plan import RunSpec, is_finished, plan_runs, saved_config
from avaga_lib.reporting.results import collect_runs
from avaga_lib.run_folder import ResultsTree, RunFolder
from avaga_lib.training.run import save_run

PARAMS = project_root() / "params" / "smoke.yaml"


def _spec(tmp_path: Path, root: str) -> RunSpec:
    return plan_runs(PARAMS, dataset="folder", root=root, categories="screws", runs="AVAGA-R_u",
                     results_dir=tmp_path / "res", overrides={"device": "cpu"})[0]


def _finish(spec: RunSpec, marker: str) -> None:
    """A finished run folder of ``spec`` as save_run leaves it (config.json + metrics.json), tagged ``marker``."""
    write_json(spec.run_dir / "config.json", spec.config.to_dict())
    write_json(spec.run_dir / "predictions.csv", {"from": marker})
    write_json(spec.run_dir / "metrics.json", {"from": marker})


class Runner:
    """Stands in for papermill: records its calls, writes a partial run, then finishes it or fails."""

    def __init__(self, spec: RunSpec, ok: bool = True) -> None:
        self.spec, self.ok, self.calls = spec, ok, 0
        self.seen_during_run: list[str] = []

    def __call__(self, spec: RunSpec, _job: job.Job) -> job.Outcome:
        self.calls += 1
        self.seen_during_run = sorted(p.name for p in spec.run_dir.glob("*")) if spec.run_dir.exists() else []
        spec.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(spec.run_dir / "splits.json", {"from": "new"})  # the notebook writes its files one by one
        if not self.ok:
            return job.Outcome(spec, "failed", 0.0, "RuntimeError: loss is NaN")
        _finish(spec, "new")
        return job.Outcome(spec, "ok", 0.0)


def test_second_study_says_it_waits_then_skips_the_run_the_first_finished(tmp_path: Path) -> None:
    spec = _spec(tmp_path, str(tmp_path / "data"))
    runner, lines, result = Runner(spec), [], {}

    def second_study() -> None:
        result["out"] = job.run_job(spec, runner=runner, log=lines.append)

    with job.claim_run(spec):  # the first study's job holds the run folder...
        other = threading.Thread(target=second_study)
        other.start()
        time.sleep(0.8)
        _finish(spec, "first")  # ...and finishes the run
    other.join(timeout=10)
    assert not other.is_alive()
    assert any("waiting for the run-folder lock" in ln for ln in lines), lines  # not silent
    assert result["out"].status == "skipped" and runner.calls == 0  # not re-run ("resumed from epoch 1")
    assert read_json(spec.run_dir / "metrics.json") == {"from": "first"}


def test_run_of_another_root_refuses_to_replace_the_finished_one(tmp_path: Path) -> None:
    first = _spec(tmp_path, str(tmp_path / "plant_a"))
    second = _spec(tmp_path, str(tmp_path / "plant_b"))
    assert first.run_dir == second.run_dir  # same category name: one run folder
    _finish(first, "root a")
    runner = Runner(second)
    out = job.run_job(second, runner=runner, log=lambda _line: None)
    assert out.status == "failed" and runner.calls == 0
    for part in (f"data.root={tmp_path / 'plant_a'}", f"data.root={tmp_path / 'plant_b'}", "RESULTS=", "FORCE=1"):
        assert part in out.error, out.error
    assert read_json(first.run_dir / "metrics.json") == {"from": "root a"}  # nothing deleted
    assert is_finished(first)
    forced = job.run_job(second, runner=runner, force=True, log=lambda _line: None)
    assert forced.status == "ok" and runner.calls == 1 and is_finished(second)
    assert job.run_folder_conflict(second) is None  # the folder is root b's now


def test_finished_run_is_put_back_when_its_replacement_fails(tmp_path: Path) -> None:
    spec = _spec(tmp_path, str(tmp_path / "data"))
    _finish(spec, "old")
    runner, lines = Runner(spec, ok=False), []
    out = job.run_job(spec, runner=runner, force=True, log=lines.append)
    assert out.status == "failed" and runner.calls == 1
    assert runner.seen_during_run == []  # the replacement started clean: no checkpoint or metrics of the old run
    assert read_json(spec.run_dir / "metrics.json") == {"from": "old"}  # the finished run is back, complete
    assert not (spec.run_dir / "splits.json").exists()  # nothing of the failed attempt mixed in
    assert not job.replaced_dir(spec.run_dir).parent.exists()
    assert any("put back" in ln for ln in lines)


def test_finished_run_is_deleted_only_after_its_replacement_finished(tmp_path: Path) -> None:
    spec = _spec(tmp_path, str(tmp_path / "data"))
    _finish(spec, "old")
    aside_during_run: list[bool] = []
    runner = Runner(spec)

    def watching(s: RunSpec, j: job.Job) -> job.Outcome:
        aside_during_run.append(read_json(job.replaced_dir(s.run_dir) / "metrics.json") == {"from": "old"})
        return runner(s, j)

    out = job.run_job(spec, runner=watching, force=True, log=lambda _line: None)
    assert out.status == "ok" and aside_during_run == [True]  # kept aside while the new one ran
    assert read_json(spec.run_dir / "metrics.json") == {"from": "new"}
    assert not job.replaced_dir(spec.run_dir).parent.exists()


def test_retry_after_a_lost_worker_keeps_the_set_aside_run_until_it_finishes(tmp_path: Path) -> None:
    spec = _spec(tmp_path, str(tmp_path / "data"))
    _finish(spec, "old")
    assert job._set_aside(spec.run_dir)  # attempt 1 set it aside, then its worker died mid-run:
    spec.run_dir.mkdir(parents=True)
    (spec.run_dir / "checkpoint.pt").write_text("epoch 3")  # its partial folder, to be resumed
    runner = Runner(spec)
    out = job.run_job(spec, runner=runner, log=lambda _line: None)
    assert out.status == "ok" and runner.seen_during_run == ["checkpoint.pt"]  # resumed, not cleared
    assert read_json(spec.run_dir / "metrics.json") == {"from": "new"}
    assert not job.replaced_dir(spec.run_dir).parent.exists()


def test_make_reproduce_of_a_second_root_keeps_the_first_roots_finished_run(tmp_path: Path) -> None:
    """Through the pipeline (what `make reproduce DATASET=folder ROOT=<b>` runs): the first root's finished run is
    neither deleted up front nor replaced; the second root's run is reported failed with the way out."""
    from avaga_lib.orchestration import pipeline

    first = _spec(tmp_path, str(tmp_path / "a"))
    _finish(first, "root a")
    second = _spec(tmp_path, str(tmp_path / "b"))
    assert second.run_dir == first.run_dir  # one category name, one folder
    lines: list[str] = []
    summary = pipeline.execute([second], runner=Runner(second), log=lines.append)
    (outcome,) = summary.outcomes
    assert outcome.status == "failed" and "RESULTS=" in outcome.error and str(tmp_path / "a") in outcome.error
    assert read_json(first.run_dir / "metrics.json") == {"from": "root a"}
    assert any(line.startswith("not run:") for line in lines)


def test_forced_pipeline_run_replaces_a_finished_run_only_once_the_new_one_finished(tmp_path: Path,
                                                                                     monkeypatch) -> None:
    from avaga_lib.orchestration import pipeline

    monkeypatch.setattr(pipeline, "prepare_data", lambda todo: {})  # the stand-in runner reads no image
    spec = _spec(tmp_path, str(tmp_path / "data"))
    _finish(spec, "old")
    failing = Runner(spec, ok=False)
    summary = pipeline.execute([spec], force=True, runner=failing, log=lambda _: None)
    assert summary.outcomes[0].status == "failed" and "NaN" in summary.outcomes[0].error  # the runner ran
    assert read_json(spec.run_dir / "metrics.json") == {"from": "old"}  # put back, not lost
    summary = pipeline.execute([spec], force=True, runner=Runner(spec), log=lambda _: None)
    assert summary.outcomes[0].status == "ok" and read_json(spec.run_dir / "metrics.json") == {"from": "new"}
    assert not job.replaced_dir(spec.run_dir).exists()


# ------------------------------------------------------------------------------------------ the results contract


class _Calibration:
    def to_dict(self) -> dict[str, float]:
        return {"image_lo": 0.0}


def _saved_run(tmp_path: Path) -> tuple[RunFolder, RunConfig]:
    """An evaluation-only run saved by save_run (no training): the files a finished run folder holds."""
    cfg = make_config("smoke", {"results_dir": str(tmp_path / "results"), "train.seed": 3})
    predictions = pd.DataFrame({"path": ["a.png"], "label": [0], "score": [0.1]})
    result = EvalResult({"iou": 0.25, "image_auroc": None}, predictions, _Calibration(),
                        maps={"maps": np.zeros((1, 2, 2), np.float32)})
    return RunFolder(save_run(cfg, None, result, figures=False)), cfg


def test_a_saved_run_reads_back_through_its_run_folder(tmp_path: Path) -> None:
    folder, cfg = _saved_run(tmp_path)
    assert folder.path == cfg.run_dir and folder.is_finished()
    assert folder.load_config() == cfg and config_hash(folder.load_config()) == config_hash(cfg)
    assert folder.config_record() == read_json(folder.config_path) and "notes" not in folder.config_record()
    metrics = folder.metrics()
    assert metrics["iou"] == 0.25 and metrics["image_auroc"] is None and metrics["run_id"] == cfg.run_id
    for path in (folder.calibration_path, folder.predictions_path, folder.maps_path):
        assert path.is_file(), path
    assert ResultsTree(tmp_path / "results").finished_runs() == [folder]  # where the results readers find runs


def test_a_folder_without_metrics_is_not_finished(tmp_path: Path) -> None:
    folder, cfg = _saved_run(tmp_path)
    folder.metrics_path.unlink()  # what a run killed while saving leaves (save_run writes metrics.json last)
    assert not folder.is_finished() and ResultsTree(tmp_path / "results").finished_runs() == []
    assert folder.load_config() == cfg  # its config still reads: the pipeline tells a stale run from a resumable one
    with pytest.raises(FileNotFoundError):
        folder.metrics()


def test_record_only_keys_of_older_saves_are_dropped_by_every_reader(tmp_path: Path) -> None:
    folder, cfg = _saved_run(tmp_path)
    write_json(folder.config_path, {**folder.config_record(), "device": "cpu", "pretrained_source": "none"})
    assert folder.load_config() == cfg and saved_config(folder.path) == cfg
    assert collect_runs(tmp_path / "results")["setting"].tolist() == [cfg.run_id]
    folder.config_path.write_text("{not json")
    assert saved_config(folder.path) is None  # the planner: no run of its own there
    with pytest.raises(ValueError):
        folder.load_config()


CONTRACT_NAMES = ("config.json", "metrics.json", "losses.csv", "predictions.csv", "calibration.json", "splits.json",
                  "checkpoint.pt", "test_maps.npz", "summary.json", "fig_losses.png", "fig_scores.png",
                  "fig_qualitative.png")


def _literal(name: str) -> re.Pattern[str]:
    """``name`` ending a string literal: ``"metrics.json"``, ``'checkpoint.pt'``, ``"*/*/*/metrics.json"``."""
    return re.compile(rf"""["'][^"'\s]*{re.escape(name)}["']""")


def test_contract_file_names_are_spelled_only_in_run_folder() -> None:
    """The results contract has one owner: a file name in a string literal of another module is a second place to
    keep in step. Prose (docstrings, messages) may name the files."""
    own = (PACKAGE_DIR / "run_folder.py").read_text()
    assert [n for n in CONTRACT_NAMES if not _literal(n).search(own)] == []
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        if path.name != "run_folder.py":
            text = path.read_text()
            names = {n for n in CONTRACT_NAMES if _literal(n).search(text)}
            if names:
                found[str(path.relative_to(PACKAGE_DIR))] = names
    assert found == {}
