"""``make gpu-study``: the paper profile (256 px, bf16) on one CUDA GPU in about 10 minutes (issue 13).

What it runs, in order:

1. Throughput of the trainer's own step (:mod:`benchmarks.harness`) for AVAGA-R_u at 256 px, batch 24, bf16:
   channels_last off / on, then with ``torch.compile`` of the generator (compile time reported apart: on the
   2-core CPU compile measured 0.86x after 113 s, so it must earn its place on the GPU or go). The compiled
   measurement runs in a child process stopped after ``--compile-timeout-s``; a timeout is reported as such.
   Then the aggregate throughput of k runs sharing the GPU, one process each, for each k of ``--runs-per-gpu``
   (:mod:`benchmarks.shared_gpu`), from which the k of ``RUNS_PER_GPU`` is chosen (the smallest within 5 % of the
   best aggregate).
2. The runs, ``--workers`` at a time (one process each: the GPU is far from busy with one small model, and each
   process has its own CUDA context), in this order:

   a. the runs of each ``--plan`` params file whose name is in :data:`HEADLINE` (the literal AVAGA-R_u, its
      remedies, AE-L2 / AE-SSIM), seed by seed: e.g. ``params/mtd_cpu.yaml``, Magnetic Tile at the cpu profile
      with 3 seeds, the table issue 13 asks for. They are planned by :func:`avaga_lib.plan.plan_runs` and
      written where ``make reproduce PARAMS=<file>`` writes them, with the same config, so the pipeline counts them as
      finished (``metrics.json`` and the config hash) and only the report remains to run;
   b. :data:`RUNS` (the literal AVAGA-R_u / AVAGA-R_w, each remedy of group ``remedies``, AE-L2, AE-SSIM and
      AVAGA-D_u), seed 0, on Magnetic Tile (``data/mtd``, converted from ``../shared`` or ``shared/`` when present)
      and one embedded category, with the paper profile's size / batch / lr and fewer epochs (:data:`EPOCHS`),
      planned by the same planner from ``params/gpu_paper.yaml`` (:data:`PAPER_PARAMS`);
   c. the other runs of the ``--plan`` files (AVAGA-R_w and its remedies, AVAGA-D_u).

Budget arithmetic (H200, stated before measuring; the script prints the measured numbers so the next run can be
re-sized): the GPU target of docs/PERFORMANCE.md is >= 2,000 images/s for R_u at 256 px; planning at a quarter of it
(500 images/s, the Grad-CAM's second-order backward), Magnetic Tile's ~760 normal training images x 10 epochs x 9
AVAGA runs = 68k images = 137 s; the embedded category's 80 x 30 epochs x 9 = 22k = 43 s; the two baselines on both
sets ~20 s; per-run set-up and evaluation ~10 s x 22 runs = 220 s; the throughput section ~90 s (mostly compiling).
Total ~510 s of the 600 with one worker; several workers overlap the set-up, evaluation and launch overheads. The
runs-per-GPU measurement adds, per k, the start of k processes, 3 warm-up steps and ``--share-s`` (10 s): about
25 s each, ~100 s for k = 1, 2, 4, 8, taken from the runs' budget (``--runs-per-gpu ''`` skips it).
A wall-clock guard (``--budget-s``) stops starting new runs past the budget and lists the runs it did not start, in
the summary and on stdout (nothing skipped silently); a run that fails is listed with its error and the others go
on; a rerun resumes: finished runs (``metrics.json`` with the planned config) are kept.

3. The estimate (:func:`benchmarks.estimate.protocol_estimate`): the projected wall time of the paper's full MVTec
   protocol (15 categories x 10 runs x 3 seeds x 150 epochs) on this GPU and on 2, 4, 8 of them, one run per GPU
   and k runs per GPU, from the measured single-run and aggregate images/s and, from the paper-profile runs of this
   invocation, the evaluation seconds per image and the per-run overhead. Written to ``summary.md`` with its inputs.

Results: ``results/gpu_study/runs/<dataset>/<category>/<run>-seed0/`` (git-ignored) and the small
``results/gpu_study/summary.json`` / ``summary.md`` (committed); the ``--plan`` runs go to their profile's tree
(``results/cpu/...`` for the cpu profile). Without CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from avaga_lib import plan as planning
from avaga_lib import study
from avaga_lib.config import MIN_LATENT_GRID, RunConfig, make_config
from avaga_lib.data import mtd
from avaga_lib.data.sources import prepare_datasets
from avaga_lib.io import write_json, write_text
from avaga_lib.paths import mtd_converted_root, project_root, shared_magnetic_tile
from avaga_lib.plan import RunSpec
from avaga_lib.reporting.results import collect_runs
from avaga_lib.reporting.tables import initialisation
from avaga_lib.run_folder import ResultsTree, RunFolder
from avaga_lib.training.run import run_one
from benchmarks.estimate import median_or_zero, protocol_estimate, protocol_markdown
from benchmarks.harness import build_train_harness
from benchmarks.shared_gpu import RUNS_PER_GPU, measure_runs_per_gpu, mps_running

OUT = Path("results") / "gpu_study"
_RU_REMEDIES = study.remedies_of("AVAGA-R_u")  # by name, not by position: issue 21 added a remedy of R_u
RUNS: tuple[str, ...] = ("AVAGA-R_u", *_RU_REMEDIES, "AVAGA-R_w", *study.remedies_of("AVAGA-R_w"), "AE-L2",
                         "AE-SSIM", "AVAGA-D_u")  # D last: Table 2 compares R and D
HEADLINE: tuple[str, ...] = ("AVAGA-R_u", "AVAGA-R_u-maxnorm", "AVAGA-R_u-gain", "AVAGA-R_u-size", "AE-L2",
                              "AE-SSIM")  # issue 13's table, run first (issue 21's faithful remedy runs after it)
EPOCHS = {"mtd": 10, "embedded": 30}  # see the budget arithmetic above
EMBEDDED_CATEGORY = "granite"
PAPER_PARAMS = Path("params") / "gpu_paper.yaml"  # the paper profile, every run allowed (relative: the project root)
METRICS = ("pixel_auroc", "pixel_auroc_recon", "aupro", "iou", "image_auroc", "mean_accuracy")
NO_CUDA = ("make gpu-study needs a CUDA GPU, and torch.cuda.is_available() is False on this machine "
           "(torch {version}). Run it on a CUDA machine; on a CPU, use `make reproduce PROFILE=...` instead.")
WORKER_THREADS = 2  # CPU threads per run process: the GPU does the work; 8 workers x 2 fill a 16-core host


def require_cuda() -> None:
    """Exit with status 2 and a message naming the fix when no CUDA device is visible."""
    if not torch.cuda.is_available():
        print(NO_CUDA.format(version=torch.__version__), file=sys.stderr)
        raise SystemExit(2)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _images_per_s(harness: Any, steps: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        harness.step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        harness.step()
    _sync(device)
    return steps * harness.batch_size / (time.perf_counter() - start)


def _throughput_config(size: int) -> RunConfig:
    profile = "paper" if size // 32 >= MIN_LATENT_GRID else "smoke"  # the CPU test's small side: timing only
    return make_config(profile, {"train.amp": "bf16", "model.pretrained": "none", "data.image_size": size},
                       run="AVAGA-R_u")


def throughput(steps: int = 20, batch: int = 24, device: str = "cuda", size: int = 256,
               compile_model: bool = True) -> dict[str, float]:
    """Training images/s of AVAGA-R_u at ``size`` px, bf16: channels_last off / on, and compiled (+ compile seconds).

    ``device`` / ``size`` / ``compile_model`` exist for the CPU test of this function; the study uses the defaults.
    """
    cfg = _throughput_config(size)
    out: dict[str, float] = {}
    for fmt in (False, True):
        harness = build_train_harness(cfg, device, batch, n_images=4 * batch, channels_last=fmt)
        out[f"bf16{'_channels_last' if fmt else ''}_img_s"] = _images_per_s(harness, steps, 3, device)
    if compile_model:
        out.update(compiled_throughput(steps, batch, device, size))
    return out


def compiled_throughput(steps: int = 20, batch: int = 24, device: str = "cuda", size: int = 256) -> dict[str, float]:
    """``compile_s`` (the first compiled step) and ``bf16_channels_last_compiled_img_s`` of AVAGA-R_u."""
    harness = build_train_harness(_throughput_config(size), device, batch, n_images=4 * batch, channels_last=True)
    harness.step()  # builds nets (make_nets) before the generator is wrapped
    assert harness.nets is not None
    harness.nets.model = torch.compile(harness.nets.model)
    start = time.perf_counter()
    harness.step()  # the first compiled step compiles
    _sync(device)
    compile_s = time.perf_counter() - start
    return {"compile_s": compile_s, "bf16_channels_last_compiled_img_s": _images_per_s(harness, steps, 2, device)}


def _compiled_child(queue: Any, device: str, size: int) -> None:
    try:
        queue.put(compiled_throughput(device=device, size=size))
    except Exception as exc:  # reported by the parent: compile failing is a finding, not a crash of the study
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def compiled_throughput_within(timeout_s: float, device: str = "cuda", size: int = 256) -> tuple[dict[str, float],
                                                                                                   list[str]]:
    """:func:`compiled_throughput` in a child process stopped after ``timeout_s``; returns (numbers, notes)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_compiled_child, args=(queue, device, size))
    child.start()
    child.join(timeout_s)
    if child.is_alive():
        child.terminate()
        child.join()
        return {}, [f"torch.compile: no compiled step within {timeout_s:.0f} s (compile time counted): "
                    "it did not earn its place in this budget"]
    result = queue.get() if not queue.empty() else {"error": f"child exited with status {child.exitcode}"}
    if "error" in result:
        return {}, [f"torch.compile failed: {result['error']}"]
    return result, []


