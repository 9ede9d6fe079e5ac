"""Tests of the top-level ``benchmarks`` package: structures and exact FLOP formulas, never timings (machines here
are noisy). Everything runs on CPU at 64 px, in quick mode where a whole benchmark runs."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from avaga_lib.config import DataConfig, make_config
from avaga_lib.evaluation.evaluate import eval_batch_size
from avaga_lib.study import RUNS
from benchmarks import cli, estimate, eval_harness, figures, flops, harness, machine, report, timing

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
COMMITTED_BENCH = Path(__file__).resolve().parents[1] / "results" / "bench"


def test_linear_and_conv_flops_match_formula() -> None:
    lin = nn.Linear(32, 16, bias=False)
    x = torch.randn(5, 32)
    assert flops.count_flops(lambda: lin(x)) == flops.linear_flops(5, 32, 16)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    img = torch.randn(2, 3, 16, 16)
    assert flops.count_flops(lambda: conv(img)) == flops.conv2d_flops(2, 3, 8, 3, 8, 8)
    # backward of a Linear = grad input + grad weight, each as many FLOPs as the forward
    xg = x.clone().requires_grad_(True)
    assert flops.count_flops(lambda: lin(xg).sum().backward()) == 3 * flops.linear_flops(5, 32, 16)


def test_gemm_peak_is_positive_and_rejects_bad_sizes() -> None:
    peak = flops.gemm_peak_flops("cpu", n=64, repeats=2)
    assert math.isfinite(peak) and peak > 0
    with pytest.raises(ValueError, match="n=0"):
        flops.gemm_peak_flops("cpu", n=0)


def test_interleaved_medians_calls_each_in_turn() -> None:
    """Warm-up, then rounds A-block, B-block; each Timer block = 2 warm-up calls + ``calls`` timed calls."""
    calls: list[str] = []
    med = timing.interleaved_medians({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3,
                                     calls=2, warmup=1)
    assert set(med) == {"a", "b"} and all(v >= 0 for v in med.values())
    assert calls == ["a", "b"] + (["a"] * 4 + ["b"] * 4) * 3


def test_interleaved_times_alternates_order_and_keeps_threads() -> None:
    calls: list[str] = []
    threads = torch.get_num_threads()
    seen: list[int] = []
    fns = {"a": lambda: (calls.append("a"), seen.append(torch.get_num_threads())), "b": lambda: calls.append("b")}
    times = timing.interleaved_times(fns, repeats=2, alternate=True)
    assert [len(v) for v in times.values()] == [2, 2]
    assert calls == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3  # A, B then B, A
    assert set(seen) == {threads}  # the Timer runs at torch's thread count, not its own default of 1
    assert timing.paired_ratio([2.0, 3.0, 4.0], [1.0, 1.0, 1.0]) == 3.0
    with pytest.raises(ValueError, match="repeats=0"):
        timing.interleaved_times(fns, repeats=0)


def test_peak_memory_sees_a_large_allocation() -> None:
    if machine.proc_status_kb("VmHWM") is None:
        pytest.skip("no /proc/self/status VmHWM on this platform")
    machine.reset_peak_memory("cpu")
    before = machine.peak_memory_bytes("cpu")
    big = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    after = machine.peak_memory_bytes("cpu")
    assert after >= before and after >= big.numel() * 4
    del big


def test_study_estimate_scales_with_throughput() -> None:
    counts = estimate.mvtec_study_images(epochs=150)
    # the paper's 10 runs of Tables 2/3/8, not this study's remedies and arms
    assert set(counts) == {r.name for r in RUNS if r.group in ("main", "ablations", "baselines")}
    assert len(counts) == 10 and not {r.name for r in RUNS if r.group in ("remedies", "arms")} & set(counts)
    n_train = sum(estimate.MVTEC_TRAIN_COUNTS.values())
    val = DataConfig().val_fraction  # the study's validation split, whatever its value
    per_epoch = sum(n - round(n * val) for n in estimate.MVTEC_TRAIN_COUNTS.values())  # validation split removed
    assert counts["AVAGA-R_u"]["train_images"] == per_epoch * 150
    # make bench's estimate and make gpu-study's protocol projection count the same images per seed
    one_seed = estimate.mvtec_protocol_work(epochs=150, seeds=1)
    assert sum(c["train_images"] for c in counts.values()) == one_seed.train_images
    assert sum(c["test_images"] for c in counts.values()) == one_seed.eval_images
    assert counts["AVAGA-R_w"]["train_images"] > counts["AVAGA-R_u"]["train_images"]  # weak images added
    assert n_train == 3629  # MVTec AD train/good total
    slow = estimate.mvtec_study_hours({"AVAGA-R_u": 10.0}, eval_images_per_s=20.0)
    fast = estimate.mvtec_study_hours({"AVAGA-R_u": 20.0}, eval_images_per_s=40.0)
    assert fast["hours"] == pytest.approx(slow["hours"] / 2)
    assert "AE-L2" in slow["assumed"] and "AVAGA-R_u" not in slow["assumed"]
    with pytest.raises(ValueError, match="fallback"):
        estimate.mvtec_study_hours({"AVAGA-R_w": 1.0}, 1.0)


def _count_trainer_steps(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record the configs of every call of the trainer's step through the benchmarks' one adapter."""
    seen: list[Any] = []
    real = harness.run_trainer_step

    def spy(cfg: Any, *args: Any) -> dict[str, float]:
        seen.append(cfg)
        return real(cfg, *args)

    monkeypatch.setattr(harness, "run_trainer_step", spy)
    return seen


