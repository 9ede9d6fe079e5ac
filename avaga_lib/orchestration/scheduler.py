"""Where the study's runs execute: a Dask client made from ``CLUSTER=``, one task per run, one progress bar.

``CLUSTER`` (Makefile variable, ``pipeline --cluster``, or ``cluster:`` in a params file):

- empty / ``local`` (default): a :class:`distributed.LocalCluster` of ``jobs`` worker processes with one task slot
  each; a run gets ``cores // jobs`` CPU threads (as ``make -j`` always did). When GPUs are visible and the runs use
  one (``device: auto`` / ``cuda``), there are at most ``runs_per_gpu`` workers per GPU (default 1) and each run
  sees only its worker's GPU;
- ``cuda``: ``dask_cuda.LocalCUDACluster``, one worker per visible GPU running ``runs_per_gpu`` runs at a time
  (extra ``avaga_lib[cuda]``);
- ``tcp://host:8786`` (any Dask address): an existing scheduler (``dask scheduler`` + ``dask worker`` machines
  that share the results folder);
- ``slurm`` (reads ``cluster/slurm.yaml``) or a cluster YAML file: a ``dask_jobqueue`` cluster (SLURM, PBS, LSF,
  SGE) with the job resources of the file (extra ``avaga_lib[cluster]``; schema in ``cluster/slurm.yaml``).

Before anything starts, :func:`parse_cluster` checks the value, its cluster file and its extra, and
:func:`check_submitter` the jobqueue's submit command (``sbatch``); :func:`job_script` shows a jobqueue cluster's
batch script without starting it (``--dry-run``). The dashboard of a cluster started here binds ``127.0.0.1`` unless
asked otherwise (:data:`DASHBOARD`, ``pipeline --dashboard``).

Fault tolerance: a run whose worker dies is resubmitted by the Dask scheduler to another worker, at most
``retries`` times (``distributed.scheduler.allowed-failures`` of the schedulers made here; an existing scheduler
keeps its own setting), and the trainer resumes from the run folder's checkpoint. A run that fails by itself comes
back as a failed :class:`~avaga_lib.orchestration.job.Outcome` and is never retried
(:func:`avaga_lib.orchestration.job.run_job`).

Several runs per GPU (``runs_per_gpu`` = k > 1): one paper-profile run at batch 24 leaves a large GPU mostly idle
(docs/PERFORMANCE.md, "Several runs per GPU"), so k runs share each GPU, each in its own papermill process with its
own CUDA context and ``CUDA_VISIBLE_DEVICES`` naming that one GPU. k is chosen by measurement (``make gpu-study``).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import dask
import torch
from distributed import Client, Future, KilledWorker, LocalCluster
from tqdm import tqdm

from avaga_lib.config import config_hash
from avaga_lib.io import read_yaml_mapping
from avaga_lib.orchestration.job import DEFAULT_KERNEL, GPU_DEVICES, Outcome, Runner, run_job
from avaga_lib.paths import project_root
from avaga_lib.plan import RunSpec

LOST_WORKER_RETRIES = 2  # a run is resubmitted at most this often after its worker died (3 attempts in all)
JOBQUEUE_KINDS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster", "sge": "SGECluster"}
SUBMIT_COMMANDS = {"slurm": "sbatch", "pbs": "qsub", "lsf": "bsub", "sge": "qsub"}  # what dask-jobqueue calls
# Arguments of a dask_jobqueue cluster class that are not its job class's (JobQueueCluster.__init__): left out when
# the job script is made without a cluster (--dry-run).
CLUSTER_ONLY_KEYS = ("n_workers", "loop", "security", "shared_temp_directory", "silence_logs", "name", "asynchronous",
                     "dashboard_address", "host", "scheduler_options", "scheduler_cls")
SCHEDULER_PLACEHOLDER = "tcp://<scheduler-address>:8786"  # the real address exists once the cluster starts
# The dashboard of a cluster started here shows file paths and logs and accepts no login: this machine only unless
# asked (pipeline --dashboard); ":8787" would listen on every interface.
DASHBOARD = "127.0.0.1:8787"
CLUSTER_FILE_KEYS = ("kind", "workers", "job")
RUN_RESOURCE = {"run": 1}  # a jobqueue worker has many cores but runs one run at a time
POLL_S = 1.0  # progress-bar refresh: each poll asks the scheduler what is running (a run lasts minutes)
# A run is one task of minutes that waits on its papermill subprocess: Dask's per-10 ms stack sampling, 500 ms system
# and GIL monitors and 20 ms loop ticks only take CPU from the runs on a small machine (measured on 2 cores: the
# client and workers used ~27% of a core with the defaults; docs/PERFORMANCE.md). Applies to clusters started here.
QUIET_DASK: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.admin.system-monitor.gil.enabled": False,
    "distributed.admin.tick.interval": "500ms",
}
CLUSTER_HELP = "local (default) | cuda | tcp://host:8786 | slurm | <cluster file>.yaml"


class ClusterError(ValueError):
    """A ``CLUSTER=`` value or cluster file that cannot be used (the message names it and the fix)."""


@dataclass(frozen=True)
class ClusterChoice:
    """A parsed ``CLUSTER=`` value.

    Attributes:
        kind: ``local`` | ``cuda`` | ``address`` | ``jobqueue``. address: the scheduler address (``address``).
        file: the cluster file (``jobqueue``). queue: ``slurm`` / ``pbs`` / ``lsf`` / ``sge`` (``jobqueue``).
        workers: jobs to submit (``jobqueue``). job: keyword arguments of the dask_jobqueue cluster class
        (``jobqueue``).
    """

    kind: str = "local"
    address: str = ""
    file: Path | None = None
    queue: str = ""
    workers: int = 0
    job: dict[str, Any] = field(default_factory=dict)


@dataclass
class Session:
    """A started client and how its runs are sized (threads / gpus None: decided on each worker); ``dashboard``:
    where the dashboard of a cluster started here listens ("" = the client's link)."""

    client: Client
    threads: int | None = None
    gpus: list[str] | None = None
    resources: dict[str, int] | None = None
    dashboard: str = ""


def bound_dashboard(cluster: Any) -> str:
    """The dashboard address a cluster started here really listens on (``http://127.0.0.1:8787/status``).

    ``Client.dashboard_link`` is built from the scheduler's address, not from the dashboard's socket: it printed
    127.0.0.1 while the dashboard listened on every interface, and prints the machine's address for a loopback
    dashboard of an in-process scheduler. "" when there is no dashboard socket to read.
    """
    server = getattr(getattr(cluster, "scheduler", None), "http_server", None)
    sockets = list(getattr(server, "_sockets", {}).values())
    if not sockets:
        return ""
    host, port = sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/status" + ("  (every interface)" if host in ("0.0.0.0", "[::]") else "")


def default_cluster_file(queue: str = "slurm") -> Path:
    """``cluster/<queue>.yaml`` of the project (``CLUSTER=slurm`` reads ``cluster/slurm.yaml``)."""
    return project_root() / "cluster" / f"{queue}.yaml"


def require_extra(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional cluster dependency, or fail with one line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ClusterError(f"{what} needs {module.replace('_', '-')}, which is not installed ({exc}): "
                           f"pip install {extra}") from exc


def parse_cluster(value: str | None) -> ClusterChoice:
    """Check a ``CLUSTER=`` value (and its extra, and its cluster file) before anything runs.

    Raises:
        ClusterError: unknown value, missing extra, or a bad cluster file (named, with the fix).
    """
    v = (value or "").strip()
    if v in ("", "local"):
        return ClusterChoice("local")
    if v == "cuda":
        require_extra("dask_cuda", "avaga_lib[cuda]", "CLUSTER=cuda")
        return ClusterChoice("cuda")
    if "://" in v:
        return ClusterChoice("address", address=v)
    if v in JOBQUEUE_KINDS or v.endswith((".yaml", ".yml")):
        return read_cluster_file(default_cluster_file(v) if v in JOBQUEUE_KINDS else Path(v))
    raise ClusterError(f"CLUSTER={v} not understood; use {CLUSTER_HELP}")


def read_cluster_file(path: Path) -> ClusterChoice:
    """A jobqueue cluster from a YAML file (``kind``, ``workers``, ``job``; see ``cluster/slurm.yaml``).

    Raises:
        ClusterError: missing file, bad YAML, unknown key or kind, bad ``workers``/``job``, or missing extra.
    """
    if not path.is_file():
        raise ClusterError(f"cluster file {path} not found; copy cluster/slurm.yaml and edit it")
    data = read_yaml_mapping(path, ClusterError, f"{list(CLUSTER_FILE_KEYS)} (see cluster/slurm.yaml)")
    unknown = sorted(set(data) - set(CLUSTER_FILE_KEYS))
    if unknown:
        raise ClusterError(f"{path}: unknown key(s) {unknown}; known: {list(CLUSTER_FILE_KEYS)} (the job's own "
                           "settings go under 'job')")
    kind = str(data.get("kind", "slurm"))
    if kind not in JOBQUEUE_KINDS:
        raise ClusterError(f"{path}: kind '{kind}' unknown; choose one of {sorted(JOBQUEUE_KINDS)}")
    workers, job = data.get("workers", 1), data.get("job") or {}
    if not isinstance(workers, int) or workers < 1:
        raise ClusterError(f"{path}: workers must be a whole number >= 1 (jobs submitted), got {workers!r}")
    if not isinstance(job, dict):
        raise ClusterError(f"{path}: job must be a mapping of dask_jobqueue.{JOBQUEUE_KINDS[kind]} arguments")
    require_extra("dask_jobqueue", "avaga_lib[cluster]", f"CLUSTER={path} ({kind})")
    return ClusterChoice("jobqueue", file=path, queue=kind, workers=workers, job=job)


def check_submitter(choice: ClusterChoice) -> None:
    """A jobqueue cluster submits its workers with ``sbatch`` / ``qsub`` / ``bsub``: check it is on PATH.

    Without it, dask-jobqueue logs one traceback per job submission and the study waits forever for workers.

    Raises:
        ClusterError: the submit command is missing (named, with the fix).
    """
    if choice.kind != "jobqueue":
        return
    command = SUBMIT_COMMANDS[choice.queue]
    if shutil.which(command) is None:
        raise ClusterError(f"CLUSTER={choice.file} ({choice.queue}) submits its workers with `{command}`, which is "
                           f"not on PATH: run the study on a {choice.queue.upper()} login node (where `{command} "
                           "--version` works), or use CLUSTER=local")


def _job_kwargs(choice: ClusterChoice) -> dict[str, Any]:
    """Arguments of the dask_jobqueue cluster class: the file's ``job``, each worker taking one run at a time."""
    job = dict(choice.job)
    job["worker_extra_args"] = [*job.get("worker_extra_args", []), "--resources", "run=1"]
    return job


def job_script(choice: ClusterChoice) -> str:
    """The batch script each worker job of a jobqueue cluster is submitted with, made without starting a cluster
    (dask-jobqueue's ``job_script()`` of the cluster class's job class); the scheduler address is a placeholder.

    Raises:
        ClusterError: not a jobqueue cluster, the extra is missing, or the file's ``job`` is refused by the job class.
    """
    if choice.kind != "jobqueue":
        raise ClusterError(f"CLUSTER={choice.kind}: no batch job script (only slurm / pbs / lsf / sge clusters)")
    module = require_extra("dask_jobqueue", "avaga_lib[cluster]", f"CLUSTER={choice.file}")
    job_cls = getattr(module, JOBQUEUE_KINDS[choice.queue]).job_cls
    kwargs = {k: v for k, v in _job_kwargs(choice).items() if k not in CLUSTER_ONLY_KEYS}
    log_dir = kwargs.pop("log_directory", None)
    with tempfile.TemporaryDirectory() as tmp:
        # the job class creates its log_directory; a dry run writes nothing, so a throw-away folder stands in and
        # the real path is put back in the text
        stand_in = os.path.join(tmp, "log_directory")
        try:
            job = job_cls(SCHEDULER_PLACEHOLDER, name="dummy-name", **kwargs,
                          **({"log_directory": stand_in} if log_dir else {}))
            text = job.job_script()
        except (TypeError, ValueError) as exc:
            raise ClusterError(f"{choice.file}: job: {type(exc).__name__}: {exc} (the keys under 'job' are "
                               f"dask_jobqueue.{JOBQUEUE_KINDS[choice.queue]} arguments)") from exc
    return text.replace(stand_in, str(log_dir)) if log_dir else text


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` when set, else ``0 .. device_count - 1``."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def check_runs_per_gpu(runs_per_gpu: int) -> int:
    """``runs_per_gpu`` as a whole number >= 1.

    Raises:
        ClusterError: anything else (named, with what it means).
    """
    if isinstance(runs_per_gpu, bool) or not isinstance(runs_per_gpu, int) or runs_per_gpu < 1:
        raise ClusterError(f"runs per GPU must be a whole number >= 1 (runs sharing one GPU at a time), got "
                           f"{runs_per_gpu!r}")
    return runs_per_gpu


def local_layout(jobs: int, gpus: Sequence[str], cores: int, runs_per_gpu: int = 1) -> tuple[int, int]:
    """Workers and CPU threads per run of the default local cluster: ``jobs`` workers, at most ``runs_per_gpu`` per
    GPU when the runs use GPUs, and ``cores // workers`` threads each.

    Worker ``i`` takes GPU ``i mod len(gpus)`` (:func:`avaga_lib.orchestration.job.job_gpu`), so the workers spread
    evenly: with 2 GPUs and ``runs_per_gpu=3``, 6 workers, 3 on each GPU.
    """
    workers = max(1, int(jobs))
    if gpus:
        workers = min(workers, len(gpus) * runs_per_gpu)  # checked by open_session / preflight
    return workers, max(1, cores // workers)


@contextmanager
def _workers_skip_main() -> Iterator[None]:
    """Start worker processes without re-importing ``__main__``.

    multiprocessing's spawn makes each new worker re-import the parent's ``__main__`` module; under the CLI that is
    the whole library (torch, pandas, nbconvert: 14 s of CPU per worker measured on this machine), while a worker
    needs only :mod:`avaga_lib.orchestration.job`. A worker the nanny restarts later (after a loss) still imports it.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _gpu_sharing(runs_per_gpu: int) -> str:
    return "one per GPU" if runs_per_gpu == 1 else f"up to {runs_per_gpu} per GPU"


def pinned_threads(specs: Sequence[RunSpec]) -> int:
    """The CPU threads every run of ``specs`` sets itself (``train.threads``: 1 at the smoke and cpu profiles), or 0
    when some leave it to the cluster or they differ. A run's own count wins over the cluster's share
    (:func:`avaga_lib.orchestration.job.run_job`), so the log must say it, not the share."""
    counts = {s.config.train.threads for s in specs}
    return counts.pop() if len(counts) == 1 else 0


def _threads_per_run(share: int, pinned: int) -> str:
    """The log's CPU threads per run: the runs' own ``train.threads`` when they all set one, else the share."""
    return f"{pinned} CPU thread(s) per run (train.threads)" if pinned else f"{share} CPU thread(s) per run"


def _local_session(stack: ExitStack, jobs: int, gpus: list[str], in_process: bool,
                   log: Callable[[str], None], dashboard: str = DASHBOARD, runs_per_gpu: int = 1,
                   pinned: int = 0) -> Session:
    workers, threads = local_layout(jobs, gpus, os.cpu_count() or 1, runs_per_gpu)
    if gpus and jobs > workers:
        log(f"dask: {len(gpus)} GPU(s) visible: {workers} runs at a time, {_gpu_sharing(runs_per_gpu)} (asked for "
            f"{jobs})")
    with _workers_skip_main():
        cluster = stack.enter_context(LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=not in_process, memory_limit=0,
            dashboard_address=dashboard, silence_logs=logging.WARNING))
    shared = f", {_gpu_sharing(runs_per_gpu)}" if runs_per_gpu > 1 else ""
    log(f"dask: local cluster, {workers} worker(s) x 1 run, {_threads_per_run(threads, pinned)}"
        + (f", GPUs {','.join(gpus[:workers])} (one per worker{shared})" if gpus else ""))
    return Session(stack.enter_context(Client(cluster)), threads, gpus[:workers] or None,
                   dashboard=bound_dashboard(cluster))


def _cuda_session(stack: ExitStack, log: Callable[[str], None], dashboard: str = DASHBOARD,
                  runs_per_gpu: int = 1) -> Session:
    dask_cuda = require_extra("dask_cuda", "avaga_lib[cuda]", "CLUSTER=cuda")
    # dask-cuda starts one worker per GPU and sets that worker's CUDA_VISIBLE_DEVICES; k task slots on it run k
    # papermill processes, each pinned to the worker's GPU by run_job (job.job_gpu reads the worker's list)
    with _workers_skip_main():
        cluster = stack.enter_context(dask_cuda.LocalCUDACluster(threads_per_worker=runs_per_gpu, memory_limit=0,
                                                                 dashboard_address=dashboard))
    n = len(cluster.workers)
    log(f"dask: LocalCUDACluster, {n} worker(s), one GPU each, {runs_per_gpu} run(s) at a time per GPU")
    return Session(stack.enter_context(Client(cluster)), max(1, (os.cpu_count() or 1) // max(1, n * runs_per_gpu)),
                   dashboard=bound_dashboard(cluster))


def _jobqueue_session(stack: ExitStack, choice: ClusterChoice, log: Callable[[str], None],
                      dashboard: str = DASHBOARD, pinned: int = 0) -> Session:
    module = require_extra("dask_jobqueue", "avaga_lib[cluster]", f"CLUSTER={choice.file}")
    check_submitter(choice)  # before the cluster object exists: it would log a traceback per failed submission
    job = _job_kwargs(choice)
    # the file's scheduler_options.dashboard_address is an explicit request; without one, this machine only
    job["scheduler_options"] = {"dashboard_address": dashboard, **(job.get("scheduler_options") or {})}
    cluster = stack.enter_context(getattr(module, JOBQUEUE_KINDS[choice.queue])(**job))
    cluster.scale(jobs=choice.workers)
    threads = max(1, int(job.get("cores", 1)) // max(1, int(job.get("processes", 1))))
    log(f"dask: {choice.queue} cluster from {choice.file}, {choice.workers} job(s) submitted, "
        f"{_threads_per_run(threads, pinned)}; runs start as the jobs do")
    return Session(stack.enter_context(Client(cluster)), threads, resources=RUN_RESOURCE,
                   dashboard=bound_dashboard(cluster))


@contextmanager
def open_session(choice: ClusterChoice, jobs: int = 1, use_gpus: bool = False, retries: int = LOST_WORKER_RETRIES,
                 log: Callable[[str], None] = print, in_process: bool = False,
                 dashboard: str = DASHBOARD, runs_per_gpu: int = 1, pinned: int = 0) -> Iterator[Session]:
    """Start (or connect to) the cluster of ``choice``; everything started here stops on exit.

    Args:
        choice: from :func:`parse_cluster`. jobs: workers of the default local cluster. use_gpus: the runs use a GPU
        (the local cluster then pins one GPU per worker). retries: resubmissions of a run whose worker died (schedulers
        started here). log: progress lines (the dashboard address first). in_process: local cluster of threads instead
        of processes (tests with a stand-in runner). dashboard: address the dashboard of a cluster started here binds
        (``host:port``; ``:8787`` = every
            interface); a jobqueue cluster file's ``scheduler_options.dashboard_address`` wins.
        runs_per_gpu: runs sharing one GPU at a time (local and ``cuda`` clusters; others are sized by themselves).
        pinned: the runs' own CPU threads (:func:`pinned_threads`; 0 = the cluster's share): what the log says.

    Raises:
        ClusterError: ``runs_per_gpu`` is not a whole number >= 1 (before anything starts).
    """
    check_runs_per_gpu(runs_per_gpu)
    with ExitStack() as stack, dask.config.set({**QUIET_DASK, "distributed.scheduler.allowed-failures": int(retries)}):
        if choice.kind == "local":
            session = _local_session(stack, jobs, visible_gpus() if use_gpus else [], in_process, log, dashboard,
                                     runs_per_gpu, pinned)
        elif choice.kind == "cuda":
            session = _cuda_session(stack, log, dashboard, runs_per_gpu)
        elif choice.kind == "jobqueue":
            session = _jobqueue_session(stack, choice, log, dashboard, pinned)
        else:
            try:
                client = stack.enter_context(Client(choice.address, timeout="30s"))
            except OSError as exc:
                raise ClusterError(f"CLUSTER={choice.address}: no Dask scheduler answers there ({exc}); start "
                                   "one with `dask scheduler` or fix the address") from exc
            log(f"dask: scheduler {choice.address}, {len(client.nthreads())} worker(s) connected now")
            session = Session(client)
        log(f"dask: dashboard {session.dashboard or session.client.dashboard_link}")
        yield session


def eta_seconds(walls: Sequence[float], remaining: int, slots: int) -> float | None:
    """Seconds left: mean wall time of the finished runs x remaining runs / runs at a time (None before any)."""
    if not walls or remaining <= 0:
        return None if remaining > 0 else 0.0
    return sum(walls) / len(walls) * remaining / max(1, slots)


class RunProgress:
    """One bar over the runs (done / failed / running, ETA) on a terminal; one line per finished run otherwise."""

    def __init__(self, total: int, log: Callable[[str], None], bar: bool) -> None:
        self.total, self.log, self.walls = total, log, []
        self.done = self.failed = self.running = 0
        self.slots = 1
        self.bar = tqdm(total=total, unit="run", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]") if bar else None

    def finished(self, out: Outcome) -> None:
        """Count one finished run (its wall time feeds the ETA; a failure is printed at once)."""
        self.walls.append(out.seconds)
        self.done += out.status == "ok"
        self.failed += out.status != "ok"
        retried = f" after {out.attempts} attempts" if out.attempts > 1 else ""
        line = (f"[{self.done + self.failed}/{self.total}] {out.spec.label}: {out.status} in {out.seconds:.0f} s"
                + retried + (f" — {out.error} (log {out.spec.log})" if out.error else ""))
        if self.bar is None:
            self.log(line)
        else:
            if out.status != "ok":
                self.bar.write(line, file=sys.stderr)
            self.bar.update(1)
        self.refresh()

    def refresh(self, running: int | None = None, slots: int | None = None) -> None:
        """Update the running count, the runs-at-a-time and the bar's text."""
        self.running = self.running if running is None else running
        self.slots = self.slots if slots is None else max(1, slots)
        if self.bar is not None:
            eta = eta_seconds(self.walls, self.total - self.done - self.failed, self.slots)
            left = "?" if eta is None else tqdm.format_interval(eta)
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, running {self.running}, ETA {left}")

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()


def task_key(spec: RunSpec) -> str:
    """The Dask key of a run: its folder and config (two clients of one scheduler never run it twice at once)."""
    return f"avaga-run-{spec.label}-{config_hash(spec.config)[:12]}"


def _result(future: Future, spec: RunSpec, retries: int) -> Outcome:
    """The outcome of a finished task; a worker lost too often, or a lost scheduler, is a failed run."""
    try:
        return future.result()
    except KilledWorker as exc:
        return Outcome(spec, "failed", 0.0, f"its worker died {retries + 1} times; gave up ({exc})", retries + 1)
    except Exception as exc:  # noqa: BLE001 - recorded; the other runs go on
        return Outcome(spec, "failed", 0.0, f"{type(exc).__name__}: {exc}")


def _watch(session: Session, futures: dict[Future, RunSpec], progress: RunProgress, retries: int) -> list[Outcome]:
    """Wait for every task, feeding the progress bar; outcomes in the order of ``futures``."""
    outcomes: dict[str, Outcome] = {}
    pending = set(futures)
    keys = {f.key for f in futures}
    while pending:
        for f in [f for f in pending if f.status != "pending"]:
            pending.discard(f)
            outcomes[f.key] = _result(f, futures[f], retries)
            progress.finished(outcomes[f.key])
        if pending:
            try:
                busy = session.client.processing()
                nthreads = session.client.nthreads()
            except Exception:  # noqa: BLE001 - the bar only; a lost scheduler shows up in the futures
                busy, nthreads = {}, {}
            slots = len(nthreads) if session.resources else sum(nthreads.values())
            progress.refresh(sum(1 for ks in busy.values() for k in ks if k in keys), slots)
            time.sleep(POLL_S)
    return [outcomes[f.key] for f in futures]


def run_all(specs: Sequence[RunSpec], choice: ClusterChoice, jobs: int = 1, kernel: str = DEFAULT_KERNEL,
            log: Callable[[str], None] = print, runner: Runner | None = None, retries: int = LOST_WORKER_RETRIES,
            progress: bool | None = None, dashboard: str = DASHBOARD, force: bool = False,
            runs_per_gpu: int = 1) -> list[Outcome]:
    """Run every spec as one Dask task on the cluster of ``choice``; never stops at a failure.

    Args:
        specs: the runs to execute (planned, not finished, data prepared). choice: from :func:`parse_cluster`.
        jobs: workers of the default local cluster. kernel: Jupyter kernel name. log: progress lines.
        runner: replaces :func:`avaga_lib.orchestration.job.run_papermill` (tests; the local cluster then runs in
        threads). retries: resubmissions of a run whose worker died. progress: one progress bar (default: when stderr is
        a terminal), else one line per finished run. dashboard: address the dashboard of a cluster started here binds.
        force: FORCE=1: each job replaces a finished run (set aside until the new one finished). runs_per_gpu: runs
        sharing one GPU at a time on the local and ``cuda`` clusters (the local cluster still
            starts at most ``jobs`` workers).

    Returns:
        One :class:`Outcome` per spec, in order.
    """
    use_gpus = any(s.config.train.device in GPU_DEVICES for s in specs) and torch.cuda.is_available()
    show_bar = sys.stderr.isatty() if progress is None else progress
    with open_session(choice, jobs, use_gpus, retries, log, in_process=runner is not None,
                      dashboard=dashboard, runs_per_gpu=runs_per_gpu, pinned=pinned_threads(specs)) as session:
        futures = {session.client.submit(run_job, s, kernel, session.threads, session.gpus, runner, force,
                                         key=task_key(s), resources=session.resources): s for s in specs}
        bar = RunProgress(len(specs), log, show_bar)
        try:
            return _watch(session, futures, bar, retries)
        finally:
            bar.close()


__all__ = ["CLUSTER_HELP", "DASHBOARD", "LOST_WORKER_RETRIES", "SUBMIT_COMMANDS", "ClusterChoice", "ClusterError",
           "RunProgress", "Session", "bound_dashboard", "check_runs_per_gpu", "check_submitter",
           "default_cluster_file", "eta_seconds", "job_script", "local_layout", "open_session", "parse_cluster",
           "pinned_threads", "read_cluster_file", "require_extra", "run_all", "task_key", "visible_gpus"]
