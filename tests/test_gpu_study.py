"""``make gpu-study`` (issue 13): a clear exit without CUDA; the plan covers the literal recipe, the remedies, AE."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avaga_lib import study
from avaga_lib.config import config_hash, make_config
from avaga_lib.paths import results_tree_for
from avaga_lib.plan import plan_runs
from benchmarks import gpu_study

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_exits_with_a_clear_message() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_study"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert "needs a CUDA GPU" in out.stderr and "torch.cuda.is_available() is False" in out.stderr
    assert "Traceback" not in out.stderr


def test_plan_runs_literal_remedies_and_baselines_at_256_bf16(tmp_path: Path) -> None:
    runs, notes = gpu_study.plan(tmp_path, ["embedded"])
    assert [r["run"] for r in runs] == list(gpu_study.RUNS)
    assert {"AVAGA-R_u", "AVAGA-R_w", "AVAGA-D_u", "AE-L2", "AE-SSIM", *study.REMEDIES} == set(gpu_study.RUNS)
    assert notes == []
    cfg = make_config("paper", runs[0]["overrides"], run=runs[0]["run"])
    assert cfg.data.image_size == 256 and cfg.train.amp == "bf16" and cfg.train.epochs == gpu_study.EPOCHS["embedded"]
    assert Path(cfg.run_dir).is_relative_to(tmp_path / gpu_study.OUT / "runs")


def test_throughput_measures_both_memory_formats() -> None:
    """The throughput section runs the trainer's step (CPU here, 64 px, no compile: compiling takes minutes)."""
    speed = gpu_study.throughput(steps=1, batch=2, device="cpu", size=64, compile_model=False)
    assert set(speed) == {"bf16_img_s", "bf16_channels_last_img_s"} and all(v > 0 for v in speed.values())


def test_summary_lists_what_did_not_run(tmp_path: Path) -> None:
    summary = gpu_study.summarize(tmp_path, {"bf16_img_s": 10.0}, ["MTD not run"], 1.0)
    text = (tmp_path / gpu_study.OUT / "summary.md").read_text()
    assert summary["runs"] == [] and "(no finished run)" in text and "- MTD not run" in text
    assert "bf16_img_s = 10.0" in text and (tmp_path / gpu_study.OUT / "summary.json").is_file()


def _job(tiny_root: Path, out: Path, category: str, run: str = "AE-L2") -> gpu_study.Job:
    cfg = make_config("smoke", {"data.root": str(tiny_root), "data.category": category, "data.image_size": 64,
                                "train.epochs": 1, "results_dir": str(out)}, run=run)
    return gpu_study.Job(f"embedded/{category}/{cfg.setting_name}", cfg, figures=False)


def test_execute_runs_jobs_in_worker_processes_and_reports_each_outcome(tiny_root: Path, tmp_path: Path) -> None:
    """Two worker processes make the runs; a failing run is reported and the others still finish; nothing past the
    deadline starts, and each outcome is listed (what the summary shows)."""
    jobs = [_job(tiny_root, tmp_path, "weave"), _job(tmp_path / "missing", tmp_path, "washer")]
    results = gpu_study.execute(jobs, workers=2, deadline=time.time() + 600, threads=1)
    assert [r[0] for r in results] == [j.label for j in jobs]
    assert results[0][1] == "done" and (Path(jobs[0].cfg.run_dir) / "metrics.json").is_file()
    assert results[1][1].startswith("failed: ") and "missing" in results[1][1]
    late = gpu_study.execute([_job(tiny_root, tmp_path / "late", "washer")], workers=1, deadline=time.time() - 1)
    assert late[0][1] == "not started" and not (tmp_path / "late").exists()
    gpu_study.summarize(tmp_path, {}, [], 1.0, results + late)
    text = (tmp_path / gpu_study.OUT / "summary.md").read_text()
    assert "embedded/washer/AE-L2-seed0: not started" in text and "embedded/weave/AE-L2-seed0: done" in text


def test_plan_file_jobs_are_the_pipelines_runs_headline_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--plan params/mtd_cpu.yaml makes exactly the runs `make reproduce PARAMS=... PROFILE=cpu` plans, in its
    results tree with the same configs (so the pipeline then skips them), the issue's table first, seed by seed."""
    root = tmp_path / "mtd"
    (root / "magnetic_tile" / "train" / "good").mkdir(parents=True)
    monkeypatch.setattr(gpu_study, "mtd_root", lambda _root: root)
    tree = str(tmp_path / "results" / "cpu")
    head, rest, notes = gpu_study.plan_file_jobs(ROOT / "params" / "mtd_cpu.yaml", tmp_path, results_dir=tree)
    assert notes == [] and len(head) == 18 and len(rest) == 15
    assert [j.cfg.train.seed for j in head] == [0] * 6 + [1] * 6 + [2] * 6
    assert {j.cfg.name for j in head} == set(gpu_study.HEADLINE)
    assert [j.cfg.name for j in rest[:6]] == ["AVAGA-R_w", "AVAGA-D_u"] * 3  # the paper's runs before the remedies
    planned = {s.label: s.config for s in plan_runs(ROOT / "params" / "mtd_cpu.yaml", results_dir=tree)}
    for job in head + rest:
        assert config_hash(job.cfg) == config_hash(planned[job.label])
        assert job.cfg.profile == "cpu" and job.cfg.data.image_size == 128 and job.figures == (job.cfg.train.seed == 0)
        assert Path(job.cfg.run_dir).is_relative_to(tree)
    assert (results_tree_for("cpu"), results_tree_for("paper")) == ("results/cpu", "results")  # the Makefile's RESULTS
