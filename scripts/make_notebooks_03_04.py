# ruff: noqa: E501  (notebook source lines as they appear in the notebook)
"""Write notebooks/03_train_unsupervised.ipynb and 04_train_weakly_supervised.ipynb (without outputs) with nbformat."""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell
ROOT = Path(__file__).resolve().parents[1]


def parameters(setting: str) -> str:
    lines = [
        'dataset: str = "embedded"  # embedded | mvtec | mtd | folder | stc',
        'root: str = ""  # dataset root in MVTec layout; "" = the dataset\'s default location',
        'category: str = "weave"  # embedded: weave | granite | washer; MVTec: bottle, ...; mtd: magnetic_tile',
        'method: str = "avaga"  # avaga | ae_l2 | ae_ssim (baselines of Bergmann et al. 2018, unsupervised only)',
        'variant: str = "R"  # R: ResNet-18 encoder + residual decoder | D: DCGAN (Sec. 3)',
        'latent: str = "conv"  # conv: convolutional latent | flat: FC latent of size 100 (Sec. 5 ablation)',
        'attention_loss: bool = True  # False = "w/o attention" ablation (Table 8)',
        'adversarial_recon: bool = True  # False = "w/o adv. recons" ablation, weak setting only (Table 8 col. 4)',
        'sgb: bool = True  # False = "w/o SGB" ablation, weak setting only (Table 8 col. 5)',
        'profile: str = "smoke"  # smoke: CPU-sized | paper: App. A.1 (Adam 1e-4, batch 24, 150 epochs, 256 px)',
        'epochs: int = 2  # training epochs (paper: 150)',
        'image_size: int = 64  # test side in pixels (paper: 256)',
        'seed: int = 0  # training seed (python / numpy / torch)',
        'device: str = "auto"  # auto: cuda, then mps, then cpu',
        'results_dir: str = "results/scratch"  # base of the results tree, relative to the project root',
    ]
    return "\n".join(lines)


CONFIG = '''import os

import pandas as pd

from avaga_lib import paths
from avaga_lib.config import make_config

os.chdir(paths.project_root())  # relative roots / results_dir resolve from the project root, as under the pipeline
cfg = make_config(profile, {
    "train.setting": "{setting}",
    "method": method,
    "data.dataset": dataset, "data.root": root, "data.category": category, "data.image_size": image_size,
    "model.variant": variant, "model.latent": latent,
    "loss.attention_loss": attention_loss, "loss.adversarial_recon": adversarial_recon, "loss.sgb": sgb,
    "train.epochs": epochs, "train.seed": seed, "train.device": device,
    "results_dir": results_dir,
}})
print("run folder:", cfg.run_dir)'''


