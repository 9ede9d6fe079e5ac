"""``make gpu-study`` (issue 13): a clear exit without CUDA; the plan covers the literal recipe, the remedies, AE.

Several runs per GPU: the aggregate throughput of k processes (run on the CPU here), the choice of k, and the
projected wall time of the paper's MVTec protocol (the arithmetic on known inputs, and its section of summary.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from avaga_lib import study
from avaga_lib.config import config_hash
from avaga_lib.io import write_json
from avaga_lib.plan import RunSpec, plan_runs
from avaga_lib.run_folder import ResultsTree, RunFolder
from benchmarks import estimate, gpu_study, shared_gpu

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_exits_with_a_clear_message() -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_study"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2
    assert "needs a CUDA GPU" in out.stderr and "torch.cuda.is_available() is False" in out.stderr
    assert "Traceback" not in out.stderr


def test_paper_runs_are_planned_by_the_study_planner_at_256(tmp_path: Path) -> None:
    """The literal recipe, each remedy and the baselines, seed 0, at the paper profile: the configs `make reproduce
    PROFILE=paper` plans (one planner), with the study's epochs and the planner's AMP (auto: bf16 on CUDA)."""
    specs, notes = gpu_study.paper_specs(tmp_path, ["embedded"])
    assert [s.name for s in specs] == list(gpu_study.RUNS) and notes == []
    assert {"AVAGA-R_u", "AVAGA-R_w", "AVAGA-D_u", "AE-L2", "AE-SSIM", *study.REMEDIES} == set(gpu_study.RUNS)
    cfg = specs[0].config
    assert cfg.data.image_size == 256 and cfg.train.amp == "auto" and cfg.train.epochs == gpu_study.EPOCHS["embedded"]
    assert Path(cfg.run_dir).is_relative_to(tmp_path / gpu_study.OUT / "runs")
    planned = plan_runs(ROOT / gpu_study.PAPER_PARAMS, dataset="embedded", root="",
                        categories=[gpu_study.EMBEDDED_CATEGORY], runs=list(gpu_study.RUNS), seeds=[0], profile="paper",
                        results_dir=tmp_path / gpu_study.OUT / "runs",
                        overrides={"epochs": gpu_study.EPOCHS["embedded"]})
    assert {s.label: config_hash(s.config) for s in specs} == {s.label: config_hash(s.config) for s in planned}


def test_the_gpu_study_imports_without_dask_papermill_or_jupyter() -> None:
    """The GPU machine's image has torch but none of them (docs/PERFORMANCE.md): the study must not need them."""
    code = ("import sys\nfor m in ('dask', 'distributed', 'papermill', 'jupyter_client', 'nbformat', 'ipykernel'):\n"
            "    sys.modules[m] = None\nimport benchmarks.gpu_study")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_throughput_measures_both_memory_formats() -> None:
    """The throughput section runs the trainer's step (CPU here, 64 px, no compile: compiling takes minutes)."""
    speed = gpu_study.throughput(steps=1, batch=2, device="cpu", size=64, compile_model=False)
    assert set(speed) == {"bf16_img_s", "bf16_channels_last_img_s"} and all(v > 0 for v in speed.values())


def test_summary_lists_what_did_not_run(tmp_path: Path) -> None:
    summary = gpu_study.summarize(tmp_path, {"bf16_img_s": 10.0}, ["MTD not run"], 1.0)
    text = (tmp_path / gpu_study.OUT / "summary.md").read_text()
    assert summary["runs"] == [] and "(no finished run)" in text and "- MTD not run" in text
    assert "bf16_img_s = 10.0" in text and (tmp_path / gpu_study.OUT / "summary.json").is_file()


def _spec(tiny_root: Path, out: Path, category: str, run: str = "AE-L2") -> RunSpec:
    specs = plan_runs(dataset="embedded", root=str(tiny_root), categories=[category], runs=[run], seeds=[0],
                      results_dir=out, overrides={"epochs": 1, "image_size": 64})
    return specs[0]


def test_execute_runs_jobs_in_worker_processes_and_reports_each_outcome(tiny_root: Path, tmp_path: Path) -> None:
    """Two worker processes make the runs; a failing run is reported and the others still finish; nothing past the
    deadline starts, and each outcome is listed (what the summary shows)."""
    specs = [_spec(tiny_root, tmp_path, "weave"), _spec(tmp_path / "missing", tmp_path, "washer")]
    results = gpu_study.execute(specs, workers=2, deadline=time.time() + 600, threads=1)
    assert [r[0] for r in results] == [s.label for s in specs]
    assert results[0][1] == "done" and RunFolder(specs[0].run_dir).is_finished()
    assert results[1][1].startswith("failed: ") and "missing" in results[1][1]
    late = gpu_study.execute([_spec(tiny_root, tmp_path / "late", "washer")], workers=1, deadline=time.time() - 1)
    assert late[0][1] == "not started" and not (tmp_path / "late").exists()
    gpu_study.summarize(tmp_path, {}, [], 1.0, results + late)
    text = (tmp_path / gpu_study.OUT / "summary.md").read_text()
    assert "embedded/washer/AE-L2-seed0: not started" in text and "embedded/weave/AE-L2-seed0: done" in text


