"""Command line of the study: ``python -m avaga_lib.cli <command> [options]``, its one entry point.

The Makefile, the README and docs call these sub-commands (``tests/test_readme_commands.py`` parses every command
line of the README against :func:`build_parser`). To add a command: write ``_add_<name>(parser)`` (declares its
options) and ``_run_<name>(args) -> int`` and register both in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from avaga_lib import paths, plan
from avaga_lib.config import PROFILES, make_config
from avaga_lib.data import SOURCES
from avaga_lib.data.download import download_mvtec
from avaga_lib.data.mtd import MTD_CATEGORY, convert_magnetic_tile
from avaga_lib.data.stc import CACHE_DIRNAME, FRAME_STEP, count_summary, extract_stc
from avaga_lib.data.synthetic import MARKER, generate_dataset
from avaga_lib.evaluation.predict import predict_folder
from avaga_lib.models.avaga import pretrain
from avaga_lib.orchestration import job, pipeline, preflight, scheduler
from avaga_lib.reporting import report
from avaga_lib.run_folder import PREDICTIONS_NAME, ResultsTree, RunFolder
from avaga_lib.training.checkpoint import NonFiniteLossError, TrainingInterrupted
from avaga_lib.training.distributed import env_world_size, launch
from avaga_lib.training.run import run_one

DATASETS_HELP = " | ".join(SOURCES)  # the data sources' registry names the valid data.dataset values
PROFILES_HELP = " | ".join(PROFILES)  # config.PROFILES defines the profiles: a new one shows in every --help


def _parse_sets(items: Sequence[str]) -> dict[str, object]:
    """``--set KEY=VALUE`` items as overrides, each value read as YAML (``1`` -> 1, ``true`` -> True)."""
    overrides: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return overrides


# --------------------------------------------------------------------------------------------------------- data


def _add_make_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=None, help="destination (default: data/embedded)")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--size", type=int, default=128, help="stored image side in pixels")
    p.add_argument("--categories", nargs="*", default=None, help="subset of weave granite washer")


def _run_make_data(args: argparse.Namespace) -> int:
    root = args.root or paths.embedded_root()
    existed = (root / MARKER).is_file()
    generate_dataset(root, seed=args.seed, categories=args.categories, size=args.size, progress=print)
    print(f"embedded dataset {'already complete' if existed else 'written'} at {root}")
    return 0


def _add_convert_mtd(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", type=Path, nargs="?", default=None,
                   help="Magnetic Tile Defect release (default: ../shared/data/magnetic_tile)")
    p.add_argument("--src", dest="src_option", type=Path, default=None, help="the release, as an option (same as SRC)")
    p.add_argument("--dst", type=Path, default=None, help="destination root (default: data/mtd)")
    p.add_argument("--seed", type=int, default=0, help="seed of the MT_Free train/test split")
    p.add_argument("--train-fraction", type=float, default=0.8, help="share of MT_Free used for training")
    p.add_argument("--size", type=int, default=None, help="pre-resize to SIZE x SIZE (small copy), e.g. 128")


def _run_convert_mtd(args: argparse.Namespace) -> int:
    if args.src is not None and args.src_option is not None and args.src != args.src_option:
        print(f"convert-mtd: two sources given ({args.src} and --src {args.src_option}); give one", file=sys.stderr)
        return 2
    src = args.src_option or args.src or paths.shared_magnetic_tile()
    if src is None:
        print("no Magnetic Tile source given and ../shared/data/magnetic_tile not found", file=sys.stderr)
        return 2
    dst = convert_magnetic_tile(src, args.dst or paths.mtd_converted_root(), seed=args.seed,
                                train_fraction=args.train_fraction, size=args.size)
    print(f"Magnetic Tile in MVTec layout at {dst} (category '{MTD_CATEGORY}')")
    return 0


def _add_download_mvtec(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dest", type=Path, default=None, help="folder for archive and dataset (default: data/)")
    p.add_argument("--url", default=None, help="archive address (default: $MVTEC_URL or the last known one)")
    p.add_argument("--no-keep-archive", action="store_true", help="delete the 5 GB archive after extraction")


def _run_download_mvtec(args: argparse.Namespace) -> int:
    root = download_mvtec(args.dest, url=args.url, keep_archive=not args.no_keep_archive)
    print(f"MVTec AD at {root}: pass ROOT={root} DATASET=mvtec")
    return 0


# ----------------------------------------------------------------------------------------------- pipeline (issue 5)


def _add_results_tree(p: argparse.ArgumentParser, what: str, profile: bool = True) -> None:
    """``--results-dir``, by default the tree of ``--profile`` (:meth:`ResultsTree.for_profile`: the Makefile's
    ``RESULTS`` is empty unless the user sets it, so the tree of a profile is decided here only)."""
    p.add_argument("--results-dir", default=None, help=f"{what} (default: results/cpu for --profile cpu, else results)")
    if profile:
        p.add_argument("--profile", default=None, help=f"{PROFILES_HELP}: only picks the default --results-dir")
    p.set_defaults(results_tree_from_profile=True)


def _add_pipeline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=None, help="params YAML (default: from --dataset, e.g. smoke)")
    p.add_argument("--dataset", default=None, help=f"{DATASETS_HELP} (overrides the file)")
    p.add_argument("--root", default=None, help="dataset root ('' = the dataset's default location)")
    p.add_argument("--profile", default=None, help=f"{PROFILES_HELP} (default: the file's)")
    p.add_argument("--categories", default=None, help="comma-separated subset")
    p.add_argument("--runs", default=None, help="run names or groups (main, ablations, baselines, remedies, arms)")
    p.add_argument("--variants", dest="variants_deprecated", default=None, help=argparse.SUPPRESS)  # old --runs
    p.add_argument("--seeds", default=None, help="comma-separated training seeds")
    _add_results_tree(p, "base of the results tree", profile=False)
    p.add_argument("--force", action="store_true", help="rerun finished runs")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs at a time on the local cluster (default: make -j; else 1 per core for CPU smoke runs, "
                   "1 per GPU for GPU runs)")
    p.add_argument("--runs-per-gpu", type=int, default=1,
                   help="runs sharing one GPU at a time (issue 24: small models leave a GPU idle; choose k by "
                   "`make gpu-study`, docs/PERFORMANCE.md)")
    p.add_argument("--cluster", default=None,
                   help=f"where the runs execute: {scheduler.CLUSTER_HELP} (default: the params file's 'cluster', "
                   "else local)")
    p.add_argument("--retries", type=int, default=scheduler.LOST_WORKER_RETRIES,
                   help="resubmissions of a run whose worker died (it resumes from its checkpoint)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="notebook parameter for every run, YAML value (e.g. --set epochs=1)")
    p.add_argument("--dashboard", default=scheduler.DASHBOARD,
                   help="address the Dask dashboard binds (default: this machine only; ':8787' = every interface)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the plan (and a jobqueue cluster's job script) and check the study; run nothing")
    p.add_argument("--report", action="store_true",
                   help="then notebooks 05-07 (those not up to date), report.html, the comparison with the reference")
    _add_strict(p)


def _add_strict(p: argparse.ArgumentParser) -> None:
    # off by default: on another CPU instruction set the runs differ within their seed spread (issue 22)
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a cell of the comparison with the reference is not reproduced exactly "
                        "(make STRICT=1)")


EMBEDDED_NOTE = ("pipeline: the embedded default is a check that the pipeline runs end to end on synthetic images, not "
                 "evidence about the paper's claims (that needs DATASET=mvtec ROOT=... PROFILE=paper)")
EMBEDDED_CPU_NOTE = ("pipeline: synthetic images at the cpu profile (128 px, 4x4 latent grid): the smallest study that "
                     "can show a signal; it tests orderings on one synthetic category, not the paper's values")


def _report_step(args: argparse.Namespace, summary: pipeline.Summary) -> list[job.Outcome]:
    """Notebooks 05-07 that are not up to date (a failed one never is); returns their failed outcomes."""
    todo = pipeline.report_notebooks_to_run(args.results_dir)
    if not todo:
        # "up to date" alone would read as "this study is in the report" while its failed runs are not
        failed = f"; {len(summary.failed)} run(s) of this study failed and are not in it" if summary.failed else ""
        print("report: up to date (every analysis notebook last succeeded on the finished runs and this reference"
              f"{failed})")
        return []
    outcomes = pipeline.run_report_notebooks(args.results_dir, kernel=args.kernel, notebooks=todo)
    return [o for o in outcomes.values() if o.status != "ok"]


def _params_cluster(params: Path | None, dataset: str | None, profile: str | None) -> str | None:
    """The ``cluster`` of the params file the pipeline reads (None when it sets none)."""
    value = plan.load_params(params or plan.default_params_file(dataset, profile)).get("cluster")
    return None if value is None else str(value)


def _dry_run(specs: Sequence[plan.RunSpec], choice: scheduler.ClusterChoice) -> int:
    """The plan, one line per run, then the batch script of a jobqueue cluster (exit 2 when it cannot be made)."""
    for s in specs:
        state = "finished" if plan.is_finished(s) else "to run"
        print(f"{s.label:60s} {s.notebook.name:36s} {state}")
    if choice.kind != "jobqueue":
        return 0
    try:
        script = scheduler.job_script(choice)
    except scheduler.ClusterError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    print(f"pipeline: each of the {choice.workers} {choice.queue} job(s) of {choice.file} is submitted with this "
          f"script (`{scheduler.SUBMIT_COMMANDS[choice.queue]}`; the scheduler address is filled in at the start):")
    print(script)
    return 0


def _run_pipeline(args: argparse.Namespace) -> int:
    overrides = _parse_sets(args.set)
    if args.variants_deprecated is not None:  # issue 25: "variant" means R or D (model.variant); a run is a run
        print("pipeline: --variants / VARIANTS= is deprecated, use --runs / RUNS= (same values)", file=sys.stderr)
        args.runs = args.runs or args.variants_deprecated
    try:
        specs = plan.plan_runs(args.params, dataset=args.dataset, root=args.root, categories=args.categories,
                                   runs=args.runs, seeds=args.seeds, profile=args.profile,
                                   results_dir=args.results_dir, overrides=overrides)
        cluster = args.cluster if args.cluster is not None else _params_cluster(args.params, args.dataset,
                                                                                args.profile)
        choice = scheduler.parse_cluster(cluster)
    except (plan.PipelineError, scheduler.ClusterError) as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    jobs = args.jobs or pipeline.default_jobs(specs, runs_per_gpu=args.runs_per_gpu)
    # every bad input in one message before any worker, cluster, log or run folder exists (issue 22)
    check = preflight.check_study(specs, args.results_dir, choice, force=args.force, jobs=jobs,
                                  runs_per_gpu=args.runs_per_gpu)
    if args.dry_run:
        code = _dry_run(specs, choice)
        if code:
            return code
    if check.problems:
        print(check.message(), file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(check.notes))
        return 0
    embedded = [s for s in specs if s.config.data.dataset == "embedded"]
    if embedded:
        print(EMBEDDED_CPU_NOTE if all(s.config.profile == "cpu" for s in embedded) else EMBEDDED_NOTE)
    print(f"pipeline: {len(specs)} runs planned" + ("" if cluster else f", {jobs} at a time"))
    for note in check.notes:
        print(note)
    try:
        summary = pipeline.execute(specs, force=args.force, jobs=jobs, kernel=args.kernel, cluster=cluster,
                                   retries=args.retries, dashboard=args.dashboard, runs_per_gpu=args.runs_per_gpu)
    except scheduler.ClusterError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    if summary.nothing_started:
        # the report and the reference line would describe the runs of an earlier study, not this one
        print(summary.text())
        print("report: not refreshed (no run of this study started); see the failures above")
        return summary.exit_code
    failed_notebooks = _report_step(args, summary) if args.report else []
    print(summary.text())
    for o in failed_notebooks:
        print(f"  FAILED {o.spec.name}: {o.error}\n         log: {o.spec.log}")
    line = report.reference_summary(args.results_dir, args.strict) if args.report else None
    if line:
        print(line)
    strict = report.reference_exit_code(args.results_dir, args.strict) if args.report else 0
    return summary.exit_code or int(bool(failed_notebooks)) or strict


def _add_report(p: argparse.ArgumentParser) -> None:
    _add_results_tree(p, "results tree to read")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel")
    p.add_argument("--tables-only", action="store_true", help="write tables + REPORT.md without the notebooks")
    _add_strict(p)


def _run_report(args: argparse.Namespace) -> int:
    if args.tables_only:
        try:
            written = report.write_report(args.results_dir)
        except report.ReportError as exc:
            print(f"report: {exc}", file=sys.stderr)
            return 2
        print(f"report: {written.report_md} and {len(written.tables)} tables")
        return 0
    outcomes = pipeline.run_report_notebooks(args.results_dir, kernel=args.kernel)
    line = report.reference_summary(args.results_dir, args.strict)
    if line:
        print(line)
    failed = int(any(o.status != "ok" for o in outcomes.values()))
    return failed or report.reference_exit_code(args.results_dir, args.strict)


def _add_reference(p: argparse.ArgumentParser) -> None:
    _add_results_tree(p, "finished results tree to take the reference from")
    p.add_argument("--reference-dir", default=None,
                   help="the reference (default: results/reference for the results tree 'results', else "
                        "<results-dir>/reference, e.g. results/cpu/reference; committed)")


def _run_reference(args: argparse.Namespace) -> int:
    protocol = Path("docs") / "PROTOCOL.md"
    try:
        written = report.refresh_reference(args.results_dir, args.reference_dir,
                                           protocol if (paths.project_root() / protocol).exists() else None)
    except report.ReportError as exc:
        print(f"reference: {exc}", file=sys.stderr)
        return 2
    print(f"reference: {written.report_md.parent} refreshed from {args.results_dir} "
          f"({', '.join(report.REFERENCE_FILES)} "
          f"per run; {len(written.tables)} tables; {written.report_md}); review `git diff --stat` and commit it")
    return 0


# ------------------------------------------------------------------------------------------ train / predict (issue 4)


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="smoke", help=f"{PROFILES_HELP} (default: smoke)")
    p.add_argument("--dataset", default=None, help=DATASETS_HELP)
    p.add_argument("--root", default=None, help="dataset root in MVTec layout (default: the dataset's location)")
    p.add_argument("--category", default=None, help="category / scene")
    p.add_argument("--setting", default=None, help="unsupervised | weak")
    p.add_argument("--method", default=None, help="avaga | ae_l2 | ae_ssim")
    p.add_argument("--variant", default=None, help="R | D")
    p.add_argument("--image-size", type=int, default=None, help="test side in pixels (64, 128, 256)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs")
    p.add_argument("--seed", type=int, default=None, help="training seed")
    p.add_argument("--results-dir", default=None, help="base of the results tree (default: results/scratch)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted config override, YAML value (e.g. --set train.lr=2e-4)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bars")


def _run_train(args: argparse.Namespace) -> int:
    named = {"data.dataset": args.dataset, "data.root": args.root, "data.category": args.category,
             "train.setting": args.setting, "method": args.method, "model.variant": args.variant,
             "data.image_size": args.image_size, "train.epochs": args.epochs, "train.seed": args.seed,
             "results_dir": args.results_dir}
    overrides = {k: v for k, v in named.items() if v is not None} | _parse_sets(args.set)
    try:
        cfg = make_config(args.profile, overrides)
        if cfg.train.nproc > 1 and env_world_size() == 1:  # issue 8: relaunch this command under torchrun
            return launch(args.argv, cfg.train.nproc)
        run_dir = run_one(cfg, progress=not args.no_progress)
        if int(os.environ.get("RANK", "0")) > 0:  # torchrun rank > 0: rank 0 evaluates and prints
            return 0
        metrics = RunFolder(run_dir).metrics()
    except TrainingInterrupted as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 130
    except (NonFiniteLossError, ValueError, FileNotFoundError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 2
    keys = ("iou", "iou_pooled", "mean_accuracy", "image_auroc", "image_auroc_classifier", "pixel_auroc", "aupro",
            "fp_area_normal", "mean_accuracy_transductive", "wall_time_s")
    summary = ", ".join(f"{k}={metrics[k]:.4g}" for k in keys
                        if isinstance(metrics.get(k), float))
    print(f"{run_dir}: {summary}")
    return 0


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", type=Path, required=True, help="finished run folder (config.json, checkpoint.pt, ...)")
    p.add_argument("--images", type=Path, required=True, help="folder of images to score")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: <run>/maps/<images name>)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")


def _run_predict(args: argparse.Namespace) -> int:
    try:
        frame = predict_folder(args.run, args.images, args.out, device=args.device)
    except (FileNotFoundError, ValueError) as exc:
        print(f"predict: {exc}", file=sys.stderr)
        return 2
    out = args.out or RunFolder(args.run).maps_dir / args.images.name
    bad = int((frame["error"] != "").sum())
    n_anom = int((frame["decision"] == "anomalous").sum())
    print(f"predict: {len(frame) - bad} images scored ({n_anom} anomalous), {bad} unreadable; "
          f"{out / PREDICTIONS_NAME}")
    return 0


# ------------------------------------------------------------------------------------------ pretrain (issue 21)


def _add_pretrain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="embedded", help=DATASETS_HELP)
    p.add_argument("--category", required=True, help="category whose normal training images are used")
    p.add_argument("--root", default=None, help="dataset root (default: the dataset's location)")
    p.add_argument("--profile", default="cpu",
                   help=f"{PROFILES_HELP}: the profile giving the image side and split (default: cpu, 128 px)")
    p.add_argument("--image-size", type=int, default=None, help="side of the training crops (default: the profile's)")
    p.add_argument("--epochs", type=int, default=pretrain.DEFAULT_EPOCHS, help="passes over the training images")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial weights, crops and masks")
    p.add_argument("--out", type=Path, default=None,
                   help="weights file (default: data/pretrained/<dataset>/<category>/resnet18-inpaint-<px>-<hash>.pth, "
                        "what model.pretrained=selfsup finds at the default epochs and seed)")


def _run_pretrain(args: argparse.Namespace) -> int:
    named = {"data.dataset": args.dataset, "data.root": args.root, "data.category": args.category,
             "data.image_size": args.image_size, "name": "pretrain"}
    try:
        cfg = make_config(args.profile, {k: v for k, v in named.items() if v is not None})
        result = pretrain.pretrain_encoder(cfg.data, epochs=args.epochs, seed=args.seed, out=args.out, progress=print)
    except (ValueError, FileNotFoundError) as exc:
        print(f"pretrain: {exc}", file=sys.stderr)
        return 2
    print(pretrain.describe(result))
    print(f"use it with --set model.pretrained={result.path}" + (
        " (or model.pretrained=selfsup)" if args.out is None and args.epochs == pretrain.DEFAULT_EPOCHS
        and args.seed == 0 else ""))
    return 0


# ------------------------------------------------------------------------------------------ STC, launch, bench


def _add_stc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--release", required=True, help="folder holding training/videos and testing/")
    p.add_argument("--cache", default=str(paths.data_dir() / CACHE_DIRNAME), help="output cache folder")
    p.add_argument("--scenes", nargs="*", default=None, help="scene ids (default: 01-13 as present)")
    p.add_argument("--size", type=int, default=None, help="shorter side of cached frames (default: keep)")
    p.add_argument("--frame-step", type=int, default=FRAME_STEP, help="keep every n-th training frame")


def _run_stc(args: argparse.Namespace) -> int:
    totals = extract_stc(args.release, args.cache, scenes=args.scenes, frame_step=args.frame_step, size=args.size)
    print(count_summary(totals))
    print(f"cache: {args.cache}  (use data.dataset=stc data.root={args.cache} data.category=<scene>)")
    return 0


def _add_launch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nproc", type=int, required=True, help="processes per node (one per GPU)")
    p.add_argument("--nnodes", type=int, default=1, help="number of nodes")
    p.add_argument("--node-rank", type=int, default=None, help="rank of this node (multi-node)")
    p.add_argument("--rdzv", default=None, help="host:port of the rendezvous (multi-node)")
    p.add_argument("cli_args", nargs=argparse.REMAINDER,
                   help="-- followed by the arguments of this CLI, e.g. -- train --profile smoke")


def _run_launch(args: argparse.Namespace) -> int:
    rest = args.cli_args[1:] if args.cli_args[:1] == ["--"] else args.cli_args
    if not rest:
        print("launch: give the avaga_lib.cli arguments after --, e.g. -- train --profile smoke", file=sys.stderr)
        return 2
    kw: dict[str, object] = {"nnodes": args.nnodes}
    if args.nnodes > 1:
        kw |= {"node_rank": args.node_rank, "rdzv_endpoint": args.rdzv}
    return launch(rest, args.nproc, **kw)


def _add_bench(p: argparse.ArgumentParser) -> None:
    """No options of its own: every argument goes to the benchmark runner (``bench --help`` prints its options)."""


def _run_bench(args: argparse.Namespace) -> int:
    # benchmarks/ sits beside the package (a source checkout's tool, not part of the installed library), so it is
    # imported here, from the project root, rather than at module level
    sys.path.insert(0, str(paths.project_root()))
    try:
        from benchmarks.cli import main as bench_main
    except ImportError as exc:
        print(f"bench: {exc}; run it from a source checkout of the project (benchmarks/ beside avaga_lib/)",
              file=sys.stderr)
        return 2
    bench_main(list(args.passthrough))
    return 0


@dataclass(frozen=True)
class Command:
    """One sub-command: its options, what it runs, its one-line help.

    ``passthrough``: arguments the sub-command's parser does not know are handed to ``run`` as
    ``args.passthrough`` instead of being an error (for a command that owns its own parser, e.g. ``bench``).
    """

    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str
    passthrough: bool = False


# name -> command. Other modules' commands are added here.
COMMANDS: dict[str, Command] = {
    "make-data": Command(_add_make_data, _run_make_data, "generate the embedded default dataset (data/embedded)"),
    "convert-mtd": Command(_add_convert_mtd, _run_convert_mtd,
                           "convert Magnetic Tile Defect to MVTec layout (data/mtd)"),
    "download-mvtec": Command(_add_download_mvtec, _run_download_mvtec, "download + verify + extract MVTec AD"),
    "stc": Command(_add_stc, _run_stc, "extract the ShanghaiTech Campus release into an MVTec-layout cache"),
    "pipeline": Command(_add_pipeline, _run_pipeline, "plan + execute the reproduction runs (make reproduce)"),
    "report": Command(_add_report, _run_report,
                      "notebooks 05-07 over a results tree: tables, REPORT.md, report.html"),
    "reference": Command(_add_reference, _run_reference,
                         "copy the curated subset of a finished results tree into results/reference (make reference)"),
    "train": Command(_add_train, _run_train, "train + evaluate + save one run from dotted overrides"),
    "launch": Command(_add_launch, _run_launch, "run a CLI command under torchrun (data-parallel, several nodes)"),
    "pretrain": Command(_add_pretrain, _run_pretrain,
                        "pretrain the AVAGA-R encoder without labels on a category's normal images (issue 21, cached)"),
    "predict": Command(_add_predict, _run_predict, "anomaly maps, overlays and decisions for a folder of images"),
    "bench": Command(_add_bench, _run_bench, "benchmarks -> results/bench/ (arguments go to the runner)",
                     passthrough=True),
}


def build_parser() -> argparse.ArgumentParser:
    """Parser with one sub-command per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="avaga", description="AVAGA reproducibility study")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        # a pass-through command leaves --help to the parser it hands its arguments to
        command.add(sub.add_parser(name, help=command.help, description=command.help,
                                   add_help=not command.passthrough))
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line as :func:`main` does (exits with status 2 and a usage message on a bad one)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv))
    if extra and not COMMANDS[args.command].passthrough:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.passthrough = extra
    args.argv = list(argv)  # the command as given (train relaunches it, issue 8)
    if getattr(args, "results_tree_from_profile", False) and args.results_dir is None:
        args.results_dir = ResultsTree.for_profile(args.profile)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``avaga`` script and ``python -m avaga_lib.cli``)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return COMMANDS[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
