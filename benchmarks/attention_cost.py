"""The price of the guided-attention term (eq. 3/4) in a training step, measured alone (issue 3).

The ratio of the median time of the trainer's compute step with L_attn to the median without it
(``loss.attention_loss=False``), both on the same networks, optimisers and batch; the repetitions are interleaved
and alternate which variant goes first (A, B, B, A, ...), so drifts of the machine hit both alike.
``make bench`` measures the same ratio through separate networks among its other figures
(:func:`benchmarks.figures.measure_training`); this one isolates it.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

import torch

from avaga_lib.config import MIN_LATENT_GRID, make_config
from benchmarks.harness import build_train_harness
from benchmarks.timing import interleaved_times, paired_ratio

ATTENTION_COST_TARGET = 1.05  # issue 3: the attention term may cost at most 5% of a step


def measure_attention_cost(
    image_size: int = 256,
    batch: int = 2,
    variant: str = "R",
    reps: int = 7,
    warmup: int = 1,
    device: str = "cpu",
    setting: str = "unsupervised",
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Cost of the attention loss: median compute-step time with L_attn / without, interleaved repetitions.

    "Without" is the ``attention_loss=False`` ablation: it still computes the (detached) Grad-CAM for logging,
    which in closed form is one (B, 512) x (512, 512) product and a weighted channel sum, negligible next to a step.
    Both use fp32 (``train.amp=off``) and random weights (the cost does not depend on them).

    Args:
        image_size: input side (paper: 256).
        batch: images per step (2 keeps a CPU run short).
        variant: "R" or "D".
        reps: timed repetitions of each variant (interleaved, alternating which goes first).
        warmup: untimed steps of each variant first, on top of the Timer's own warm-up of each block.
        device: "cpu" or "cuda".
        setting: "unsupervised" (L_attn, eq. 4) or "weak" (L_a, eq. 6).
        seed: model init seed.
        verbose: print a one-line summary.

    Returns:
        dict with ``ratio`` (median with / median without), ``ratio_paired`` (median of per-pair ratios),
        ``with_s`` / ``without_s`` (median seconds), the raw times and the settings.
    """
    dev = torch.device(device)
    torch.manual_seed(seed)
    profile = "paper" if image_size // 32 >= MIN_LATENT_GRID else "smoke"  # small sides: timing only (harness.py)
    cfg = make_config(profile, {"data.image_size": image_size, "train.setting": setting, "train.amp": "off",
                                "model.variant": variant})
    with_attn = build_train_harness(cfg, dev, batch)
    with_attn.data_step()  # one batch, reused by both variants: the data path is not what is compared
    without = replace(with_attn, cfg=replace(with_attn.cfg, loss=replace(with_attn.cfg.loss, attention_loss=False)))
    times = interleaved_times({"with": with_attn.compute_step, "without": without.compute_step}, repeats=reps,
                              warmup=warmup, alternate=True)
    result = {"benchmark": "attention_cost", "image_size": image_size, "batch": batch, "variant": variant,
              "setting": setting, "device": str(dev), "threads": torch.get_num_threads(), "reps": reps,
              **_ratios(times["with"], times["without"]), "target": ATTENTION_COST_TARGET}
    if verbose:
        print(
            f"attention cost ({variant}, {setting}, {image_size}px, batch {batch}, {dev}): step with L_attn "
            f"{result['with_s']:.3f} s / without {result['without_s']:.3f} s = ratio {result['ratio']:.3f} "
            f"(paired median {result['ratio_paired']:.3f}; target <= {ATTENTION_COST_TARGET})"
        )
    return result


def _ratios(t_with: list[float], t_without: list[float]) -> dict[str, Any]:
    """Medians, both readings of the ratio, and the raw samples (seconds per step)."""
    med_with, med_without = statistics.median(t_with), statistics.median(t_without)
    return {
        "with_s": med_with,
        "without_s": med_without,
        "ratio": med_with / med_without,
        "ratio_paired": paired_ratio(t_with, t_without),
        "times_with_s": t_with,
        "times_without_s": t_without,
    }