def test_plan_file_specs_are_the_pipelines_runs_headline_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--plan params/mtd_cpu.yaml makes exactly the runs `make reproduce PARAMS=... PROFILE=cpu` plans, in its
    results tree with the same configs (so the pipeline then skips them), the issue's table first, seed by seed."""
    root = tmp_path / "mtd"
    (root / "magnetic_tile" / "train" / "good").mkdir(parents=True)
    monkeypatch.setattr(gpu_study, "mtd_root", lambda _root: root)
    tree = str(tmp_path / "results" / "cpu")
    head, rest, notes = gpu_study.plan_file_specs(ROOT / "params" / "mtd_cpu.yaml", tmp_path, results_dir=tree)
    assert notes == [] and len(head) == 18 and len(rest) == 15
    assert [s.config.train.seed for s in head] == [0] * 6 + [1] * 6 + [2] * 6
    assert {s.name for s in head} == set(gpu_study.HEADLINE)
    assert [s.name for s in rest[:6]] == ["AVAGA-R_w", "AVAGA-D_u"] * 3  # the paper's runs before the remedies
    planned = {s.label: s.config for s in plan_runs(ROOT / "params" / "mtd_cpu.yaml", results_dir=tree)}
    for s in head + rest:
        assert config_hash(s.config) == config_hash(planned[s.label])
        assert s.config.profile == "cpu" and s.config.data.image_size == 128
        assert Path(s.config.run_dir).is_relative_to(tree)
    # the results tree of make reproduce PROFILE=cpu / paper (the Makefile asks the CLI)
    assert (ResultsTree.for_profile("cpu"), ResultsTree.for_profile("paper")) == ("results/cpu", "results")


# ------------------------------------------------------------------------------- several runs per GPU, estimate


def test_protocol_wall_time_on_known_inputs() -> None:
    """16 million training images at 4,500 images/s are 0.99 h on one GPU, half on two; with as many slots as runs
    the largest run sets the wall; evaluation and per-run overhead are shared by the slots."""
    work = estimate.ProtocolWork(runs=450, train_images=16_000_000, eval_images=100_000,
                                 longest_train_images=58_650, longest_eval_images=300)
    one = estimate.protocol_wall_s(work, 4500.0, runs_per_gpu=4, gpus=1)
    assert one["wall_h"] == pytest.approx(16e6 / 4500 / 3600) and round(one["wall_h"], 2) == 0.99
    assert one["slots"] == 4 and not one["tail_bound"] and one["eval_s"] == one["overhead_s"] == 0.0
    assert estimate.protocol_wall_s(work, 4500.0, 4, gpus=2)["wall_s"] == pytest.approx(one["wall_s"] / 2)
    many = estimate.protocol_wall_s(work, 4500.0, 4, gpus=1000)
    assert many["tail_bound"] and many["wall_s"] == pytest.approx(58_650 / (4500 / 4))  # one run on a 1/4 share
    full = estimate.protocol_wall_s(work, 4500.0, 4, gpus=1, eval_s_per_image=0.01, overhead_s_per_run=20.0)
    assert full["eval_s"] == pytest.approx(100_000 * 0.01 / 4) and full["overhead_s"] == pytest.approx(450 * 20 / 4)
    assert full["wall_s"] == pytest.approx(one["wall_s"] + 250.0 + 2250.0)
    with pytest.raises(ValueError, match="images/s > 0"):
        estimate.protocol_wall_s(work, 0.0)


def test_paper_protocol_is_15_categories_x_10_runs_x_3_seeds_x_150_epochs() -> None:
    assert set(estimate.PAPER_RUNS) == {*study.MAIN_METHODS, *study.ABLATIONS} and len(estimate.PAPER_RUNS) == 10
    nominal = estimate.mvtec_protocol_work(val_fraction=0.0, weak_fraction=0.0)
    assert nominal.runs == 450 and nominal.train_images == 3629 * 150 * 10 * 3  # the issue's ~16 million
    assert nominal.longest_train_images == 391 * 150  # hazelnut, the largest category
    work = estimate.mvtec_protocol_work()  # the study holds the validation split out, weak runs add 2 % of test
    assert 0.75 * nominal.train_images < work.train_images < nominal.train_images and work.eval_images > 0


def test_runs_per_gpu_is_the_smallest_k_near_the_best() -> None:
    assert estimate.chosen_runs_per_gpu({1: 995.0, 2: 1800.0, 4: 3100.0, 6: 3200.0, 8: 3250.0}) == 4
    assert estimate.chosen_runs_per_gpu({1: 1000.0, 2: 900.0}) == 1  # sharing did not pay
    assert estimate.chosen_runs_per_gpu({1: 1000.0, 4: 0.0}) == 1  # a k that measured nothing never wins
    with pytest.raises(ValueError, match="no aggregate throughput"):
        estimate.chosen_runs_per_gpu({})


