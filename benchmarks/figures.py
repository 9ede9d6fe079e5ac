"""Every figure of ``bench.md`` measured in one process (what ``make bench`` runs), see :func:`measure_figures`.

Everything here *measures* on the machine it runs on; nothing is a hard-coded speed. Throughputs are medians of
interleaved repetitions (:mod:`benchmarks.timing`) and are reported as ratios against a GEMM peak measured in the
same process.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable
from typing import Any

import torch

from avaga_lib.evaluation.evaluate import eval_batch_size
from avaga_lib.runtime import resolve_device
from benchmarks.estimate import mvtec_study_hours
from benchmarks.eval_harness import build_eval_harness
from benchmarks.flops import count_flops, gemm_peak_flops
from benchmarks.harness import TrainHarness, build_train_harness, variant_config
from benchmarks.machine import configure_backends, machine_info
from benchmarks.memory import memory_probe
from benchmarks.report import TARGETS, bench_markdown
from benchmarks.timing import interleaved_medians, interleaved_times, paired_ratio

TRAIN_BATCH: dict[str, dict[int, int]] = {
    "cpu": {256: 2, 128: 4},  # CPU: small batches so a repetition takes seconds, not minutes
    "cuda": {256: 64, 128: 128},  # GPU: large enough to fill an H200 (the paper's 24 under-fills it)
}
# evaluation: CPU 8 (the committed CPU record); CUDA the evaluator's own batch, so the figure is what evaluate_run runs
EVAL_BATCH: dict[str, int] = {"cpu": 8, "cuda": eval_batch_size("cuda")}
SETTINGS: tuple[tuple[str, str], ...] = (("unsupervised", "R_u"), ("weak", "R_w"))  # (train.setting, run tag)
AMP = "auto"  # the trainer's default: bf16 on CUDA, fp32 on CPU


def train_batch(kind: str, size: int) -> int:
    """Images per training step benchmarked on ``kind`` ("cpu" | "cuda") at ``size`` px."""
    return TRAIN_BATCH[kind].get(size, TRAIN_BATCH[kind][128])


def _training_harnesses(dev: torch.device, kind: str, sizes: tuple[int, int]) -> dict[str, TrainHarness]:
    """R_u and R_w at both sides, plus R_u without L_attn at the main side (the attention cost's denominator)."""
    harnesses = {
        f"AVAGA-{tag}@{size}": build_train_harness(variant_config(size, setting, AMP), dev, train_batch(kind, size))
        for size in sizes
        for setting, tag in SETTINGS
    }
    main = sizes[0]
    harnesses[f"AVAGA-R_u@{main}-noattn"] = build_train_harness(
        variant_config(main, "unsupervised", AMP, attention=False), dev, train_batch(kind, main)
    )
    return harnesses


def _step_flops(harnesses: dict[str, TrainHarness], log: Callable[[str], None]) -> dict[str, int]:
    """FLOPs of one compute step of each harness (FlopCounterMode over a real step; also warms every harness up)."""
    flops: dict[str, int] = {}
    for name, h in harnesses.items():
        h.data_step()
        flops[name] = count_flops(h.compute_step)
        log(f"{name}: {flops[name] / h.batch_size / 1e9:.1f} GFLOP per training image")
    return flops


def _train_row(batch: int, flops: int, samples: list[float], data_samples: list[float] | None,
               peak: float) -> dict[str, Any]:
    """Throughput and FLOP/s of one configuration from its step samples (seconds per full step)."""
    t, best = statistics.median(samples), min(samples)  # best: least disturbed by other processes
    row: dict[str, Any] = {
        "batch": batch,
        "step_s": t,
        "images_per_s": batch / t,
        "gflop_per_image": flops / batch / 1e9,
        "achieved_tflops": flops / t / 1e12,
        "fraction_of_gemm_peak": flops / t / peak,
        "step_s_best": best,
        "fraction_of_gemm_peak_best": flops / best / peak,
        "step_s_samples": samples,
    }
    if data_samples is not None:
        row["data_s"] = statistics.median(data_samples)
        row["data_wait_fraction"] = row["data_s"] / t
    return row


def _training_summary(train: dict[str, Any], samples: dict[str, list[float]], main: int) -> dict[str, Any]:
    """The headline ratios at the main side: attention cost (three readings), data wait, fraction of peak."""
    with_attn, without = f"AVAGA-R_u@{main}", f"AVAGA-R_u@{main}-noattn"
    return {
        "attention_cost_ratio": train[with_attn]["step_s"] / train[without]["step_s"],
        "attention_cost_ratio_best": train[with_attn]["step_s_best"] / train[without]["step_s_best"],
        "attention_cost_ratio_paired": paired_ratio(samples[with_attn], samples[without]),
        "data_wait_fraction_main": max(train[f"AVAGA-{t}@{main}"]["data_wait_fraction"] for t in ("R_u", "R_w")),
        "fraction_of_gemm_peak_main": train[with_attn]["fraction_of_gemm_peak"],
        "fraction_of_gemm_peak_main_best": train[with_attn]["fraction_of_gemm_peak_best"],
    }


def measure_training(dev: torch.device, kind: str, sizes: tuple[int, int], repeats: int,
                     log: Callable[[str], None]) -> dict[str, Any]:
    """GEMM peak (before and after), then every training configuration's full step and data step, interleaved.

    Returns:
        the training part of the bench record (``gemm_peak_tflops`` ... ``fraction_of_gemm_peak_main_best``).
    """
    gemm_dtype = torch.bfloat16 if kind == "cuda" else torch.float32
    peaks = [gemm_peak_flops(dev, gemm_dtype, repeats=3)]
    log(f"GEMM peak ({gemm_dtype}): {peaks[0] / 1e9:.1f} GFLOP/s")
    harnesses = _training_harnesses(dev, kind, sizes)
    flops = _step_flops(harnesses, log)
    fns: dict[str, Callable[[], Any]] = {name: h.step for name, h in harnesses.items()}
    fns |= {f"data:{name}": h.data_step for name, h in harnesses.items() if "noattn" not in name}
    samples = interleaved_times(fns, repeats=repeats)  # the Timer warms each block up (cudnn autotuning included)
    peaks.append(gemm_peak_flops(dev, gemm_dtype, repeats=3))
    peak = max(peaks)  # the best the machine showed during the run
    train: dict[str, Any] = {}
    for name, h in harnesses.items():
        train[name] = _train_row(h.batch_size, flops[name], samples[name], samples.get(f"data:{name}"), peak)
        log(f"{name}: {train[name]['images_per_s']:.2f} img/s, {train[name]['fraction_of_gemm_peak']:.2f} of peak")
    return {
        "gemm_peak_tflops": peak / 1e12,
        "gemm_peak_samples_tflops": [p / 1e12 for p in peaks],
        "train": train,
        "main_size": sizes[0],
        **_training_summary(train, samples, sizes[0]),
    }


def measure_cpu_options(dev: torch.device, size: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Step time of AVAGA-R_u at ``size`` under the CPU options, interleaved; ratios to the default (fp32, NCHW).

    Options: channels_last, bf16 autocast, a 4x larger batch, and 1 thread instead of torch's count.
    """
    n_threads = torch.get_num_threads()
    base_cfg = variant_config(size, "unsupervised", "off")
    bs = train_batch("cpu", size)
    hs = {
        "default": build_train_harness(base_cfg, dev, bs, channels_last=False),
        "channels_last": build_train_harness(base_cfg, dev, bs, channels_last=True),
        "bf16_autocast": build_train_harness(variant_config(size, "unsupervised", "bf16"), dev, bs,
                                             channels_last=False),
        "batch_x4": build_train_harness(base_cfg, dev, 4 * bs, channels_last=False),
    }

    def one_thread() -> None:
        torch.set_num_threads(1)
        try:
            hs["default"].step()
        finally:
            torch.set_num_threads(n_threads)

    fns: dict[str, Callable[[], Any]] = {k: h.step for k, h in hs.items()}
    if n_threads > 1:
        fns["threads_1"] = one_thread
    med = interleaved_medians(fns, repeats=repeats)
    per_image = {k: med[k] / (4 * bs if k == "batch_x4" else bs) for k in med}
    out = {k: {"s_per_image": v, "speedup_vs_default": per_image["default"] / v} for k, v in per_image.items()}
    log(f"CPU options (R_u {size} px): " + ", ".join(f"{k} x{v['speedup_vs_default']:.2f}" for k, v in out.items()))
    return out


def measure_eval(dev: torch.device, kind: str, size: int, repeats: int) -> dict[str, Any]:
    """Evaluation images/s (Grad-CAM + metrics) of R_u and R_w at ``size`` px, interleaved."""
    ev = {tag: build_eval_harness(variant_config(size, setting, AMP), dev, EVAL_BATCH[kind])
          for setting, tag in SETTINGS}  # fmt: skip
    med = interleaved_medians({k: h.step for k, h in ev.items()}, repeats=repeats)
    return {f"AVAGA-{k}@{size}": {"batch": ev[k].images.shape[0], "images_per_s": ev[k].images.shape[0] / t}
            for k, t in med.items()}  # fmt: skip


def measure_peak_memory(dev: torch.device, kind: str, size: int) -> dict[str, float]:
    """Peak memory (MiB) of one R_u / R_w training step at ``size`` px, each in a fresh process."""
    return {
        f"AVAGA-{tag}@{size}": memory_probe(size, setting, str(dev), train_batch(kind, size), AMP) / 2**20
        for setting, tag in SETTINGS
    }


def _study_estimate(res: dict[str, Any], kind: str) -> dict[str, Any]:
    """Hours of the full MVTec Tables 2/3/8 study at this run's throughputs (GPU-hours only on CUDA)."""
    main = res["main_size"]
    tputs = {f"AVAGA-{t}": res["train"][f"AVAGA-{t}@{main}"]["images_per_s"] for t in ("R_u", "R_w")}
    est = mvtec_study_hours(tputs, eval_images_per_s=res["eval"][f"AVAGA-R_u@{main}"]["images_per_s"])
    return {
        "device_kind": kind,
        "hours": est["hours"],
        "assumed_runs": est["assumed"],
        "gpu_hours": est["hours"] if kind == "cuda" else None,  # unmeasured without a GPU
    }


def measure_figures(
    device: str = "auto",
    quick: bool = False,
    threads: int | None = None,
    sizes: tuple[int, int] = (256, 128),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every figure of ``bench.md`` in one process and return the bench record.

    Figures: GEMM peak; training images/s and FLOP/s (FlopCounterMode over one full step) at 256 and 128 px for
    AVAGA-R_u and AVAGA-R_w, as a fraction of the GEMM peak; attention cost (R_u 256 px step with L_attn /
    without); data-wait fraction (data step / whole step); evaluation images/s (Grad-CAM + metrics); peak memory;
    the MVTec Tables 2/3/8 study estimate. On CPU (unless ``quick``) also the CPU options that were tried:
    1 vs all threads, channels_last, bf16 autocast, a 4x batch (at the second side).

    Args:
        device: "auto" (cuda when available), "cpu" or "cuda".
        quick: fewer repetitions and no CPU-option study (smoke check of the bench itself).
        threads: CPU threads (default: torch's).
        sizes: (main side, second side); the targets refer to the main side (256).
        log: progress printer.
    """
    dev = resolve_device(device)
    kind = "cuda" if dev.type == "cuda" else "cpu"
    backends = configure_backends(dev, threads)  # first: the machine record reads the thread count it sets
    res: dict[str, Any] = {"machine": machine_info(dev), "backends": backends, "targets": TARGETS}
    repeats = 3 if quick else (7 if kind == "cpu" else 5)  # CPU steps take seconds and shared CPUs are noisy
    res |= measure_training(dev, kind, sizes, repeats, log)
    res["repeats"] = repeats
    if kind == "cpu" and not quick:
        res["cpu_options"] = measure_cpu_options(dev, sizes[1], min(repeats, 3), log)  # bf16 on CPU is ~10x slower
    gc.collect()
    res["eval"] = measure_eval(dev, kind, sizes[0], repeats)
    gc.collect()
    res["peak_memory_mib"] = measure_peak_memory(dev, kind, sizes[0])
    res["peak_memory_kind"] = "torch.cuda.max_memory_allocated" if kind == "cuda" else "process RSS high-water mark"
    res["study_estimate"] = _study_estimate(res, kind)
    log(bench_markdown(res))
    return res