def mtd_root(root: Path) -> Path | None:
    """The converted Magnetic Tile root, converting ``../shared`` or ``./shared`` when needed; None when absent."""
    if (mtd_converted_root() / mtd.MARKER).is_file():
        return mtd_converted_root()
    local = root / "shared" / "data" / "magnetic_tile"
    src = shared_magnetic_tile() or (local if local.is_dir() else None)
    return None if src is None else mtd.convert_magnetic_tile(src, mtd_converted_root())


def paper_specs(root: Path, datasets: list[str]) -> tuple[list[RunSpec], list[str]]:
    """The paper-profile runs of :data:`RUNS`, seed 0, planned by the study's planner (:func:`avaga_lib.plan.plan_runs`:
    the configs ``make reproduce PROFILE=paper`` would make, with :data:`EPOCHS`), and notes on what cannot run."""
    specs: list[RunSpec] = []
    notes: list[str] = []
    for dataset in datasets:
        if dataset == "mtd":
            mroot = mtd_root(root)
            if mroot is None:
                notes.append("Magnetic Tile not found (data/mtd, ../shared/data/magnetic_tile, shared/...): not run")
                continue
            where = {"root": str(mroot), "categories": [mtd.MTD_CATEGORY]}
        else:
            where = {"root": "", "categories": [EMBEDDED_CATEGORY]}
        planned = planning.plan_runs(project_root() / PAPER_PARAMS, dataset=dataset, **where, runs=list(RUNS),
                                     seeds=[0], profile="paper", results_dir=root / OUT / "runs",
                                     overrides={"epochs": EPOCHS[dataset]})
        specs += sorted(planned, key=lambda s: RUNS.index(s.name))  # RUNS' order: the budget may end before D
    return specs, notes


