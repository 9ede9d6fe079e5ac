"""Orchestration of ``make reproduce``: execute the planned runs (:mod:`avaga_lib.plan`) with papermill,
then the analysis notebooks and the HTML report.

One run = (notebook, parameters) for one (dataset, category, study run, seed). The executed notebook is kept as the
record of the run at ``<results_dir>/runs/<dataset>/<category>/<setting>.ipynb`` with its log beside it
(``.log``); the run itself writes ``<results_dir>/<dataset>/<category>/<setting>/`` (results contract).

Incremental: a finished run (:func:`avaga_lib.plan.is_finished`) is skipped; ``force`` reruns it from
scratch. A run whose config changed is rerun from scratch (its stale folder is removed first, so no checkpoint of the
old config is resumed). A failing run keeps its log and executed notebook; the others go on; :class:`Summary` says what
failed and why, and the CLI exits non-zero.

Before any of this, :func:`avaga_lib.orchestration.preflight.check_study` checks the planned study (data root and
layout, categories, RESULTS writable and large enough for the checkpoints, the cluster's submit command) and writes
nothing: the CLI prints its problems in one message and exits 2. A study that still fails before any run starts
(data preparation) keeps the previous ``summary.json``.

Execution (:mod:`avaga_lib.orchestration.scheduler`): one Dask task per run on the cluster of ``CLUSTER=`` (default: a
local cluster of ``jobs`` worker processes, each run with ``cores // jobs`` CPU threads and at most one run per GPU),
each task a papermill subprocess (:mod:`avaga_lib.orchestration.job`). A run whose worker dies is retried and resumes
from its checkpoint; a run that fails by itself is recorded, not retried. Data that has to be generated or converted
(embedded set, Magnetic Tile, STC frame cache) is prepared once, sequentially, before any run starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avaga_lib.config import RunConfig
from avaga_lib.data import preparation_key, prepare_datasets
from avaga_lib.io import write_json, write_text
from avaga_lib.orchestration import scheduler
from avaga_lib.orchestration.job import (
    DEFAULT_KERNEL,
    Outcome,
    Runner,
    error_from_log,
    papermill_command,
    run_folder_conflict,
)
from avaga_lib.orchestration.report_status import inputs_fingerprint, record_outcome, stale_notebooks
from avaga_lib.paths import absolute, project_root, reference_dir, reference_for
from avaga_lib.plan import (
    RunSpec,
    is_finished,
    saved_config,
)
from avaga_lib.reporting.report import export_html
from avaga_lib.run_folder import ResultsTree, RunFolder
from avaga_lib.study import NOTEBOOKS

__all__ = [
    "NOTEBOOK_UNSUPERVISED",
    "NOTEBOOK_WEAK",
    "REPORT_NOTEBOOKS",
    "Summary",
    "default_jobs",
    "execute",
    "jobs_from_makeflags",
    "prepare_data",
    "report_notebooks_to_run",
    "report_parameters",
    "report_up_to_date",
    "run_report_notebooks",
]

NOTEBOOK_UNSUPERVISED = NOTEBOOKS["unsupervised"]
NOTEBOOK_WEAK = NOTEBOOKS["weak"]
REPORT_NOTEBOOKS: tuple[str, ...] = ("05_ablations.ipynb", "06_threshold_study.ipynb", "07_report.ipynb")


@dataclass
class Summary:
    """Every outcome of :func:`execute`.

    Attributes:
        outcomes: one per planned run (skipped, ok or failed). seconds: wall time of :func:`execute`.
        started: runs handed to the cluster (0 when every run was finished or failed in data preparation).
    """

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    started: int = 0

    def by_status(self, status: str) -> list[Outcome]:
        """Outcomes with ``status``."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> list[Outcome]:
        """Failed runs."""
        return self.by_status("failed")

    @property
    def nothing_started(self) -> bool:
        """True when runs failed before any of them started (data preparation): nothing of this study was made, so
        its report, reference comparison and ``summary.json`` would describe another study's runs."""
        return self.started == 0 and bool(self.failed)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise."""
        return 1 if self.failed else 0

    def text(self) -> str:
        """Human summary: counts, then one line per failure with its reason and log."""
        lines = [
            f"pipeline: {len(self.by_status('ok'))} ran, {len(self.by_status('skipped'))} skipped (finished, config "
            f"unchanged), {len(self.failed)} failed, in {self.seconds:.0f} s"
        ]
        retried = [o for o in self.outcomes if o.attempts > 1]
        if retried:
            lines.append(f"  {len(retried)} run(s) resumed from their checkpoint after a lost worker: "
                         + ", ".join(f"{o.spec.label} ({o.attempts} attempts)" for o in retried))
        for o in self.failed:
            lines.append(f"  FAILED {o.spec.label}: {o.error}\n         log: {o.spec.log}  notebook: "
                         f"{o.spec.output_notebook}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (written to ``<results_dir>/runs/summary.json``)."""
        return {
            "seconds": self.seconds,
            "runs": [
                {"run": o.spec.label, "status": o.status, "seconds": round(o.seconds, 1), "attempts": o.attempts,
                 "error": o.error, "log": str(o.spec.log), "notebook": str(o.spec.output_notebook)}
                for o in self.outcomes
            ],
        }


