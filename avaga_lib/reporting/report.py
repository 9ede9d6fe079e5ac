"""REPORT.md, the tables' files and the HTML report from every ``metrics.json`` of a results tree.

The public entry points of the report, in one place for notebooks 05-07 and the CLI: :func:`collect_runs`
(:mod:`avaga_lib.reporting.results`), :func:`build_tables` / :func:`comparison_table` / :func:`threshold_table`
(:mod:`avaga_lib.reporting.tables`), :func:`evaluate_claims` (:mod:`avaga_lib.reporting.claims`),
:func:`compare_with_reference` (:mod:`avaga_lib.reporting.reference`), and here :func:`write_report`,
:func:`render_report_md`, :func:`reference_comparison`, :func:`reference_summary`, :func:`reference_exit_code`,
:func:`refresh_reference`, :func:`export_html`, :func:`table_html`, :func:`qualitative_figures`. Which runs exist,
their table columns and the paper's columns come from the study registry (:mod:`avaga_lib.study`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from avaga_lib import paths
from avaga_lib.config import DataConfig
from avaga_lib.io import replace_dir, write_csv, write_text
from avaga_lib.reporting.claims import Claim, evaluate_claims
from avaga_lib.reporting.protocol import (
    deviations,
    observations,
    protocol_lines,
    scope_banner,
    seeds_caveat,
    stale_measurement,
)
from avaga_lib.reporting.reference import CSV_NAME, Comparison, compare_with_reference, read_comparison
from avaga_lib.reporting.results import ReportError, aggregate, collect_runs
from avaga_lib.reporting.tables import (
    Table,
    build_tables,
    comparison_table,
    threshold_table,
)
from avaga_lib.run_folder import (
    CALIBRATION_NAME,
    CONFIG_NAME,
    LOSSES_NAME,
    METRICS_NAME,
    QUALITATIVE_FIGURE,
    SPLITS_NAME,
    RunFolder,
)

__all__ = [
    "Claim",
    "Comparison",
    "REFERENCE_FILES",
    "ReportError",
    "ReportPaths",
    "Table",
    "aggregate",
    "answer_key",
    "build_tables",
    "collect_runs",
    "compare_with_reference",
    "comparison_table",
    "deviations",
    "evaluate_claims",
    "export_html",
    "headline_key",
    "observations",
    "qualitative_figures",
    "reference_comparison",
    "reference_exit_code",
    "reference_summary",
    "refresh_reference",
    "render_report_md",
    "report_section",
    "scope_banner",
    "seeds_caveat",
    "stale_measurement",
    "table_html",
    "threshold_table",
    "with_geometry",
    "write_report",
]


@dataclass
class ReportPaths:
    """What :func:`write_report` wrote."""

    tables: dict[str, Path]
    report_md: Path
    runs_csv: Path
    comparison: Comparison | None = None  # reproduced vs reference (None: not compared)
    comparison_csv: Path | None = None


# What `make reference` copies of each run (no checkpoints, maps, predictions or figures: they are regenerated).
REFERENCE_FILES: tuple[str, ...] = (CONFIG_NAME, METRICS_NAME, LOSSES_NAME, CALIBRATION_NAME, SPLITS_NAME)
REFERENCE_FIGURES = "fig_collapse_*.png"  # of <results>/figures/: the collapse figures (issue 13), a few small PNGs


def headline_key(tables: dict[str, Table]) -> str | None:
    """The table shown first: Table 2 (IoU) of the most paper-like dataset present."""
    for dataset in _PAPER_LIKE:
        for key in tables:
            if key.startswith(f"{dataset}_table2_iou") or key.startswith(f"{dataset}_table4_iou"):
                return key
    return next(iter(tables), None)


_PAPER_LIKE = ("mvtec", "stc", "mtd", "folder", "embedded")  # the dataset whose numbers answer first


def answer_key(tables: dict[str, Table]) -> str | None:
    """The study's answer in one table (report.html opens with it): the summary of the most paper-like dataset."""
    summaries = [k for k in tables if k.endswith("_summary")]
    for dataset in _PAPER_LIKE:
        if f"{dataset}_summary" in summaries:
            return f"{dataset}_summary"
    return summaries[0] if summaries else headline_key(tables)


