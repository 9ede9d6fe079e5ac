"""Measurement helpers of ``make bench`` (issue 8): GEMM peak, FLOP counts, interleaved timing, memory, estimates.

Everything here *measures* on the machine it runs on; nothing is a hard-coded speed. Machines are noisy, so
throughputs come from the median of interleaved repetitions (configs A, B, A, B, ...) and are reported as ratios
against a GEMM peak measured in the same process. Tests check structures and exact FLOP formulas, never timings.

Main entry points:

* :func:`gemm_peak_flops`: achieved FLOP/s of a large square matmul (the "peak" the training efficiency is
  compared with).
* :func:`count_flops`: FLOPs of any callable via ``torch.utils.flop_counter.FlopCounterMode`` (forward, backward and
  double backward alike: it sees every aten op).
* :class:`TrainHarness` / :func:`build_train_harness`: one full training step of the trainer's recipe (data step:
  index a batch of uint8 tensors + ``augment_batch`` on the device; generator objective with Grad-CAM; D step),
  with separately callable data and compute parts so the data-wait fraction can be measured.
* :func:`interleaved_medians`: median seconds per call of several callables, interleaved.
* :func:`reset_peak_memory` / :func:`peak_memory_bytes`: RSS high-water mark (``/proc``) on CPU, max allocated on
  CUDA.
* :func:`mvtec_study_hours`: hours of the full MVTec Tables 2/3/8 study from measured throughputs.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from avaga_lib.config import RunConfig
from avaga_lib.runtime import amp_dtype, autocast, resolve_device, synchronize

# MVTec AD train/good counts per category (Bergmann et al. 2019, the public release); used only for the estimate.
MVTEC_TRAIN_COUNTS: dict[str, int] = {
    "bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264, "hazelnut": 391, "leather": 245,
    "metal_nut": 220, "pill": 267, "screw": 320, "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247,
    "zipper": 240,
}  # fmt: skip
MVTEC_TEST_COUNTS: dict[str, int] = {
    "bottle": 83, "cable": 150, "capsule": 132, "carpet": 117, "grid": 78, "hazelnut": 110, "leather": 124,
    "metal_nut": 115, "pill": 167, "screw": 160, "tile": 117, "toothbrush": 42, "transistor": 100, "wood": 79,
    "zipper": 151,
}  # fmt: skip
# Training runs behind Tables 2/3 (AE-SSIM, AE-L2, AVAGA-D/R in both settings) and Table 8 (4 more ablations).
STUDY_RUNS: tuple[str, ...] = (
    "AE-SSIM", "AE-L2", "AVAGA-D_u", "AVAGA-R_u", "AVAGA-D_w", "AVAGA-R_w",
    "AVAGA-R_u-noattn", "AVAGA-R_u-flat", "AVAGA-R_w-noadv", "AVAGA-R_w-noSGB",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------- device


def configure_backends(device: torch.device | str, threads: int | None = None) -> dict[str, Any]:
    """Set the global speed switches of a run and return what was set (for the bench record).

    CUDA: cudnn.benchmark (fixed input sizes, so autotuning pays after the first step) and TF32 matmuls for the
    float32 parts outside autocast. CPU: optional thread count.
    """
    done: dict[str, Any] = {}
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithm once
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 leftovers outside bf16 autocast
        torch.backends.cudnn.allow_tf32 = True
        done |= {"cudnn_benchmark": True, "tf32": True}
    if threads is not None:
        torch.set_num_threads(threads)
    done["threads"] = torch.get_num_threads()
    return done


# ------------------------------------------------------------------------------------------------------------ flops


def gemm_peak_flops(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
) -> float:
    """Achieved FLOP/s of an ``n x n`` by ``n x n`` matmul (2 n^3 FLOPs), best of ``repeats``.

    The best, not the median: it is the ceiling the training efficiency is compared with.

    Args:
        device: where to run.
        dtype: float32 on CPU; bf16 on CUDA matches the autocast training.
        n: matrix side; default 2048 on CPU (about 17 GFLOP, ~0.1-0.3 s on 2 cores), 8192 on CUDA.
        repeats: timed repetitions.
        warmup: untimed repetitions (thread pools, cuBLAS handles).
    """
    device = torch.device(device)
    if n is None:
        n = 8192 if device.type == "cuda" else 2048
    if n <= 0 or repeats <= 0:
        raise ValueError(f"gemm_peak_flops: n={n} and repeats={repeats} must be positive")
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    synchronize(device)
    best = math.inf
    inner = 10 if device.type == "cuda" else 1  # one 8192^3 GEMM is ~1 ms on a big GPU: time several
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, (time.perf_counter() - t0) / inner)
    return 2.0 * n**3 / best


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn`` as counted by ``torch.utils.flop_counter.FlopCounterMode``.

    The counter sees every aten op dispatched inside ``fn``, including backward and double backward, and counts
    matmul / conv / bmm (elementwise ops are not counted: they are small next to the convolutions here).
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def linear_flops(batch: int, in_features: int, out_features: int) -> int:
    """Forward FLOPs of ``nn.Linear`` without bias as FlopCounterMode counts them: 2 * B * in * out."""
    return 2 * batch * in_features * out_features


def conv2d_flops(batch: int, c_in: int, c_out: int, kernel: int, h_out: int, w_out: int, groups: int = 1) -> int:
    """Forward FLOPs of a 2-D convolution as FlopCounterMode counts them: 2 * B * Cout * Hout * Wout * Cin/g * k^2."""
    return 2 * batch * c_out * h_out * w_out * (c_in // groups) * kernel * kernel


# ----------------------------------------------------------------------------------------------------------- timing


def interleaved_times(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 3,
    calls: int = 1,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Seconds per call of each callable in every round, timing them interleaved (A, B, A, B, ...).

    Interleaving spreads slow phases of a noisy machine over every candidate, so their ratios are fair.

    Args:
        fns: name -> callable (one training step, one data step, ...).
        repeats: rounds; each round times ``calls`` consecutive calls of every callable.
        calls: calls per timed block (the block time is divided by it).
        warmup: untimed calls of each callable before the first round.
        device: synchronised before and after each block.

    Returns:
        name -> ``repeats`` samples (seconds per call).
    """
    if repeats <= 0 or calls <= 0:
        raise ValueError(f"interleaved_times: repeats={repeats} and calls={calls} must be positive")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            synchronize(device)
            samples[name].append((time.perf_counter() - t0) / calls)
    return samples


