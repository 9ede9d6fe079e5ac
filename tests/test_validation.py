"""A study is checked before any worker starts (issue 22): data root and layout, categories, seeds, RESULTS writable
and large enough, the cluster's extra and submit command; one message, exit 2, nothing written.

No test trains: every failure here happens before :func:`avaga_lib.orchestration.pipeline.execute`, which the fixture
``no_start`` replaces by a tripwire. The SLURM paths use a stand-in ``dask_jobqueue`` module and a fake ``sbatch``
on a PATH of their own (this machine has neither).
"""

from __future__ import annotations

import os
import shutil
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from avaga_lib import cli, plan
from avaga_lib.config import make_config
from avaga_lib.io import write_json
from avaga_lib.models.autoencoder.model import BergmannAE
from avaga_lib.orchestration import pipeline, preflight, scheduler
from avaga_lib.paths import project_root

PARAMS = project_root() / "params" / "smoke.yaml"


def _png(path: Path, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (90, 90, 90)).save(path)


@pytest.fixture
def folder_data(tmp_path: Path) -> Path:
    """A minimal MVTec-layout root with one category, weave (2 train, 1 good + 1 anomalous test image, its mask)."""
    root = tmp_path / "data"
    for f in ("train/good/000.png", "train/good/001.png", "test/good/000.png", "test/crack/000.png",
              "ground_truth/crack/000_mask.png"):
        _png(root / "weave" / f)
    return root


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the study gets as far as executing (Dask cluster, stub logs, run folders)."""
    def tripwire(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the study started although its input is bad")

    monkeypatch.setattr(pipeline, "execute", tripwire)
    monkeypatch.setattr(scheduler, "open_session", tripwire)


def _pipeline(*args: str, results: Path, data: Path | None = None, dataset: str = "folder") -> list[str]:
    root = ["--root", str(data)] if data is not None else []
    return ["pipeline", "--params", str(PARAMS), "--dataset", dataset, *root, "--runs", "AE-L2",
            "--results-dir", str(results), *args]


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- the data


def test_missing_mvtec_root_names_download_mvtec(tmp_path: Path, no_start: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    argv = _pipeline("--categories", "bottle,cable", results=tmp_path / "res", data=tmp_path / "missing",
                     dataset="mvtec")
    assert cli.main(argv) == 2
    err = _err(capsys)
    assert f"ROOT={tmp_path / 'missing'} does not exist" in err and "download-mvtec" in err
    assert err.count("ROOT=") == 2 and "FAILED" not in err  # one problem (with its fix), not one per run
    assert "nothing was started or written" in err
    assert not (tmp_path / "res").exists()
    # MVTec has no default location: no ROOT at all is the same message's other half
    assert cli.main(_pipeline("--categories", "bottle", results=tmp_path / "res", dataset="mvtec")) == 2
    assert "DATASET=mvtec needs ROOT=" in _err(capsys)


def test_unknown_category_is_named_before_dask(tmp_path: Path, folder_data: Path, no_start: None,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    argv = _pipeline("--categories", "weave,nosuchcategory", results=tmp_path / "res", data=folder_data)
    assert cli.main(argv) == 2
    err = _err(capsys)
    assert f"CATEGORIES: nosuchcategory not in {folder_data} (categories there: weave)" in err
    assert not (tmp_path / "res").exists()
    # the embedded set is generated on first use: its category names are known without it
    check = preflight.check_study(plan.plan_runs(PARAMS, categories="weave,nosuchcategory", runs="AE-L2",
                                                    results_dir=tmp_path / "res"), tmp_path / "res")
    assert any("nosuchcategory not in" in p for p in check.problems)


def test_bad_layout_is_named(tmp_path: Path, folder_data: Path, no_start: None,
                             capsys: pytest.CaptureFixture[str]) -> None:
    (folder_data / "weave" / "test" / "crack" / "000.png").rename(folder_data / "weave" / "stray.png")
    for p in sorted((folder_data / "weave" / "test").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (folder_data / "weave" / "test").rmdir()
    assert cli.main(_pipeline("--categories", "weave", results=tmp_path / "res", data=folder_data)) == 2
    err = _err(capsys)
    assert "unknown layout" in err and "test" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(_pipeline("--categories", "weave", results=tmp_path / "res", data=empty)) == 2
    assert "holds no <category>/train/good folder" in _err(capsys)


# ------------------------------------------------------------------------------------------------------ seeds


@pytest.mark.parametrize("seeds", ["-1", "abc", "1.5", "0,-2"])
def test_seeds_must_be_non_negative_whole_numbers(seeds: str, tmp_path: Path, folder_data: Path, no_start: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = _pipeline("--categories", "weave", "--seeds", seeds, results=tmp_path / "res", data=folder_data)
    assert cli.main(argv) == 2  # before: -1 planned AE-L2-seed-1, abc ended in a ValueError traceback
    err = _err(capsys)
    assert "SEEDS=" in err and "seeds must be whole numbers from 0" in err and "Traceback" not in err
    assert not (tmp_path / "res").exists()


def test_seeds_of_a_params_file_are_checked_too(tmp_path: Path) -> None:
    params = tmp_path / "p.yaml"
    params.write_text("dataset: embedded\nprofile: smoke\ncategories: [weave]\nseeds: [0, -1]\n")
    with pytest.raises(plan.PipelineError, match=r"p.yaml: seeds='-1'"):
        plan.plan_runs(params)
    assert [s.config.train.seed for s in plan.plan_runs(PARAMS, runs="AE-L2", categories="weave",
                                                            seeds="0, 7")] == [0, 7]


# ---------------------------------------------------------------------------------------------------- RESULTS


def test_results_under_a_file_is_refused(tmp_path: Path, folder_data: Path, no_start: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    argv = _pipeline("--categories", "weave", results=blocker / "results", data=folder_data)
    assert cli.main(argv) == 2  # before: the cluster started, then an OSError traceback from summary.json
    err = _err(capsys)
    assert f"{blocker} is a file, not a folder" in err and "RESULTS=" in err
    assert blocker.read_text() == "not a folder"


def test_too_little_disk_shows_the_checkpoint_estimate(tmp_path: Path, folder_data: Path, no_start: None,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    usage = pipeline.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: usage._replace(free=50_000_000))
    argv = _pipeline("--categories", "weave", results=tmp_path / "res", data=folder_data)
    argv[argv.index("AE-L2")] = "AVAGA-R_u,AE-L2"
    assert cli.main(argv) == 2
    err = _err(capsys)
    assert "has 50.0 MB free but the 2 run(s) to do write ~" in err
    assert "8.9 MB (AE-L2) to 345 MB (AVAGA-R_u) each" in err and "Adam moments" in err
    assert not (tmp_path / "res").exists()


def test_checkpoint_estimate_matches_a_saved_checkpoint(tmp_path: Path) -> None:
    cfg = make_config("smoke", {"method": "ae_l2", "data.image_size": 64})
    model = BergmannAE(64)
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 3, 64, 64)).mean().backward()
    opt.step()  # Adam's moments exist after the first step, as in every saved checkpoint
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": model.state_dict(), "opt_g": opt.state_dict()}, path)
    assert abs(preflight.checkpoint_bytes(cfg) - path.stat().st_size) < 0.02 * path.stat().st_size
    # the measurement: a 64 px smoke AVAGA-R checkpoint is 345 MB
    assert 340e6 < preflight.checkpoint_bytes(make_config("smoke", {"data.image_size": 64})) < 350e6


def test_a_good_study_passes_and_reports_its_estimate(tmp_path: Path, folder_data: Path) -> None:
    specs = plan.plan_runs(PARAMS, dataset="folder", root=str(folder_data), categories="weave",
                               runs="AE-L2", results_dir=tmp_path / "res")
    check = preflight.check_study(specs, tmp_path / "res", scheduler.parse_cluster(None))
    assert check.problems == []
    assert "1 run(s) to do write ~17.8 MB of checkpoints" in check.notes[0] and "free at" in check.notes[0]
    assert not (tmp_path / "res").exists()  # checking writes nothing
    # a finished run needs neither its data nor disk: a study that only skips is never refused
    write_json(specs[0].run_dir / "config.json", specs[0].config.to_dict())
    write_json(specs[0].run_dir / "metrics.json", {"iou": 0.5})
    shutil.rmtree(folder_data)
    assert plan.is_finished(specs[0]) and preflight.check_study(specs, tmp_path / "res").problems == []
    assert preflight.check_study(specs, tmp_path / "res", force=True).problems  # FORCE reruns it: data needed


# ---------------------------------------------------------------------------------------------------- clusters


class FakeJob:
    """Stands in for ``dask_jobqueue.SLURMJob``: creates its log directory like the real one, renders a script."""

    def __init__(self, scheduler: str, name: str | None = None, log_directory: str | None = None,
                 **kwargs: Any) -> None:
        assert not set(kwargs) & set(scheduler_only := ("n_workers", "scheduler_options")), scheduler_only
        if log_directory is not None:
            os.makedirs(log_directory, exist_ok=True)
        self.lines = ["#!/usr/bin/env bash", f"#SBATCH -J {name}", f"#SBATCH -p {kwargs.get('queue')}"]
        if log_directory is not None:
            self.lines.append(f"#SBATCH -e {log_directory}/{name}-%J.err")
        self.lines.append(f"{kwargs.get('python', 'python')} -m distributed.cli.dask_worker {scheduler} "
                          + " ".join(kwargs.get("worker_extra_args", [])))

    def job_script(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
def fake_jobqueue(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("dask_jobqueue")
    module.SLURMCluster = type("SLURMCluster", (), {"job_cls": FakeJob})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "dask_jobqueue", module)


def _path_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sbatch: bool) -> None:
    """PATH = one folder of our own, holding an executable ``sbatch`` or not."""
    bin_dir = tmp_path / ("bin_sbatch" if sbatch else "bin_empty")
    bin_dir.mkdir()
    if sbatch:
        (bin_dir / "sbatch").write_text("#!/bin/sh\necho 'Submitted batch job 1'\n")
        (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))


def _cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(f"kind: slurm\nworkers: 2\njob:\n  queue: gpu\n  cores: 4\n  memory: 8GB\n"
                    f"  python: /site/venv/bin/python\n  log_directory: {tmp_path / 'slurm_logs'}\n"
                    "  scheduler_options:\n    dashboard_address: ':8787'\n")
    return path


def test_slurm_without_sbatch_is_one_clear_error(tmp_path: Path, folder_data: Path, fake_jobqueue: None,
                                                 no_start: None, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _path_with(tmp_path, monkeypatch, sbatch=False)
    argv = _pipeline("--categories", "weave", "--cluster", "slurm", results=tmp_path / "res", data=folder_data)
    assert cli.main(argv) == 2  # before: "8 job(s) submitted", 405 lines of tracebacks, then waiting forever
    err = _err(capsys)
    assert "submits its workers with `sbatch`, which is not on PATH" in err and "CLUSTER=local" in err
    assert len(err.strip().splitlines()) == 2  # the problem with its fix, and "nothing was started or written"
    assert not (tmp_path / "res").exists()
    # the check itself, as execute makes it before any folder is touched: missing, then present
    choice = scheduler.parse_cluster("slurm")
    with pytest.raises(scheduler.ClusterError, match="sbatch"):
        scheduler.check_submitter(choice)
    _path_with(tmp_path, monkeypatch, sbatch=True)
    scheduler.check_submitter(choice)


def test_dry_run_prints_the_job_script_and_writes_nothing(tmp_path: Path, folder_data: Path, fake_jobqueue: None,
                                                          no_start: None, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _path_with(tmp_path, monkeypatch, sbatch=True)
    cluster = _cluster_file(tmp_path)
    argv = _pipeline("--categories", "weave", "--cluster", str(cluster), "--dry-run", results=tmp_path / "res",
                     data=folder_data)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "folder/weave/AE-L2-seed0" in out and "submitted with this script (`sbatch`" in out
    assert "#SBATCH -p gpu" in out and f"#SBATCH -e {tmp_path / 'slurm_logs'}/dummy-name-%J.err" in out
    assert "/site/venv/bin/python -m distributed.cli.dask_worker tcp://<scheduler-address>:8786 --resources run=1" \
        in out
    assert not (tmp_path / "slurm_logs").exists() and not (tmp_path / "res").exists()
    # the shipped example renders too (its scheduler_options are the cluster's, not the job's)
    assert "#SBATCH -p gpu" in scheduler.job_script(scheduler.parse_cluster("slurm"))


def test_dry_run_checks_the_extra_and_the_study(tmp_path: Path, folder_data: Path, no_start: None,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # not installed
    argv = _pipeline("--categories", "weave", "--cluster", "slurm", "--dry-run", results=tmp_path / "res",
                     data=folder_data)
    assert cli.main(argv) == 2  # before: --dry-run printed the plan and exited 0 without looking at the cluster
    assert "pip install avaga_lib[cluster]" in _err(capsys)
    argv = _pipeline("--categories", "nosuchcategory", "--dry-run", results=tmp_path / "res", data=folder_data)
    assert cli.main(argv) == 2  # a dry run shows the plan, then what would stop the study
    captured = capsys.readouterr()
    assert "folder/nosuchcategory/AE-L2-seed0" in captured.out and "CATEGORIES: nosuchcategory" in captured.err


def test_real_dask_jobqueue_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("dask_jobqueue")
    script = scheduler.job_script(scheduler.parse_cluster(str(_cluster_file(tmp_path))))
    assert script.startswith("#!/usr/bin/env bash") and "#SBATCH -p gpu" in script
    assert f"{tmp_path / 'slurm_logs'}/" in script and "--resources run=1" in script
    assert not (tmp_path / "slurm_logs").exists()
