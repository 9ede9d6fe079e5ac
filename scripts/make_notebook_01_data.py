# ruff: noqa: E501  (notebook source lines as they appear in the notebook)
"""Write notebooks/01_data.ipynb (without outputs) with nbformat."""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

md = nbf.v4.new_markdown_cell
code = nbf.v4.new_code_cell

cells = [
    md("# 01 Data: the datasets, their splits and samples\n\n"
       "Maps to the paper's **Table 1** (number of training / test images per dataset and the weakly supervised "
       "split of PROTOCOL_NOTES 12) and to its dataset figures (normal and anomalous samples with masks).\n\n"
       "Default: the embedded generated dataset (`make data`). For MVTec AD or your own images in MVTec layout set "
       "`dataset = \"mvtec\"` / `\"folder\"` and `root`; for Magnetic Tile set `dataset = \"mtd\"`, "
       "`category = \"magnetic_tile\"`."),
    code('dataset: str = "embedded"  # embedded | mvtec | mtd | folder | stc\n'
         'root: str = ""  # dataset root in MVTec layout; "" = default location of the dataset\n'
         'category: str = "weave"  # embedded: weave | granite | washer; MVTec: bottle, ...\n'
         'image_size: int = 64  # test side in pixels (paper: 256)\n'
         'seed: int = 0  # seed of the validation and weak splits\n'
         'results_dir: str = "results/scratch"  # where figures and splits.json go',
         metadata={"tags": ["parameters"]}),
    code("from pathlib import Path\n\n"
         "from avaga_lib import paths\n"
         "from avaga_lib.config import make_config\n"
         "from avaga_lib.data import AnomalyDataset, make_splits, resolve_root, split_counts\n"
         "from avaga_lib.plots import plot_sample_grid\n\n"
         "cfg = make_config(\"smoke\", {\"data.dataset\": dataset, \"data.root\": root, \"data.category\": category,\n"
         "                            \"data.image_size\": image_size, \"data.seed\": seed, \"results_dir\": results_dir})\n"
         "base = Path(results_dir) if Path(results_dir).is_absolute() else paths.project_root() / results_dir\n"
         "out_dir = base / cfg.data.dataset / cfg.data.category / \"data\"  # the notebook runs in notebooks/\n"
         "data_root = resolve_root(cfg.data)\n"
         "print(\"dataset root:\", data_root)"),
    md("## Counts per split and defect type (Table 1)\n\n"
       "`train` = train/good minus the normal-only validation split (used for label-free calibration, "
       "PROTOCOL_NOTES 8); `weak` = anomalous test images moved to training with their label only in the weakly "
       "supervised setting (ceil 2 %, at least 1, PROTOCOL_NOTES 12)."),
    code("splits_u = make_splits(cfg.data, \"unsupervised\")\n"
         "splits_w = make_splits(cfg.data, \"weak\", save_dir=out_dir)\n"
         "print(\"pixel masks available:\", splits_w.has_masks)\n"
         "split_counts(splits_w)"),
    md("## Normal and anomalous test samples (masks in red)"),
    code("test_ds = AnomalyDataset(splits_u.test, cfg.data.image_size, train=False, has_masks=splits_u.has_masks)\n"
         "fig = plot_sample_grid(test_ds, n_normal=4, n_anomalous=8, seed=seed,\n"
         "                       title=f\"{cfg.data.dataset}/{cfg.data.category} test\","
         " path=out_dir / \"fig_samples.png\")"),
    md("## The weak split chosen\n\nThese anomalous images move to training with their image label only "
       "(their masks are never used); they are removed from the test set. The list is saved in `splits.json`."),
    code("import pandas as pd\n\n"
         "pd.DataFrame([{\"defect\": r.defect, \"path\": str(Path(r.path).relative_to(data_root))} "
         "for r in splits_w.weak])"),
    md("## Training geometry (PROTOCOL_NOTES 13)\n\nTraining images are stored at "
       "`round(image_size * 1.125)` and cropped + rotated on the fly."),
    code("import torch\n\n"
         "from avaga_lib.data import augment_batch\n\n"
         "train_ds = AnomalyDataset(splits_u.train[:8], cfg.data.image_size, train=True)\n"
         "x, m = augment_batch(train_ds.images, train_ds.masks, cfg.data.image_size, cfg.data.rotation_deg,\n"
         "                     generator=torch.Generator().manual_seed(seed))\n"
         "print(\"stored\", tuple(train_ds.images.shape), \"-> augmented\", tuple(x.shape))"),
    md("## Interactive browser\n\nBuilt only in an interactive Jupyter session (headless runs skip it)."),
    code("def _interactive() -> bool:\n"
         "    try:\n"
         "        from IPython import get_ipython\n"
         "        ip = get_ipython()\n"
         "        return ip is not None and \"IPKernelApp\" in ip.config and hasattr(ip, \"kernel\")\n"
         "    except ImportError:\n"
         "        return False\n\n\n"
         "if _interactive():\n"
         "    try:\n"
         "        import ipywidgets as w\n"
         "        import matplotlib.pyplot as plt\n"
         "        from IPython.display import display\n\n"
         "        defects = sorted({r.defect for r in splits_u.test})\n"
         "        pick = w.Dropdown(options=defects, description=\"defect\")\n"
         "        index = w.IntSlider(min=0, max=0, description=\"image\")\n"
         "        out = w.Output()\n\n"
         "        def show(*_):\n"
         "            idx = [i for i, d in enumerate(test_ds.defects) if d == pick.value]\n"
         "            index.max = max(0, len(idx) - 1)\n"
         "            i = idx[min(index.value, len(idx) - 1)]\n"
         "            with out:\n"
         "                out.clear_output(wait=True)\n"
         "                fig, ax = plt.subplots(1, 2, figsize=(6, 3))\n"
         "                ax[0].imshow(test_ds.images[i].permute(1, 2, 0)); ax[0].set_title(Path(test_ds.paths[i]).name)\n"
         "                ax[1].imshow(test_ds.masks[i, 0], cmap=\"gray\"); ax[1].set_title(\"mask\")\n"
         "                [a.axis(\"off\") for a in ax]\n"
         "                plt.show()\n\n"
         "        pick.observe(show, \"value\"); index.observe(show, \"value\")\n"
         "        display(w.VBox([w.HBox([pick, index]), out])); show()\n"
         "    except ImportError:\n"
         "        print(\"ipywidgets not installed: no browser\")"),
]

nb = nbf.v4.new_notebook(cells=cells)
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nb.metadata["language_info"] = {"name": "python"}
out = Path(__file__).resolve().parent.parent / "notebooks" / "01_data.ipynb"
nbf.write(nb, out)
print("wrote", out)
