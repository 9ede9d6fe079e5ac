# %% [markdown]
# # 06 · Threshold study — Table 7 (App.), PROTOCOL_NOTES 2 and 8
#
# Table 7 of the paper: IoU of AVAGA-R_u at thresholds 0.2-0.6 against the best baseline (ours: the best *measured* AE-L2 / AE-SSIM). Then, per category, the full IoU-vs-threshold and accuracy-vs-threshold curves of one trained run re-inferred under the attention normalizations of PN 2 (`sigmoid` default, `minmax`, `max`) and both score calibrations of PN 8 (normal validation split = default; transductive min-max over unlabeled test scores = flagged). Last, a slider redraws masks and IoU live — it needs a running kernel (JupyterLab); headless execution only draws the static view at 0.5.

# %% tags=["parameters"]
results_dir: str = "results/scratch/pipeline_demo"  # results tree (make reproduce: "results")
train_if_missing: bool = True  # no runs found: train tiny demo runs (8 images, 1 epoch) with the real library code
demo_category: str = "weave"  # embedded category of the demo runs
epochs: int = 1  # demo runs only
image_size: int = 64  # demo runs only
setting: str = "AVAGA-R_u-seed0"  # run re-inferred for the curves (Table 7 studies AVAGA-R_u)
max_images: int = 24  # test images re-inferred per category for the curves (0 = all)
max_categories: int = 3  # categories with curves (0 = all)
device: str = "cpu"  # where to re-infer

# %%
from pathlib import Path

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from avaga_lib import pipeline, plots, report, threshold
from avaga_lib.paths import project_root

base = Path(results_dir) if Path(results_dir).is_absolute() else project_root() / results_dir

# %%
runs = report.collect_runs(base)
if (runs.empty or not (runs["method"] == "AVAGA-R_u").any()) and train_if_missing:
    print(f"no AVAGA-R_u run under {base}: training tiny demo runs (numbers are a smoke check, not results)")
    pipeline.ensure_demo_runs(base, "AVAGA-R_u,AE-L2", demo_category, epochs, image_size)
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