def prepare_data(specs: Sequence[RunSpec]) -> dict[tuple[str, str, str], str]:
    """Prepare the data of ``specs`` once each, before runs start in parallel (:func:`avaga_lib.data.prepare_datasets`).

    Returns:
        Errors per :func:`avaga_lib.data.preparation_key` that could not be prepared (their runs are marked failed).
    """
    return prepare_datasets(s.config.data for s in specs)


def _runs_to_do(specs: Sequence[RunSpec], force: bool, summary: Summary, log: Callable[[str], None]) -> list[RunSpec]:
    """Record finished runs as skipped and runs whose folder holds another root's run as failed (issue 22: never
    deleted); clear unfinished folders of forced or stale runs; return the runs to execute. A *finished* forced or
    stale run is not cleared here: the job sets it aside under its lock and deletes it only once the new run
    finished (:func:`avaga_lib.orchestration.job.run_job`)."""
    todo: list[RunSpec] = []
    for s in specs:
        if not force and is_finished(s):
            summary.outcomes.append(Outcome(s, "skipped"))
            continue
        conflict = run_folder_conflict(s, force)
        if conflict is not None:
            summary.outcomes.append(Outcome(s, "failed", error=conflict))
            log(f"not run: {conflict}")
            continue
        stale = force or saved_config(s.run_dir) is not None
        if s.run_dir.exists() and stale and not RunFolder(s.run_dir).is_finished():
            # an unfinished folder of a forced or stale run: start clean (no resume of the old config's
            # checkpoint); nothing finished is in it
            shutil.rmtree(s.run_dir)
        todo.append(s)
    skipped = sum(o.status == "skipped" for o in summary.outcomes)
    if skipped:
        log(f"skipping {skipped} finished run(s) (metrics.json present, config unchanged)")
    return todo


def _with_data(todo: list[RunSpec], summary: Summary) -> list[RunSpec]:
    """Prepare the data of ``todo`` once; record the runs whose data failed; return the others."""
    data_errors = prepare_data(todo) if todo else {}
    runnable = []
    for s in todo:
        err = data_errors.get(preparation_key(s.config.data))
        if err:
            s.log.parent.mkdir(parents=True, exist_ok=True)
            write_text(s.log, f"data preparation failed: {err}\n")
            summary.outcomes.append(Outcome(s, "failed", 0.0, f"data: {err}"))
        else:
            runnable.append(s)
    return runnable