@pytest.mark.parametrize("setting,amp", [("unsupervised", "off"), ("weak", "bf16")])
def test_train_harness_runs_the_trainer_step(setting: str, amp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """64 px, batch 2: a real step (bf16 autocast exercised on CPU in the weak case) changes the weights."""
    steps = _count_trainer_steps(monkeypatch)
    cfg = make_config("smoke", {"train.setting": setting, "train.amp": amp, "data.image_size": 64})
    h = harness.build_train_harness(cfg, "cpu", batch_size=2, channels_last=amp == "bf16")
    x, labels = h.data_step()
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    assert labels.shape == (2,)
    before = next(h.model.parameters()).detach().clone()
    terms = h.compute_step()
    assert "d_total" in terms and all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in terms.values())
    means = h.mean_terms()  # the window's one conversion: the step's own terms
    assert list(means) == list(terms) and all(math.isfinite(v) for v in means.values())
    assert means == pytest.approx({k: float(v) for k, v in terms.items()})
    assert not torch.equal(before, next(h.model.parameters()).detach())
    assert (h.amp is torch.bfloat16) == (amp == "bf16")
    assert len(steps) == 1  # through the trainer's step, once


def test_step_flops_count_generator_and_discriminator() -> None:
    """FLOPs of one full step exceed the forward of the generator alone (backward + D step are counted)."""
    cfg = make_config("smoke", {"data.image_size": 64})
    h = harness.build_train_harness(cfg, "cpu", batch_size=2)
    h.data_step()
    step = flops.count_flops(h.compute_step)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fwd = flops.count_flops(lambda: h.model(x))
    assert step > 3 * fwd  # forward + backward (~2x) + discriminator


# what Python calls to read a tensor's value on the host: on CUDA each waits for the device's queued kernels
_HOST_READS = frozenset({"item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__"})


class _HostReads(TorchFunctionMode):
    """Records every host read of a tensor's value (``.item()``, ``.tolist()``, ``float()``, ...) made in Python."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__name__", "") in _HOST_READS:
            self.reads.append(func.__name__)
        return func(*args, **(kwargs or {}))


class _ScalarReads(TorchDispatchMode):
    """Records ``aten._local_scalar_dense``: the host reads made inside operators (below Python)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def test_train_harness_reads_the_losses_back_once_per_window() -> None:
    """The bench's steps read nothing back to the host (as the trainer's); the terms are summed on the device and
    converted once, after the window, into the mean of the steps' terms."""
    cfg = make_config("smoke", {"data.image_size": 32, "model.pretrained": "none", "train.amp": "off"})
    h = harness.build_train_harness(cfg, "cpu", batch_size=2)
    h.step()  # builds the networks' wrappers outside the window
    h.mean_terms()
    for opt in (h.opt_g, h.opt_d):  # CPU Adam reads its CPU step counter with .item() (no device sync, and CUDA's
        assert opt is not None  # fused Adam keeps it on the GPU): not the harness's doing
        real_step = opt.step
        opt.step = lambda real_step=real_step: _unwatched(real_step)  # type: ignore[method-assign]
    steps = []
    with _HostReads() as py_reads, _ScalarReads() as op_reads:
        for _ in range(3):
            steps.append({k: v.clone() for k, v in h.step().items()})
    assert py_reads.reads == [] and op_reads.reads == 0
    means = h.mean_terms()
    for name, value in means.items():
        assert value == pytest.approx(sum(float(s[name]) for s in steps) / 3, rel=1e-6)
    with pytest.raises(RuntimeError, match="no training step"):
        h.mean_terms()  # a new window starts empty


