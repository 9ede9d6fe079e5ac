# %% [markdown]
# # 02 The AVAGA model: Table 9 and Fig. 1
#
# Maps to the paper's **Table 9** (architecture of AVAGA_u / AVAGA_w: encoder, W.S. classifier, residual decoder,
# discriminator) and **Fig. 1** (input -> CAVAE -> reconstruction; attention map A from the latent space by Grad-CAM,
# anomalous map 1 - A). The networks live in `avaga_lib/models/avaga/model.py`, Grad-CAM in `avaga_lib/models/avaga/attention.py`, the losses in
# `avaga_lib/models/avaga/losses.py`; this notebook only calls them. Choices are explained in `docs/PROTOCOL.md` (points 1-7).

# %% tags=["parameters"]
category: str = "weave"  # embedded category (weave | granite | washer)
image_size: int = 64  # side of the forward-pass demo (the Table 9 check always uses 256)
variant: str = "R"  # R: ResNet-18 + residual decoder | D: DCGAN encoder / generator
gradcam_layer: str = "features"  # features (default, PN 1) | z
attention_norm: str = "sigmoid"  # sigmoid (default) | minmax | max | relu_sigmoid (PN 2)
n_images: int = 4  # test images shown
seed: int = 0  # model init seed

# %%
import os
import warnings

import pandas as pd
import torch

from avaga_lib import paths
from avaga_lib.config import make_config

os.chdir(paths.project_root())
cfg = make_config("smoke", {
    "data.category": category, "data.image_size": image_size,
    "model.variant": variant, "model.gradcam_layer": gradcam_layer, "model.attention_norm": attention_norm,
})
cfg.model

# %% [markdown]
# ## Table 9 at 256 x 256
#
# `architecture_table` runs one 256 px image through the model with forward hooks and joins Table 9's expected output
# shapes (C x H x W; the paper writes H x W x C). ResNet-18's `layer1..4` are shown as one row each (Table 9 lumps
# layers 1-18 together). The model is built on the `meta` device: shapes and parameter counts without any compute.

# %%
from dataclasses import replace

from avaga_lib.models.avaga.architecture import architecture_table
from avaga_lib.models.avaga.model import AVAGA, Discriminator, count_parameters

with torch.device("meta"):
    net256 = AVAGA(replace(cfg.model, variant="R", latent="conv", pretrained="none"), 256, classifier=True)
    disc256 = Discriminator(256)
arch = pd.concat([architecture_table(net256, 256), architecture_table(disc256, 256)], ignore_index=True)
checked = arch[arch["table9_shape"].notna()]
assert checked["match"].all(), checked[~checked["match"]]
print(f"{len(checked)} Table 9 rows checked, all match")
from IPython.display import display

with pd.option_context("display.max_rows", 200, "display.width", 200):
    display(arch)

# %% [markdown]
# ## Parameter counts

# %%
rows = []
for name, module in [("encoder (ResNet-18 conv + heads)", [net256.body, net256.mu, net256.logvar]),
                     ("residual decoder", [net256.decoder]), ("classifier (W.S.)", [net256.classifier]),
                     ("discriminator", [disc256])]:
    rows.append({"part": name, "parameters": sum(count_parameters(m) for m in module)})
pd.DataFrame(rows)

# %% [markdown]
# ## One forward pass on embedded-dataset images
#
# Test images of the embedded dataset (generated into `data/embedded` on first use), an untrained model (smoke profile:
# random init when the ImageNet weights are not in the torch cache, recorded as a note). `attention.infer` puts the
# model in eval mode (z = mu, y = sum(mu)), computes A by the closed-form Grad-CAM and returns the anomalous map 1 - A.
# Untrained, the maps are not meaningful yet: this shows the data path and the shapes, not results.

# %%
from avaga_lib.data import AnomalyDataset, make_splits
from avaga_lib.evaluation import plots
from avaga_lib.models.avaga.attention import infer
from avaga_lib.models.avaga.model import build_model

splits = make_splits(cfg.data, "unsupervised")
ds = AnomalyDataset(splits.test[:n_images], cfg.data.image_size, train=False, has_masks=splits.has_masks)
x = torch.stack([ds[i]["image"] for i in range(len(ds))])
torch.manual_seed(seed)
with warnings.catch_warnings(record=True):
    model, notes = build_model(cfg.model, cfg.data.image_size, "unsupervised")
print("encoder initialised from:", model.pretrained_source, "| notes:", notes)
inf = infer(model, x, cfg.model, "unsupervised")
print("score_raw (mean |x - x_hat|):", [round(v, 4) for v in inf.score_raw.tolist()])
print("A range:", float(inf.attention.min()), float(inf.attention.max()))
fig = plots.plot_model_forward(x, inf.recon, inf.attention, inf.amap, title=f"{category}: untrained AVAGA-{variant}")

# %% [markdown]
# ## Grad-CAM choices (PROTOCOL_NOTES 1-2)
#
# * **Target and feature map.** y = sum(z) in training, sum(mu) at test; F = the encoder map after Table 9's ReLU
#   (input of the 1x1 mu / logvar convs). Option `gradcam_layer="z"`: F = z, A = channel sum of z.
# * **Closed-form gradient.** Only linear maps and the reparameterisation lie between F and y, so
#   alpha = mean(G) W_mu + mean(G (z - mu) / 2) W_logvar exactly (tested against `autograd.grad(create_graph=True)` in
#   values and second-order gradients). The attention loss back-propagates through it at almost no cost.
# * **Normalisation.** Default: sigmoid in place of the ReLU. The literal "sigmoid after the ReLU" gives A >= 0.5, so
#   the anomalous map 1 - A can never exceed 0.5 (shown below on the same batch). `minmax` / `max` are per-image options.
#

# %%
from dataclasses import replace

rows = []
for norm in ("sigmoid", "minmax", "max", "relu_sigmoid"):
    r = infer(model, x, replace(cfg.model, attention_norm=norm), "unsupervised")
    rows.append({"attention_norm": norm, "A min": float(r.attention.min()), "A max": float(r.attention.max()),
                 "max of 1 - A": float(r.amap.max()), "pixels with 1 - A > 0.5": float((r.amap > 0.5).float().mean())})
norms = pd.DataFrame(rows)
assert norms.set_index("attention_norm").loc["relu_sigmoid", "max of 1 - A"] <= 0.5
norms
