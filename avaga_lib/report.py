"""REPORT.md, the tables' files and the HTML report from every ``metrics.json`` of a results tree.

The public entry points of the report, in one place for notebooks 05-07 and the CLI: :func:`collect_runs`
(:mod:`avaga_lib.results`), :func:`build_tables` / :func:`comparison_table` / :func:`threshold_table`
(:mod:`avaga_lib.tables`), :func:`evaluate_claims` (:mod:`avaga_lib.claims`), and here :func:`write_report`,
:func:`render_report_md`, :func:`export_html`, :func:`table_html`, :func:`qualitative_figures`. Which runs exist,
their table columns and the paper's columns come from the study registry (:mod:`avaga_lib.study`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
from nbconvert import HTMLExporter

from avaga_lib.claims import Claim, evaluate_claims
from avaga_lib.io import write_csv, write_text
from avaga_lib.results import ReportError, aggregate, collect_runs
from avaga_lib.study import BASELINES
from avaga_lib.tables import Table, build_tables, comparison_table, threshold_table

__all__ = [
    "Claim",
    "ReportError",
    "ReportPaths",
    "Table",
    "aggregate",
    "build_tables",
    "collect_runs",
    "comparison_table",
    "deviations",
    "evaluate_claims",
    "export_html",
    "headline_key",
    "observations",
    "qualitative_figures",
    "render_report_md",
    "table_html",
    "threshold_table",
    "write_report",
]


@dataclass
class ReportPaths:
    """What :func:`write_report` wrote."""

    tables: dict[str, Path]
    report_md: Path
    runs_csv: Path


def headline_key(tables: dict[str, Table]) -> str | None:
    """The table shown first: Table 2 (IoU) of the most paper-like dataset present."""
    for dataset in ("mvtec", "stc", "mtd", "folder", "embedded"):
        for key in tables:
            if key.startswith(f"{dataset}_table2_iou") or key.startswith(f"{dataset}_table4_iou"):
                return key
    return next(iter(tables), None)


def write_report(
    results_dir: Path | str = "results",
    out_dir: Path | str | None = None,
    protocol_path: Path | str | None = None,
) -> ReportPaths:
    """Write ``<out_dir>/tables/*.csv|md``, ``<out_dir>/runs.csv`` and ``<out_dir>/REPORT.md``.

    Args:
        results_dir: the results tree to read.
        out_dir: where to write (defaults to ``results_dir``).
        protocol_path: ``docs/PROTOCOL.md`` (linked from the report when present).

    Raises:
        ReportError: when no finished run exists under ``results_dir``.
    """
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir
    runs = collect_runs(results_dir)
    if runs.empty:
        raise ReportError(
            f"no finished run under {results_dir} (expected <dataset>/<category>/<setting>/metrics.json); "
            "run `make reproduce` first"
        )
    tables = build_tables(runs)
    written: dict[str, Path] = {}
    for key, table in tables.items():
        written[key] = write_csv(out / "tables" / f"{key}.csv", table.frame)
        write_text(out / "tables" / f"{key}.md", f"### {table.title}\n\n{table.markdown}\n" +
                   "".join(f"- {n}\n" for n in table.notes))
    runs_csv = write_csv(out / "tables" / "runs.csv", runs.assign(notes=runs["notes"].map("; ".join)))
    claims = evaluate_claims(runs)
    md = render_report_md(runs, tables, claims, protocol_path)
    report_md = write_text(out / "REPORT.md", md)
    return ReportPaths(tables=written, report_md=report_md, runs_csv=runs_csv)


def render_report_md(runs: pd.DataFrame, tables: dict[str, Table], claims: Iterable[Claim],
                     protocol_path: Path | str | None = None) -> str:
    """The text of REPORT.md: protocol, deviations, verdicts per claim, then every table."""
    lines = ["# AVAGA reproduction: measured results and verdicts", ""]
    lines += ["## Protocol", ""]
    for dataset, grp in runs.groupby("dataset"):
        seeds = sorted(set(int(s) for s in grp["seed"]))
        lines.append(
            f"- **{dataset}**: {grp['category'].nunique()} categories ({', '.join(sorted(set(grp['category'])))}), "
            f"{grp['method'].nunique()} methods, {len(grp)} runs; profile {', '.join(sorted(set(grp['profile'])))}; "
            f"seeds {seeds}; epochs {_uniq(grp['epochs'])}; image size {_uniq(grp['image_size'])}; "
            f"score calibration {_uniq(grp['calibration'])}; attention normalization {_uniq(grp['attention_norm'])}."
        )
    lines += [
        "- Thresholds (detection and localization) 0.5 (PN 16), calibrated on normal validation images only (PN 8): "
        "no test label touches a threshold, for AVAGA and the baselines alike.",
        "- Metrics: IoU averaged over anomalous test images (PN 10), mean accuracy = balanced accuracy (PN 9); "
        "image/pixel AUROC and AUPRO (PN 11) beside them.",
        "- Every cell: mean ± sample std over seeds (std only with 2+ seeds); the paper reports single numbers.",
    ]
    if protocol_path is not None:
        lines.append(f"- Choices for each ambiguity of the paper: see `{protocol_path}`.")
    lines += ["", "## Deviations from the paper", ""]
    lines += [f"- {d}" for d in deviations(runs)]
    obs = observations(runs)
    if obs:
        lines += ["", "## Observations", ""] + [f"- {o}" for o in obs]
    lines += ["", "## Verdicts per claim", ""]
    lines += [c.sentence() for c in claims]
    lines += ["", "## Tables", ""]
    head = headline_key(tables)
    order = ([head] if head else []) + [k for k in tables if k != head]
    for key in order:
        t = tables[key]
        lines += [f"### {t.title}", "", t.markdown] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(lines) + "\n"


def _uniq(series: pd.Series) -> str:
    vals = sorted({str(v) for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return ", ".join(vals) or "n/a"


def deviations(runs: pd.DataFrame) -> list[str]:
    """Every way these runs differ from the paper's protocol, including the fallbacks each run recorded (notes)."""
    out: list[str] = []
    profiles = set(runs["profile"])
    if profiles - {"paper"}:
        out.append(
            f"profile(s) {sorted(profiles - {'paper'})}: fewer epochs ({_uniq(runs['epochs'])} instead of 150) and "
            f"smaller images ({_uniq(runs['image_size'])} px instead of 256) than App. A.1 — numbers are a smoke "
            "check of the pipeline, not a reproduction of the paper's values"
        )
    non_paper = sorted(set(runs["dataset"]) - {"mvtec", "stc"})
    if non_paper:
        out.append(f"dataset(s) {non_paper} are not in the paper: only the orderings of its claims can be compared")
    if (runs["method"].isin(BASELINES)).any():
        out.append("AE-L2 / AE-SSIM are measured here under our protocol; the paper quotes them from other papers "
                   "whose thresholds used anomalous images")
    if runs["method"].str.startswith("AVAGA-D").any():
        out.append("AVAGA-D: no public Celeb-A weights for the DCGAN parts; random initialisation (PN 7)")
    seeds = runs.groupby(["dataset", "category", "method"])["seed"].nunique()
    if (seeds < 3).any():
        out.append(f"{int((seeds < 3).sum())} of {len(seeds)} cells have fewer than 3 seeds")
    notes = sorted({n for ns in runs["notes"] for n in ns})
    for n in notes:
        count = int(sum(n in ns for ns in runs["notes"]))
        out.append(f"recorded fallback ({count} runs): {n}")
    return out


def observations(runs: pd.DataFrame) -> list[str]:
    """Facts the reader needs to interpret the verdicts (e.g. attention maps that never cross the threshold)."""
    out: list[str] = []
    avaga = runs[runs["method"].str.startswith("AVAGA")]
    if not avaga.empty and "iou" in avaga and "fp_area_normal" in avaga:
        silent = avaga[(avaga["iou"].fillna(-1) == 0) & (avaga["fp_area_normal"].fillna(-1) == 0)]
        if len(silent):
            norms = _uniq(silent["attention_norm"])
            out.append(
                f"{len(silent)} of {len(avaga)} AVAGA runs flag no pixel at all (IoU 0 and no false-positive area; "
                f"attention normalization {norms}): the anomalous map 1 - A never exceeds the threshold. This is the "
                "behaviour PROTOCOL_NOTES 2 predicts for a sigmoid-normalized attention; notebook 06 shows the "
                "same runs under the minmax / max normalizations. IoU orderings between such runs are ties."
            )
    return out


def export_html(executed_notebook: Path | str, html_path: Path | str) -> Path:
    """Convert an executed notebook to a self-contained HTML file (figures embedded as data URIs), atomically.

    Raises:
        ReportError: when the notebook does not exist.
    """
    src = Path(executed_notebook)
    if not src.exists():
        raise ReportError(f"executed notebook {src} missing; run notebooks/07_report.ipynb first (make report)")
    nb = nbformat.read(src, as_version=4)
    # readers get tables, figures and text: the code stays in the executed notebook beside it
    exporter = HTMLExporter(embed_images=True, exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": "AVAGA reproduction report"}})
    return write_text(html_path, body)


def table_html(table: Table, table_id: str | None = None) -> str:
    """The table's formatted cells (as in its markdown) as an HTML ``<table>`` (escaped), for notebooks / HTML."""
    lines = [ln for ln in table.markdown.strip().splitlines() if ln.startswith("|")]
    if len(lines) < 2:
        return "<p>(empty table)</p>"
    split = [[c.strip().replace("**", "") for c in ln.strip().strip("|").split("|")] for ln in lines]
    frame = pd.DataFrame(split[2:], columns=split[0])
    return frame.to_html(index=False, table_id=table_id, classes="avaga-table", border=1, escape=True)


def qualitative_figures(runs: pd.DataFrame, prefer: Sequence[str] = ("AVAGA-R_w", "AVAGA-R_u")) -> list[
    tuple[Path, str]
]:
    """One ``fig_qualitative.png`` per (dataset, category): the first preferred method with one, else any run."""
    out: list[tuple[Path, str]] = []
    if runs.empty:
        return out
    for (dataset, category), grp in runs.groupby(["dataset", "category"], sort=True):
        order = [m for m in prefer if (grp["method"] == m).any()] + sorted(set(grp["method"]) - set(prefer))
        for m in order:
            row = grp[grp["method"] == m].sort_values("seed").iloc[0]
            fig = Path(row["run_dir"]) / "fig_qualitative.png"
            if fig.exists():
                out.append((fig, f"{dataset}/{category} · {row['setting']}"))
                break
    return out