def _unwatched(fn: Any) -> Any:
    with _disable_current_modes(), torch._C.DisableTorchFunction():
        return fn()


def test_bench_uses_the_trainer_optimisers_and_the_evaluators_gpu_batch() -> None:
    """The bench measures what training and evaluation run: Adam of the trainer (step.make_adam: torch's default
    kernel on CPU) and, on CUDA, the evaluator's own inference batch."""
    cfg = make_config("smoke", {"data.image_size": 32, "model.pretrained": "none"})
    h = harness.build_train_harness(cfg, "cpu", batch_size=2)
    assert h.opt_d is not None
    for opt in (h.opt_g, h.opt_d):
        assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["fused"] is None
        assert opt.param_groups[0]["lr"] == cfg.train.lr and opt.param_groups[0]["betas"] == cfg.train.betas
    assert figures.EVAL_BATCH["cuda"] == eval_batch_size("cuda")


def test_eval_harness_runs_the_evaluation_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = eval_harness.infer_batch
    monkeypatch.setattr(eval_harness, "infer_batch", lambda *a: calls.append(1) or real(*a))
    cfg = make_config("smoke", {"data.image_size": 64})
    h = eval_harness.build_eval_harness(cfg, "cpu", batch_size=2)
    assert h.step() == 2
    assert calls == [1]


def test_no_copy_of_the_training_step_in_the_benchmarks() -> None:
    """The trainer's step is reached through one adapter; no benchmark builds a loss or steps an optimiser."""
    sources = {p.name: p.read_text() for p in BENCH_DIR.glob("*.py")}
    trainer_step = r"(?<!\w)_?train_step\b"  # the trainer's `_train_step` today, its public `train_step` after
    assert [n for n, s in sources.items() if re.search(trainer_step, s)] == ["harness.py"]
    assert len(re.findall(trainer_step + r"\(", sources["harness.py"])) == 1  # the adapter's single call
    for name, src in sources.items():
        for copy in ("generator_objective", "discriminator_objective", ".backward(", "zero_grad", "attention import"):
            assert copy not in src, f"{name} re-implements part of a step ({copy})"


def test_attention_cost_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m benchmarks attention_cost``: both variants run the trainer's step on the same networks."""
    steps = _count_trainer_steps(monkeypatch)
    out = cli.main(["attention_cost", "--image-size", "64", "--reps", "1", "--device", "cpu", "--out",
                    str(tmp_path)])
    rec = json.loads((tmp_path / "attention_cost.json").read_text())
    assert rec["ratio"] == pytest.approx(out["attention_cost"]["ratio"]) and rec["ratio"] > 0
    assert list(rec) == ["benchmark", "image_size", "batch", "variant", "setting", "device", "threads", "reps",
                         "with_s", "without_s", "ratio", "ratio_paired", "times_with_s", "times_without_s", "target"]
    assert len(rec["times_with_s"]) == len(rec["times_without_s"]) == 1
    assert {c.loss.attention_loss for c in steps} == {True, False}
    assert {c.data.image_size for c in steps} == {64}
    with pytest.raises(SystemExit, match="unknown benchmark"):
        cli.main(["issue8"])


class _FakeTrain:
    """A stand-in for a training harness (a small matmul), so the whole bench runs in seconds."""

    def __init__(self, cfg: Any, device: Any, batch_size: int, **_: Any) -> None:
        self.batch_size = batch_size
        self.w = torch.randn(32, 32)

    def data_step(self) -> None:
        torch.randn(4, 4)

    def compute_step(self) -> None:
        self.w @ self.w

    def step(self) -> None:
        self.data_step()
        self.compute_step()