def execute(
    specs: Sequence[RunSpec],
    force: bool = False,
    jobs: int = 1,
    kernel: str = DEFAULT_KERNEL,
    log: Callable[[str], None] = print,
    runner: Runner | None = None,
    cluster: str | None = None,
    retries: int = scheduler.LOST_WORKER_RETRIES,
    progress: bool | None = None,
    dashboard: str = scheduler.DASHBOARD,
    runs_per_gpu: int = 1,
) -> Summary:
    """Execute the planned runs: skip finished ones, run the rest on a Dask cluster, never stop at a failure.

    Args:
        specs: from :func:`plan_runs`. force: rerun finished runs (their folders are removed first).
        jobs: runs at a time on the default local cluster (each with ``train.threads`` threads, or
            ``cores // jobs`` where the config leaves it at 0); other clusters are sized by themselves.
        kernel: Jupyter kernel name. log: progress lines. runner: replaces :func:`run_papermill` (tests; the local
        cluster then runs in threads). cluster: ``CLUSTER=`` (:func:`avaga_lib.orchestration.scheduler.parse_cluster`;
        None = local). retries: resubmissions of a run whose worker died (it resumes from its checkpoint).
        progress: one progress bar (default: when stderr is a terminal), else one line per finished run.
        dashboard: address the Dask dashboard of a cluster started here binds (default: this machine only).
        runs_per_gpu: runs sharing one GPU at a time (issue 24; ``RUNS_PER_GPU=``, docs/PERFORMANCE.md).

    Returns:
        :class:`Summary`; also written to ``<results_dir>/runs/summary.json``, unless no run started
        (:attr:`Summary.nothing_started`): the previous study's summary is kept then.

    Raises:
        avaga_lib.orchestration.scheduler.ClusterError: a bad ``cluster``, or its submit command (``sbatch``) missing
        (checked
            before any folder is touched).
    """
    t0 = time.perf_counter()
    choice = scheduler.parse_cluster(cluster)
    scheduler.check_submitter(choice)
    summary = Summary()
    todo = _runs_to_do(specs, force, summary, log)
    runnable = _with_data(todo, summary)
    summary.started = len(runnable)
    if runnable:
        summary.outcomes += scheduler.run_all(runnable, choice, jobs=jobs, kernel=kernel, log=log, runner=runner,
                                              retries=retries, progress=progress, dashboard=dashboard, force=force,
                                              runs_per_gpu=runs_per_gpu)
    summary.seconds = time.perf_counter() - t0
    if not specs:
        return summary
    path = ResultsTree.of_run_notebook(specs[0].output_notebook).summary_path
    if summary.nothing_started:
        log(f"pipeline: no run started; {path} left as it was (it describes the last study that ran)")
        return summary
    try:
        write_json(path, summary.to_dict())
    except OSError as exc:  # the runs are done and the terminal gets the summary: a lost record is not a crash
        log(f"pipeline: {path} not written: {type(exc).__name__}: {exc}")
    return summary


def default_jobs(specs: Sequence[RunSpec], makeflags: str | None = None, runs_per_gpu: int = 1) -> int:
    """Parallel runs when none were asked for: ``make -j N`` wins; else CPU runs pinned to one thread (the smoke and
    cpu profiles) use every core and GPU runs ``runs_per_gpu`` per visible GPU.

    Small CPU runs scale badly across threads (measured in docs/PERFORMANCE.md: one thread per run is faster per
    core than two), so on a CPU-only machine one-thread runs go one per core; paper-profile CPU runs (every thread)
    stay sequential unless ``-j``/``JOBS`` says otherwise. The local cluster never puts two runs on one GPU
    (:func:`avaga_lib.orchestration.scheduler.local_layout`).
    """
    asked = jobs_from_makeflags(makeflags)
    if asked > 1:
        return asked
    if torch.cuda.is_available():
        return max(1, min(len(scheduler.visible_gpus()) * runs_per_gpu, len(specs)))
    if specs and all(s.config.train.threads == 1 for s in specs):
        return max(1, min(os.cpu_count() or 1, len(specs)))
    return 1


def jobs_from_makeflags(makeflags: str | None = None) -> int:
    """Parallel jobs requested by ``make -j N`` (read from ``MAKEFLAGS``; ``-j`` alone = all cores; none = 1)."""
    flags = os.environ.get("MAKEFLAGS", "") if makeflags is None else makeflags
    m = re.search(r"(?:^|\s)-j\s*(\d+)|--jobs[= ](\d+)", flags)
    if m:
        return int(m.group(1) or m.group(2))
    if re.search(r"(?:^|\s)-j(?:\s|$)|--jobs(?:\s|$)", flags.split(" -- ")[0]):
        return os.cpu_count() or 1
    return 1


# ----------------------------------------------------------------------------------------------------------------
# Analysis notebooks (06, 07) and the HTML report


def _report_fingerprints(results_dir: Path | str, notebooks: Sequence[str],
                         extra_parameters: dict[str, Any] | None = None) -> dict[str, str]:
    """Inputs fingerprint of each analysis notebook over ``results_dir``
    (:mod:`avaga_lib.orchestration.report_status`); the
    reference results are an input of 07 (the comparison) only."""
    return {n: inputs_fingerprint(absolute(results_dir), project_root() / "notebooks" / n,
                                  report_parameters(n, results_dir, extra_parameters),
                                  comparison_reference(results_dir) if _compares_reference(n) else None)
            for n in notebooks}


