# %% [markdown] tags=["remove-cell"]
# # 07 · Report — Tables 2, 3 (4, 5 for STC), 6/8, 7 and the verdicts
#
# Gathers every `metrics.json` under `results_dir` into tables shaped like the paper's: our mean ± std over seeds beside the paper's value and the difference, a mean row, the seeds and the profile. Writes `tables/*.csv|md` and `REPORT.md` (a verdict per paper claim, the protocol and every deviation) into `out_dir`, and compares every table cell with the committed reference results (`results/reference`): reproduced, differs, or not in the reference (section "Reproduced vs reference", `tables/reference_comparison.csv`); `make report` turns this executed notebook into `report.html`.
#
# report.html is for a reader: it opens with the study's answer (the summary table and the verdicts), then the paper-shaped tables and figures, then the protocol. Cells tagged `remove-cell` (this one, the parameters, the imports) and the printed output of cells tagged `remove-output` are left out of it (`report.export_html`).

# %% tags=["parameters"]
results_dir: str = "results/scratch/pipeline_demo"  # results tree (make reproduce: "results")
train_if_missing: bool = True  # no runs found: train tiny demo runs (8 images, 1 epoch) with the real library code
demo_category: str = "weave"  # embedded category of the demo runs
epochs: int = 1  # demo runs only
image_size: int = 64  # demo runs only
out_dir: str = ""  # empty: results_dir
reference_dir: str = ""  # empty: results/reference (the committed reference results)

# %% tags=["remove-cell"]
import matplotlib.pyplot as plt
from IPython.display import HTML, Markdown, display

from avaga_lib import study
from avaga_lib.evaluation import plots
from avaga_lib.paths import absolute, project_root
from avaga_lib.reporting import report
from avaga_lib.training import demo

base = absolute(results_dir)
out = absolute(out_dir) if out_dir else base

# %% tags=["remove-output"]
runs = report.collect_runs(base)
if runs.empty and train_if_missing:
    print(f"no runs under {base}: training tiny demo runs (numbers are a smoke check, not results)")
    demo.ensure_demo_runs(base, "AVAGA-R_u,AVAGA-R_w,AE-L2", demo_category, epochs, image_size)
    runs = report.collect_runs(base)
protocol = project_root() / "docs" / "PROTOCOL.md"
protocol_rel = protocol.relative_to(project_root()) if protocol.exists() else None
written = report.write_report(base, out, protocol_path=protocol_rel,
                              reference_dir=(project_root() / reference_dir) if reference_dir else None)
tables = report.build_tables(runs)
report_md = written.report_md.read_text()
print(f"{len(runs)} runs; wrote {written.report_md} and {len(written.tables)} tables under {out / 'tables'}")
if written.comparison is not None:
    print(written.comparison.summary_line(str(written.report_md)))

# %%
# The answer first: the summary of every run on the most paper-like dataset, then the verdicts (REPORT.md's words)
display(Markdown("# AVAGA reproduction: the study's answer"))
banner = report.scope_banner(runs)
if banner:
    display(Markdown(f"> {banner}"))
answer = report.answer_key(tables)
if answer is not None:
    t = tables[answer]
    display(HTML(f"<h3>{t.title}</h3>" + report.table_html(t, table_id="headline-table")
                 + "".join(f"<p><small>{n}</small></p>" for n in t.notes)))
display(Markdown(report.report_section(report_md, "Verdicts per claim")
                 + "\n" + report.report_section(report_md, "Study questions")))

# %% [markdown]
# ## Paper-shaped tables and figures

# %%
for dataset in sorted(set(runs["dataset"])):
    for key, label in ((f"{dataset}_table2_iou", "IoU"), (f"{dataset}_table4_iou", "IoU"),
                       (f"{dataset}_table3_mean_accuracy", "mean accuracy"),
                       (f"{dataset}_table5_mean_accuracy", "mean accuracy")):
        if key in tables:
            plots.plot_ours_vs_paper(tables[key].frame, study.MAIN_METHODS, label, title=tables[key].title)
            plt.show()

# %%
head = report.headline_key(tables)
for key in [head, *(k for k in tables if k != head)]:
    if key is not None and key != answer:
        t = tables[key]
        display(HTML(f"<h3>{t.title}</h3>" + report.table_html(t)
                     + "".join(f"<p><small>{n}</small></p>" for n in t.notes)))

# %% [markdown]
# ### Qualitative results across categories (Fig. 2 style, one run per category)

# %%
picked = report.qualitative_figures(runs)
if picked:
    plots.plot_image_files_grid([p for p, _ in picked], [t for _, t in picked])
    plt.show()
else:
    display(Markdown("_No run saved a qualitative figure (`fig_qualitative.png`)._"))

# %% [markdown]
# ## Protocol, deviations and the reference

# %%
display(Markdown("\n".join(report.report_section(report_md, name) for name in
                           ("Protocol", "Deviations", "Observations", "Reproduced vs reference"))))