def with_geometry(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with a ``geometry`` column (``data.geometry`` of each run's ``config.json``: squash / letterbox).

    A config written before the option existed was squashed (the default then and now); a frame without
    ``run_dir`` (made by hand) gets ``n/a``. The column is kept when present.
    """
    if runs.empty or "geometry" in runs.columns:
        return runs
    default = DataConfig().geometry
    out = []
    for run_dir in runs["run_dir"] if "run_dir" in runs.columns else [None] * len(runs):
        folder = RunFolder(run_dir) if isinstance(run_dir, str) else None
        data = folder.config_record().get("data", {}) if folder is not None and folder.config_path.is_file() else None
        out.append("n/a" if data is None else str(data.get("geometry", default)))
    return runs.assign(geometry=out)


def write_report(
    results_dir: Path | str = "results",
    out_dir: Path | str | None = None,
    protocol_path: Path | str | None = None,
    reference_dir: Path | str | None = None,
    compare: bool = True,
) -> ReportPaths:
    """Write ``<out_dir>/tables/*.csv|md``, ``<out_dir>/runs.csv``, ``<out_dir>/REPORT.md`` and, when comparing,
    ``<out_dir>/tables/reference_comparison.csv`` (with a "Reproduced vs reference" section in REPORT.md).

    Args:
        results_dir: the results tree to read. out_dir: where to write (defaults to ``results_dir``).
        protocol_path: ``docs/PROTOCOL.md`` (linked from the report when present). reference_dir: the reference results
        (default ``results/reference`` of the project). compare: compare every table cell with the reference (never when
        ``results_dir`` is the reference).

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
    runs = with_geometry(runs)  # issue 23: runs.csv and the protocol line say squash or letterbox
    tables = build_tables(runs)
    written: dict[str, Path] = {}
    for key, table in tables.items():
        written[key] = write_csv(out / "tables" / f"{key}.csv", table.frame)
        write_text(out / "tables" / f"{key}.md", f"### {table.title}\n\n{table.markdown}\n" +
                   "".join(f"- {n}\n" for n in table.notes))
    runs_csv = write_csv(out / "tables" / "runs.csv", runs.assign(notes=runs["notes"].map("; ".join)))
    claims = evaluate_claims(runs)
    reference = Path(reference_dir) if reference_dir is not None else paths.reference_dir()
    comparison = comparison_csv = None
    if compare and reference.resolve() != results_dir.resolve():
        comparison = reference_comparison(runs, reference)
        comparison_csv = write_csv(out / "tables" / CSV_NAME, comparison.frame)
    md = render_report_md(runs, tables, claims, protocol_path, comparison, evaluate_claims(runs, questions=True))
    report_md = write_text(out / "REPORT.md", md)
    return ReportPaths(tables=written, report_md=report_md, runs_csv=runs_csv, comparison=comparison,
                       comparison_csv=comparison_csv)


def _shown(path: Path) -> str:
    """``path`` relative to the project root when inside it (as REPORT.md names it), else as given."""
    try:
        return str(path.resolve().relative_to(paths.project_root().resolve()))
    except ValueError:
        return str(path)


def reference_comparison(runs: pd.DataFrame, reference_dir: Path | str | None = None) -> Comparison:
    """:func:`compare_with_reference` of ``runs`` against the runs of ``reference_dir`` (default
    ``results/reference``); a missing, empty or unreadable reference makes every cell "not in reference" with
    that reason."""
    ref = Path(reference_dir) if reference_dir is not None else paths.reference_dir()
    shown = _shown(ref)
    if not ref.is_dir():
        return compare_with_reference(runs, pd.DataFrame(), reference=shown, unavailable=f"no reference at {shown}")
    try:
        ref_runs = collect_runs(ref)
    except ReportError as exc:
        return compare_with_reference(runs, pd.DataFrame(), reference=shown,
                                      unavailable=f"reference unreadable: {exc}")
    why = "" if not ref_runs.empty else f"no run in the reference {shown}"
    return compare_with_reference(runs, ref_runs, reference=shown, unavailable=why)


def reference_summary(results_dir: Path | str = "results", strict: bool = False) -> str | None:
    """The one terminal line of the comparison the report last wrote under ``results_dir`` (None: none written):
    the cells reproduced exactly, within seed spread, differing and not in the reference; with ``strict`` and a cell
    not reproduced exactly it also names the exit status :func:`reference_exit_code` gives."""
    comparison = read_comparison(Path(results_dir) / "tables" / CSV_NAME)
    return None if comparison is None else comparison.summary_line(f"{results_dir}/REPORT.md", strict)


def reference_exit_code(results_dir: Path | str = "results", strict: bool = False) -> int:
    """The exit status the comparison under ``results_dir`` asks for (``--strict``, ``make reproduce STRICT=1``):
    :data:`avaga_lib.reporting.reference.STRICT_EXIT` when ``strict`` and a cell is not reproduced exactly, else 0
    (also when
    no comparison was written: a study that compared nothing has no difference to fail on)."""
    comparison = read_comparison(Path(results_dir) / "tables" / CSV_NAME)
    return 0 if comparison is None else comparison.exit_code(strict)


def refresh_reference(results_dir: Path | str = "results", reference_dir: Path | str | None = None,
                      protocol_path: Path | str | None = None) -> ReportPaths:
    """Copy the curated subset of a finished results tree into the reference, then rewrite the reference's tables
    and REPORT.md from every run it holds (``make reference``).

    Per dataset of ``results_dir`` the reference's folder of that dataset is replaced whole (runs of other datasets
    stay); of each run only :data:`REFERENCE_FILES` are copied.

    Raises:
        ReportError: no finished run under ``results_dir``, or ``results_dir`` is the reference itself.
    """
    src = Path(results_dir)
    dst = Path(reference_dir) if reference_dir is not None else paths.reference_for(src)
    if src.resolve() == dst.resolve():
        raise ReportError(f"{src} is the reference itself; give the results tree of a finished `make reproduce`")
    runs = collect_runs(src)
    if runs.empty:
        raise ReportError(f"no finished run under {src}: run `make reproduce` first, then `make reference`")
    dst.mkdir(parents=True, exist_ok=True)
    for dataset, grp in runs.groupby("dataset"):
        tmp = Path(tempfile.mkdtemp(prefix=f".{dataset}.new-", dir=dst))
        for _, r in grp.iterrows():
            run_dir = Path(r["run_dir"])
            target = tmp / str(r["category"]) / run_dir.name
            target.mkdir(parents=True)
            for name in REFERENCE_FILES:
                if (run_dir / name).exists():
                    shutil.copy2(run_dir / name, target / name)
        replace_dir(tmp, dst / str(dataset))
    for figure in sorted((src / "figures").glob(REFERENCE_FIGURES)):  # the collapse figures notebook 06 saved
        (dst / "figures").mkdir(exist_ok=True)
        shutil.copy2(figure, dst / "figures" / figure.name)
    shutil.rmtree(dst / "tables", ignore_errors=True)  # tables of every dataset are rewritten just below
    return write_report(dst, protocol_path=protocol_path, compare=False)


def render_report_md(runs: pd.DataFrame, tables: dict[str, Table], claims: Iterable[Claim],
                     protocol_path: Path | str | None = None, comparison: Comparison | None = None,
                     questions: Iterable[Claim] = ()) -> str:
    """The text of REPORT.md: protocol, deviations, verdicts per claim, reproduced vs reference, every table."""
    lines = ["# AVAGA reproduction: measured results and verdicts", ""]
    banner = scope_banner(runs)
    if banner:
        lines += [f"> {banner}", ""]
    runs = with_geometry(runs)
    lines += ["## Protocol", "", *protocol_lines(runs, protocol_path)]
    lines += ["", "## Deviations from the paper", ""]
    lines += [f"- {d}" for d in deviations(runs)]
    obs = observations(runs)
    if obs:
        lines += ["", "## Observations", ""] + [f"- {o}" for o in obs]
    lines += ["", "## Verdicts per claim", ""]
    lines += [
        "Each claim pairs its two sides by seed (the same seed trains both) in every category where both were "
        "measured; the verdict reads the 95% Student t-interval of the mean paired difference over those "
        "(category, seed) cells: **holds** when it lies above 0, **contradicted** when it lies below 0, "
        "**undecided** when it contains 0 or when a single cell gives no interval. A side of several runs is the "
        "best by mean on the test metric, picked on the test set: the sentence says so and lists every candidate. "
        "Where the evaluator wrote them, each side also shows the mean of its runs' 95% bootstrap intervals over "
        "test images. A localization claim is **cannot test** on a latent grid under 4x4, and an IoU claim when "
        "the map's grid caps the best reachable IoU under the paper's number; a classification claim is **cannot "
        "test** when a side predicts one class for every test image or its mean accuracy is not above chance "
        "(the t-interval over its runs reaches 0.5). Each verdict names the profile, "
        "image size, seeds and categories it rests on.",
        "",
    ]
    caveat = seeds_caveat(runs)
    if caveat:
        lines += [caveat, ""]
    lines += [c.sentence() for c in claims]
    if questions:
        lines += ["", "## Study questions (issue 13; not claims of the paper)", ""]
        lines += [c.sentence() for c in questions]
    if comparison is not None:
        lines += ["", comparison.markdown()]
    lines += ["", "## Tables", ""]
    head = headline_key(tables)
    order = ([head] if head else []) + [k for k in tables if k != head]
    for key in order:
        t = tables[key]
        lines += [f"### {t.title}", "", t.markdown] + [f"- {n}" for n in t.notes] + [""]
    return "\n".join(lines) + "\n"


def report_section(md: str, heading: str) -> str:
    """The ``## <heading>`` section of REPORT.md's text ``md``, its heading line included, up to the next ``## ``
    heading; "" when there is none (report.html takes its answer and its protocol from REPORT.md this way).

    Args:
        md: the text of REPORT.md (:func:`render_report_md`). heading: the section's title, without the ``## `` (e.g.
        ``Verdicts per claim``); a prefix suffices.
    """
    out: list[str] = []
    for line in md.splitlines():
        if line.startswith("## "):
            if out:
                break
            if line[3:].startswith(heading):
                out.append(line)
        elif out:
            out.append(line)
    return "\n".join(out).strip() + "\n" if out else ""


# Cells report.html leaves out (cell tags of notebooks/07_report.py): the parameters, papermill's injected ones, and
# the plumbing that reads and writes folders; a reader gets the answer, the tables and the figures (issue 23)
HTML_REMOVE_CELL_TAGS: tuple[str, ...] = ("parameters", "injected-parameters", "remove-cell")
HTML_REMOVE_OUTPUT_TAGS: tuple[str, ...] = ("remove-output",)


def export_html(executed_notebook: Path | str, html_path: Path | str) -> Path:
    """Convert an executed notebook to a self-contained HTML file (figures embedded as data URIs), atomically.

    Code inputs and prompts are hidden; cells tagged with :data:`HTML_REMOVE_CELL_TAGS` are left out whole, and
    the outputs of cells tagged :data:`HTML_REMOVE_OUTPUT_TAGS` (printed progress, paths) are dropped.

    Raises:
        ReportError: when the notebook does not exist.
    """
    # heavy (nbconvert pulls in jinja2, mistune, bleach: several seconds of CPU on a loaded 2-core machine) and
    # needed by this one function only: imported here so every other CLI command starts without it
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    src = Path(executed_notebook)
    if not src.exists():
        raise ReportError(f"executed notebook {src} missing; run notebooks/07_report.ipynb first (make report)")
    nb = nbformat.read(src, as_version=4)
    # readers get tables, figures and text: the code stays in the executed notebook beside it
    exporter = HTMLExporter(embed_images=True, exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags=set(HTML_REMOVE_CELL_TAGS),
                                                         remove_all_outputs_tags=set(HTML_REMOVE_OUTPUT_TAGS),
                                                         enabled=True), enabled=True)
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
            fig = RunFolder(row["run_dir"]).figure_path(QUALITATIVE_FIGURE)
            if fig.exists():
                out.append((fig, f"{dataset}/{category} · {row['setting']}"))
                break
    return out
