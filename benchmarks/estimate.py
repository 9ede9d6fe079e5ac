"""Hours of the full MVTec Tables 2/3/8 study at measured throughputs (no speed is hard-coded here).

Two estimates:

* :func:`mvtec_study_hours` (``make bench``): one run at a time, training and evaluation images/s of one process;
* :func:`protocol_estimate` (``make gpu-study``): the paper's protocol (15 categories x the 10 runs of Tables 2/3/8 x
  3 seeds x 150 epochs) with k runs sharing each GPU, on 1, 2, 4, 8 GPUs, from the measured single-run and
  aggregate images/s (:func:`protocol_wall_s` is the arithmetic, :func:`protocol_markdown` its summary section).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from avaga_lib import study
from avaga_lib.config import DataConfig

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
# The 10 training runs of the paper's Tables 2/3 (AE-SSIM, AE-L2, AVAGA-D/R in both settings) and Table 8 (the four
# ablations), from the registry's groups; the remedies and arms of this study come on top and are not part of the
# paper's protocol. Both estimates count these runs.
PAPER_RUNS: tuple[str, ...] = tuple(r.name for r in study.RUNS if r.group in ("main", "ablations", "baselines"))
STUDY_RUNS: tuple[str, ...] = PAPER_RUNS  # the name make bench's estimate (and benchmarks.report) uses


def _category_images(n_train: int, n_test: int, weak: bool, epochs: int, val_fraction: float,
                     weak_fraction: float) -> tuple[int, int]:
    """(images trained on over all epochs, images inferred) of one run on one category."""
    n_tr = n_train - round(n_train * val_fraction)
    if weak:
        moved = round(n_test * weak_fraction)  # approximation: fraction of all test images
        n_tr += moved
        n_test -= moved
    return n_tr * epochs, n_test + round(n_train * val_fraction)  # validation maps for calibration are inferred too


def mvtec_study_images(
    epochs: int = 150, val_fraction: float = DataConfig.val_fraction, weak_fraction: float = DataConfig.weak_fraction,
    runs: tuple[str, ...] = STUDY_RUNS,
) -> dict[str, dict[str, int]]:
    """Training and test images each run of the MVTec Tables 2/3/8 study processes, summed over the 15 categories.

    Args:
        epochs: training epochs (paper: 150).
        val_fraction: share of train/good held out for validation (calibration); default the study's
            ``data.val_fraction``.
        weak_fraction: share of anomalous test images moved to training in the weak setting (approximated over all
            test images); default the study's ``data.weak_fraction``.
        runs: study run names (their registry entry says whether they train in the weak setting).

    Returns:
        run name -> {"train_images": images seen in training over all epochs, "test_images": evaluated images}.
    """
    out: dict[str, dict[str, int]] = {}
    for run in runs:
        weak = study.get(run).setting == "weak"
        train = test = 0
        for cat, n in MVTEC_TRAIN_COUNTS.items():
            tr, te = _category_images(n, MVTEC_TEST_COUNTS[cat], weak, epochs, val_fraction, weak_fraction)
            train += tr
            test += te
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
        dict with ``hours`` (total), ``per_run_hours``, ``assumed`` (runs that used the fallback), ``epochs``.
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


# ------------------------------------------------------------------------------------------ the paper's protocol
PAPER_SEEDS = 3
PAPER_EPOCHS = 150  # A.1
GPU_COUNTS: tuple[int, ...] = (1, 2, 4, 8)  # the projection's rows: this GPU, then per extra GPU
NEAR_BEST = 0.05  # a k whose aggregate is within 5 % of the best counts as the plateau (chosen_runs_per_gpu)


@dataclass(frozen=True)
class ProtocolWork:
    """What the full protocol processes, whatever the hardware.

    Attributes:
        runs: training runs (categories x run names x seeds).
        train_images: images trained on, every run and epoch.
        eval_images: images inferred by the evaluations (test set + normal validation split of each run).
        longest_train_images: training images of the largest single run (no layout finishes before it).
        longest_eval_images: inferred images of that run.
    """

    runs: int
    train_images: int
    eval_images: int
    longest_train_images: int
    longest_eval_images: int


def mvtec_protocol_work(epochs: int = PAPER_EPOCHS, seeds: int = PAPER_SEEDS, runs: Sequence[str] = PAPER_RUNS,
                        val_fraction: float = DataConfig.val_fraction,
                        weak_fraction: float = DataConfig.weak_fraction) -> ProtocolWork:
    """The paper's MVTec protocol as this study runs it: every category x run name x seed, ``epochs`` each.

    The issue's round figure, 15 x 10 x 3 x 150 x 3,629 train/good images = 16.3 million, is the upper bound; the
    study holds ``val_fraction`` of each category's train/good out for calibration (so it trains on fewer) and the
    weak runs add ``weak_fraction`` of the anomalous test images.
    """
    pairs = [(study.get(name).setting == "weak", cat) for name in runs for cat in MVTEC_TRAIN_COUNTS]
    per_run = [_category_images(MVTEC_TRAIN_COUNTS[cat], MVTEC_TEST_COUNTS[cat], weak, epochs, val_fraction,
                                weak_fraction) for weak, cat in pairs]
    longest = max(per_run)
    return ProtocolWork(runs=len(per_run) * seeds, train_images=seeds * sum(t for t, _ in per_run),
                        eval_images=seeds * sum(e for _, e in per_run), longest_train_images=longest[0],
                        longest_eval_images=longest[1])


def protocol_wall_s(work: ProtocolWork, aggregate_images_per_s: float, runs_per_gpu: int = 1, gpus: int = 1,
                    eval_s_per_image: float = 0.0, overhead_s_per_run: float = 0.0) -> dict[str, Any]:
    """Wall seconds of ``work`` on ``gpus`` GPUs, each running ``runs_per_gpu`` (k) runs at a time.

    A slot model: each GPU has k run slots; a slot trains at ``aggregate_images_per_s / k`` (the aggregate was
    measured with k runs sharing one GPU), spends ``eval_s_per_image`` per inferred image and
    ``overhead_s_per_run`` per run (process start, data decoding, saving). The slots of all GPUs share the work
    evenly, and nothing ends before the largest run has run on one slot, so

        wall = max(slot-seconds of all runs / (gpus x k), slot-seconds of the largest run).

    Training alone on one GPU is ``train_images / aggregate_images_per_s``: 16e6 images at 4,500 images/s are 0.99 h.

    Args:
        work: from :func:`mvtec_protocol_work`.
        aggregate_images_per_s: training images/s of one GPU with k runs on it (k = 1: one run alone).
        runs_per_gpu: k.
        gpus: GPUs, each with k slots.
        eval_s_per_image: wall seconds one run's evaluation spends per inferred image (0 = not measured: left out).
        overhead_s_per_run: wall seconds of a run outside training and evaluation (0 = not measured: left out).

    Returns:
        ``wall_s``, ``wall_h``, the parts ``train_s`` / ``eval_s`` / ``overhead_s`` of the even share (they sum to
        it), ``longest_run_s``, ``tail_bound`` (the largest run sets the wall: more GPUs would not help), ``slots``.

    Raises:
        ValueError: a non-positive throughput, k or GPU count, or a negative time.
    """
    if aggregate_images_per_s <= 0 or runs_per_gpu < 1 or gpus < 1:
        raise ValueError(f"protocol_wall_s: need images/s > 0, runs_per_gpu >= 1 and gpus >= 1, got "
                         f"{aggregate_images_per_s}, {runs_per_gpu}, {gpus}")
    if eval_s_per_image < 0 or overhead_s_per_run < 0:
        raise ValueError("protocol_wall_s: evaluation and overhead seconds cannot be negative")
    slots = gpus * runs_per_gpu
    slot_rate = aggregate_images_per_s / runs_per_gpu
    train_s = work.train_images / slot_rate / slots
    eval_s = work.eval_images * eval_s_per_image / slots
    overhead_s = work.runs * overhead_s_per_run / slots
    longest = work.longest_train_images / slot_rate + work.longest_eval_images * eval_s_per_image + overhead_s_per_run
    wall = max(train_s + eval_s + overhead_s, longest)
    return {"gpus": gpus, "runs_per_gpu": runs_per_gpu, "slots": slots, "train_s": train_s, "eval_s": eval_s,
            "overhead_s": overhead_s, "longest_run_s": longest, "tail_bound": longest > train_s + eval_s + overhead_s,
            "wall_s": wall, "wall_h": wall / 3600.0}


def chosen_runs_per_gpu(aggregate: Mapping[int, float], near_best: float = NEAR_BEST) -> int:
    """The smallest k whose aggregate images/s is within ``near_best`` of the best measured.

    Past the plateau a larger k only costs: GPU memory, CPU threads per run, and a longer wall for each run (the
    largest run sets the tail of a study).

    Raises:
        ValueError: nothing measured.
    """
    ok = {k: v for k, v in aggregate.items() if v and v > 0}
    if not ok:
        raise ValueError("chosen_runs_per_gpu: no aggregate throughput was measured")
    best = max(ok.values())
    return min(k for k, v in ok.items() if v >= (1.0 - near_best) * best)


def protocol_estimate(single_images_per_s: float, aggregate: Mapping[int, float], eval_s_per_image: float = 0.0,
                      overhead_s_per_run: float = 0.0, gpu_counts: Sequence[int] = GPU_COUNTS,
                      work: ProtocolWork | None = None) -> dict[str, Any]:
    """The projection ``make gpu-study`` writes: the full protocol's wall time with one run per GPU and with the
    chosen k runs per GPU, on each GPU count, with every measured input.

    Args:
        single_images_per_s: training images/s of one run alone on the GPU.
        aggregate: k -> training images/s of the GPU with k runs on it (k = 1 may be absent).
        eval_s_per_image: measured evaluation seconds per inferred image (0 = not measured).
        overhead_s_per_run: measured seconds of a run outside training and evaluation (0 = not measured).
        gpu_counts: GPU counts of the rows.
        work: the protocol (default :func:`mvtec_protocol_work`).
    """
    work = work or mvtec_protocol_work()
    measured = {1: single_images_per_s, **{int(k): float(v) for k, v in aggregate.items() if v and v > 0}}
    k = chosen_runs_per_gpu(measured)
    rows = []
    for g in gpu_counts:
        one = protocol_wall_s(work, single_images_per_s, 1, g, eval_s_per_image, overhead_s_per_run)
        shared = protocol_wall_s(work, measured[k], k, g, eval_s_per_image, overhead_s_per_run)
        rows.append({"gpus": g, "one_run_per_gpu_h": one["wall_h"], "k_runs_per_gpu_h": shared["wall_h"],
                     "tail_bound": shared["tail_bound"]})
    return {"work": asdict(work), "single_images_per_s": single_images_per_s, "aggregate_images_per_s": measured,
            "runs_per_gpu": k, "eval_s_per_image": eval_s_per_image, "overhead_s_per_run": overhead_s_per_run,
            "rows": rows}


def median_or_zero(values: Sequence[float]) -> float:
    """The median of ``values``, 0 when there are none (an input the estimate then leaves out)."""
    return float(statistics.median(values)) if values else 0.0


def _hours(h: float) -> str:
    return f"{h:.2f} h" if h >= 1 else f"{math.ceil(h * 60)} min"


def protocol_markdown(est: Mapping[str, Any] | None) -> list[str]:
    """The summary section of :func:`protocol_estimate`: the measured inputs, one row per GPU count, and what
    ``make gpu-study`` adds to it (``mps``: whether CUDA MPS ran; ``runs_per_gpu_measured``: each k's record)."""
    lines = ["## Projected wall time of the full MVTec protocol", ""]
    if est is None:
        return [*lines, "Not estimated: the single-run throughput was not measured (see the notes)."]
    w, k = est["work"], est["runs_per_gpu"]
    agg = ", ".join(f"k={n}: {v:.0f}" for n, v in sorted(est["aggregate_images_per_s"].items()))
    ev, oh = est["eval_s_per_image"], est["overhead_s_per_run"]
    lines += [
        f"Protocol: {w['runs']} runs (15 categories x {len(PAPER_RUNS)} runs of Tables 2/3/8 x {PAPER_SEEDS} seeds x "
        f"{PAPER_EPOCHS} epochs): {w['train_images'] / 1e6:.2f} million training images (validation split held "
        f"out), {w['eval_images']:,} inferred; largest run {w['longest_train_images']:,} training images.", "",
        "Measured inputs:", "",
        f"- one run alone: {est['single_images_per_s']:.0f} training images/s (AVAGA-R_u, 256 px, batch 24, bf16)",
        f"- aggregate training images/s of one GPU with k runs on it: {agg}; chosen k = {k} (the smallest within "
        f"{NEAR_BEST:.0%} of the best)",
        "- evaluation: " + (f"{ev * 1e3:.1f} ms per inferred image per run" if ev else "not measured (left out)"),
        "- per-run overhead outside training and evaluation: " + (f"{oh:.1f} s" if oh else "not measured (left out)"),
        "", "AVAGA-R_u's throughput stands for every run (the D variants and the autoencoders are cheaper: an "
        "over-estimate).", "",
        f"| GPUs | one run per GPU | {k} runs per GPU |", "| --- | --- | --- |",
    ]
    for row in est["rows"]:
        tail = " (the largest run sets it)" if row["tail_bound"] else ""
        lines.append(f"| {row['gpus']} | {_hours(row['one_run_per_gpu_h'])} | {_hours(row['k_runs_per_gpu_h'])}"
                     f"{tail} |")
    if "mps" in est:
        lines += ["", f"CUDA MPS: {'running' if est['mps'] else 'not running'} during the measurement. For the study: "
                  f"`runs_per_gpu={k}` of its scheduler (docs/PERFORMANCE.md, 'Several runs per GPU')."]
    failed = [f"- k = {n}: {r['error']}" for n, r in est.get("runs_per_gpu_measured", {}).items() if "error" in r]
    return lines + (["", "Runs-per-GPU measurements that failed:", "", *failed] if failed else [])
