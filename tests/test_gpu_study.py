"""``make gpu-study`` (issue 13): a clear exit without CUDA; the plan covers the literal recipe, the remedies, AE."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avaga_lib import study
from avaga_lib.config import make_config
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
    assert {"AVAGA-R_u", "AVAGA-R_w", "AE-L2", "AE-SSIM", *study.REMEDIES} == set(gpu_study.RUNS)
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
