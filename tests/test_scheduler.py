"""scheduler.py / job.py: the study's runs as Dask tasks (issue 14).

Real runs (papermill over notebooks 03/04, 64 px, a few training images) on a 2-worker ``LocalCluster``: the same
metrics as the runs made one after the other; a worker killed mid-run (the run resumes from its checkpoint on
another worker, nothing else reruns); an existing scheduler at ``tcp://127.0.0.1:<port>``. With a stand-in runner
(in-process cluster): a run that raises, one GPU per concurrent run, missing extras, cluster files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

from avaga_lib import cli, plan
from avaga_lib.data import generate_dataset
from avaga_lib.io import read_json, write_json
from avaga_lib.orchestration import job, pipeline, scheduler
from avaga_lib.paths import project_root
from avaga_lib.reporting.results import collect_runs
from avaga_lib.reporting.tables import build_tables
from avaga_lib.training import demo

PARAMS = project_root() / "params" / "smoke.yaml"
TIMING_KEYS = ("time", "seconds", "wall", "per_s")  # metrics.json fields that measure speed, not the model


@pytest.fixture(scope="module")
def study_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two embedded categories, 8 training images each, 64 px."""
    return generate_dataset(tmp_path_factory.mktemp("dask_study") / "data", categories=["weave", "washer"],
                            n_train=8, n_test_good=4, n_test_bad=4, size=64)


def _plan(data: Path, results: Path, categories: str = "weave,washer", runs: str = "AVAGA-R_u,AVAGA-R_w",
          epochs: int = 1, device: str = "cpu") -> list[plan.RunSpec]:
    return plan.plan_runs(PARAMS, dataset="folder", root=str(data), categories=categories, runs=runs,
                              results_dir=results, overrides={"epochs": epochs, "image_size": 64, "device": device})


def _model_metrics(run_dir: Path) -> dict[str, Any]:
    metrics = read_json(run_dir / "metrics.json")
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMING_KEYS)}


def _quiet(line: str) -> None:
    pass


# ------------------------------------------------------------------------------------------------ real runs


@pytest.mark.slow
def test_local_cluster_gives_the_sequential_metrics(study_data: Path, tmp_path: Path) -> None:
    specs = _plan(study_data, tmp_path / "dask")
    assert len(specs) == 4  # 2 categories x 2 runs
    summary = pipeline.execute(specs, jobs=2, log=_quiet, progress=False)
    assert summary.exit_code == 0 and len(summary.by_status("ok")) == 4, summary.text()
    for s in _plan(study_data, tmp_path / "sequential"):  # the same runs, one after the other, in this process
        demo.run_inline(s, figures=False)
    for s in specs:
        sequential = tmp_path / "sequential" / s.run_dir.relative_to(tmp_path / "dask")
        assert _model_metrics(s.run_dir) == _model_metrics(sequential), s.label


