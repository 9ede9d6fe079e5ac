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

import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from scipy import stats

from avaga_lib import paths
from avaga_lib.config import MIN_LATENT_GRID, DataConfig, latent_side
from avaga_lib.io import replace_dir, write_csv, write_text
from avaga_lib.models.avaga.model import NOTE_NO_PRETRAINED
from avaga_lib.reporting.claims import CONFIDENCE, Claim, evaluate_claims
from avaga_lib.reporting.reference import CSV_NAME, Comparison, compare_with_reference, read_comparison
from avaga_lib.reporting.results import STALE_MEASUREMENT, ReportError, aggregate, collect_runs
from avaga_lib.reporting.tables import (
    Table,
    build_tables,
    comparison_table,
    initialisation,
    lacks_pixel_masks,
    threshold_table,
)
from avaga_lib.run_folder import (
    CALIBRATION_NAME,
    CONFIG_NAME,
    LOSSES_NAME,
    METRICS_NAME,
    QUALITATIVE_FIGURE,
    SPLITS_NAME,
    ResultsTree,
    RunFolder,
)
from avaga_lib.study import BASELINES

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
    lines += ["## Protocol", "", *_protocol_lines(runs, protocol_path)]
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


def _protocol_lines(runs: pd.DataFrame, protocol_path: Path | str | None) -> list[str]:
    """REPORT.md's protocol section: one line per dataset, then the measurement rules every number rests on."""
    lines: list[str] = []
    for dataset, grp in runs.groupby("dataset"):
        seeds = sorted(set(int(s) for s in grp["seed"]))
        lines.append(
            f"- **{dataset}**: {_count(grp['category'].nunique(), 'category', 'categories')} "
            f"({', '.join(sorted(set(grp['category'])))}), {_count(grp['method'].nunique(), 'method')}, "
            f"{_count(len(grp), 'run')}; profile {', '.join(sorted(set(grp['profile'])))}; "
            f"seeds {seeds}; epochs {_uniq(grp['epochs'])}; image size {_uniq(grp['image_size'])}; "
            f"image geometry {_uniq(grp['geometry'])}; score calibration {_uniq(grp['calibration'])}; "
            f"attention normalization {_uniq(grp['attention_norm'])}; "
            f"encoder initialisation {_initialisations(grp)}; "
            f"trained on {_devices(grp)}."
        )
    lines += [
        "- Thresholds: one label-free rule for every map and method (issue 20): a pixel is anomalous above the "
        f"{_uniq(runs.get('val_quantile', pd.Series(dtype=float)))} quantile of its own map's normal-validation "
        "pixels, an image above the 0.95 quantile of the normal-validation image scores (PN 8; the weak setting's "
        "classifier decides, PN 4). No test label touches a threshold. The paper's literal rule (AVAGA's attention "
        "map at 0.5, PN 16) is reported beside it as `iou_literal`.",
        "- Metrics: IoU averaged over anomalous test images (PN 10), each IoU with its grid cap (the best IoU the "
        "map's native grid allows); mean accuracy = balanced accuracy (PN 9); image AUROC, exact pixel AUROC and "
        "AUPRO (PN 11) beside them; per run, 95% bootstrap intervals over test images.",
        "- Every cell: mean ± sample std over seeds (std only with 2+ seeds); the paper reports single numbers.",
        *(f"- {line}" for line in stale_measurement(runs)),
    ]
    if protocol_path is not None:
        lines.append(f"- Choices for each ambiguity of the paper: see `{protocol_path}`.")
    return lines


def _devices(grp: pd.DataFrame) -> str:
    """``cpu`` / ``cuda (bf16 autocast: train.amp=auto)`` ... of a group of runs, or ``not recorded``."""
    names = _uniq(grp["device"]) if "device" in grp else "n/a"
    return "not recorded" if names == "n/a" else names.replace("cuda", "cuda (bf16 autocast where train.amp=auto)")


def _count(n: int, one: str, many: str = "") -> str:
    """``1 category`` / ``2 categories``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _initialisations(grp: pd.DataFrame) -> str:
    """Each initialisation of a dataset's runs with the runs that had it (issue 21: no verdict hides random init)."""
    if "notes" not in grp:
        return "n/a"
    by_init: dict[str, list[str]] = {}
    for method, notes in zip(grp["method"], grp["notes"], strict=True):
        label = initialisation(pd.Series([notes])) or "not recorded"
        by_init.setdefault(label, [])
        if method not in by_init[label]:
            by_init[label].append(str(method))
    if len(by_init) == 1:
        return f"{next(iter(by_init))} for every run"
    return "; ".join(f"{label} ({', '.join(methods)})" for label, methods in sorted(by_init.items()))