def interleaved_medians(
    fns: Mapping[str, Callable[[], Any]],
    repeats: int = 3,
    calls: int = 1,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Median seconds per call of each callable over interleaved rounds (see :func:`interleaved_times`)."""
    return {k: statistics.median(v) for k, v in interleaved_times(fns, repeats, calls, warmup, device).items()}


# ----------------------------------------------------------------------------------------------------------- memory


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_memory(device: torch.device | str = "cpu") -> bool:
    """Reset the peak-memory counter; returns False where it cannot (the peak then covers the whole process).

    CPU: writing ``5`` to ``/proc/self/clear_refs`` resets the RSS high-water mark (Linux >= 4.0).
    """
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_memory_bytes(device: torch.device | str = "cpu") -> int:
    """Peak memory since the last reset: ``torch.cuda.max_memory_allocated`` on CUDA, RSS high-water mark on CPU.

    Raises:
        RuntimeError: on CPU when ``/proc/self/status`` has no ``VmHWM`` (non-Linux).
    """
    if torch.device(device).type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        raise RuntimeError("peak_memory_bytes: /proc/self/status has no VmHWM (Linux only on CPU)")
    return kb * 1024


# ---------------------------------------------------------------------------------------------------- training step


@dataclass
class TrainHarness:
    """One training step of the trainer (``avaga_lib.train``), split into a data part and a compute part.

    The data part is the trainer's data path: index a batch of the uint8 tensor that already sits on the device,
    then ``augment_batch`` (crop + rotation) on the device. The compute part is the trainer's own step function
    (generator objective with Grad-CAM, backward, Adam; discriminator objective, backward, Adam), so the bench
    measures exactly what training runs.

    Attributes:
        cfg: run config.
        device: training device.
        model: AVAGA generator (or AE baseline).
        disc: discriminator (None for the baselines).
        opt_g: Adam of the generator.
        opt_d: Adam of the discriminator (None for the baselines).
        images_u8: uint8 (N, 3, T, T) training tensors on the device (T = round(S * resize ratio)).
        masks_u8: uint8 (N, 1, 1, 1) zeros on the device (the trainer never trains on masks).
        labels: int64 (N,) on the device.
        batch_size: images per step.
        amp: autocast dtype or None.
        channels_last: whether inputs (and the networks) use the channels_last memory format.
    """

    cfg: RunConfig
    device: torch.device
    model: nn.Module
    disc: nn.Module | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    images_u8: Tensor
    masks_u8: Tensor
    labels: Tensor
    batch_size: int
    amp: torch.dtype | None = None
    channels_last: bool = False
    _gen: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    _aug_gen: torch.Generator | None = None
    _last: tuple[Tensor, Tensor] | None = None

    def data_step(self) -> tuple[Tensor, Tensor]:
        """Index a random batch on the device and augment it there (the trainer's data path).

        Returns:
            (x, labels): float images in [0, 1] (B, 3, S, S) and int64 labels, on the device.
        """
        from avaga_lib.data import augment_batch

        if self._aug_gen is None:
            self._aug_gen = torch.Generator(device=self.device).manual_seed(1)
        idx = torch.randint(0, self.images_u8.shape[0], (self.batch_size,), generator=self._gen)
        idx = idx.to(self.device, non_blocking=self.device.type == "cuda")
        x, _ = augment_batch(
            self.images_u8[idx], self.masks_u8[idx], self.cfg.data.image_size, self.cfg.data.rotation_deg,
            generator=self._aug_gen,
        )
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self._last = (x, self.labels[idx])
        return self._last

    def compute_step(self, batch: tuple[Tensor, Tensor] | None = None) -> dict[str, float]:
        """The trainer's optimisation step (``avaga_lib.train.train_step``) on a batch; returns the loss terms.

        Args:
            batch: output of :meth:`data_step`; default the last one (so compute can be timed alone).
        """
        from avaga_lib.train import make_nets, train_step

        if batch is None:
            batch = self._last if self._last is not None else self.data_step()
        x, labels = batch
        return train_step(self.cfg, make_nets(self.model, self.disc, self.opt_g, self.opt_d), x, labels, self.amp)

    def step(self) -> dict[str, float]:
        """Data step then compute step: one full training step."""
        return self.compute_step(self.data_step())


def synthetic_u8(n: int, side: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Random uint8 images / masks / labels of the trainer's in-memory layout (the bench needs no dataset on disk).

    Speed does not depend on pixel values, so random content measures the same as real images. A quarter of the
    labels are anomalous (weak setting: SGB and the classifier paths run); masks mark a square on those.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    masks = torch.zeros(n, 1, side, side, dtype=torch.uint8)
    labels = torch.zeros(n, dtype=torch.int64)
    labels[: max(1, n // 4)] = 1
    masks[labels == 1, :, side // 4 : side // 2, side // 4 : side // 2] = 1
    return images, masks, labels


def build_train_harness(
    cfg: RunConfig, device: torch.device | str, batch_size: int, n_images: int = 0, channels_last: bool | None = None
) -> TrainHarness:
    """Networks, Adam and in-memory uint8 data of ``cfg`` on ``device``, ready to step (random init, no download).

    Args:
        cfg: run config; ``data.image_size``, ``train.setting``, ``train.amp``, ``method`` are used.
        device: training device.
        batch_size: images per step.
        n_images: size of the in-memory set (default 4 batches).
        channels_last: memory format of networks and inputs; None = the trainer's rule (``train.channels_last``
            on CUDA only); True measures it on CPU too.
    """
    from dataclasses import replace

    from avaga_lib.train import build_networks

    device = torch.device(device)
    cfg = replace(cfg, model=replace(cfg.model, pretrained="none"))  # speed does not depend on the init
    model, disc, _ = build_networks(cfg)
    if channels_last is None:
        channels_last = bool(cfg.train.channels_last) and device.type == "cuda"
    fmt = torch.channels_last if channels_last else torch.preserve_format
    model = model.to(device=device, memory_format=fmt).train()
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    opt_d = None
    if disc is not None:
        disc = disc.to(device=device, memory_format=fmt).train()
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.train.lr, betas=cfg.train.betas)
    side = round(cfg.data.image_size * cfg.data.train_resize_ratio)
    images, _, labels = synthetic_u8(n_images or 4 * batch_size, side)
    return TrainHarness(
        cfg=cfg,
        device=device,
        model=model,
        disc=disc,
        opt_g=opt_g,
        opt_d=opt_d,
        images_u8=images.to(device),
        masks_u8=torch.zeros((images.shape[0], 1, 1, 1), dtype=torch.uint8, device=device),
        labels=labels.to(device),
        batch_size=batch_size,
        amp=amp_dtype(cfg.train.amp, device),
        channels_last=channels_last,
    )


@dataclass
class EvalHarness:
    """One evaluation batch: ``attention.infer`` (Grad-CAM maps) + streamed pixel metrics + IoU at the threshold."""

    cfg: RunConfig
    device: torch.device
    model: nn.Module
    images: Tensor
    masks: Tensor
    amp: torch.dtype | None = None

    def step(self) -> int:
        """Copy a uint8 batch to the device, infer, accumulate metrics; returns the number of images processed."""
        from avaga_lib.attention import infer
        from avaga_lib.metrics import PixelMetricAccumulator, binarize, iou_per_image

        x = self.images.to(self.device, non_blocking=True).float().div_(255.0)
        with autocast(self.device, self.amp):
            inf = infer(self.model, x, self.cfg.model, self.cfg.train.setting)
        amap = inf.amap.float()
        acc = PixelMetricAccumulator(bins=self.cfg.eval.pixel_bins, max_fpr=self.cfg.eval.aupro_max_fpr)
        acc.update(amap, self.masks)
        iou_per_image(binarize(amap, self.cfg.eval.threshold), self.masks)
        return int(x.shape[0])


def build_eval_harness(cfg: RunConfig, device: torch.device | str, batch_size: int) -> EvalHarness:
    """An eval-mode AVAGA of ``cfg`` (random init) and one batch of test-sized uint8 images with masks."""
    from dataclasses import replace

    from avaga_lib.model import build_model

    device = torch.device(device)
    size = cfg.data.image_size
    model, _ = build_model(replace(cfg.model, pretrained="none"), size, cfg.train.setting)
    fmt = torch.channels_last if cfg.train.channels_last and device.type == "cuda" else torch.preserve_format
    model = model.to(device=device, memory_format=fmt).eval()
    images, masks, _ = synthetic_u8(batch_size, size, seed=1)
    if device.type == "cuda":
        images = images.pin_memory()
    return EvalHarness(cfg, device, model, images, masks, amp_dtype(cfg.train.amp, device))


# --------------------------------------------------------------------------------------------------------- estimate


def mvtec_study_images(
    epochs: int = 150, val_fraction: float = 0.1, weak_fraction: float = 0.02, runs: tuple[str, ...] = STUDY_RUNS
) -> dict[str, dict[str, int]]:
    """Training and test images each run of the MVTec Tables 2/3/8 study processes, summed over the 15 categories.

    Returns:
        run name -> {"train_images": images seen in training over all epochs, "test_images": evaluated images}.
    """
    out: dict[str, dict[str, int]] = {}
    for run in runs:
        weak = run.startswith("AVAGA") and "_w" in run
        train = test = 0
        for cat, n in MVTEC_TRAIN_COUNTS.items():
            n_tr = n - round(n * val_fraction)
            n_test = MVTEC_TEST_COUNTS[cat]
            if weak:
                moved = round(n_test * weak_fraction)  # approximation: fraction of all test images
                n_tr += moved
                n_test -= moved
            train += n_tr * epochs
            test += n_test + round(n * val_fraction)  # validation maps for calibration are inferred too
        out[run] = {"train_images": train, "test_images": test}
    return out


def mvtec_study_hours(
    train_images_per_s: Mapping[str, float],
    eval_images_per_s: float,
    epochs: int = 150,
    fallback: str = "AVAGA-R_u",
) -> dict[str, Any]:
    """Hours of the full MVTec Tables 2/3/8 study at the measured throughputs.

    Runs without their own measurement use the throughput of ``fallback`` (AVAGA-R_u is the most expensive
    AVAGA variant with R_w; the D variants and the autoencoders are cheaper, so this over-estimates).

    Args:
        train_images_per_s: run name (as in :data:`STUDY_RUNS`) -> measured training images/s.
        eval_images_per_s: measured evaluation images/s (Grad-CAM + metrics).
        epochs: training epochs (paper: 150).
        fallback: run whose throughput stands in for unmeasured runs.

    Returns:
        dict with ``hours`` (total), ``per_run_hours``, ``assumed`` (runs that used the fallback).
    """
    if fallback not in train_images_per_s:
        raise ValueError(f"mvtec_study_hours: the fallback run '{fallback}' has no measured throughput")
    counts = mvtec_study_images(epochs)
    per_run: dict[str, float] = {}
    assumed: list[str] = []
    for run, c in counts.items():
        tput = train_images_per_s.get(run)
        if tput is None:
            tput = train_images_per_s[fallback]
            assumed.append(run)
        per_run[run] = (c["train_images"] / tput + c["test_images"] / eval_images_per_s) / 3600.0
    return {"hours": sum(per_run.values()), "per_run_hours": per_run, "assumed": assumed, "epochs": epochs}


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """``with timed() as t: ...`` then ``t["s"]`` holds the wall seconds of the block."""
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield t
    finally:
        t["s"] = time.perf_counter() - t0


# -------------------------------------------------------------------------------------------------------- benchmark

TARGETS: dict[str, float] = {
    "cpu_train_fraction_of_gemm_peak_256": 0.70,  # issue 8: achieved FLOP/s >= 0.70 of the measured GEMM peak
    "attention_cost_ratio": 1.05,  # issue 8: step with L_attn / without <= 1.05
    "data_wait_fraction": 0.05,  # issue 8: data step / whole step <= 0.05
    "gpu_train_images_per_s_256": 2000.0,  # issue 8: H200, AVAGA-R_u at 256 px
    "gpu_study_hours": 1.0,  # issue 8: full MVTec Tables 2/3/8 study on one GPU
}
BENCH_BATCH: dict[str, dict[int, int]] = {
    "cpu": {256: 2, 128: 4},  # CPU: small batches so a repetition takes seconds, not minutes
    "cuda": {256: 64, 128: 128},  # GPU: large enough to fill an H200 (the paper's 24 under-fills it)
}
EVAL_BATCH: dict[str, int] = {"cpu": 8, "cuda": 128}


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (they mean nothing without it)."""
    import os
    import platform

    info: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    with contextlib.suppress(OSError):
        info["loadavg_1min_at_start"] = os.getloadavg()[0]  # other processes share the CPU: read figures with it
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _variant_cfg(size: int, setting: str, amp: str, attention: bool = True) -> RunConfig:
    from avaga_lib.config import make_config

    return make_config(
        "paper",
        {"data.image_size": size, "train.setting": setting, "train.amp": amp, "loss.attention_loss": attention},
    )


def run_benchmark(
    device: str = "auto",
    quick: bool = False,
    threads: int | None = None,
    sizes: tuple[int, int] = (256, 128),
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Measure every figure of issue 8 in one process and return them (see :func:`bench_markdown`).

    Figures: GEMM peak; training images/s and FLOP/s (FlopCounterMode over one full step) at 256 and 128 px for
    AVAGA-R_u and AVAGA-R_w, as a fraction of the GEMM peak; attention cost (R_u 256 px step with L_attn /
    without); data-wait fraction (data step / whole step); evaluation images/s (Grad-CAM + metrics); peak memory;
    the MVTec Tables 2/3/8 study estimate. On CPU (unless ``quick``) also the CPU options that were tried:
    1 vs all threads, channels_last, bf16 autocast (at 128 px).

    Args:
        device: "auto" (cuda when available), "cpu" or "cuda".
        quick: fewer repetitions and no CPU-option study (smoke check of the bench itself).
        threads: CPU threads (default: torch's).
        sizes: (main side, second side); the targets refer to the main side (256; tests pass smaller ones).
        log: progress printer.
    """
    main = sizes[0]
    dev = resolve_device(device)
    kind = "cuda" if dev.type == "cuda" else "cpu"
    backends = configure_backends(dev, threads)
    res: dict[str, Any] = {"machine": machine_info(dev), "backends": backends, "targets": TARGETS}
    amp = "auto"  # the trainer's default: bf16 on CUDA, fp32 on CPU
    gemm_dtype = torch.bfloat16 if kind == "cuda" else torch.float32
    repeats = 3 if quick else (7 if kind == "cpu" else 5)  # CPU steps take seconds and shared CPUs are noisy
    peaks = [gemm_peak_flops(dev, gemm_dtype, repeats=3)]
    log(f"GEMM peak ({gemm_dtype}): {peaks[0] / 1e9:.1f} GFLOP/s")

    # --- training: FLOPs of one full step (also the warm-up), then interleaved timing
    harness: dict[str, TrainHarness] = {}
    flops: dict[str, int] = {}
    for size in sizes:
        for setting, tag in (("unsupervised", "R_u"), ("weak", "R_w")):
            name = f"AVAGA-{tag}@{size}"
            harness[name] = build_train_harness(_variant_cfg(size, setting, amp), dev, _batch(kind, size))
    harness[f"AVAGA-R_u@{main}-noattn"] = build_train_harness(
        _variant_cfg(main, "unsupervised", amp, attention=False), dev, _batch(kind, main)
    )
    for name, h in harness.items():
        h.data_step()
        flops[name] = count_flops(h.compute_step)
        log(f"{name}: {flops[name] / h.batch_size / 1e9:.1f} GFLOP per training image")
    fns: dict[str, Callable[[], Any]] = {name: h.step for name, h in harness.items()}
    fns |= {f"data:{name}": h.data_step for name, h in harness.items() if "noattn" not in name}
    samples = interleaved_times(fns, repeats=repeats, warmup=0 if kind == "cpu" else 2, device=dev)
    med = {k: statistics.median(v) for k, v in samples.items()}
    best = {k: min(v) for k, v in samples.items()}  # least disturbed by other processes (reported beside)
    peaks.append(gemm_peak_flops(dev, gemm_dtype, repeats=3))
    peak = max(peaks)  # the best the machine showed during the run
    train: dict[str, Any] = {}
    for name, h in harness.items():
        t = med[name]
        train[name] = {
            "batch": h.batch_size,
            "step_s": t,
            "images_per_s": h.batch_size / t,
            "gflop_per_image": flops[name] / h.batch_size / 1e9,
            "achieved_tflops": flops[name] / t / 1e12,
            "fraction_of_gemm_peak": flops[name] / t / peak,
            "step_s_best": best[name],
            "fraction_of_gemm_peak_best": flops[name] / best[name] / peak,
            "step_s_samples": samples[name],
        }
        if f"data:{name}" in med:
            train[name]["data_s"] = med[f"data:{name}"]
            train[name]["data_wait_fraction"] = med[f"data:{name}"] / t
        log(f"{name}: {train[name]['images_per_s']:.2f} img/s, {train[name]['fraction_of_gemm_peak']:.2f} of peak")
    res["gemm_peak_tflops"] = peak / 1e12
    res["gemm_peak_samples_tflops"] = [p / 1e12 for p in peaks]
    res["train"] = train
    res["main_size"] = main
    res["attention_cost_ratio"] = med[f"AVAGA-R_u@{main}"] / med[f"AVAGA-R_u@{main}-noattn"]
    res["attention_cost_ratio_best"] = best[f"AVAGA-R_u@{main}"] / best[f"AVAGA-R_u@{main}-noattn"]
    res["attention_cost_ratio_paired"] = statistics.median(  # per-round ratios: cancels drifts of the machine
        a / b for a, b in zip(samples[f"AVAGA-R_u@{main}"], samples[f"AVAGA-R_u@{main}-noattn"])
    )
    res["data_wait_fraction_main"] = max(train[f"AVAGA-{t}@{main}"]["data_wait_fraction"] for t in ("R_u", "R_w"))
    res["fraction_of_gemm_peak_main"] = train[f"AVAGA-R_u@{main}"]["fraction_of_gemm_peak"]
    res["fraction_of_gemm_peak_main_best"] = train[f"AVAGA-R_u@{main}"]["fraction_of_gemm_peak_best"]
    res["repeats"] = repeats

    # --- CPU options: what limits the CPU efficiency (measured, not guessed)
    if kind == "cpu" and not quick:
        res["cpu_options"] = _cpu_options(dev, sizes[1], min(repeats, 3), log)  # bf16 on CPU is ~10x slower
    del harness, fns
    import gc

    gc.collect()

    # --- evaluation throughput (Grad-CAM + metrics), main side
    ev = {tag: build_eval_harness(_variant_cfg(main, s, amp), dev, EVAL_BATCH[kind]) for s, tag in
          (("unsupervised", "R_u"), ("weak", "R_w"))}  # fmt: skip
    emed = interleaved_medians({k: h.step for k, h in ev.items()}, repeats=repeats, warmup=1, device=dev)
    res["eval"] = {f"AVAGA-{k}@{main}": {"batch": ev[k].images.shape[0], "images_per_s": ev[k].images.shape[0] / t}
                   for k, t in emed.items()}  # fmt: skip
    del ev
    gc.collect()

    # --- peak memory of one training step, each configuration in a fresh process (a process that already ran
    # others keeps their freed heap in its RSS, which would inflate the CPU figure)
    mem: dict[str, float] = {}
    for setting, tag in (("unsupervised", "R_u"), ("weak", "R_w")):
        mem[f"AVAGA-{tag}@{main}"] = memory_probe(main, setting, str(dev), _batch(kind, main), amp) / 2**20
    res["peak_memory_mib"] = mem
    res["peak_memory_kind"] = "torch.cuda.max_memory_allocated" if kind == "cuda" else "process RSS high-water mark"

    # --- estimate of the full MVTec Tables 2/3/8 study
    tputs = {f"AVAGA-{t}": train[f"AVAGA-{t}@{main}"]["images_per_s"] for t in ("R_u", "R_w")}
    est = mvtec_study_hours(tputs, eval_images_per_s=res["eval"][f"AVAGA-R_u@{main}"]["images_per_s"])
    res["study_estimate"] = {
        "device_kind": kind,
        "hours": est["hours"],
        "assumed_runs": est["assumed"],
        "gpu_hours": est["hours"] if kind == "cuda" else None,  # unmeasured without a GPU
    }
    log(bench_markdown(res))
    return res


def _probe(size: int, setting: str, device: str, batch: int, amp: str) -> int:
    """In this process: build one training configuration, run one step, return the peak memory in bytes."""
    dev = torch.device(device)
    h = build_train_harness(_variant_cfg(size, setting, amp), dev, batch)
    reset_peak_memory(dev)
    h.step()
    synchronize(dev)
    return peak_memory_bytes(dev)


def memory_probe(size: int, setting: str, device: str, batch: int, amp: str = "auto") -> int:
    """Peak memory (bytes) of one training step of AVAGA at ``size`` px, measured in a fresh python process."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys; from avaga_lib.perf import _probe; "
        f"print(json.dumps(_probe({size}, {setting!r}, {device!r}, {batch}, {amp!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({size} px, {setting}, {device}) failed: {out.stderr[-2000:]}")
    return int(json.loads(out.stdout.strip().splitlines()[-1]))


def _batch(kind: str, size: int) -> int:
    return BENCH_BATCH[kind].get(size, BENCH_BATCH[kind][128])


def _cpu_options(dev: torch.device, size: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Step time of AVAGA-R_u at ``size`` under the CPU options, interleaved; ratios to the default (fp32, NCHW)."""
    n_threads = torch.get_num_threads()
    base_cfg = _variant_cfg(size, "unsupervised", "off")
    bs = _batch("cpu", size)
    hs = {
        "default": build_train_harness(base_cfg, dev, bs, channels_last=False),
        "channels_last": build_train_harness(base_cfg, dev, bs, channels_last=True),
        "bf16_autocast": build_train_harness(_variant_cfg(size, "unsupervised", "bf16"), dev, bs, channels_last=False),
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
    med = interleaved_medians(fns, repeats=repeats, warmup=1, device=dev)
    per_image = {k: med[k] / (4 * bs if k == "batch_x4" else bs) for k in med}
    out = {k: {"s_per_image": v, "speedup_vs_default": per_image["default"] / v} for k, v in per_image.items()}
    log(f"CPU options (R_u {size} px): " + ", ".join(f"{k} x{v['speedup_vs_default']:.2f}" for k, v in out.items()))
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "unmeasured" if x is None else format(x, spec)


def bench_markdown(res: Mapping[str, Any]) -> str:
    """The bench results as a markdown report: one table of figures against targets, one per-configuration table."""
    m = res["machine"]
    kind = res["study_estimate"]["device_kind"] if "study_estimate" in res else "cpu"
    lines = [
        "# make bench",
        "",
        f"Device `{m['device']}` ({m.get('gpu', m.get('cpu'))}), torch {m['torch']}, {m['threads']} threads, "
        f"load average at start {m.get('loadavg_1min_at_start', 'n/a')}. GEMM peak (measured here, best of the "
        f"run): {res['gemm_peak_tflops'] * 1e3:.1f} GFLOP/s.",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    t = res["targets"]
    mp = res["main_size"]

    def row(name: str, value: float | None, target: float, le: bool, spec: str = ".3f") -> None:
        met = "n/a" if value is None else ("yes" if (value <= target if le else value >= target) else "no")
        lines.append(f"| {name} | {_fmt(value, spec)} | {'<=' if le else '>='} {target:g} | {met} |")

    if kind == "cpu":
        row(f"training FLOP/s / GEMM peak, R_u {mp} px (CPU)", res["fraction_of_gemm_peak_main"],
            t["cpu_train_fraction_of_gemm_peak_256"], le=False)  # fmt: skip
        row(f"same, fastest repetitions (least disturbed), R_u {mp} px (CPU)", res["fraction_of_gemm_peak_main_best"],
            t["cpu_train_fraction_of_gemm_peak_256"], le=False)  # fmt: skip
    row(f"step time with L_attn / without (R_u {mp} px)", res["attention_cost_ratio"], t["attention_cost_ratio"], True)
    row("same, median of per-round ratios", res.get("attention_cost_ratio_paired"), t["attention_cost_ratio"], True)
    row("same, fastest repetitions", res["attention_cost_ratio_best"], t["attention_cost_ratio"], True)
    row(f"data-wait fraction of the step ({mp} px)", res["data_wait_fraction_main"], t["data_wait_fraction"], True)
    gpu_tput = res["train"][f"AVAGA-R_u@{mp}"]["images_per_s"] if kind == "cuda" else None
    row(f"GPU training images/s, R_u {mp} px", gpu_tput, t["gpu_train_images_per_s_256"], False, ".0f")
    row("GPU-hours, MVTec Tables 2/3/8 study", res["study_estimate"]["gpu_hours"], t["gpu_study_hours"], True, ".2f")
    lines += [
        "",
        f"Study estimate on this device ({kind}): {res['study_estimate']['hours']:.1f} hours for 15 categories x "
        f"150 epochs x {len(STUDY_RUNS)} runs (runs without their own measurement use AVAGA-R_u's speed: "
        f"{', '.join(res['study_estimate']['assumed_runs'])}).",
        "",
        f"Medians of {res.get('repeats', '?')} interleaved repetitions; 'best' uses the fastest repetition.",
        "",
        "| configuration | batch | images/s | GFLOP / image | TFLOP/s | of GEMM peak | of peak (best) | data wait |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["train"].items():
        dw = f"{r['data_wait_fraction']:.3f}" if "data_wait_fraction" in r else "-"
        lines.append(
            f"| train {name} | {r['batch']} | {r['images_per_s']:.2f} | {r['gflop_per_image']:.1f} | "
            f"{r['achieved_tflops']:.4f} | {r['fraction_of_gemm_peak']:.3f} | "
            f"{r.get('fraction_of_gemm_peak_best', float('nan')):.3f} | {dw} |"
        )
    for name, r in res["eval"].items():
        lines.append(f"| eval {name} (Grad-CAM + metrics) | {r['batch']} | {r['images_per_s']:.2f} | | | | | |")
    lines += ["", f"Peak memory ({res['peak_memory_kind']}, one training step):"]
    lines += [f"- {k}: {v:.0f} MiB" for k, v in res["peak_memory_mib"].items()]
    if "cpu_options" in res:
        lines += ["", "CPU options (AVAGA-R_u, second side, per-image time vs fp32 NCHW default):", ""]
        lines += ["| option | s / image | speed-up |", "|---|---|---|"]
        lines += [f"| {k} | {v['s_per_image']:.3f} | {v['speedup_vs_default']:.2f} |" for k, v in
                  res["cpu_options"].items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_bench(res: Mapping[str, Any], out_dir: str | None = None) -> tuple[Any, Any]:
    """Write ``bench.json`` and ``bench.md`` (atomically) under ``results/bench/`` (or ``out_dir``)."""
    from pathlib import Path

    from avaga_lib import paths
    from avaga_lib.io import write_json, write_text

    d = Path(out_dir) if out_dir else paths.results_dir() / "bench"
    return write_json(d / "bench.json", dict(res)), write_text(d / "bench.md", bench_markdown(res))
