# %% [markdown]
# # 03 Unsupervised training: AVAGA_u (eq. 4) and the AE baselines
#
# Maps to the paper's **Tables 2 and 3** (AVAGA-R_u / AVAGA-D_u columns, and measured AE-L2 / AE-SSIM with `method`), **Tables 4 and 5** on STC, **Table 7** (IoU at thresholds 0.2-0.6), **Table 8** (ablations: w/o attention, flat latent) and **Fig. 2**.
#
# Protocol: trained on normal images only. Detection score = mean |x - x_hat|, calibrated on the normal validation split only (PN 8, issue 20: the decision threshold is the 0.95 quantile of the normal validation scores, mapped to 0.5); the transductive min-max over the test scores is reported beside it and flagged. Localization: one label-free rule for every map (AVAGA's 1 - A, each remedy, the baselines' residuals): a pixel is anomalous above the 0.99 quantile of the run's own map over the normal validation pixels (`iou`); the paper's literal rule, the attention map itself at 0.5 (PN 2, 10), is scored beside it (`iou_literal`). Threshold-free image AUROC, exact pixel AUROC and AUPRO (FPR <= 0.3) are added (PN 11); docs/PROTOCOL.md "Measurement".

# %% tags=["parameters"]
from typing import Optional  # the epochs parameter may be None: the profile's (smoke 1, cpu 15, paper 150 as in A.1)

run: str = "AVAGA-R_u"  # a unsupervised run of the study registry (avaga_lib/study.py): AVAGA-R_u / AVAGA-D_u / AVAGA-R_u-noattn / AVAGA-R_u-flat / AE-L2 / AE-SSIM
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

import pandas as pd

from avaga_lib import paths
from avaga_lib.config import config_from_parameters

os.chdir(paths.project_root())  # relative roots / results_dir resolve from the project root, as under the pipeline
cfg = config_from_parameters("unsupervised", dict(
    run=run, dataset=dataset, root=root, category=category, image_size=image_size, geometry=geometry, epochs=epochs,
    seed=seed, device=device, results_dir=results_dir), profile)  # the mapping the pipeline uses too (one place)
print("run folder:", cfg.run_dir)

# %% [markdown]
# ## Splits
#
# Normal-only validation split for the calibration (PN 8).

# %%
from avaga_lib.data import make_splits, split_counts

splits = make_splits(cfg.data, cfg.train.setting, save_dir=cfg.run_dir)
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
# ### Does the attention collapse? (issue 13, docs/PROTOCOL.md "The collapse of the attention")
#
# Per epoch, on the training batches: the raw Grad-CAM `sum_k alpha_k F_k` before normalization (`raw_mean`, `raw_std`, `raw_max` = mean of the batch maxima), the spread of A (`attn_mean`, `attn_std`), `amap_frac` = the fraction of pixels where the anomaly map 1 - A exceeds 0.5 (weak setting: of the normal-class map), the reconstruction / KL / adversarial terms and the discriminator's mean probabilities on real and reconstructed images. With the paper's sigmoid, `raw_mean` grows while `attn_mean` goes to 1 and `amap_frac` to 0: the map saturates and 1 - A can no longer flag a pixel. The remedies (runs `AVAGA-R_u-maxnorm`, `-gain`, `-size`) log the same columns.

# %%
from avaga_lib.models.avaga.losses import COLLAPSE_TERMS

if cfg.method == "avaga":
    fig = plot_loss_curves(train_result.history, title=f"{cfg.run_id} collapse diagnostics", terms=COLLAPSE_TERMS)

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
# ### IoU at other thresholds (Table 7)

# %%
from avaga_lib.reporting.paper import paper_value

pd.DataFrame({"ours": {t: v for t, v in eval_result.metrics["iou_at"].items()},
              "paper (AVAGA-R_u, MVTec)": {t: paper_value("table7_threshold_iou", category, f"thr_{t}")
                                           for t in eval_result.metrics["iou_at"]}}).T

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
