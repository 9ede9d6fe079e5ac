"""pipeline.py: planning from params files, skip-when-finished, FORCE, failures recorded, and one tiny real run.

The real run (papermill over notebooks 03/04 on a generated 2-category folder, one of them corrupted) is built once
per session by :func:`smoke_tree` and shared with ``test_browser.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import papermill
import pytest
import yaml

from avaga_lib import cli, plan, study
from avaga_lib.config import config_hash
from avaga_lib.io import write_json
from avaga_lib.orchestration import job, pipeline, preflight
from avaga_lib.orchestration.job import error_from_log
from avaga_lib.paths import project_root

PARAMS = project_root() / "params"


# ---------------------------------------------------------------------------------------------------- planning


def test_plan_smoke_default() -> None:
    specs = plan.plan_runs(PARAMS / "smoke.yaml")
    assert len(specs) == 3 * 8  # 3 embedded categories x (R_u, R_w, 4 ablations, 2 baselines)
    names = {s.config.run_id for s in specs if s.config.data.category == "weave"}
    assert names == {"AVAGA-R_u-seed0", "AVAGA-R_w-seed0", "AVAGA-R_u-noattn-seed0", "AVAGA-R_u-flat-seed0",
                     "AVAGA-R_w-noadv-seed0", "AVAGA-R_w-noSGB-seed0", "AE-L2-seed0", "AE-SSIM-seed0"}
    by = {s.config.run_id: s for s in specs if s.config.data.category == "granite"}
    assert by["AVAGA-R_w-noSGB-seed0"].config.train.setting == "weak"
    assert by["AVAGA-R_w-noSGB-seed0"].config.loss.sgb is False
    assert by["AVAGA-R_w-noSGB-seed0"].notebook.name == "04_train_weakly_supervised.ipynb"
    assert by["AE-SSIM-seed0"].config.method == "ae_ssim"
    assert by["AE-SSIM-seed0"].notebook.name == "03_train_unsupervised.ipynb"
    assert by["AVAGA-R_u-flat-seed0"].config.model.latent == "flat"
    s = by["AVAGA-R_u-seed0"]
    assert s.config.profile == "smoke" and s.config.data.dataset == "embedded"
    assert s.output_notebook == project_root() / "results/runs/embedded/granite/AVAGA-R_u-seed0.ipynb"
    assert s.run_dir == project_root() / "results/embedded/granite/AVAGA-R_u-seed0"
    # every parameter the config depends on is explicit (no reliance on notebook defaults)
    assert {"epochs", "image_size", "seed", "results_dir", "category", "dataset", "root"} <= set(s.parameters)
    assert s.parameters["epochs"] == s.config.train.epochs
    assert s.parameters["run"] == "AVAGA-R_u" and by["AE-SSIM-seed0"].parameters["run"] == "AE-SSIM"
    # parallel workers start on different categories
    assert [x.config.data.category for x in specs[:3]] == ["weave", "granite", "washer"]
    # the registry minus the D variants, the remedies (issue 13) and the arms (issue 21): the smoke plan is the same
    # 8 runs per category as before the arms existed, in registry order
    assert list(dict.fromkeys(x.name for x in specs)) == [n for n in study.names() if "-D_" not in n
                                                          and n not in study.REMEDIES and n not in study.ARMS]
    assert list(dict.fromkeys(x.name for x in specs)) == ["AVAGA-R_u", "AVAGA-R_w", "AVAGA-R_u-noattn",
                                                          "AVAGA-R_u-flat", "AVAGA-R_w-noadv", "AVAGA-R_w-noSGB",
                                                          "AE-L2", "AE-SSIM"]


def test_params_file_selects_runs_by_name_or_group(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"dataset": "embedded", "profile": "smoke", "categories": ["weave"],
                                 "runs": "baselines, AVAGA-R_w"}))
    assert [s.name for s in plan.plan_runs(f)] == ["AVAGA-R_w", "AE-L2", "AE-SSIM"]
    with pytest.raises(plan.PipelineError, match="RUNS=.*AVAGA-R_u"):
        plan.plan_runs(f, runs="AVAGA-R_u")  # not among the file's runs


def test_adding_an_ablation_is_one_registry_entry(tmp_path: Path) -> None:
    """Copy the package, add one StudyRun to study.py, plan it: right notebook, config and run folder."""
    pkg = tmp_path / "avaga_lib"
    shutil.copytree(project_root() / "avaga_lib", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    src = (pkg / "study.py").read_text()
    entry = ('    StudyRun("AVAGA-R_u-noKL", "ablations", {**_U, "loss.w_kl": 0.0}),  # the new ablation\n'
             ")  # fmt: skip")
    (pkg / "study.py").write_text(src.replace(")  # fmt: skip", entry, 1))
    code = (f"from avaga_lib import plan; s = plan.plan_runs({str(PARAMS / 'smoke.yaml')!r}, "
            "categories='weave', runs='ablations'); r = s[-1]; "
            "print(len(s), r.notebook.name, r.config.loss.w_kl, r.run_dir.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"})
    assert out.stdout.split() == ["5", "03_train_unsupervised.ipynb", "0.0", "AVAGA-R_u-noKL-seed0"]


def test_plan_narrowing_and_paper_profile(tmp_path: Path) -> None:
    specs = plan.plan_runs(PARAMS / "paper_mvtec.yaml", root=str(tmp_path), categories="bottle, carpet",
                               runs="main,AE-L2", seeds="0,1")
    assert len(specs) == 2 * 5 * 2  # categories x (R_u, R_w, D_u, D_w, AE-L2) x seeds
    assert {s.config.train.epochs for s in specs} == {150} and {s.config.data.image_size for s in specs} == {256}
    assert {s.config.train.seed for s in specs} == {0, 1}
    assert {s.config.model.variant for s in specs if s.name.startswith("AVAGA")} == {"R", "D"}
    full = plan.plan_runs(PARAMS / "paper_mvtec.yaml", root=str(tmp_path))
    assert len(full) == 15 * len(study.RUNS) * 3  # null = every run of the registry (remedies included)
    smoke = plan.plan_runs(PARAMS / "paper_mvtec.yaml", root=str(tmp_path), profile="smoke", seeds=[0],
                               overrides={"epochs": 1})
    assert {s.config.train.epochs for s in smoke} == {1} and {s.config.profile for s in smoke} == {"smoke"}


def test_plan_dataset_switch_and_folder_discovery(tmp_path: Path) -> None:
    for cat in ("a", "b"):
        (tmp_path / cat / "train" / "good").mkdir(parents=True)
    (tmp_path / "not_a_category").mkdir()
    specs = plan.plan_runs(None, dataset="folder", root=str(tmp_path), runs="AVAGA-R_u")
    assert [s.config.data.category for s in specs] == ["a", "b"]
    stc = plan.plan_runs(None, dataset="stc", root=str(tmp_path), runs="AVAGA-R_u", seeds="0")
    assert len(stc) == 13 and stc[0].config.data.category == "01"
    assert plan.default_params_file("mvtec").name == "paper_mvtec.yaml"
    assert plan.default_params_file(None, "cpu").name == "cpu.yaml", "make reproduce PROFILE=cpu: the cpu study"
    assert plan.default_params_file("embedded").name == "smoke.yaml"


def test_plan_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(plan.PipelineError, match="RUNS=.*nope.*known"):
        plan.plan_runs(PARAMS / "smoke.yaml", runs="nope")
    with pytest.raises(plan.PipelineError, match="not found"):
        plan.plan_runs(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"dataset": "embedded", "profile": "smoke", "runs": ["AVAGA-R_u", "AVAGA-X"]}))
    with pytest.raises(plan.PipelineError, match=r"bad.yaml: runs: \['AVAGA-X'\] not in"):
        plan.plan_runs(bad)
    old_schema = tmp_path / "old.yaml"  # runs are declared in the registry, not in params files
    old_schema.write_text(yaml.safe_dump({"dataset": "embedded", "profile": "smoke", "notes": "x"}))
    with pytest.raises(plan.PipelineError, match=r"unknown key\(s\) \['notes'\]"):
        plan.plan_runs(old_schema)
    with pytest.raises(plan.PipelineError, match="PROFILE=fast"):
        plan.plan_runs(PARAMS / "smoke.yaml", profile="fast")
    with pytest.raises(plan.PipelineError, match="unknown notebook parameter 'lr'"):
        plan.plan_runs(PARAMS / "smoke.yaml", overrides={"lr": 1.0})
    with pytest.raises(plan.PipelineError, match="no .*train/good"):
        plan.plan_runs(None, dataset="folder", root=str(tmp_path))


def test_every_params_file_plans(tmp_path: Path) -> None:
    (tmp_path / "c" / "train" / "good").mkdir(parents=True)
    for f in sorted(PARAMS.glob("*.yaml")):
        specs = plan.plan_runs(f, root=str(tmp_path))
        assert specs, f
        assert len({s.run_dir for s in specs}) == len(specs)


def test_every_run_parameter_is_declared_by_its_notebook(tmp_path: Path) -> None:
    # papermill's own parser decides: a name it does not find in the notebook's parameters cell (undeclared, or a
    # declaration it cannot parse, e.g. an "=" in the line's comment) is a "Passed unknown parameter" line in the
    # run's log
    (tmp_path / "c" / "train" / "good").mkdir(parents=True)
    declared: dict[Path, set[str]] = {}
    for f in sorted(PARAMS.glob("*.yaml")):
        for spec in plan.plan_runs(f, root=str(tmp_path)):
            known = declared.setdefault(spec.notebook, set(papermill.inspect_notebook(str(spec.notebook))))
            assert set(spec.parameters) <= known, (f.name, spec.notebook.name, set(spec.parameters) - known)
    assert {n.name for n in declared} == {pipeline.NOTEBOOK_UNSUPERVISED, pipeline.NOTEBOOK_WEAK}
    for name in pipeline.REPORT_NOTEBOOKS:
        params = set(pipeline.report_parameters(name, tmp_path / "results"))
        known = set(papermill.inspect_notebook(str(project_root() / "notebooks" / name)))
        assert params <= known, (name, params - known)
    assert "reference_dir" in pipeline.report_parameters("07_report.ipynb", tmp_path / "results")  # its comparison


def test_jobs_from_makeflags() -> None:
    assert pipeline.jobs_from_makeflags("") == 1
    assert pipeline.jobs_from_makeflags("s") == 1
    assert pipeline.jobs_from_makeflags(" -j3 --jobserver-auth=3,4") == 3
    assert pipeline.jobs_from_makeflags("k -j2 --jobserver-auth=3,4 -- FOO=1") == 2
    assert pipeline.jobs_from_makeflags(" -j") >= 1
    assert pipeline.jobs_from_makeflags(" -- DATASET=jj") == 1


def test_default_jobs_parallel_only_for_one_thread_cpu_runs(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(pipeline.os, "cpu_count", lambda: 2)
    smoke = plan.plan_runs(dataset="embedded", categories=["weave"], runs=["main"])
    cpu = plan.plan_runs(dataset="embedded", categories=["weave"], runs=["main"], profile="cpu")
    paper = plan.plan_runs(dataset="embedded", categories=["weave"], runs=["main"], profile="paper",
                               overrides={"image_size": 256})  # the smoke file pins 64 px: too small for paper
    assert pipeline.default_jobs(smoke, makeflags="") == 2
    assert pipeline.default_jobs(cpu, makeflags="") == 2  # the cpu profile pins one thread per run too
    assert pipeline.default_jobs(paper, makeflags="") == 1
    assert pipeline.default_jobs(paper, makeflags=" -j4") == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pipeline.default_jobs(smoke, makeflags="") == 1
    monkeypatch.setattr(pipeline.scheduler, "visible_gpus", lambda: ["0", "1"])
    assert pipeline.default_jobs(paper, makeflags="") == 2  # one run per GPU
    wide = plan.plan_runs(dataset="embedded", categories=["weave"], profile="paper", overrides={"image_size": 256})
    assert pipeline.default_jobs(wide, makeflags="", runs_per_gpu=3) == 6  # RUNS_PER_GPU=3 (issue 24): 3 per GPU


def test_old_variants_flag_still_selects_runs_with_a_deprecation(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 25: RUNS= / --runs select runs; the old VARIANTS= / --variants still works and says it is deprecated."""
    assert cli.main(["pipeline", "--variants", "nope", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--variants / VARIANTS= is deprecated, use --runs / RUNS=" in err and "RUNS=['nope'] not all in" in err
    assert cli.main(["pipeline", "--runs", "nope", "--dry-run"]) == 2
    assert "deprecated" not in capsys.readouterr().err


def test_runs_per_gpu_is_checked_before_any_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["pipeline", "--runs-per-gpu", "0", "--dry-run"]) == 2
    assert "runs per GPU must be a whole number >= 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- execution with a stand-in runner


class FakeRunner:
    """Writes config.json + metrics.json like save_run does; fails for category 'bad'. Its calls are recorded in a
    file (the Dask task runs a copy of it)."""

    def __init__(self, record: Path) -> None:
        self.record = record

    @property
    def calls(self) -> list[str]:
        return self.record.read_text().split() if self.record.exists() else []

    def clear(self) -> None:
        self.record.unlink(missing_ok=True)

    def __call__(self, spec: plan.RunSpec, how: job.Job) -> job.Outcome:
        with open(self.record, "a") as fh:
            fh.write(spec.label + "\n")
        spec.log.parent.mkdir(parents=True, exist_ok=True)
        if spec.config.data.category == "bad":
            spec.log.write_text("Traceback ...\nDataLayoutError: cannot read image bad/train/good/000.png\n")
            return job.Outcome(spec, "failed", 0.1, error_from_log(spec.log))
        d = spec.config.to_dict() | {"device": "cpu", "pretrained_source": "none"}  # record-only keys of save_run
        write_json(spec.run_dir / "config.json", d)
        write_json(spec.run_dir / "metrics.json", {"iou": 0.5})
        (spec.run_dir / "checkpoint.pt").write_bytes(b"x")
        return job.Outcome(spec, "ok", 0.1)


def _plan(tmp_path: Path, **kw: Any) -> list[plan.RunSpec]:
    return plan.plan_runs(PARAMS / "smoke.yaml", dataset="folder", root=str(tmp_path / "data"),
                              categories=kw.pop("categories", "good,bad"), runs="main",
                              results_dir=tmp_path / "res", **kw)


def test_execute_skip_force_and_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "prepare_data", lambda specs: {})
    runner = FakeRunner(tmp_path / "calls.txt")
    specs = _plan(tmp_path)
    first = pipeline.execute(specs, runner=runner, log=lambda s: None)
    assert len(first.by_status("ok")) == 2 and len(first.failed) == 2 and first.exit_code == 1
    assert "FAILED folder/bad/AVAGA-R_u-seed0: DataLayoutError: cannot read image" in first.text()
    assert (tmp_path / "res" / "runs" / "summary.json").exists()
    # second pass: finished runs are skipped, failed ones retried
    runner.clear()
    second = pipeline.execute(specs, runner=runner, log=lambda s: None)
    assert len(second.by_status("skipped")) == 2 and all("bad" in c for c in runner.calls)
    # force: everything reruns, from a clean folder
    marker = specs[0].run_dir / "stale.txt"
    marker.write_text("old")
    third = pipeline.execute(_plan(tmp_path, categories="good"), force=True, runner=runner, log=lambda s: None)
    assert len(third.by_status("ok")) == 2 and not marker.exists()
    # a changed config is not "finished": it reruns
    changed = _plan(tmp_path, categories="good", overrides={"epochs": 7})
    assert not any(plan.is_finished(s) for s in changed)
    assert config_hash(changed[0].config) != config_hash(specs[0].config)
    assert len(pipeline.execute(changed, runner=runner, log=lambda s: None).by_status("ok")) == 2


