# %% [markdown]
# # 06 · Threshold study — Table 7 (App.), PROTOCOL_NOTES 2 and 8
#
# Table 7 of the paper: IoU of AVAGA-R_u at thresholds 0.2-0.6 against the best baseline (ours: the best *measured* AE-L2 / AE-SSIM). Then, per category, the full IoU-vs-threshold and accuracy-vs-threshold curves of one trained run re-inferred under the attention normalizations of PN 2 (`sigmoid` default, `minmax`, `max`: a sigmoid-trained model re-normalized after the fact, which is *not* training with those normalizations; the trained remedies are the runs `AVAGA-R_u-maxnorm` / `-gain` / `-size`, compared in the last section) and both score calibrations of PN 8 (normal validation split = default; transductive min-max over unlabeled test scores = flagged). Then a slider redraws masks and IoU live — it needs a running kernel (JupyterLab); headless execution only draws the static view at 0.5. Last, why the attention map collapses (issue 13): the mechanism on a toy, then the per-epoch diagnostics of the trained runs, literal recipe beside each remedy.

# %% tags=["parameters"]
results_dir: str = "results/scratch/pipeline_demo"  # results tree (make reproduce: "results")
train_if_missing: bool = True  # no runs found: train tiny demo runs (8 images, 1 epoch) with the real library code
demo_category: str = "weave"  # embedded category of the demo runs
epochs: int = 1  # demo runs only
image_size: int = 64  # demo runs only
setting: str = "AVAGA-R_u-seed0"  # run re-inferred for the curves (Table 7 studies AVAGA-R_u)
max_images: int = 24  # test images re-inferred per category for the curves (0: all)
max_categories: int = 3  # categories with curves (0: all)
device: str = "cpu"  # where to re-infer

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from avaga_lib.evaluation import plots, threshold
from avaga_lib.paths import absolute
from avaga_lib.reporting import report
from avaga_lib.run_folder import RunFolder
from avaga_lib.training import demo

base = absolute(results_dir)

# %%
runs = report.collect_runs(base)
if (runs.empty or not (runs["method"] == "AVAGA-R_u").any()) and train_if_missing:
    print(f"no AVAGA-R_u run under {base}: training tiny demo runs (numbers are a smoke check, not results)")
    demo.ensure_demo_runs(base, "AVAGA-R_u,AE-L2", demo_category, epochs, image_size)
    runs = report.collect_runs(base)
if runs.empty:
    raise SystemExit(f"no runs under {base}: run `make reproduce` or set train_if_missing=True")

# %% [markdown]
# ## Table 7: IoU vs threshold, ours (and the paper's on MVTec)

# %%
for dataset in sorted(set(runs["dataset"])):
    t = report.threshold_table(runs, dataset)
    if not t.frame.empty:
        display(Markdown(f"### {t.title}\n\n{t.markdown}\n" + "".join(f"- {n}\n" for n in t.notes)))

# %% [markdown]
# ## Curves per category (PN 2 normalizations, PN 8 calibrations)

# %%
targets = runs[runs["setting"] == setting].drop_duplicates(["dataset", "category"])
no_weights = threshold.missing_weights(list(targets["run_dir"]))
for run_dir in no_weights:
    print(f"no curves for {run_dir}: its checkpoint.pt is not on this machine (trained elsewhere, e.g. on a GPU); "
          "copy it into the run folder, or retrain the run here, to draw them")
targets = targets[~targets["run_dir"].astype(str).isin(no_weights)]
if max_categories:
    targets = targets.head(max_categories)
studies = {}
for _, r in targets.iterrows():
    study = threshold.threshold_study(r["run_dir"], device=device, max_images=max_images or None)
    studies[(r["dataset"], r["category"])] = study
    plots.plot_threshold_curves(study.curves, title=f"{r['dataset']}/{r['category']} {setting}"
                                + (f" (first {max_images} test images)" if max_images else ""))
    plt.show()
    at = study.curves[study.curves["threshold"].isin([0.2, 0.3, 0.4, 0.5, 0.6])]
    display(at.pivot(index="threshold", columns="norm", values="iou").round(3))
if not studies:
    print(f"no run named {setting} under {base}")

