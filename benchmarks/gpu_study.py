"""``make gpu-study``: the paper profile (256 px, bf16) on one CUDA GPU in about 10 minutes (issue 13).

What it runs, in order:

1. Throughput of the trainer's own step (:mod:`benchmarks.harness`) for AVAGA-R_u at 256 px, batch 24, bf16:
   channels_last off / on, then with ``torch.compile`` of the generator (compile time reported apart: on the
   2-core CPU compile measured 0.86x after 113 s, so it must earn its place on the GPU or go).
2. The study runs :data:`RUNS` (the literal AVAGA-R_u / AVAGA-R_w, each remedy of group ``remedies``, AE-L2 and
   AE-SSIM), seed 0, on Magnetic Tile (``data/mtd``, converted from ``../shared`` or ``shared/`` when present) and one
   embedded category, with the paper profile's size / batch / lr and fewer epochs (:data:`EPOCHS`).

Budget arithmetic (H200, stated before measuring; the script prints the measured numbers so the next run can be
re-sized): the GPU target of docs/PERFORMANCE.md is >= 2,000 images/s for R_u at 256 px; planning at a quarter of it
(500 images/s, the Grad-CAM's second-order backward), Magnetic Tile's ~850 normal training images x 10 epochs x 8
AVAGA runs = 68k images = 136 s; the embedded category's ~100 x 30 epochs x 8 = 24k = 48 s; the two baselines on both
sets ~20 s; per-run set-up and evaluation ~10 s x 20 runs = 200 s; the throughput section ~90 s (mostly compiling).
Total ~500 s of the 600. A wall-clock guard (``--budget-s``) stops starting new runs past the budget and lists the
runs it did not start, in the summary and on stdout (nothing skipped silently); a rerun resumes: finished runs
(``metrics.json`` present) are kept.

Results: ``results/gpu_study/runs/<dataset>/<category>/<run>-seed0/`` (git-ignored) and the small
``results/gpu_study/summary.json`` / ``summary.md`` (committed). Without CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from avaga_lib import study
from avaga_lib.config import MIN_LATENT_GRID, make_config
from avaga_lib.data import mtd
from avaga_lib.io import write_json, write_text
from avaga_lib.paths import mtd_converted_root, project_root, shared_magnetic_tile
from avaga_lib.results import collect_runs
from avaga_lib.run import run_one
from benchmarks.harness import build_train_harness

OUT = Path("results") / "gpu_study"
RUNS: tuple[str, ...] = ("AVAGA-R_u", *study.REMEDIES[:3], "AVAGA-R_w", *study.REMEDIES[3:], "AE-L2", "AE-SSIM")
EPOCHS = {"mtd": 10, "embedded": 30}  # see the budget arithmetic above
EMBEDDED_CATEGORY = "granite"
METRICS = ("pixel_auroc", "aupro", "iou", "image_auroc", "mean_accuracy")
NO_CUDA = ("make gpu-study needs a CUDA GPU, and torch.cuda.is_available() is False on this machine "
           "(torch {version}). Run it on a CUDA machine; on a CPU, use `make reproduce PROFILE=...` instead.")


def require_cuda() -> None:
    """Exit with status 2 and a message naming the fix when no CUDA device is visible."""
    if not torch.cuda.is_available():
        print(NO_CUDA.format(version=torch.__version__), file=sys.stderr)
        raise SystemExit(2)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _images_per_s(harness: Any, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        harness.step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        harness.step()
    _sync(device)
    return steps * harness.batch_size / (time.perf_counter() - start)


def throughput(steps: int = 20, batch: int = 24, device: str = "cuda", size: int = 256,
               compile_model: bool = True) -> dict[str, float]:
    """Training images/s of AVAGA-R_u at ``size`` px, bf16: channels_last off / on, and compiled (+ compile seconds).

    ``device`` / ``size`` / ``compile_model`` exist for the CPU test of this function; the study uses the defaults.
    """
    profile = "paper" if size // 32 >= MIN_LATENT_GRID else "smoke"  # the CPU test's small side: timing only
    cfg = make_config(profile, {"train.amp": "bf16", "model.pretrained": "none", "data.image_size": size},
                      run="AVAGA-R_u")
    out: dict[str, float] = {}
    for fmt in (False, True):
        harness = build_train_harness(cfg, device, batch, n_images=4 * batch, channels_last=fmt)
        out[f"bf16{'_channels_last' if fmt else ''}_img_s"] = _images_per_s(harness, steps, 3, device)
    if not compile_model:
        return out
    harness = build_train_harness(cfg, device, batch, n_images=4 * batch, channels_last=True)
    harness.step()  # builds nets (make_nets) before the generator is wrapped
    assert harness.nets is not None
    harness.nets.model = torch.compile(harness.nets.model)
    start = time.perf_counter()
    harness.step()  # the first compiled step compiles
    _sync(device)
    out["compile_s"] = time.perf_counter() - start
    out["bf16_channels_last_compiled_img_s"] = _images_per_s(harness, steps, 2, device)
    return out


def mtd_root(root: Path) -> Path | None:
    """The converted Magnetic Tile root, converting ``../shared`` or ``./shared`` when needed; None when absent."""
    if (mtd_converted_root() / mtd.MARKER).is_file():
        return mtd_converted_root()
    local = root / "shared" / "data" / "magnetic_tile"
    src = shared_magnetic_tile() or (local if local.is_dir() else None)
    return None if src is None else mtd.convert_magnetic_tile(src, mtd_converted_root())


def plan(root: Path, datasets: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """(override dicts of the runs to make, notes on what cannot run here)."""
    targets, notes = [], []
    if "mtd" in datasets:
        mroot = mtd_root(root)
        if mroot is None:
            notes.append("Magnetic Tile not found (data/mtd, ../shared/data/magnetic_tile, shared/...): MTD not run")
        else:
            targets.append({"data.dataset": "mtd", "data.root": str(mroot), "data.category": mtd.MTD_CATEGORY})
    if "embedded" in datasets:
        targets.append({"data.dataset": "embedded", "data.category": EMBEDDED_CATEGORY})
    runs = []
    for data in targets:
        for name in RUNS:
            over = {**data, "train.epochs": EPOCHS[data["data.dataset"]], "train.amp": "bf16",
                    "results_dir": str(root / OUT / "runs")}
            runs.append({"run": name, "overrides": over})
    return runs, notes


def run_study(root: Path, datasets: list[str], budget_s: float, started: float) -> list[str]:
    """Train and evaluate the planned runs until the budget is spent; returns the notes (runs not started...)."""
    runs, notes = plan(root, datasets)
    for item in runs:
        cfg = make_config("paper", item["overrides"], run=item["run"])
        label = f"{cfg.data.dataset}/{cfg.data.category}/{cfg.setting_name}"
        if (Path(cfg.run_dir) / "metrics.json").is_file():
            print(f"[gpu-study] {label}: finished earlier, kept")
            continue
        if time.perf_counter() - started > budget_s:
            notes.append(f"{label}: not started (budget of {budget_s:.0f} s spent; rerun to resume)")
            print(f"[gpu-study] {notes[-1]}")
            continue
        t0 = time.perf_counter()
        run_one(cfg, figures=False)
        print(f"[gpu-study] {label}: {time.perf_counter() - t0:.1f} s")
    return notes


def _markdown(frame: Any) -> str:
    """A pipe table of ``frame`` (floats to 3 decimals), without the optional tabulate dependency."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    rows = [list(frame.columns), ["---"] * len(frame.columns), *cells]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def summarize(root: Path, speed: dict[str, float], notes: list[str], wall_s: float) -> dict[str, Any]:
    """Write ``summary.json`` / ``summary.md`` (metrics per dataset x run, throughput, notes); returns the dict."""
    runs = collect_runs(root / OUT / "runs")
    cols = [c for c in ("dataset", "category", "method", "epochs", *METRICS) if c in runs.columns]
    table = runs[cols].sort_values(["dataset", "method"]) if not runs.empty else runs
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    summary = {"device": device, "torch": torch.__version__, "wall_s": round(wall_s, 1),
               "throughput": {k: round(v, 1) for k, v in speed.items()}, "notes": notes,
               "runs": json.loads(table.to_json(orient="records"))}
    write_json(root / OUT / "summary.json", summary)
    lines = [f"# GPU study ({summary['device']}, {summary['wall_s']} s wall)", "",
             "Throughput (training images/s, AVAGA-R_u, 256 px, batch 24): "
             + ", ".join(f"{k} = {v}" for k, v in summary["throughput"].items()), "",
             _markdown(table) if not table.empty else "(no finished run)", "",
             *(f"- {n}" for n in notes)]
    write_text(root / OUT / "summary.md", "\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    """Command line of ``make gpu-study`` (``python -m benchmarks.gpu_study``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mtd,embedded", help="comma-separated: mtd, embedded")
    parser.add_argument("--budget-s", type=float, default=540.0, help="start no run past this many seconds")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    require_cuda()
    started = time.perf_counter()
    root = project_root()
    speed = {} if args.skip_throughput else throughput()
    print(f"[gpu-study] throughput: {speed}")
    notes = run_study(root, [d.strip() for d in args.datasets.split(",") if d.strip()], args.budget_s, started)
    summary = summarize(root, speed, notes, time.perf_counter() - started)
    print((root / OUT / "summary.md").read_text())
    print(f"[gpu-study] {len(summary['runs'])} runs summarised in {root / OUT}")


if __name__ == "__main__":
    main()