def test_execute_parallel_and_data_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = _plan(tmp_path, categories="good,bad")
    errors = {("folder", str(tmp_path / "data"), ""): "DataLayoutError: data.root missing"}
    monkeypatch.setattr(pipeline, "prepare_data", lambda s: errors)
    summary = pipeline.execute(specs, jobs=2, runner=FakeRunner(tmp_path / "calls0.txt"), log=lambda s: None)
    assert len(summary.failed) == 4 and all(o.error.startswith("data:") for o in summary.failed)
    assert all(o.spec.log.read_text().startswith("data preparation failed") for o in summary.failed)
    monkeypatch.setattr(pipeline, "prepare_data", lambda s: {})
    runner = FakeRunner(tmp_path / "calls.txt")
    summary = pipeline.execute(specs, jobs=2, runner=runner, log=lambda s: None)
    assert len(summary.by_status("ok")) == 2 and len(runner.calls) == 4


def test_a_study_that_started_nothing_keeps_the_last_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary_json = tmp_path / "res" / "runs" / "summary.json"
    write_json(summary_json, {"seconds": 900.0, "runs": [{"run": "embedded/weave/AVAGA-R_u-seed0", "status": "ok"}]})
    before = summary_json.read_bytes()
    specs = _plan(tmp_path, categories="good,bad")
    monkeypatch.setattr(pipeline, "prepare_data", lambda s: {("folder", str(tmp_path / "data"), ""): "DataLayoutError"})
    lines: list[str] = []
    summary = pipeline.execute(specs, runner=FakeRunner(tmp_path / "calls.txt"), log=lines.append)
    assert summary.nothing_started and summary.started == 0 and summary.exit_code == 1
    assert summary_json.read_bytes() == before  # before: overwritten by this study's 4 data failures
    assert any("no run started" in line and "left as it was" in line for line in lines)
    # a study whose runs started writes its own summary
    monkeypatch.setattr(pipeline, "prepare_data", lambda s: {})
    ran = pipeline.execute(specs, runner=FakeRunner(tmp_path / "calls.txt"), log=lambda s: None)
    assert not ran.nothing_started and ran.started == 4 and summary_json.read_bytes() != before