def plan_file_specs(params_file: Path | str, root: Path, results_dir: str | None = None) -> tuple[
        list[RunSpec], list[RunSpec], list[str]]:
    """(headline runs, other runs, notes) of a params file, as ``make reproduce PARAMS=<file>`` plans them.

    Unfinished runs only; headline = :data:`HEADLINE` names, ordered seed by seed. ``results_dir``: the results tree
    (default: the profile's, :meth:`avaga_lib.run_folder.ResultsTree.for_profile`, as ``make reproduce``).
    """
    spec = planning.load_params(params_file)
    if spec["dataset"] == "mtd" and not spec.get("root") and mtd_root(root) is None:
        return [], [], [f"{params_file}: Magnetic Tile not found (data/mtd, ../shared/..., shared/...): not run"]
    specs = planning.plan_runs(params_file, results_dir=results_dir or ResultsTree.for_profile(spec["profile"]))
    todo = [s for s in specs if not planning.is_finished(s)]
    done = len(specs) - len(todo)
    notes = [f"{params_file}: {done} of {len(specs)} runs finished earlier, kept"] if done else []
    head = sorted((s for s in todo if s.name in HEADLINE), key=lambda s: s.config.train.seed)  # stable sorts
    rest = sorted((s for s in todo if s.name not in HEADLINE),
                  key=lambda s: (s.name in study.REMEDIES, s.config.train.seed))  # the paper's runs before remedies
    return head, rest, notes