def _compares_reference(notebook: str) -> bool:
    """Whether an analysis notebook compares the tree with a reference (07 only; 05 and 06 read the tree alone)."""
    return notebook.startswith("07")


def comparison_reference(results_dir: Path | str) -> Path:
    """The reference a results tree is compared with: its own (:func:`avaga_lib.paths.reference_for`) when it has
    one, else the committed ``results/reference``."""
    own = reference_for(results_dir)
    return own if own.is_dir() else reference_dir()


def report_parameters(notebook: str, results_dir: Path | str,
                      extra_parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The papermill parameters of one analysis notebook over ``results_dir``.

    Only the notebook that compares with a reference (07) gets ``reference_dir``: papermill warns "Passed unknown
    parameter" for every name a notebook's ``parameters`` cell does not declare, into each run log.
    """
    reference = {"reference_dir": str(comparison_reference(results_dir))} if _compares_reference(notebook) else {}
    return {"results_dir": str(results_dir), "train_if_missing": False, **reference, **(extra_parameters or {})}


def run_report_notebooks(
    results_dir: Path | str = "results",
    kernel: str = DEFAULT_KERNEL,
    notebooks: Sequence[str] = REPORT_NOTEBOOKS,
    log: Callable[[str], None] = print,
    extra_parameters: dict[str, Any] | None = None,
) -> dict[str, Outcome]:
    """Execute the analysis notebooks (05-07) over ``results_dir`` and write ``<results_dir>/report.html`` from 07.

    Each outcome is recorded with its inputs fingerprint in ``<results_dir>/runs/report/status.json``, so a failed
    notebook is rerun by the next ``make reproduce`` (:func:`report_notebooks_to_run`).

    Returns:
        Outcome per notebook name (a failure is recorded, the next notebook still runs).
    """
    base = absolute(results_dir)
    outcomes: dict[str, Outcome] = {}
    fingerprints = _report_fingerprints(results_dir, notebooks, extra_parameters)
    for name in notebooks:
        out_nb = ResultsTree(base).report_runs_dir / name
        spec = RunSpec(name=name, group="report", notebook=project_root() / "notebooks" / name,
                       parameters=report_parameters(name, results_dir, extra_parameters), config=RunConfig(),
                       output_notebook=out_nb, log=out_nb.with_suffix(".log"))
        t0 = time.perf_counter()
        log(f"executing {name} over {results_dir} ...")
        out_nb.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log, "w") as fh:
            proc = subprocess.run(papermill_command(spec, kernel), stdout=fh, stderr=subprocess.STDOUT,
                                  cwd=project_root(), env=dict(os.environ), check=False)
        error = "" if proc.returncode == 0 else error_from_log(spec.log)
        if name.startswith("07") and not error:
            try:
                log(f"report: {export_html(out_nb, base / 'report.html')}")
            except (ValueError, OSError) as exc:  # ReportError included; recorded as the notebook's failure
                error = f"report.html not written: {type(exc).__name__}: {exc}"
        status = "failed" if error else "ok"
        outcomes[name] = Outcome(spec, status, time.perf_counter() - t0, error)
        record_outcome(base, name, status, fingerprints[name], error, outcomes[name].seconds)
        log(f"{name}: {status}" + (f" — {error} (log {spec.log})" if error else ""))
    return outcomes


def report_notebooks_to_run(results_dir: Path | str = "results", notebooks: Sequence[str] = REPORT_NOTEBOOKS,
                            extra_parameters: dict[str, Any] | None = None) -> list[str]:
    """The analysis notebooks whose last outcome is missing, failed, or was recorded for other inputs (runs,
    reference, notebook, parameters, library code), plus 07 when ``report.html`` is missing."""
    todo = stale_notebooks(absolute(results_dir), _report_fingerprints(results_dir, notebooks, extra_parameters))
    report_nb = next((n for n in notebooks if n.startswith("07")), None)
    if report_nb and report_nb not in todo and not (absolute(results_dir) / "report.html").exists():
        todo = [n for n in notebooks if n in todo or n == report_nb]
    return todo


def report_up_to_date(results_dir: Path | str = "results", notebooks: Sequence[str] = REPORT_NOTEBOOKS) -> bool:
    """True when ``report.html`` exists and every analysis notebook last succeeded on the current inputs (so a second
    ``make reproduce`` that skipped every run need not re-execute them); a failed notebook is never up to date."""
    return not report_notebooks_to_run(results_dir, notebooks)