def test_a_failed_study_never_prints_up_to_date_or_another_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from avaga_lib import cli
    from avaga_lib.reporting import report

    (tmp_path / "data" / "good").mkdir(parents=True)
    # the data checks pass; the data then fails to prepare for every run (the backstop behind check_study)
    monkeypatch.setattr(preflight, "check_study", lambda *a, **k: preflight.StudyCheck())
    monkeypatch.setattr(pipeline, "prepare_data", lambda s: {("folder", str(tmp_path / "data"), ""): "OSError: gone"})
    monkeypatch.setattr(pipeline, "report_notebooks_to_run", lambda *a, **k: [])  # the last study's report is fresh
    monkeypatch.setattr(report, "reference_summary", lambda *a, **k: "reference: 188/315 cells reproduced")
    argv = ["pipeline", "--dataset", "folder", "--root", str(tmp_path / "data"), "--categories", "good",
            "--runs", "AE-L2", "--results-dir", str(tmp_path / "res"), "--report"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED folder/good/AE-L2-seed0: data: OSError: gone" in out
    assert "report: not refreshed (no run of this study started)" in out
    assert "up to date" not in out and "188/315" not in out  # before: both, from the previous study
    # runs that ran but failed: the report of the finished runs is current, and says what it lacks
    summary = pipeline.Summary([job.Outcome(_plan(tmp_path, categories="good")[0], "failed", 1.0, "boom")],
                               started=1)
    cli._report_step(cli.parse_args(argv), summary)
    assert "1 run(s) of this study failed and are not in it" in capsys.readouterr().out


class FakeNotebooks:
    """Stands in for papermill in run_report_notebooks: notebooks named in ``failing`` exit non-zero."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.failing: set[str] = set()
        self.executed: list[str] = []
        monkeypatch.setattr(pipeline, "papermill_command", self._command)
        monkeypatch.setattr(pipeline, "export_html", lambda nb, html: Path(html).write_text("<html/>") and html)

    def _command(self, spec: plan.RunSpec, kernel: str) -> list[str]:
        self.executed.append(spec.name)
        code = "import sys; print('RuntimeError: broken'); sys.exit(1)" if spec.name in self.failing else "pass"
        return [sys.executable, "-c", code]


def test_report_freshness_accounts_for_every_notebook_outcome(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = tmp_path / "embedded" / "weave" / "AVAGA-R_u-seed0" / "metrics.json"
    write_json(metrics, {"iou": 0.1})
    reference = tmp_path / "reference" / "embedded" / "weave" / "AVAGA-R_u-seed0" / "metrics.json"
    write_json(reference, {"iou": 0.1})
    monkeypatch.setattr(pipeline, "reference_dir", lambda: tmp_path / "reference")
    nbs = FakeNotebooks(monkeypatch)
    assert pipeline.report_notebooks_to_run(tmp_path) == list(pipeline.REPORT_NOTEBOOKS)  # nothing recorded yet
    nbs.failing = {"06_threshold_study.ipynb"}
    outcomes = pipeline.run_report_notebooks(tmp_path, log=lambda s: None)
    assert outcomes["06_threshold_study.ipynb"].error == "RuntimeError: broken"
    assert (tmp_path / "report.html").exists()  # 07 succeeded
    status = json.loads((tmp_path / "runs" / "report" / "status.json").read_text())
    assert {k: v["status"] for k, v in status.items()} == {"05_ablations.ipynb": "ok",
                                                           "06_threshold_study.ipynb": "failed",
                                                           "07_report.ipynb": "ok"}
    # a failed notebook is never up to date: it (only it) reruns, call after call, until it succeeds
    for _ in range(2):
        assert not pipeline.report_up_to_date(tmp_path)
        assert pipeline.report_notebooks_to_run(tmp_path) == ["06_threshold_study.ipynb"]
        pipeline.run_report_notebooks(tmp_path, notebooks=["06_threshold_study.ipynb"], log=lambda s: None)
    nbs.failing = set()
    pipeline.run_report_notebooks(tmp_path, notebooks=["06_threshold_study.ipynb"], log=lambda s: None)
    assert pipeline.report_up_to_date(tmp_path)
    # a refreshed reference changes the comparison (07) only; a run whose metrics changed makes every notebook
    # stale; a missing report.html makes 07 stale
    write_json(reference, {"iou": 0.3})
    assert pipeline.report_notebooks_to_run(tmp_path) == ["07_report.ipynb"]
    write_json(metrics, {"iou": 0.2})
    assert pipeline.report_notebooks_to_run(tmp_path) == list(pipeline.REPORT_NOTEBOOKS)
    pipeline.run_report_notebooks(tmp_path, log=lambda s: None)
    assert pipeline.report_up_to_date(tmp_path)
    (tmp_path / "report.html").unlink()
    assert pipeline.report_notebooks_to_run(tmp_path) == ["07_report.ipynb"]


def test_error_from_log(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("cell 3\n\x1b[0;31mValueError\x1b[0m: boom\nPapermillExecutionError: \nmore\n")
    assert error_from_log(log) == "ValueError: boom"


# -------------------------------------------------------------------------------------------- the real thing

_TREE: dict[str, Any] = {}


def smoke_tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run the real pipeline once per session (1 epoch, 64 px): category 'weave' with R_u + R_w, category
    'granite' with a corrupted image (its runs fail); then notebooks 06/07 and report.html. Cached."""
    if _TREE:
        return _TREE
    nbs = [project_root() / "notebooks" / n for n in (pipeline.NOTEBOOK_UNSUPERVISED, pipeline.NOTEBOOK_WEAK)]
    missing = [str(n) for n in nbs if not n.exists()]
    if missing:
        pytest.skip(f"training notebooks missing (issue 4): {missing}")
    from avaga_lib import cli
    from avaga_lib.data import generate_dataset

    base = tmp_path_factory.mktemp("pipeline")
    data = generate_dataset(base / "data", categories=["weave", "granite"], n_train=8, n_test_good=4,
                            n_test_bad=4, size=64)
    bad = sorted((data / "granite" / "train" / "good").glob("*.png"))[0]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")  # corrupted category
    results = base / "results"
    argv = ["pipeline", "--dataset", "folder", "--root", str(data), "--categories", "weave,granite",
            "--runs", "AVAGA-R_u,AVAGA-R_w", "--results-dir", str(results), "--set", "epochs=1",
            "--set", "image_size=64", "--set", "device=cpu", "--jobs", "1"]
    t0 = time.perf_counter()
    code = cli.main(argv)
    _TREE.update(base=base, data=data, results=results, argv=argv, code=code, first_s=time.perf_counter() - t0)
    outcomes = pipeline.run_report_notebooks(results, extra_parameters={"category": "weave"})
    _TREE["report_outcomes"] = outcomes
    return _TREE


@pytest.mark.slow
def test_real_pipeline_failure_skip_force(tmp_path_factory: pytest.TempPathFactory) -> None:
    tree = smoke_tree(tmp_path_factory)
    results: Path = tree["results"]
    assert tree["code"] == 1  # granite failed -> non-zero exit
    summary = yaml.safe_load((results / "runs" / "summary.json").read_text())
    status = {r["run"]: r for r in summary["runs"]}
    assert status["folder/weave/AVAGA-R_u-seed0"]["status"] == "ok"
    assert status["folder/weave/AVAGA-R_w-seed0"]["status"] == "ok"
    assert status["folder/granite/AVAGA-R_u-seed0"]["status"] == "failed"
    assert "000.png" in status["folder/granite/AVAGA-R_u-seed0"]["error"]  # the reason names the broken file
    assert Path(status["folder/granite/AVAGA-R_u-seed0"]["log"]).exists()  # its log is kept
    for s in ("AVAGA-R_u-seed0", "AVAGA-R_w-seed0"):
        assert (results / "folder" / "weave" / s / "metrics.json").exists()
        assert (results / "runs" / "folder" / "weave" / f"{s}.ipynb").exists()  # executed notebook kept
    # second run over the finished category: everything skipped, in seconds
    from avaga_lib import cli

    argv = [a if a != "weave,granite" else "weave" for a in tree["argv"]]
    metrics = results / "folder" / "weave" / "AVAGA-R_u-seed0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert cli.main(argv) == 0
    assert time.perf_counter() - t0 < 15
    assert metrics.stat().st_mtime_ns == before
    # FORCE reruns (one run, to stay fast)
    assert cli.main([*[a if a != "AVAGA-R_u,AVAGA-R_w" else "AVAGA-R_u" for a in argv], "--force"]) == 0
    assert metrics.stat().st_mtime_ns != before


@pytest.mark.slow
def test_real_report_written(tmp_path_factory: pytest.TempPathFactory) -> None:
    tree = smoke_tree(tmp_path_factory)
    results: Path = tree["results"]
    bad = {k: o.error for k, o in tree["report_outcomes"].items() if o.status != "ok"}
    assert not bad, f"analysis notebooks failed: {bad}"
    assert (results / "report.html").stat().st_size > 10_000
    text = (results / "REPORT.md").read_text()
    assert "## Verdicts per claim" in text and "AVAGA-R_w localizes better than AVAGA-R_u" in text
    assert (results / "tables" / "folder_table2_iou.csv").exists()