def all_specs(root: Path, datasets: list[str], plans: list[str]) -> tuple[list[RunSpec], set[str], list[str]]:
    """Every run in the order of the module docstring (plan headline, paper profile, plan rest), the labels of the
    runs that draw their figures (the params files' seed 0: the paper-profile runs only feed the summary), notes."""
    first: list[RunSpec] = []
    last: list[RunSpec] = []
    notes: list[str] = []
    for params_file in plans:
        head, rest, file_notes = plan_file_specs(params_file, root)
        first += head
        last += rest
        notes += file_notes
    figures = {s.label for s in first + last if s.config.train.seed == 0}
    paper, paper_notes = paper_specs(root, datasets)
    middle = []
    for s in paper:
        if planning.is_finished(s):
            notes.append(f"{s.label}: finished earlier, kept")
        else:
            middle.append(s)
    return first + middle + last, figures, notes + paper_notes


def prepare(specs: list[RunSpec]) -> list[str]:
    """Make each dataset of ``specs`` ready once, here, before the workers start: the library's one preparation
    (:func:`avaga_lib.data.prepare_datasets`, as the study pipeline's); a note per dataset that could not be
    prepared (its runs then fail, named)."""
    errors = prepare_datasets(s.config.data for s in specs)
    return [f"{dataset} (root {root!r}{f', {category}' if category else ''}) not prepared: {err}"
            for (dataset, root, category), err in errors.items()]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)  # the run's own train.threads (cpu profile: 1) still applies inside train_run


def run_spec(spec: RunSpec, deadline: float, figures: bool) -> tuple[str, str, float]:
    """Run one planned run in this process unless the wall-clock ``deadline`` (``time.time()``) has passed; (label,
    status, seconds).

    Status: ``done``, ``not started`` (the budget was spent) or ``failed: <error>``; it never raises, so one failing
    run does not stop the others.
    """
    if time.time() > deadline:
        return spec.label, "not started", 0.0
    t0 = time.perf_counter()
    try:
        run_one(spec.config, figures=figures)
    except Exception as exc:  # reported in the summary with its traceback's last line
        last = traceback.format_exc().strip().splitlines()[-1]
        return spec.label, f"failed: {type(exc).__name__}: {exc} ({last})", time.perf_counter() - t0
    return spec.label, "done", time.perf_counter() - t0


def execute(specs: list[RunSpec], workers: int, deadline: float, threads: int = WORKER_THREADS,
            figures: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, str, float]]:
    """Run ``specs`` in their order, ``workers`` processes at a time (1 = in this process); print each as it ends.

    Not the pipeline's papermill-on-Dask path: the GPU machine's image lacks papermill, Jupyter and Dask, and its budget
    leaves no room to carry them (docs/PERFORMANCE.md); the runs are the pipeline's (same planner, configs, run_one)."""
    def outcome(res: tuple[str, str, float]) -> tuple[str, str, float]:
        print(f"[gpu-study] {res[0]}: {res[1]} ({res[2]:.1f} s)", flush=True)
        return res

    if workers <= 1:
        return [outcome(run_spec(s, deadline, s.label in figures)) for s in specs]
    results = []
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(run_spec, s, deadline, s.label in figures) for s in specs]
        for s, future in zip(specs, futures, strict=True):
            try:
                res = future.result()
            except Exception as exc:  # the worker process died (killed, out of memory)
                res = (s.label, f"failed: worker died: {type(exc).__name__}: {exc}", 0.0)
            results.append(outcome(res))
    return results