class _FakeEval:
    def __init__(self, cfg: Any, device: Any, batch_size: int) -> None:
        self.images = torch.zeros(batch_size, 1)

    def step(self) -> int:
        return int(self.images.shape[0])


def _first_cells(md: str) -> list[str]:
    """The row labels of every table and the bullet labels (values and machine-specific text dropped)."""
    rows = [re.split(r" \| ", line)[0] for line in md.splitlines() if line.startswith("| ")]
    return rows + [line.split(":")[0] for line in md.splitlines() if line.startswith("- ")]


def test_figures_record_and_report_keep_their_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full (non-quick) CPU bench on stand-in harnesses writes the same keys and rows as the committed record."""
    monkeypatch.setattr(figures, "build_train_harness", _FakeTrain)
    monkeypatch.setattr(figures, "build_eval_harness", _FakeEval)
    monkeypatch.setattr(figures, "gemm_peak_flops", lambda *a, **k: 1e9)
    monkeypatch.setattr(figures, "memory_probe", lambda *a, **k: 2**30)
    threads = torch.get_num_threads()
    try:  # the committed record ran with --threads 1 (no "threads_1" CPU option then)
        res = figures.measure_figures(device="cpu", threads=1, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    ref = json.loads((COMMITTED_BENCH / "bench.json").read_text())
    assert list(res) == list(ref)
    for part in ("train", "eval", "peak_memory_mib", "cpu_options", "study_estimate", "targets"):
        assert list(res[part]) == list(ref[part]), part
    for name, row in ref["train"].items():
        assert list(res["train"][name]) == list(row), name
    j, m = report.write_bench(res, tmp_path)
    assert _first_cells(Path(m).read_text()) == _first_cells((COMMITTED_BENCH / "bench.md").read_text())
    assert json.loads(Path(j).read_text())["repeats"] == 7


def _fake_bench() -> dict:
    train = {
        name: {"batch": 2, "step_s": 2.0, "images_per_s": 1.0, "gflop_per_image": 75.0, "achieved_tflops": 0.07,
               "fraction_of_gemm_peak": 0.5, "fraction_of_gemm_peak_best": 0.6, "data_wait_fraction": 0.01}
        for name in ("AVAGA-R_u@256", "AVAGA-R_w@256")
    }  # fmt: skip
    est = estimate.mvtec_study_hours({"AVAGA-R_u": 1.0}, 2.0)
    return {
        "machine": {"device": "cpu", "cpu": "x86_64", "torch": torch.__version__, "threads": 2},
        "targets": report.TARGETS, "gemm_peak_tflops": 0.1, "main_size": 256, "train": train,
        "fraction_of_gemm_peak_main": 0.5, "fraction_of_gemm_peak_main_best": 0.6, "attention_cost_ratio": 1.01,
        "attention_cost_ratio_best": 1.0, "data_wait_fraction_main": 0.01,
        "eval": {"AVAGA-R_u@256": {"batch": 8, "images_per_s": 3.0}},
        "peak_memory_mib": {"AVAGA-R_u@256": 2000.0}, "peak_memory_kind": "process RSS high-water mark",
        "study_estimate": {"device_kind": "cpu", "hours": est["hours"], "assumed_runs": est["assumed"],
                           "gpu_hours": None},
    }  # fmt: skip


def test_bench_markdown_and_files(tmp_path: Path) -> None:
    res = _fake_bench()
    md = report.bench_markdown(res)
    assert "| step time with L_attn / without (R_u 256 px) | 1.010 | <= 1.05 | yes |" in md
    assert "| training FLOP/s / GEMM peak, R_u 256 px (CPU) | 0.500 | >= 0.7 | no |" in md
    assert "GPU-hours, MVTec Tables 2/3/8 study | unmeasured" in md
    j, m = report.write_bench(res, str(tmp_path))
    assert json.loads(Path(j).read_text())["train"]["AVAGA-R_u@256"]["images_per_s"] == 1.0
    assert Path(m).read_text() == md
