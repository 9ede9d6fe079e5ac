# %% [markdown]
# # 04 Weakly supervised training: AVAGA_w (eq. 6, selective gradient backpropagation)
#
# Maps to the paper's **Tables 2 and 3** (AVAGA-R_w / AVAGA-D_w columns: IoU and mean accuracy), **Tables 4 and 5** on STC, **Table 8** (ablations: w/o adversarial reconstruction, w/o SGB) and **Fig. 2** (anomalous attention map in red).
#
# Protocol: 2% of the anomalous test images (ceil, at least 1, seeded) move to training with their image label only (PROTOCOL_NOTES 12) and are seen in every epoch (balanced sampling). At test the classifier decides normal / anomalous (PN 4); an image called anomalous is localized by A^{c_a} above the label-free pixel threshold (the 0.99 quantile of the map over the normal validation pixels, issue 20; the paper's A^{c_a} > 0.5 is scored beside it as `iou_literal`), one called normal gets an empty mask. The reconstruction score, calibrated on the normal validation split only (PN 8), is reported beside it (`mean_accuracy_score`, image AUROC).

# %% tags=["parameters"]
from typing import Optional  # the epochs parameter may be None: the profile's (smoke 1, cpu 15, paper 150 as in A.1)

run: str = "AVAGA-R_w"  # a weak run of the study registry (avaga_lib/study.py): AVAGA-R_w / AVAGA-D_w / AVAGA-R_w-noadv / AVAGA-R_w-noSGB
dataset: str = "embedded"  # embedded | mvtec | mtd | folder | stc
root: str = ""  # dataset root in MVTec layout; empty: the dataset's default location
category: str = "weave"  # embedded: weave | granite | washer; MVTec: bottle, ...; mtd: magnetic_tile
profile: str = "smoke"  # smoke: CPU-sized | cpu: 128 px, 15 epochs | paper: App. A.1 (Adam 1e-4, batch 24, 150 epochs, 256 px)
epochs: Optional[int] = None  # noqa: UP045 - papermill parses Optional[int], not int | None; None: the profile's
image_size: int = 64  # test side in pixels (paper: 256)
geometry: str = "squash"  # squash: resize to a square | letterbox / reflect: keep the aspect, pad (never scored)
seed: int = 0  # training seed (python / numpy / torch)
device: str = "auto"  # auto: cuda, then mps, then cpu
results_dir: str = "results/scratch"  # base of the results tree, relative to the project root

# %%
import os

from avaga_lib import paths
from avaga_lib.config import config_from_parameters

os.chdir(paths.project_root())  # relative roots / results_dir resolve from the project root, as under the pipeline
cfg = config_from_parameters("weak", dict(
    run=run, dataset=dataset, root=root, category=category, image_size=image_size, geometry=geometry, epochs=epochs,
    seed=seed, device=device, results_dir=results_dir), profile)  # the mapping the pipeline uses too (one place)
print("run folder:", cfg.run_dir)

# %% [markdown]
# ## Splits
#
# Normal-only validation split for the calibration (PN 8); the weak anomalous images (label only).

# %%
from avaga_lib.data import make_splits, split_counts

splits = make_splits(cfg.data, cfg.train.setting, save_dir=cfg.run_dir)
print("weak images:", [f"{r.defect}/{os.path.basename(r.path)}" for r in splits.weak])
split_counts(splits)

# %% [markdown]
# ## Training
#
# Checkpoints every epoch (atomic; `train.resume` continues an interrupted run), loss terms per epoch in `losses.csv`. `attn_mean` / `attn_std` show the spread of the attention map A over training (PN 2).

# %%
from avaga_lib.training.train import train_run

train_result = train_run(cfg, splits)
print(f"{train_result.epochs_done} epochs on {train_result.device} in {train_result.wall_time_s:.1f} s")
print("notes:", train_result.notes)
train_result.history

# %%
from avaga_lib.evaluation.plots import plot_loss_curves

fig = plot_loss_curves(train_result.history, title=cfg.run_id)

# %% [markdown]
# ## Evaluation and saved run
#
# `metrics.json`, `predictions.csv`, `calibration.json`, figures and the config go to the run folder.

# %%
from avaga_lib.evaluation.evaluate import evaluate_run
from avaga_lib.reporting.paper import metrics_row
from avaga_lib.training.run import save_run

eval_result = evaluate_run(train_result.cfg, train_result.model, splits)
run_dir = save_run(train_result.cfg, train_result, eval_result)
print("saved:", sorted(p.name for p in run_dir.iterdir()))
print("calibration (validation only):", eval_result.calibration)

# %% [markdown]
# ### Ours beside the paper
#
# The paper reports IoU and mean accuracy on MVTec AD and STC only; n/a elsewhere (embedded, Magnetic Tile, own images).

# %%
row = metrics_row(train_result.cfg, eval_result.metrics)
row.astype(object).where(row.notna(), "n/a")

# %% [markdown]
# ## Scores of normal vs anomalous test images, with the threshold

# %%
from avaga_lib.evaluation.plots import plot_qualitative_grid, plot_score_histogram

fig = plot_score_histogram(eval_result.predictions, cfg.eval.threshold, title=cfg.run_id)

# %% [markdown]
# ## Qualitative results (Fig. 2)
#
# Rows: input, ground truth (red), predicted anomalous pixels (calibrated map > 0.5, i.e. above the label-free pixel threshold; red), continuous anomaly map; a few images per defect type.

# %%
fig = plot_qualitative_grid(eval_result.examples, title=cfg.run_id)

# %%
eval_result.predictions.groupby("defect")[["score", "pred_label", "iou", "fp_area"]].mean()
