"""One planned run as a job on a Dask worker: its environment (threads, one GPU), its claim on the run folder, the
papermill subprocess, and its :class:`Outcome`.

:func:`run_job` is the task the scheduler (:mod:`avaga_lib.orchestration.scheduler`) submits once per run. On the
worker it

- pins the run to one GPU (``CUDA_VISIBLE_DEVICES`` of the job): the GPU the client assigned to this worker (local
  cluster), else the first of the worker's own list (dask-cuda workers list their GPU first), so concurrent runs
  never share ``cuda:0`` by accident;
- sets the CPU threads of the run (``train.threads``, else the client's ``cores // workers``, else this worker's
  cores divided by its task slots);
- claims the run folder (:func:`claim_run`: an exclusive ``flock`` on ``<notebook>.lock`` beside the run's log,
  held by the papermill process too), so two jobs never write the same run folder: a retry whose previous attempt
  still runs (an orphaned process) waits for it;
- executes the notebook in a papermill subprocess that dies with its worker (``PR_SET_PDEATHSIG`` on Linux; the
  Jupyter kernel below it exits when papermill does), so a retried run never races its lost predecessor.

Nothing finished is lost (issue 22): a job that waits for the lock says so, and skips the run when the holder (a
second study into the same results tree) finished it meanwhile; a run folder made from another ``data.root`` (two
folder datasets with one category name) is refused, not replaced, unless forced (:func:`run_folder_conflict`); and a
finished run the job replaces is moved aside (:func:`replaced_dir`) and deleted only once its replacement finished,
put back when it failed.

A run that fails by itself (non-zero papermill exit, or an exception in the job) returns a failed :class:`Outcome`
with the reason and its log: the task succeeds, so Dask never retries it. Only a lost worker makes Dask resubmit
the task; the retry appends to the log and the trainer resumes from the run folder's ``checkpoint.pt``.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import yaml
from distributed import get_worker

from avaga_lib.paths import absolute, project_root
from avaga_lib.plan import RunSpec, is_finished, saved_config
from avaga_lib.run_folder import RunFolder

# papermill's command line with the kernel's transport encrypted (avaga_lib/orchestration/notebook_exec.py); named, not
# imported:
# papermill's import costs every Dask worker seconds, and only the run's subprocess needs it
NOTEBOOK_RUNNER = "avaga_lib.orchestration.notebook_exec"
DEFAULT_KERNEL = "python3"  # the venv's own kernel (jupyter_client maps "python" to the running interpreter)
GPU_DEVICES = ("auto", "cuda")  # train.device values a job pins to one GPU (an explicit cuda:N is left alone)

# Runs before papermill in the job's subprocess: die with the worker (Linux), then become papermill (execv).
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG\n"
    "except (AttributeError, OSError):\n"
    "    pass  # not Linux: the run-folder lock still keeps a retry from racing this process\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('the worker that started this run is gone')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@dataclass
class Outcome:
    """What happened to one run (``attempts`` > 1: its worker was lost and the run resumed on another)."""

    spec: RunSpec
    status: str  # ok | skipped | failed
    seconds: float = 0.0
    error: str = ""
    attempts: int = 1


@dataclass(frozen=True)
class Job:
    """How one attempt of a run executes.

    Attributes:
        kernel: Jupyter kernel name. threads: CPU threads of the run (OMP/MKL/OpenBLAS and ``AVAGA_NUM_THREADS``); None
        = inherited. gpu: the one GPU the run sees (``CUDA_VISIBLE_DEVICES``); None = inherited. attempt: 1 for the
        first attempt; more after lost workers (the log is appended to, not replaced). keep_fds: file descriptors the
        subprocess inherits (the run-folder lock).
    """

    kernel: str = DEFAULT_KERNEL
    threads: int | None = None
    gpu: str | None = None
    attempt: int = 1
    keep_fds: tuple[int, ...] = ()


Runner = Callable[[RunSpec, Job], Outcome]


def error_from_log(log: Path) -> str:
    """The exception line of a failed papermill run (last ``SomethingError: ...`` line of its log)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in text.splitlines()]
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
    hits = [ln for ln in lines if pattern.match(ln) and not ln.startswith("PapermillExecutionError")]
    if hits:
        return hits[-1][:400]
    rest = [ln for ln in lines if ln]
    return rest[-1][:400] if rest else "failed without output"


