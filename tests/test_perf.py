"""Tests of avaga_lib.perf: structures and exact FLOP formulas, never timings (machines here are noisy)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from avaga_lib import perf
from avaga_lib.config import make_config


def test_linear_and_conv_flops_match_formula() -> None:
    lin = nn.Linear(32, 16, bias=False)
    x = torch.randn(5, 32)
    assert perf.count_flops(lambda: lin(x)) == perf.linear_flops(5, 32, 16)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    img = torch.randn(2, 3, 16, 16)
    assert perf.count_flops(lambda: conv(img)) == perf.conv2d_flops(2, 3, 8, 3, 8, 8)
    # backward of a Linear = grad input + grad weight, each as many FLOPs as the forward
    xg = x.clone().requires_grad_(True)
    assert perf.count_flops(lambda: lin(xg).sum().backward()) == 3 * perf.linear_flops(5, 32, 16)


def test_gemm_peak_is_positive_and_rejects_bad_sizes() -> None:
    flops = perf.gemm_peak_flops("cpu", n=64, repeats=2)
    assert math.isfinite(flops) and flops > 0
    with pytest.raises(ValueError, match="n=0"):
        perf.gemm_peak_flops("cpu", n=0)


def test_interleaved_medians_calls_each_in_turn() -> None:
    calls: list[str] = []
    med = perf.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                                   calls=2, warmup=1)
    assert set(med) == {"a", "b"} and all(v >= 0 for v in med.values())
    assert calls == ["a", "b"] + ["a", "a", "b", "b"] * 3  # warmup, then interleaved rounds


def test_peak_memory_sees_a_large_allocation() -> None:
    if perf._proc_status_kb("VmHWM") is None:
        pytest.skip("no /proc/self/status VmHWM on this platform")
    perf.reset_peak_memory("cpu")
    before = perf.peak_memory_bytes("cpu")
    big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    after = perf.peak_memory_bytes("cpu")
    assert after >= before and after >= big.numel() * 4
    del big


def test_study_estimate_scales_with_throughput() -> None:
    counts = perf.mvtec_study_images(epochs=150)
    assert set(counts) == set(perf.STUDY_RUNS)
    n_train = sum(perf.MVTEC_TRAIN_COUNTS.values())
    per_epoch = sum(n - round(n * 0.1) for n in perf.MVTEC_TRAIN_COUNTS.values())  # validation split removed
    assert counts["AVAGA-R_u"]["train_images"] == per_epoch * 150
    assert counts["AVAGA-R_w"]["train_images"] > counts["AVAGA-R_u"]["train_images"]  # weak images added
    assert n_train == 3629  # MVTec AD train/good total
    slow = perf.mvtec_study_hours({"AVAGA-R_u": 10.0}, eval_images_per_s=20.0)
    fast = perf.mvtec_study_hours({"AVAGA-R_u": 20.0}, eval_images_per_s=40.0)
    assert fast["hours"] == pytest.approx(slow["hours"] / 2)
    assert "AE-L2" in slow["assumed"] and "AVAGA-R_u" not in slow["assumed"]
    with pytest.raises(ValueError, match="fallback"):
        perf.mvtec_study_hours({"AVAGA-R_w": 1.0}, 1.0)


@pytest.mark.parametrize("setting,amp", [("unsupervised", "off"), ("weak", "bf16")])
def test_train_harness_runs_the_trainer_step(setting: str, amp: str) -> None:
    """64 px, batch 2: a real step (bf16 autocast exercised on CPU in the weak case) changes the weights."""
    cfg = make_config("smoke", {"train.setting": setting, "train.amp": amp, "data.image_size": 64})
    h = perf.build_train_harness(cfg, "cpu", batch_size=2, channels_last=amp == "bf16")
    x, labels = h.data_step()
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert labels.shape == (2,)
    before = next(h.model.parameters()).detach().clone()
    terms = h.compute_step()
    assert terms and all(math.isfinite(v) for v in terms.values())
    assert "d_total" in terms
    assert not torch.equal(before, next(h.model.parameters()).detach())
    assert (h.amp is torch.bfloat16) == (amp == "bf16")


def test_step_flops_count_generator_and_discriminator() -> None:
    """FLOPs of one full step exceed the forward of the generator alone (backward + D step are counted)."""
    cfg = make_config("smoke", {"data.image_size": 64})
    h = perf.build_train_harness(cfg, "cpu", batch_size=2)
    h.data_step()
    step = perf.count_flops(h.compute_step)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fwd = perf.count_flops(lambda: h.model(x))
    assert step > 3 * fwd  # forward + backward (~2x) + discriminator


def test_eval_harness_runs() -> None:
    cfg = make_config("smoke", {"data.image_size": 64})
    h = perf.build_eval_harness(cfg, "cpu", batch_size=2)
    assert h.step() == 2


def _fake_bench() -> dict:
    train = {
        name: {"batch": 2, "step_s": 2.0, "images_per_s": 1.0, "gflop_per_image": 75.0, "achieved_tflops": 0.07,
               "fraction_of_gemm_peak": 0.5, "fraction_of_gemm_peak_best": 0.6, "data_wait_fraction": 0.01}
        for name in ("AVAGA-R_u@256", "AVAGA-R_w@256")
    }  # fmt: skip
    est = perf.mvtec_study_hours({"AVAGA-R_u": 1.0}, 2.0)
    return {
        "machine": {"device": "cpu", "cpu": "x86_64", "torch": torch.__version__, "threads": 2},
        "targets": perf.TARGETS, "gemm_peak_tflops": 0.1, "main_size": 256, "train": train,
        "fraction_of_gemm_peak_main": 0.5, "fraction_of_gemm_peak_main_best": 0.6, "attention_cost_ratio": 1.01,
        "attention_cost_ratio_best": 1.0, "data_wait_fraction_main": 0.01,
        "eval": {"AVAGA-R_u@256": {"batch": 8, "images_per_s": 3.0}},
        "peak_memory_mib": {"AVAGA-R_u@256": 2000.0}, "peak_memory_kind": "process RSS high-water mark",
        "study_estimate": {"device_kind": "cpu", "hours": est["hours"], "assumed_runs": est["assumed"],
                           "gpu_hours": None},
    }  # fmt: skip


def test_bench_markdown_and_files(tmp_path: Path) -> None:
    res = _fake_bench()
    md = perf.bench_markdown(res)
    assert "| step time with L_attn / without (R_u 256 px) | 1.010 | <= 1.05 | yes |" in md
    assert "| training FLOP/s / GEMM peak, R_u 256 px (CPU) | 0.500 | >= 0.7 | no |" in md
    assert "GPU-hours, MVTec Tables 2/3/8 study | unmeasured" in md
    j, m = perf.write_bench(res, str(tmp_path))
    assert json.loads(Path(j).read_text())["train"]["AVAGA-R_u@256"]["images_per_s"] == 1.0
    assert Path(m).read_text() == md
