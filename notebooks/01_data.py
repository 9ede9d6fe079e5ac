# %% [markdown]
# # 01 Data: the datasets, their splits and samples
#
# Maps to the paper's **Table 1** (number of training / test images per dataset and the weakly supervised split of PROTOCOL_NOTES 12) and to its dataset figures (normal and anomalous samples with masks).
#
# Default: the embedded generated dataset (`make data`). For MVTec AD or your own images in MVTec layout set `dataset = "mvtec"` / `"folder"` and `root`; for Magnetic Tile set `dataset = "mtd"`, `category = "magnetic_tile"`.

# %% tags=["parameters"]
dataset: str = "embedded"  # embedded | mvtec | mtd | folder | stc
root: str = ""  # dataset root in MVTec layout; empty: the default location of the dataset
category: str = "weave"  # embedded: weave | granite | washer; MVTec: bottle, ...
image_size: int = 64  # test side in pixels (paper: 256)
geometry: str = "squash"  # squash: resize to a square | letterbox / reflect: keep the aspect, pad with black / a mirror
seed: int = 0  # seed of the validation and weak splits
results_dir: str = "results/scratch"  # where figures and splits.json go

# %%
from pathlib import Path

from avaga_lib import paths
from avaga_lib.config import make_config
from avaga_lib.data import AnomalyDataset, make_splits, resolve_root, split_counts
from avaga_lib.evaluation.plots import plot_sample_grid

cfg = make_config("smoke", {"data.dataset": dataset, "data.root": root, "data.category": category,
                            "data.image_size": image_size, "data.geometry": geometry, "data.seed": seed,
                            "results_dir": results_dir})
base = paths.absolute(results_dir)
out_dir = base / cfg.data.dataset / cfg.data.category / "data"  # the notebook runs in notebooks/
data_root = resolve_root(cfg.data)
print("dataset root:", data_root)

# %% [markdown]
# ## Counts per split and defect type (Table 1)
#
# `train` = train/good minus the normal-only validation split (used for label-free calibration, PROTOCOL_NOTES 8); `weak` = anomalous test images moved to training with their label only in the weakly supervised setting (ceil 2 %, at least 1, PROTOCOL_NOTES 12).

# %%
splits_u = make_splits(cfg.data, "unsupervised")
splits_w = make_splits(cfg.data, "weak", save_dir=out_dir)
print("pixel masks available:", splits_w.has_masks)
split_counts(splits_w)

# %% [markdown]
# ## Normal and anomalous test samples (masks in red)

# %%
test_ds = AnomalyDataset(splits_u.test, cfg.data.image_size, train=False, has_masks=splits_u.has_masks,
                         geometry=cfg.data.geometry)
fig = plot_sample_grid(test_ds, n_normal=4, n_anomalous=8, seed=seed,
                       title=f"{cfg.data.dataset}/{cfg.data.category} test", path=out_dir / "fig_samples.png")

# %% [markdown]
# ## The weak split chosen
#
# These anomalous images move to training with their image label only (their masks are never used); they are removed from the test set. The list is saved in `splits.json`.

# %%
import pandas as pd

pd.DataFrame([{"defect": r.defect, "path": str(Path(r.path).relative_to(data_root))} for r in splits_w.weak])

# %% [markdown]
# ## Training geometry (PROTOCOL_NOTES 13)
#
# Training images are stored at `round(image_size * 1.125)` and cropped + rotated on the fly.

# %%
import torch

from avaga_lib.data import augment_batch

train_ds = AnomalyDataset(splits_u.train[:8], cfg.data.image_size, train=True, geometry=cfg.data.geometry)
x, m = augment_batch(train_ds.images, train_ds.masks, cfg.data.image_size, cfg.data.rotation_deg,
                     generator=torch.Generator().manual_seed(seed))
print("stored", tuple(train_ds.images.shape), "-> augmented", tuple(x.shape))


# %% [markdown]
# ## Interactive browser
#
# Built only in an interactive Jupyter session (headless runs skip it).

# %%
def _interactive() -> bool:
    try:
        from IPython import get_ipython
        ip = get_ipython()
        return ip is not None and "IPKernelApp" in ip.config and hasattr(ip, "kernel")
    except ImportError:
        return False


if _interactive():
    try:
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        defects = sorted({r.defect for r in splits_u.test})
        pick = w.Dropdown(options=defects, description="defect")
        index = w.IntSlider(min=0, max=0, description="image")
        out = w.Output()

        def show(*_):
            idx = [i for i, d in enumerate(test_ds.defects) if d == pick.value]
            index.max = max(0, len(idx) - 1)
            i = idx[min(index.value, len(idx) - 1)]
            with out:
                out.clear_output(wait=True)
                fig, ax = plt.subplots(1, 2, figsize=(6, 3))
                ax[0].imshow(test_ds.images[i].permute(1, 2, 0))
                ax[0].set_title(Path(test_ds.paths[i]).name)
                ax[1].imshow(test_ds.masks[i, 0], cmap="gray")
                ax[1].set_title("mask")
                [a.axis("off") for a in ax]
                plt.show()

        pick.observe(show, "value")
        index.observe(show, "value")
        display(w.VBox([w.HBox([pick, index]), out]))
        show()
    except ImportError:
        print("ipywidgets not installed: no browser")