def _kill_worker_after_checkpoint(spec: plan.RunSpec, killed: list[int], timeout_s: float = 300) -> None:
    """SIGKILL the Dask worker running ``spec`` once its first checkpoint is on disk."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not (spec.run_dir / "checkpoint.pt").exists():
        time.sleep(0.02)
    claim = json.loads(job.lock_path(spec).read_text())
    os.kill(int(claim["pid"]), signal.SIGKILL)
    killed.append(int(claim["pid"]))


@pytest.mark.slow
def test_killed_worker_run_resumes_from_its_checkpoint(study_data: Path, tmp_path: Path) -> None:
    specs = _plan(study_data, tmp_path / "results", runs="AVAGA-R_u", epochs=3)
    victim, other = specs
    killed: list[int] = []
    killer = threading.Thread(target=_kill_worker_after_checkpoint, args=(victim, killed), daemon=True)
    killer.start()
    summary = pipeline.execute(specs, jobs=2, log=_quiet, progress=False)
    killer.join(timeout=10)
    assert killed, "the worker was never killed"
    assert summary.exit_code == 0, summary.text()
    outcome = {o.spec.label: o for o in summary.outcomes}
    assert outcome[victim.label].attempts == 2 and outcome[other.label].attempts == 1
    log = victim.log.read_text()
    assert "--- attempt 2" in log and "resumed from epoch" in log  # the retry resumed, not restarted
    assert "resumed from epoch" in " ".join(read_json(victim.run_dir / "metrics.json")["notes"])
    assert other.log.read_text().count("$ ") == 1 and "attempt 2" not in other.log.read_text()  # ran once
    assert "resumed from their checkpoint after a lost worker" in summary.text()
    runs = collect_runs(tmp_path / "results")
    assert sorted(runs["category"]) == ["washer", "weave"] and (runs["epochs"] == 3).all()
    assert build_tables(runs)  # the tables are complete


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_existing_scheduler_over_tcp(study_data: Path, tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(project_root()))
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"], env=env, stderr=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--host",
                                       "127.0.0.1", "--nthreads", "1", "--no-dashboard"], env=env,
                                      stderr=subprocess.DEVNULL))
        specs = _plan(study_data, tmp_path / "results", categories="weave", runs="AVAGA-R_u")
        summary = pipeline.execute(specs, cluster=address, log=_quiet, progress=False)
        assert summary.exit_code == 0, summary.text()
        assert (specs[0].run_dir / "metrics.json").exists()
        claim = json.loads(job.lock_path(specs[0]).read_text())
        assert claim["pid"] not in (os.getpid(), procs[0].pid)  # executed by the worker the test started
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


# ---------------------------------------------------------------------------------- stand-in runners, no GPU


class Recorder:
    """Fake run: records (label, gpu, threads, start, end) in a JSON-lines file; raises for category 'bad'."""

    def __init__(self, record: Path, sleep_s: float = 0.0) -> None:
        self.record, self.sleep_s = record, sleep_s

    def rows(self) -> list[dict[str, Any]]:
        return [json.loads(ln) for ln in self.record.read_text().splitlines()] if self.record.exists() else []

    def __call__(self, spec: plan.RunSpec, run: job.Job) -> job.Outcome:
        start = time.monotonic()
        if spec.config.data.category == "bad":
            with open(self.record, "a") as fh:
                fh.write(json.dumps({"label": spec.label, "gpu": run.gpu, "start": start, "end": start}) + "\n")
            raise RuntimeError(f"loss is NaN in {spec.label}")
        time.sleep(self.sleep_s)
        write_json(spec.run_dir / "config.json", spec.config.to_dict())
        write_json(spec.run_dir / "metrics.json", {"iou": 0.5})
        with open(self.record, "a") as fh:
            fh.write(json.dumps({"label": spec.label, "gpu": run.gpu, "threads": run.threads, "start": start,
                                 "end": time.monotonic()}) + "\n")
        return job.Outcome(spec, "ok", time.monotonic() - start)


def _folder_plan(tmp_path: Path, categories: str, device: str = "cpu") -> list[plan.RunSpec]:
    return plan.plan_runs(PARAMS, dataset="folder", root=str(tmp_path / "data"), categories=categories,
                              runs="AVAGA-R_u", results_dir=tmp_path / "res", overrides={"device": device})


def test_a_run_that_raises_is_reported_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "prepare_data", lambda specs: {})
    runner = Recorder(tmp_path / "calls.jsonl")
    specs = _folder_plan(tmp_path, "bad,good")
    summary = pipeline.execute(specs, jobs=2, runner=runner, log=_quiet, progress=False)
    assert summary.exit_code == 1
    [failed] = summary.failed
    assert failed.spec.label == "folder/bad/AVAGA-R_u-seed0" and failed.attempts == 1
    assert failed.error == "RuntimeError: loss is NaN in folder/bad/AVAGA-R_u-seed0"
    assert "Traceback" in failed.spec.log.read_text()  # the log holds the traceback
    assert f"log: {failed.spec.log}" in summary.text()
    assert sorted(r["label"] for r in runner.rows()) == [s.label for s in specs]  # each ran once: no retry
    assert summary.by_status("ok")[0].spec.config.data.category == "good"  # the other went on


def test_each_concurrent_run_sees_its_own_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15 row 1: with several GPUs visible, `make -j 8` never puts two runs on one GPU."""
    import torch

    monkeypatch.setattr(pipeline, "prepare_data", lambda specs: {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6")
    runner = Recorder(tmp_path / "calls.jsonl", sleep_s=0.3)
    specs = _folder_plan(tmp_path, "a,b,c,d,e,f", device="auto")
    summary = pipeline.execute(specs, jobs=8, runner=runner, log=_quiet, progress=False)
    assert summary.exit_code == 0
    rows = runner.rows()
    assert {r["gpu"] for r in rows} == {"4", "5", "6"}  # 3 workers (not 8), one GPU each
    for a in rows:
        for b in rows:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["gpu"] != b["gpu"], (a, b)
    assert all(r["threads"] == 1 for r in rows)  # smoke runs keep train.threads = 1
    cpu = _folder_plan(tmp_path, "a", device="cpu")[0]
    assert job.job_gpu(cpu, ["4", "5"], 1, {}) is None  # a CPU run is never pinned
    assert job.job_gpu(specs[0], None, "tcp-worker", {"CUDA_VISIBLE_DEVICES": "2,3,0,1"}) == "2"  # dask-cuda


def _peak_per_gpu(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Most runs that were running at once on each GPU (counted at each run's start)."""
    return {g: max(sum(1 for b in rows if b["gpu"] == g and b["start"] <= a["start"] < b["end"])
                   for a in rows if a["gpu"] == g) for g in {r["gpu"] for r in rows}}


def test_k_runs_share_each_gpu_and_each_run_sees_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Several runs per GPU: 2 GPUs, runs_per_gpu=3, `-j 8` -> 6 runs at a time, 3 on each GPU, never more, and
    every run's CUDA_VISIBLE_DEVICES names exactly one of the two."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,7")
    runner = Recorder(tmp_path / "calls.jsonl", sleep_s=0.6)
    specs = _folder_plan(tmp_path, ",".join("abcdefghijkl"), device="auto")
    lines: list[str] = []
    outcomes = scheduler.run_all(specs, scheduler.ClusterChoice("local"), jobs=8, runner=runner, log=lines.append,
                                 progress=False, runs_per_gpu=3)
    assert [o.status for o in outcomes] == ["ok"] * 12
    rows = runner.rows()
    assert sorted(r["gpu"] for r in rows) == ["2"] * 6 + ["7"] * 6  # one device each, spread evenly
    assert "dask: 2 GPU(s) visible: 6 runs at a time, up to 3 per GPU (asked for 8)" in lines
    assert _peak_per_gpu(rows) == {"2": 3, "7": 3}  # k runs share a GPU, and never more than k
    assert scheduler.local_layout(jobs=8, gpus=["0", "1"], cores=16, runs_per_gpu=3) == (6, 2)
    assert scheduler.local_layout(jobs=4, gpus=["0", "1"], cores=16, runs_per_gpu=3) == (4, 4)  # -j still caps
    assert scheduler.local_layout(jobs=8, gpus=[], cores=16, runs_per_gpu=3) == (8, 2)  # CPU runs: -j alone


def test_runs_per_gpu_is_checked_before_anything_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in (0, -2, 1.5, True):
        with pytest.raises(scheduler.ClusterError, match="runs per GPU must be a whole number >= 1"):
            with scheduler.open_session(scheduler.ClusterChoice("local"), runs_per_gpu=bad, log=_quiet,
                                        in_process=True):
                pytest.fail("a session started")


def test_cuda_cluster_gives_each_gpu_worker_k_run_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CLUSTER=cuda: dask-cuda's one worker per GPU gets runs_per_gpu task slots, and each run cores / (GPUs x k)
    threads (a stand-in for dask_cuda, not installed here: two in-process workers, as two GPUs would give)."""
    from distributed import LocalCluster

    asked: dict[str, Any] = {}

    def local_cuda_cluster(**kwargs: Any) -> LocalCluster:
        asked.update(kwargs)
        return LocalCluster(n_workers=2, threads_per_worker=kwargs["threads_per_worker"], processes=False,
                            dashboard_address=kwargs["dashboard_address"])

    stand_in = types.ModuleType("dask_cuda")
    stand_in.LocalCUDACluster = local_cuda_cluster  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_cuda", stand_in)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    lines: list[str] = []
    with scheduler.open_session(scheduler.ClusterChoice("cuda"), log=lines.append, runs_per_gpu=3) as session:
        slots = sorted(session.client.nthreads().values())
    assert asked["threads_per_worker"] == 3 and slots == [3, 3]
    assert session.threads == 16 // 6
    assert "dask: LocalCUDACluster, 2 worker(s), one GPU each, 3 run(s) at a time per GPU" in lines
    gpu_run = _folder_plan(tmp_path, "a", device="auto")[0]
    assert job.job_gpu(gpu_run, None, "cuda-worker-1", {"CUDA_VISIBLE_DEVICES": "1,0"}) == "1"  # each slot's run


def test_job_environment_and_layout() -> None:
    env = job.job_environment(3, "1", base={"PATH": "/bin", "OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": "65536"})
    assert "MALLOC_TRIM_THRESHOLD_" not in env  # Dask's worker setting slows PyTorch on CPU 1.5x: never the run's
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OPENBLAS_NUM_THREADS": "3",
                   "AVAGA_NUM_THREADS": "3", "CUDA_VISIBLE_DEVICES": "1"}
    assert scheduler.local_layout(jobs=2, gpus=[], cores=2) == (2, 1)  # as make -j2 on this machine
    assert scheduler.local_layout(jobs=16, gpus=["0", "1"], cores=32) == (2, 16)
    assert scheduler.eta_seconds([], remaining=4, slots=2) is None
    assert scheduler.eta_seconds([10.0, 30.0], remaining=4, slots=2) == 40.0


def test_claim_waits_for_the_holder_and_counts_attempts(tmp_path: Path) -> None:
    spec = _folder_plan(tmp_path, "a")[0]
    order: list[str] = []

    def second() -> None:
        with job.claim_run(spec, poll_s=0.01) as (attempt, _fd):
            order.append(f"second {attempt}")

    with job.claim_run(spec) as (attempt, _fd):
        assert attempt == 1
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.3)
        order.append("first done")
    other.join(timeout=5)
    assert order == ["first done", "second 1"]  # never two holders; the first finished cleanly: attempt 1 again


def test_missing_extra_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # not installed
    argv = ["pipeline", "--dataset", "folder", "--root", str(tmp_path), "--categories", "a", "--runs",
            "AVAGA-R_u", "--results-dir", str(tmp_path / "res"), "--cluster", "cuda"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install avaga_lib[cuda]" in err and "dask-cuda" in err
    assert not (tmp_path / "res").exists()  # nothing ran


def test_cluster_values_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert scheduler.parse_cluster(None).kind == scheduler.parse_cluster("local").kind == "local"
    assert scheduler.parse_cluster("tcp://10.0.0.1:8786").address == "tcp://10.0.0.1:8786"
    with pytest.raises(scheduler.ClusterError, match="CLUSTER=kubernetes not understood"):
        scheduler.parse_cluster("kubernetes")
    with pytest.raises(scheduler.ClusterError, match="not found; copy cluster/slurm.yaml"):
        scheduler.parse_cluster(str(tmp_path / "mine.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: slurm\nworkers: 2\ncores: 8\n")
    with pytest.raises(scheduler.ClusterError, match=r"bad.yaml: unknown key\(s\) \['cores'\].*under 'job'"):
        scheduler.parse_cluster(str(bad))
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(scheduler.ClusterError, match=r"pip install avaga_lib\[cluster\]"):
        scheduler.parse_cluster("slurm")  # the shipped example is valid; only the extra is missing


def test_dashboard_binds_this_machine_only_unless_asked() -> None:
    """Issue 22: the dashboard (no login, shows paths and logs) listened on 0.0.0.0 while the log said 127.0.0.1."""
    lines: list[str] = []
    with scheduler.open_session(scheduler.ClusterChoice("local"), jobs=1, log=lines.append, in_process=True) as s:
        bound = [sock.getsockname()[0] for sock in s.client.cluster.scheduler.http_server._sockets.values()]
        link = s.dashboard
    assert bound == ["127.0.0.1"]  # whatever port: 8787 may be taken by another study on this machine
    assert link.startswith("http://127.0.0.1:") and any(f"dask: dashboard {link}" == line for line in lines)
    assert scheduler.DASHBOARD == "127.0.0.1:8787" and cli.parse_args(["pipeline"]).dashboard == scheduler.DASHBOARD
    with scheduler.open_session(scheduler.ClusterChoice("local"), jobs=1, log=lines.append, in_process=True,
                                dashboard=":0") as s:  # asked for every interface: said so
        assert "(every interface)" in s.dashboard


def test_log_names_the_threads_the_runs_use() -> None:
    """The smoke and cpu profiles pin one thread per run (train.threads wins in job.run_job): the session line says
    1, not the local cluster's share (cores // workers: 2 with one worker on a 2-core machine)."""
    specs = plan.plan_runs(project_root() / "params" / "cpu.yaml")
    assert scheduler.pinned_threads(specs) == 1
    paper = plan.plan_runs(project_root() / "params" / "cpu.yaml", profile="paper")  # threads: torch's default
    assert scheduler.pinned_threads(paper) == 0 and scheduler.pinned_threads([*specs, *paper]) == 0
    lines: list[str] = []
    with scheduler.open_session(scheduler.ClusterChoice("local"), jobs=1, log=lines.append, in_process=True,
                                pinned=scheduler.pinned_threads(specs)):
        pass
    assert any("1 CPU thread(s) per run (train.threads)" in line for line in lines), lines