# %% [markdown]
# ## Masks at a threshold (static view at 0.5; the slider works in a live kernel)

# %%
import ipywidgets as widgets

if studies:
    key, study = next(iter(studies.items()))
    norms = list(study.examples["maps"])
    plots.plot_threshold_masks(study.examples, norms[0], 0.5)
    plt.show()
    # live view: redraws only on user interaction (a callback), so headless execution draws nothing more
    norm_box = widgets.Dropdown(options=norms, description="norm")
    thr_slider = widgets.FloatSlider(value=0.5, min=0.05, max=0.95, step=0.05, description="threshold")
    view = widgets.Output()

    def _redraw(_change: object = None) -> None:
        with view:
            view.clear_output(wait=True)
            plots.plot_threshold_masks(study.examples, norm_box.value, thr_slider.value)
            plt.show()

    norm_box.observe(_redraw, "value")
    thr_slider.observe(_redraw, "value")
    display(widgets.VBox([widgets.HBox([norm_box, thr_slider]), view]))


# %% [markdown]
# ## Why the attention collapses, and which remedies still drift (issue 13; docs/PROTOCOL.md)
#
# At test, y = sum(mu) and mu is a 1x1 conv of the features F, so dy/dF_k = sum_c W_mu[c, k] at every position: the Grad-CAM channel weights are **the same for every image**, and the raw map sum_k alpha_k F_k is one fixed linear projection of the features. Eq. 3, mean(1 - sigmoid(raw)), is then minimized by scaling that projection up (a constant offset in W_mu F is cancelled by the mu bias, so the other terms do not resist): the sigmoid saturates, A -> 1 on every pixel and 1 - A never crosses 0.5. `collapse.toy_collapse` keeps exactly that structure (a tiny encoder F = ReLU(W_e x + b_e), a mu head, eq. 3 alone, Adam) and records A and the raw map per step. `anchor` adds a weight penalty, a stand-in for the other terms of eq. 4 that resist the attention term.

# %%
import pandas as pd

from avaga_lib.models.avaga.collapse import toy_collapse
from avaga_lib.models.avaga.losses import COLLAPSE_TERMS

toy_cases = {"sigmoid (paper)": ("sigmoid", "literal"), "max (remedy a)": ("max", "literal"),
             "gain (remedy b)": ("gain", "literal"), "size barrier (remedy c)": ("sigmoid", "size_barrier")}
for anchor in (0.0, 0.1):
    toy = {label: pd.DataFrame(toy_collapse(norm, constraint, steps=200, anchor=anchor)).rename(columns={"step": "epoch"})
           for label, (norm, constraint) in toy_cases.items()}
    plots.plot_loss_curves(toy, title=f"toy, anchor={anchor} (x axis: Adam step)",
                           terms=("attn_mean", "amap_frac", "raw_mean", "raw_max"),
                           path=base / "figures" / f"fig_collapse_toy_anchor{anchor:g}.png")
    plt.show()
    display(pd.DataFrame({k: v.iloc[-1] for k, v in toy.items()}).T.drop(columns="epoch").round(3))

# %% [markdown]
# Reading the toy: the sigmoid saturates by scaling the raw map. `max` is scale-free but not drift-free: eq. 3 flattens the map until r / max(r) is about 1 everywhere. `gain`'s min-max pins one cell per image low, so 1 - A keeps that one cell and nothing else. The size barrier settles near mean(A) = 1 - p only when something resists (anchor > 0): inside its constraint its slope is 1/(t |z|), not 0, and Adam alone follows the gradient's sign. The trained runs below say which of these happens in AVAGA.

# %%
avaga = runs[runs["method"].str.startswith("AVAGA-R_u")].drop_duplicates(["dataset", "category", "method"])
for (dataset, category), group in avaga.groupby(["dataset", "category"]):
    histories = {r["method"]: pd.read_csv(RunFolder(r["run_dir"]).losses_path) for _, r in group.iterrows()
                 if RunFolder(r["run_dir"]).losses_path.exists()}
    if histories:
        plots.plot_loss_curves(histories, title=f"{dataset}/{category} collapse diagnostics", terms=COLLAPSE_TERMS,
                               path=base / "figures" / f"fig_collapse_{dataset}_{category}.png")
        plt.show()