def papermill_command(spec: RunSpec, kernel: str) -> list[str]:
    """The papermill command line executing ``spec``'s notebook with its parameters (papermill's own command line,
    run as :data:`NOTEBOOK_RUNNER`: the kernel's transport encrypted, so no run log carries ipykernel's
    "running over TCP without encryption" warning)."""
    return [
        sys.executable, "-m", NOTEBOOK_RUNNER, str(spec.notebook), str(spec.output_notebook),
        "-k", kernel, "--cwd", str(project_root()), "-y", yaml.safe_dump(spec.parameters), "--log-output",
        "--no-progress-bar",
    ]


# Set by Dask's nanny in every worker it spawns (distributed.nanny.pre-spawn-environ: glibc returns freed memory
# to the OS above 64 KiB). Inherited by a run it makes PyTorch's CPU allocations go back to the kernel after every
# large tensor: measured here, one smoke epoch 13.4 s -> 20.2 s and its evaluation 1.5 s -> 2.6 s. Not the runs'.
WORKER_ONLY_ENVIRON: tuple[str, ...] = ("MALLOC_TRIM_THRESHOLD_",)


def job_environment(threads: int | None, gpu: str | None, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run's subprocess: ``base`` (default: this process's) without Dask's worker-only
    settings (:data:`WORKER_ONLY_ENVIRON`), with its threads and GPU."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in WORKER_ONLY_ENVIRON}
    if threads:
        n = str(threads)
        env.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, AVAGA_NUM_THREADS=n)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return env


