"""Hours of the full MVTec Tables 2/3/8 study at measured throughputs (no speed is hard-coded here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from avaga_lib import study

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
STUDY_RUNS: tuple[str, ...] = study.names()


def mvtec_study_images(
    epochs: int = 150, val_fraction: float = 0.1, weak_fraction: float = 0.02, runs: tuple[str, ...] = STUDY_RUNS
) -> dict[str, dict[str, int]]:
    """Training and test images each run of the MVTec Tables 2/3/8 study processes, summed over the 15 categories.

    Args:
        epochs: training epochs (paper: 150).
        val_fraction: share of train/good held out for validation (calibration), as the study's splits.
        weak_fraction: share of anomalous test images moved to training in the weak setting (approximated over all
            test images).
        runs: study run names (their registry entry says whether they train in the weak setting).

    Returns:
        run name -> {"train_images": images seen in training over all epochs, "test_images": evaluated images}.
    """
    out: dict[str, dict[str, int]] = {}
    for run in runs:
        weak = study.get(run).setting == "weak"
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