def test_summary_writes_the_projection_with_its_inputs(tmp_path: Path) -> None:
    shared = {1: {"runs": 1, "images_per_s": 990.0}, 2: {"runs": 2, "images_per_s": 1800.0},
              4: {"runs": 4, "images_per_s": 3100.0}, 8: {"runs": 8, "error": "OutOfMemoryError: CUDA out of memory"}}
    est = gpu_study.study_estimate({"bf16_img_s": 800.0, "bf16_channels_last_img_s": 995.0}, shared, 0.004, 12.0)
    assert est is not None and est["runs_per_gpu"] == 4 and est["single_images_per_s"] == 995.0
    work = estimate.mvtec_protocol_work()
    expect = estimate.protocol_wall_s(work, 3100.0, 4, 2, 0.004, 12.0)["wall_h"]
    assert est["rows"][1]["gpus"] == 2 and est["rows"][1]["k_runs_per_gpu_h"] == pytest.approx(expect)
    gpu_study.summarize(tmp_path, {"bf16_channels_last_img_s": 995.0}, [], 1.0, estimate=est)
    text = (tmp_path / gpu_study.OUT / "summary.md").read_text()
    assert "## Projected wall time of the full MVTec protocol" in text
    assert "| GPUs | one run per GPU | 4 runs per GPU |" in text
    assert "one run alone: 995 training images/s" in text and "k=1: 990, k=2: 1800, k=4: 3100" in text
    assert "4.0 ms per inferred image" in text and "12.0 s" in text and "13.12 million training images" in text
    assert "- k = 8: OutOfMemoryError: CUDA out of memory" in text and "`runs_per_gpu=4`" in text
    saved = json.loads((tmp_path / gpu_study.OUT / "summary.json").read_text())["protocol_estimate"]
    assert saved["runs_per_gpu"] == 4 and saved["work"]["runs"] == 450
    assert gpu_study.study_estimate({}, shared, 0.0, 0.0) is None  # no single-run figure: nothing projected
    gpu_study.summarize(tmp_path, {}, [], 1.0)
    assert "Not estimated" in (tmp_path / gpu_study.OUT / "summary.md").read_text()


def test_run_costs_read_the_paper_profile_runs_of_this_invocation(tiny_root: Path, tmp_path: Path) -> None:
    paper = plan_runs(ROOT / gpu_study.PAPER_PARAMS, runs=["AE-L2"], results_dir=tmp_path)[0]
    small = _spec(tiny_root, tmp_path, "weave")  # 64 px: not the size the estimate is about
    specs = [paper, small]
    for spec, wall in ((paper, 100.0), (small, 5.0)):
        write_json(RunFolder(spec.run_dir).metrics_path, {"n_test": 200, "n_val": 20, "eval_wall_time_s": 22.0,
                                                          "wall_time_s": wall})
    results = [(paper.label, "done", 130.0), (small.label, "done", 9.0)]
    assert paper.config.data.image_size == 256
    assert gpu_study.run_costs(specs, results) == pytest.approx((0.1, 30.0))
    assert gpu_study.run_costs(specs, [(paper.label, "failed: x", 130.0)]) == (0.0, 0.0)


@pytest.mark.slow
def test_k_processes_train_at_once_and_report_the_aggregate() -> None:
    """Two processes step the trainer's step at once on the CPU (64 px): the aggregate is every image over the
    union of the timed windows, so it never exceeds the sum of the per-process rates."""
    cfg = gpu_study._throughput_config(64)
    res = shared_gpu.aggregate_throughput(cfg, 2, device="cpu", batch=2, seconds=1.0, warmup=1, threads=1,
                                          timeout_s=600)
    assert "error" not in res, res
    assert res["runs"] == 2 and len(res["per_run_images_per_s"]) == 2 and res["window_s"] >= 1.0
    assert 0 < res["images_per_s"] <= sum(res["per_run_images_per_s"]) + 1e-9


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the failure of a device that is not there")
def test_a_failing_k_is_reported_and_larger_ones_are_not_tried() -> None:
    cfg = gpu_study._throughput_config(64)
    lines: list[str] = []
    out = shared_gpu.measure_runs_per_gpu(cfg, (1, 2), device="cuda", batch=2, seconds=1.0, log=lines.append,
                                          timeout_s=300)
    assert list(out) == [1] and "error" in out[1] and "failed" in lines[0]


def test_mps_is_recorded_from_its_control_pipe(tmp_path: Path) -> None:
    assert not shared_gpu.mps_running({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})
    (tmp_path / "control").touch()
    assert shared_gpu.mps_running({"CUDA_MPS_PIPE_DIRECTORY": str(tmp_path)})


def test_summary_names_each_runs_encoder_initialisation(tiny_root: Path, tmp_path: Path) -> None:
    """Issue 21: the GPU summary's run table says how each encoder started (random init here: no weights offline)."""
    spec = _spec(tiny_root, tmp_path / gpu_study.OUT / "runs", "weave", run="AVAGA-R_u")
    assert gpu_study.execute([spec], workers=1, deadline=time.time() + 600)[0][1] == "done"
    gpu_study.summarize(tmp_path, {}, [], 1.0)
    text = (tmp_path / gpu_study.OUT / "summary.md").read_text()
    assert "| init |" in text and "| AVAGA-R_u | random init |" in text