def run_papermill(spec: RunSpec, job: Job = Job()) -> Outcome:
    """Execute one run's notebook in a papermill subprocess (output notebook + log kept whatever happens)."""
    t0 = time.perf_counter()
    if not spec.notebook.exists():
        return Outcome(spec, "failed", 0.0, f"notebook {spec.notebook} missing")
    spec.output_notebook.parent.mkdir(parents=True, exist_ok=True)
    cmd = papermill_command(spec, job.kernel)
    with open(spec.log, "a" if job.attempt > 1 else "w") as log:
        if job.attempt > 1:
            log.write(f"\n--- attempt {job.attempt}: the previous attempt's worker was lost; the trainer resumes from "
                      f"{RunFolder(spec.run_dir).checkpoint_path} when it exists ---\n")
        log.write("$ " + " ".join(cmd[:6]) + (f"  (CUDA_VISIBLE_DEVICES={job.gpu})" if job.gpu is not None else "")
                  + "\n")
        log.flush()
        proc = subprocess.run([sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *cmd], stdout=log,
                              stderr=subprocess.STDOUT, env=job_environment(job.threads, job.gpu),
                              cwd=project_root(), pass_fds=job.keep_fds, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return Outcome(spec, "failed", seconds, error_from_log(spec.log))
    folder = RunFolder(spec.run_dir)
    if not folder.is_finished():
        return Outcome(spec, "failed", seconds, f"notebook finished but wrote no {folder.metrics_path}")
    return Outcome(spec, "ok", seconds)


def job_gpu(spec: RunSpec, gpus: Sequence[str] | None, worker_name: object, env: Mapping[str, str]) -> str | None:
    """The one GPU a run sees, or None (CPU run, explicit ``cuda:N``, or no GPU to choose from).

    Args:
        spec: the run (its ``train.device`` decides whether it uses a GPU at all). gpus: GPUs the client spread over its
        local workers (worker ``i`` takes ``gpus[i % len(gpus)]``). worker_name: the Dask worker's name (a local cluster
        numbers them 0, 1, ...). env: the worker's environment (dask-cuda workers list their own GPU first in
        ``CUDA_VISIBLE_DEVICES``).
    """
    if spec.config.train.device not in GPU_DEVICES:
        return None
    if gpus and isinstance(worker_name, int):
        return gpus[worker_name % len(gpus)]
    listed = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return listed[0] if listed else None


def job_threads(nthreads: int, env: Mapping[str, str]) -> int:
    """CPU threads of a run when neither the config nor the client says: this worker's cores over its concurrent
    runs (``nthreads`` task slots, times the dask-cuda workers sharing the machine: one per listed GPU)."""
    try:
        cores = len(os.sched_getaffinity(0))  # a SLURM job's allocation, not the whole node
    except AttributeError:
        cores = os.cpu_count() or 1
    sharing = max(1, len([g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]))
    return max(1, cores // (max(1, nthreads) * sharing))


def lock_path(spec: RunSpec) -> Path:
    """The run's claim file, beside its log (``<results_dir>/runs/<dataset>/<category>/<setting>.lock``)."""
    return spec.output_notebook.with_suffix(".lock")


def _write_claim(fd: int, record: dict[str, object]) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)


def _read_claim(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def claim_run(spec: RunSpec, log: Callable[[str], None] | None = None,
              poll_s: float = 0.5) -> Iterator[tuple[int, int]]:
    """Hold the run folder exclusively (``flock``; waits while another process holds it).

    The claim file records host, pid and attempt; an attempt that never marked itself done (its worker was lost)
    makes the next one ``attempt + 1``.

    Yields:
        ``(attempt, fd)``: pass ``fd`` to the run's subprocess so the claim lasts as long as any writer.
    """
    path = lock_path(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and log:
                    log(f"{spec.label}: waiting for the run-folder lock {path} (held by {_read_claim(fd)}: another "
                        f"study or an earlier attempt is writing {spec.run_dir}); the run is skipped if that one "
                        "finishes it")
                waited = True
                time.sleep(poll_s)
        previous = _read_claim(fd)
        attempt = int(previous.get("attempt", 0)) + 1 if previous and not previous.get("done") else 1
        record: dict[str, object] = {"attempt": attempt, "host": socket.gethostname(), "pid": os.getpid()}
        _write_claim(fd, record | {"done": False})
        yield attempt, fd
        _write_claim(fd, record | {"done": True})
    finally:
        os.close(fd)  # releases the lock unless a child still holds it


def _say(line: str) -> None:
    """Default ``log`` of a job: a line on stdout, flushed (a Dask worker's stdout reaches the study's terminal)."""
    print(line, flush=True)


def _same_root(a: str, b: str) -> bool:
    """Whether two ``data.root`` values name one folder ("" = the dataset's default location)."""
    if a == b:
        return True
    if not a or not b:
        return False
    return absolute(Path(a).expanduser()).resolve() == absolute(Path(b).expanduser()).resolve()


def run_folder_conflict(spec: RunSpec, force: bool = False) -> str | None:
    """Why ``spec`` must not write its run folder, or None.

    Two folder datasets with one category name share ``<results>/folder/<category>/<run>``; the run folder's
    ``config.json`` names the ``data.root`` it was made from. Replacing a finished run of another root would delete
    results the other dataset cannot get back, so it is refused unless ``force`` (FORCE=1) asks for it.

    Returns:
        The message (both roots, both ways out), or None when the folder is free, of this root, or ``force``.
    """
    if force:
        return None
    saved = saved_config(spec.run_dir)
    if saved is None or _same_root(saved.data.root, spec.config.data.root):
        return None
    return (f"{spec.run_dir} holds a run of data.root={saved.data.root or '(default)'}, this run reads "
            f"data.root={spec.config.data.root or '(default)'}: two datasets with the category name "
            f"'{spec.config.data.category}' share that folder. Not replacing it: give this study its own results "
            "tree (RESULTS=<folder>, --results-dir), or FORCE=1 (--force) to replace the other root's run")


def replaced_dir(run_dir: Path) -> Path:
    """Where a finished run waits while a job replaces it: ``<category>/.replaced/<run>``.

    One level deeper than run folders, so the results readers (``<results>/*/*/*/metrics.json``) never count it,
    and on the same file system, so setting it aside and putting it back are single renames.
    """
    return run_dir.parent / ".replaced" / run_dir.name


def _set_aside(run_dir: Path) -> bool:
    """Move a finished run (``metrics.json`` present) out of ``run_dir`` before it is replaced; whether one waits
    aside now (also one left by an attempt whose worker was lost: its replacement is still unfinished)."""
    aside = replaced_dir(run_dir)
    if RunFolder(run_dir).is_finished():
        if aside.exists():
            shutil.rmtree(aside)  # an older copy: the finished run in run_dir replaced it already
        aside.parent.mkdir(parents=True, exist_ok=True)
        os.replace(run_dir, aside)
    return aside.exists()


def _settle_aside(run_dir: Path, replaced_ok: bool, log: Callable[[str], None]) -> None:
    """After the job: drop the set-aside run once its replacement finished, else put it back in place."""
    aside = replaced_dir(run_dir)
    if not aside.exists():
        return
    if replaced_ok and RunFolder(run_dir).is_finished():
        shutil.rmtree(aside)
    else:
        if run_dir.exists():
            failed = aside.parent / f"{run_dir.name}.failed"
            shutil.rmtree(failed, ignore_errors=True)
            os.replace(run_dir, failed)  # one rename first, so the finished run goes back in one rename too
            shutil.rmtree(failed, ignore_errors=True)
        os.replace(aside, run_dir)
        log(f"{run_dir}: the replacement failed; the previous finished run was put back")
    try:
        aside.parent.rmdir()
    except OSError:
        pass  # other runs of the category are set aside too


def _worker_slots() -> tuple[object, int]:
    """(name, task slots) of the Dask worker running this task; (0, 1) outside a worker."""
    try:
        worker = get_worker()
    except ValueError:
        return 0, 1
    return worker.name, worker.state.nthreads


def run_job(spec: RunSpec, kernel: str = DEFAULT_KERNEL, threads: int | None = None,
            gpus: Sequence[str] | None = None, runner: Runner | None = None, force: bool = False,
            log: Callable[[str], None] | None = None) -> Outcome:
    """The Dask task of one run: pick its GPU and threads, claim its folder, execute it, never raise.

    Under the claim, before anything is written: a run that is finished now is skipped (a second study that waited
    for the lock while the first finished it; forced runs only when it finished during the wait), and a folder of
    another ``data.root`` is refused (:func:`run_folder_conflict`). A finished run that the job replaces (forced,
    or of another config) is set aside and deleted only after the new run finished (:func:`replaced_dir`).

    Args:
        spec: the run. kernel: Jupyter kernel name. threads: CPU threads per run decided by the client (None =
        :func:`job_threads` on the worker); the run's
            own ``train.threads`` wins.
        gpus: GPUs the client spread over its local workers (None = the worker's own ``CUDA_VISIBLE_DEVICES``).
        runner: replaces :func:`run_papermill` (tests). force: the study reruns finished runs (FORCE=1).
        log: progress lines (waiting for the lock, skipped, put back); default: stdout.

    Returns:
        The run's :class:`Outcome` with ``attempts`` (a failure is an outcome, not an exception: no retry).
    """
    say = log or _say
    name, slots = _worker_slots()
    job = Job(kernel=kernel, gpu=job_gpu(spec, gpus, name, os.environ),
              threads=spec.config.train.threads or threads or job_threads(slots, os.environ))
    t0 = time.perf_counter()
    finished_before = is_finished(spec)
    with claim_run(spec, log=say) as (attempt, fd):
        if is_finished(spec) and not (force and finished_before):
            say(f"{spec.label}: already finished by another process (a study into the same results tree) while "
                f"this one waited; skipped ({spec.run_dir})")
            return Outcome(spec, "skipped", time.perf_counter() - t0, attempts=attempt)
        conflict = run_folder_conflict(spec, force)
        if conflict:
            return Outcome(spec, "failed", time.perf_counter() - t0, conflict, attempts=attempt)
        try:
            _set_aside(spec.run_dir)
            out = (runner or run_papermill)(spec, replace(job, attempt=attempt, keep_fds=(fd,)))
        except Exception:  # noqa: BLE001 - recorded with its traceback; the other runs go on
            spec.log.parent.mkdir(parents=True, exist_ok=True)
            with open(spec.log, "a") as fh:
                fh.write(traceback.format_exc())
            out = Outcome(spec, "failed", time.perf_counter() - t0, error_from_log(spec.log))
        try:
            _settle_aside(spec.run_dir, out.status == "ok", say)
        except OSError as exc:  # the run's own outcome stands; the set-aside copy stays where the message says
            say(f"{spec.label}: could not settle {replaced_dir(spec.run_dir)}: {exc}")
    return replace(out, attempts=attempt)