def _uniq(series: pd.Series) -> str:
    vals = sorted({str(v) for v in series if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return ", ".join(vals) or "n/a"


def deviations(runs: pd.DataFrame) -> list[str]:
    """Every way these runs differ from the paper's protocol, including the fallbacks each run recorded (notes)."""
    out: list[str] = []
    for profile in sorted(set(runs["profile"]) - {"paper"}):
        grp = runs[runs["profile"] == profile]
        what = ("a check of the pipeline, not a reproduction of the paper's values" if profile == "smoke" else
                "the smallest study that can show a signal on a CPU, not the paper's budget: orderings, not values")
        out.append(
            f"profile {profile}: fewer epochs ({_uniq(grp['epochs'])} instead of 150) and smaller images "
            f"({_uniq(grp['image_size'])} px instead of 256) than App. A.1 — {what}"
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
    no_weights = runs[runs["notes"].map(lambda ns: NOTE_NO_PRETRAINED in ns)]
    if len(no_weights):  # said once, for the runs whose encoder asked for ImageNet weights (AVAGA, not the AEs)
        out.append(f"recorded fallback ({_count(len(no_weights), 'run')}: "
                   f"{', '.join(sorted(set(no_weights['method'])))}): no ImageNet weights in the torch hub cache, "
                   "so the ResNet-18 encoder started from random weights (no download offline)")
    # pretrained_source=... records where an encoder's weights came from: a record, not a fallback; the missing
    # weights are the line above, and the AE baselines have no pretrained encoder to miss
    notes = sorted({n for ns in runs["notes"] for n in ns
                    if n != NOTE_NO_PRETRAINED and not n.startswith("pretrained_source=")})
    for n in notes:
        count = int(sum(n in ns for ns in runs["notes"]))
        out.append(f"recorded fallback ({_count(count, 'run')}): {n}")
    return out


def stale_measurement(runs: pd.DataFrame) -> list[str]:
    """Datasets whose runs were evaluated before issue 20's measurement (:data:`STALE_MEASUREMENT`: their
    ``metrics.json`` lacks ``threshold_rule``): :func:`avaga_lib.reporting.results.collect_runs` reads their ``iou``
    from their ``iou_val_quantile`` (today's rule), but their test sets, bins and extras are the old ones. Named so that
    no reader compares them with the new numbers unawares."""
    if "measurement" not in runs.columns:
        return []
    old = runs[runs["measurement"] == STALE_MEASUREMENT]
    out = []
    for dataset, grp in old.groupby("dataset"):
        out.append(f"**{dataset}: {len(grp)} runs measured before issue 20** (stale until rerun): their IoU is "
                   "read from their own label-free quantile IoU (`iou_val_quantile`, today's rule; the old headline "
                   "at 0.5 is `iou_old_rule`), but their test sets were smaller (embedded: generator v2, 40 test "
                   "images; 10% validation), their pixel AUROC binned on validation edges; no floors, grid caps or "
                   "intervals; a claim comparing them with runs measured after issue 20 is not judged (cannot test)")
    return out


def seeds_caveat(runs: pd.DataFrame) -> str:
    """What the number of seeds does to the t-intervals, per dataset (issue 20: with 3 seeds the 95% t multiplier is
    4.30, with 5 it is 2.78), or "" without seeds. Read from the runs: the most seeds any run of a dataset has."""
    if runs.empty or "seed" not in runs.columns:
        return ""
    parts = []
    for dataset, grp in runs.groupby("dataset", sort=True):
        n = int(grp.groupby(["category", "method"])["seed"].nunique().max())
        if n >= 2:
            mult = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1))
            parts.append(f"{dataset}: {n} seeds per run at most, so one category's interval is the mean ± {mult:.2f} "
                         f"standard errors ({n - 1} degrees of freedom)")
        else:
            parts.append(f"{dataset}: 1 seed per run, so no verdict can rest on one category's seed spread")
    return ("**Seeds.** " + "; ".join(parts) + ". With so few seeds a verdict is decided only by a difference that is "
            "large against its spread over seeds; undecided is not evidence of no effect.")


def scope_banner(runs: pd.DataFrame) -> str:
    """The report's first lines when its runs cannot judge localization: datasets without pixel masks (no
    localization verdict exists for them), and every run at a latent grid under 4x4."""
    parts = []
    maskless = [d for d in sorted(set(runs.get("dataset", ()))) if lacks_pixel_masks(runs, d)]
    if maskless:
        parts.append(f"**{', '.join(maskless)}: the dataset has no pixel masks** (no ground_truth/ folder): only "
                     "image-level results (image AUROC, mean accuracy) and classification verdicts are measured; "
                     "no pixel metric or localization verdict exists for it.")
    sizes = pd.to_numeric(runs.get("image_size", pd.Series(dtype=float)), errors="coerce").dropna()
    if sizes.empty or (latent_side(sizes) >= MIN_LATENT_GRID).any():
        return " ".join(parts)
    # the localization sentence only where a dataset has masks: a mask-less one has no localization verdict at all
    judged = ("a latent grid under {g}x{g} cannot localize, so no localization claim is tested here"
              if len(maskless) < runs["dataset"].nunique() else "a latent grid under {g}x{g} could not localize "
              "even with masks").format(g=MIN_LATENT_GRID)
    parts.append(f"**A pipeline check, not a study.** Every run is at {_uniq(runs['image_size'])} px (profile "
                 f"{_uniq(runs['profile'])}): {judged}. `make reproduce PROFILE=cpu` is the smallest study that can "
                 f"show a signal ({ResultsTree.for_profile('cpu')}/reference holds its committed results).")
    return " ".join(parts)


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
                "behaviour PROTOCOL_NOTES 2 predicts for a sigmoid-normalized attention; notebook 06 re-normalizes the "
                "same trained maps under minmax / max after the fact (not the same as training with them: the "
                "trained remedies are their own registry runs). IoU orderings between such runs are ties."
            )
    if "image_size" in runs:
        small = runs[latent_side(pd.to_numeric(runs["image_size"], errors="coerce")) < MIN_LATENT_GRID]
        if len(small):
            sizes = ", ".join(f"{int(v)} px" for v in sorted(set(small["image_size"])))
            out.append(
                f"{len(small)} of {len(runs)} runs were trained at {sizes}: the encoders downsample 32x, so the latent "
                f"grid is under {MIN_LATENT_GRID}x{MIN_LATENT_GRID} and an attention map of so few cells cannot "
                "localize, whatever the loss. " + ("Their localization verdicts test the pipeline, not the paper's "
                "claims (use PROFILE=cpu, 128 px, or the paper profile)." if not all(
                    lacks_pixel_masks(runs, d) for d in set(small["dataset"])) else
                    "(Without pixel masks no localization verdict is made for them anyway.)")
            )
    return out


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