def run_costs(specs: list[RunSpec], results: list[tuple[str, str, float]], size: int = 256) -> tuple[float, float]:
    """(evaluation seconds per inferred image, seconds outside training and evaluation) of one run: medians over the
    runs of this invocation at ``size`` px that finished; 0 for what none of them measured.

    The evaluation time is the run's own (``eval_wall_time_s`` over its test and validation images: inference,
    floors, metrics, intervals); the overhead is the job's wall time minus the run's training and evaluation
    (decoding the data, building the networks, saving). Both were measured while ``--workers`` runs shared the GPU.
    """
    by_label = {s.label: s for s in specs}
    evals, overheads = [], []
    for label, status, seconds in results:
        spec = by_label.get(label)
        if status != "done" or spec is None or spec.config.data.image_size != size:
            continue
        try:
            m = RunFolder(spec.run_dir).metrics()
        except (OSError, ValueError):
            continue  # a run that wrote no readable metrics measured nothing
        inferred = int(m.get("n_test") or 0) + int(m.get("n_val") or 0)
        if inferred and m.get("eval_wall_time_s") is not None:
            evals.append(float(m["eval_wall_time_s"]) / inferred)
        if m.get("wall_time_s") is not None:
            overheads.append(max(0.0, seconds - float(m["wall_time_s"])))
    return median_or_zero(evals), median_or_zero(overheads)


def study_estimate(speed: dict[str, float], shared: dict[int, dict[str, Any]], eval_s_per_image: float,
                   overhead_s_per_run: float) -> dict[str, Any] | None:
    """:func:`benchmarks.estimate.protocol_estimate` from this invocation's measurements (None without a single-run
    throughput); the raw per-k measurements and whether CUDA MPS ran go with it."""
    single = speed.get("bf16_channels_last_img_s") or speed.get("bf16_img_s")  # the trainer's layout on CUDA first
    if not single:
        return None
    aggregate = {k: r["images_per_s"] for k, r in shared.items() if "images_per_s" in r}
    est = protocol_estimate(single, aggregate, eval_s_per_image, overhead_s_per_run)
    est["runs_per_gpu_measured"] = {str(k): r for k, r in shared.items()}
    est["mps"] = mps_running()
    return est


def _markdown(frame: Any) -> str:
    """A pipe table of ``frame`` (floats to 3 decimals), without the optional tabulate dependency."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    rows = [list(frame.columns), ["---"] * len(frame.columns), *cells]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def summarize(root: Path, speed: dict[str, float], notes: list[str], wall_s: float,
              results: list[tuple[str, str, float]] | None = None,
              estimate: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``summary.json`` / ``summary.md`` (metrics per dataset x run, throughput, each job's outcome, notes, and
    the protocol ``estimate`` of :func:`study_estimate` with its inputs)."""
    runs = collect_runs(root / OUT / "runs")
    if "notes" in runs.columns:  # issue 21: every row names its encoder's initialisation (random init offline)
        runs = runs.assign(init=[initialisation(pd.Series([n])) or "not recorded" for n in runs["notes"]])
    cols = [c for c in ("dataset", "category", "method", "init", "epochs", *METRICS) if c in runs.columns]
    table = runs[cols].sort_values(["dataset", "method"]) if not runs.empty else runs
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    jobs = [{"run": label, "status": status, "seconds": round(sec, 1)} for label, status, sec in results or []]
    summary = {"device": device, "torch": torch.__version__, "wall_s": round(wall_s, 1),
               "throughput": {k: round(v, 1) for k, v in speed.items()}, "notes": notes, "jobs": jobs,
               "runs": json.loads(table.to_json(orient="records")), "protocol_estimate": estimate}
    write_json(root / OUT / "summary.json", summary)
    lines = [f"# GPU study ({summary['device']}, torch {summary['torch']}, {summary['wall_s']} s wall)", "",
             "Throughput (training images/s, AVAGA-R_u, 256 px, batch 24): "
             + (", ".join(f"{k} = {v}" for k, v in summary["throughput"].items()) or "not measured"), "",
             "Paper-profile runs (seed 0, fewer epochs than the paper's 150: see `epochs`):", "",
             _markdown(table) if not table.empty else "(no finished run)", "",
             *(f"- {n}" for n in notes), "", *protocol_markdown(estimate)]
    if jobs:
        lines += ["", "Jobs of this invocation (in start order):", "",
                  *(f"- {j['run']}: {j['status']} ({j['seconds']} s)" for j in jobs)]
    write_text(root / OUT / "summary.md", "\n".join(lines) + "\n")
    return summary