def notebook(setting: str) -> nbf.NotebookNode:
    weak = setting == "weak"
    if weak:
        intro = ("# 04 Weakly supervised training: AVAGA_w (eq. 6, selective gradient backpropagation)\n\n"
                 "Maps to the paper's **Tables 2 and 3** (AVAGA-R_w / AVAGA-D_w columns: IoU and mean accuracy), "
                 "**Tables 4 and 5** on STC, **Table 8** (ablations: w/o adversarial reconstruction, w/o SGB) and "
                 "**Fig. 2** (anomalous attention map in red).\n\n"
                 "Protocol: 2% of the anomalous test images (ceil, at least 1, seeded) move to training with their "
                 "image label only (PROTOCOL_NOTES 12) and are seen in every epoch (balanced sampling). At test the "
                 "classifier decides normal / anomalous (PN 4); an image called anomalous is localized by "
                 "A^{c_a} > 0.5, one called normal gets an empty mask. The reconstruction score, calibrated on the "
                 "normal validation split only (PN 8), is reported beside it (`mean_accuracy_score`, image AUROC).")
    else:
        intro = ("# 03 Unsupervised training: AVAGA_u (eq. 4) and the AE baselines\n\n"
                 "Maps to the paper's **Tables 2 and 3** (AVAGA-R_u / AVAGA-D_u columns, and measured AE-L2 / "
                 "AE-SSIM with `method`), **Tables 4 and 5** on STC, **Table 7** (IoU at thresholds 0.2-0.6), "
                 "**Table 8** (ablations: w/o attention, flat latent) and **Fig. 2**.\n\n"
                 "Protocol: trained on normal images only. Detection score = mean |x - x_hat|, normalised by a "
                 "calibration fitted on the normal validation split only (PN 8: its [min, max] -> [0, 0.5], so the "
                 "threshold 0.5 is the largest normal validation score); the transductive min-max over the test "
                 "scores is reported beside it and flagged. Localization: 1 - A > 0.5 (PN 2, 10). "
                 "Threshold-free image AUROC, pixel AUROC and AUPRO (FPR <= 0.3) are added (PN 11).")
    cells = [
        md(intro),
        code(parameters(setting), metadata={"tags": ["parameters"]}),
        code(CONFIG.replace("{setting}", setting).replace("}})", "})")),
    ]
    if weak:
        cells.append(code('if method != "avaga":\n'
                          '    raise ValueError(f"method={method!r}: the AE baselines have no weakly supervised setting; use notebook 03")'))
    cells += [
        md("## Splits\n\nNormal-only validation split for the calibration (PN 8)"
           + ("; the weak anomalous images (label only)." if weak else ".")),
        code("from avaga_lib.data import make_splits, split_counts\n\n"
             "splits = make_splits(cfg.data, cfg.train.setting, save_dir=cfg.run_dir)\n"
             + ("print(\"weak images:\", [f\"{r.defect}/{os.path.basename(r.path)}\" for r in splits.weak])\n" if weak else "")
             + "split_counts(splits)"),
        md("## Training\n\nCheckpoints every epoch (atomic; `train.resume` continues an interrupted run), loss terms "
           "per epoch in `losses.csv`. `attn_mean` / `attn_std` show the spread of the attention map A over "
           "training (PN 2)."),
        code("from avaga_lib.train import train_run\n\n"
             "train_result = train_run(cfg, splits)\n"
             "print(f\"{train_result.epochs_done} epochs on {train_result.device} in {train_result.wall_time_s:.1f} s\")\n"
             "print(\"notes:\", train_result.notes)\n"
             "train_result.history"),
        code("from avaga_lib.plots import plot_loss_curves\n\n"
             "fig = plot_loss_curves(train_result.history, title=cfg.setting_name)"),
        md("## Evaluation and saved run\n\n`metrics.json`, `predictions.csv`, `calibration.json`, figures and the "
           "config go to the run folder."),
        code("from avaga_lib.evaluate import evaluate_run, metrics_row, save_run\n\n"
             "eval_result = evaluate_run(train_result.cfg, train_result.model, splits)\n"
             "run_dir = save_run(train_result.cfg, train_result, eval_result)\n"
             "print(\"saved:\", sorted(p.name for p in run_dir.iterdir()))\n"
             "print(\"calibration (validation only):\", eval_result.calibration)"),
        md("### Ours beside the paper\n\nThe paper reports IoU and mean accuracy on MVTec AD and STC only; "
           "n/a elsewhere (embedded, Magnetic Tile, own images)."),
        code("row = metrics_row(train_result.cfg, eval_result.metrics)\n"
             "row.astype(object).where(row.notna(), \"n/a\")"),
    ]
    if not weak:
        cells += [
            md("### IoU at other thresholds (Table 7)"),
            code("from avaga_lib.evaluate import paper_value\n\n"
                 "pd.DataFrame({\"ours\": {t: v for t, v in eval_result.metrics[\"iou_at\"].items()},\n"
                 "              \"paper (AVAGA-R_u, MVTec)\": {t: paper_value(\"table7_threshold_iou\", category, f\"thr_{t}\")\n"
                 "                                           for t in eval_result.metrics[\"iou_at\"]}}).T"),
        ]
    cells += [
        md("## Scores of normal vs anomalous test images, with the threshold"),
        code("from avaga_lib.plots import plot_qualitative_grid, plot_score_histogram\n\n"
             "fig = plot_score_histogram(eval_result.predictions, cfg.eval.threshold, title=cfg.setting_name)"),
        md("## Qualitative results (Fig. 2)\n\nRows: input, ground truth (red), predicted anomalous pixels "
           "(map > 0.5, red), continuous anomaly map; a few images per defect type."),
        code("fig = plot_qualitative_grid(eval_result.examples, title=cfg.setting_name)"),
        code("eval_result.predictions.groupby(\"defect\")[[\"score\", \"pred_label\", \"iou\", \"fp_area\"]].mean()"),
    ]
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    for name, setting in (("03_train_unsupervised.ipynb", "unsupervised"), ("04_train_weakly_supervised.ipynb", "weak")):
        path = ROOT / "notebooks" / name
        nbf.write(notebook(setting), path)
        print("wrote", path)