def _whole_numbers(text: str) -> list[int]:
    return [int(k) for k in text.split(",") if k.strip()]


def measure_speed(args: argparse.Namespace) -> tuple[dict[str, float], dict[int, dict[str, Any]], list[str]]:
    """(single-run throughput, runs-per-GPU measurements, notes) of ``main``'s first section."""
    speed: dict[str, float] = {}
    shared: dict[int, dict[str, Any]] = {}
    notes: list[str] = []
    try:
        speed = throughput(compile_model=False)
    except Exception as exc:  # noqa: BLE001 - the runs are worth more than the timing; reported in the summary
        notes.append(f"throughput not measured: {type(exc).__name__}: {exc}")
    if args.compile_timeout_s > 0 and speed:
        compiled, compile_notes = compiled_throughput_within(args.compile_timeout_s)
        speed.update(compiled)
        notes += compile_notes
    print(f"[gpu-study] throughput: {speed} {notes}", flush=True)
    if speed and args.runs_per_gpu:
        shared = measure_runs_per_gpu(_throughput_config(256), args.runs_per_gpu, seconds=args.share_s,
                                      threads=WORKER_THREADS)
    return speed, shared, notes


def main(argv: list[str] | None = None) -> None:
    """Command line of ``make gpu-study`` (``python -m benchmarks.gpu_study``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mtd,embedded", help="comma-separated: mtd, embedded ('' = none)")
    parser.add_argument("--plan", action="append", default=[], metavar="PARAMS",
                        help="a params file whose runs to make too (repeatable), e.g. params/mtd_cpu.yaml")
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) // WORKER_THREADS)),
                        help="runs at a time, one process each (default: one per 2 CPU cores, at most 8)")
    parser.add_argument("--budget-s", type=float, default=540.0, help="start no run past this many seconds")
    parser.add_argument("--compile-timeout-s", type=float, default=150.0, help="0 = skip the torch.compile check")
    parser.add_argument("--runs-per-gpu", type=_whole_numbers, default=list(RUNS_PER_GPU),
                        help="k runs sharing the GPU to measure, comma-separated ('' = none)")
    parser.add_argument("--share-s", type=float, default=10.0, help="timed seconds of each runs-per-GPU measurement")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args(argv)
    require_cuda()
    started = time.perf_counter()
    deadline = time.time() + args.budget_s
    root = project_root()
    speed, shared, notes = measure_speed(args) if not args.skip_throughput else ({}, {}, [])
    specs, figures, plan_notes = all_specs(root, [d.strip() for d in args.datasets.split(",") if d.strip()],
                                           args.plan)
    notes += plan_notes + prepare(specs)
    print(f"[gpu-study] {len(specs)} runs to make, {args.workers} at a time; notes: {notes}", flush=True)
    results = execute(specs, args.workers, deadline, figures=figures)
    late = sum(status == "not started" for _, status, _ in results)
    if late:  # named one by one in the job list of the summary
        notes.append(f"{late} runs not started (budget of {args.budget_s:.0f} s spent; rerun to resume)")
    estimate = study_estimate(speed, shared, *run_costs(specs, results))
    summary = summarize(root, speed, notes, time.perf_counter() - started, results, estimate)
    print((root / OUT / "summary.md").read_text())
    print(f"[gpu-study] {len(summary['runs'])} paper-profile runs summarised in {root / OUT}")


if __name__ == "__main__":
    main()
