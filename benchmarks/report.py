"""The bench record as ``results/bench/bench.json`` + ``bench.md``: figures against targets, per-configuration table.

The format of both files is fixed (other tools and the docs read them): same keys, same rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from avaga_lib import paths
from avaga_lib.io import write_json, write_text
from benchmarks.estimate import STUDY_RUNS

TARGETS: dict[str, float] = {
    "cpu_train_fraction_of_gemm_peak_256": 0.70,  # issue 8: achieved FLOP/s >= 0.70 of the measured GEMM peak
    "attention_cost_ratio": 1.05,  # issue 8: step with L_attn / without <= 1.05
    "data_wait_fraction": 0.05,  # issue 8: data step / whole step <= 0.05
    "gpu_train_images_per_s_256": 2000.0,  # issue 8: H200, AVAGA-R_u at 256 px
    "gpu_study_hours": 1.0,  # issue 8: full MVTec Tables 2/3/8 study on one GPU
}


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "unmeasured" if x is None else format(x, spec)


def _target_row(name: str, value: float | None, target: float, le: bool, spec: str = ".3f") -> str:
    """``| figure | measured | target | met |``; ``le``: the target is an upper bound."""
    met = "n/a" if value is None else ("yes" if (value <= target if le else value >= target) else "no")
    return f"| {name} | {_fmt(value, spec)} | {'<=' if le else '>='} {target:g} | {met} |"


def _device_kind(res: Mapping[str, Any]) -> str:
    return res["study_estimate"]["device_kind"] if "study_estimate" in res else "cpu"


def _header(res: Mapping[str, Any]) -> list[str]:
    m = res["machine"]
    return [
        "# make bench",
        "",
        f"Device `{m['device']}` ({m.get('gpu', m.get('cpu'))}), torch {m['torch']}, {m['threads']} threads, "
        f"load average at start {m.get('loadavg_1min_at_start', 'n/a')}. GEMM peak (measured here, best of the "
        f"run): {res['gemm_peak_tflops'] * 1e3:.1f} GFLOP/s.",
        "",
    ]


def _targets_table(res: Mapping[str, Any]) -> list[str]:
    """Each figure of issue 8 beside its target; GPU figures read "unmeasured" on a CPU run."""
    t, mp, kind = res["targets"], res["main_size"], _device_kind(res)
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    if kind == "cpu":
        lines.append(_target_row(f"training FLOP/s / GEMM peak, R_u {mp} px (CPU)", res["fraction_of_gemm_peak_main"],
                                 t["cpu_train_fraction_of_gemm_peak_256"], le=False))
        lines.append(_target_row(f"same, fastest repetitions (least disturbed), R_u {mp} px (CPU)",
                                 res["fraction_of_gemm_peak_main_best"], t["cpu_train_fraction_of_gemm_peak_256"],
                                 le=False))
    ratio = t["attention_cost_ratio"]
    lines += [
        _target_row(f"step time with L_attn / without (R_u {mp} px)", res["attention_cost_ratio"], ratio, True),
        _target_row("same, median of per-round ratios", res.get("attention_cost_ratio_paired"), ratio, True),
        _target_row("same, fastest repetitions", res["attention_cost_ratio_best"], ratio, True),
        _target_row(f"data-wait fraction of the step ({mp} px)", res["data_wait_fraction_main"],
                    t["data_wait_fraction"], True),
    ]
    gpu_tput = res["train"][f"AVAGA-R_u@{mp}"]["images_per_s"] if kind == "cuda" else None
    lines.append(_target_row(f"GPU training images/s, R_u {mp} px", gpu_tput, t["gpu_train_images_per_s_256"],
                             False, ".0f"))
    lines.append(_target_row("GPU-hours, MVTec Tables 2/3/8 study", res["study_estimate"]["gpu_hours"],
                             t["gpu_study_hours"], True, ".2f"))
    return lines


def _configurations_table(res: Mapping[str, Any]) -> list[str]:
    """The study estimate, then one row per training and evaluation configuration."""
    est = res["study_estimate"]
    lines = [
        "",
        f"Study estimate on this device ({_device_kind(res)}): {est['hours']:.1f} hours for 15 categories x "
        f"150 epochs x {len(STUDY_RUNS)} runs (runs without their own measurement use AVAGA-R_u's speed: "
        f"{', '.join(est['assumed_runs'])}).",
        "",
        f"Medians of {res.get('repeats', '?')} interleaved repetitions; 'best' uses the fastest repetition.",
        "",
        "| configuration | batch | images/s | GFLOP / image | TFLOP/s | of GEMM peak | of peak (best) | data wait |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in res["train"].items():
        dw = f"{r['data_wait_fraction']:.3f}" if "data_wait_fraction" in r else "-"
        lines.append(
            f"| train {name} | {r['batch']} | {r['images_per_s']:.2f} | {r['gflop_per_image']:.1f} | "
            f"{r['achieved_tflops']:.4f} | {r['fraction_of_gemm_peak']:.3f} | "
            f"{r.get('fraction_of_gemm_peak_best', float('nan')):.3f} | {dw} |"
        )
    for name, r in res["eval"].items():
        lines.append(f"| eval {name} (Grad-CAM + metrics) | {r['batch']} | {r['images_per_s']:.2f} | | | | | |")
    return lines


def _memory_and_cpu_options(res: Mapping[str, Any]) -> list[str]:
    lines = ["", f"Peak memory ({res['peak_memory_kind']}, one training step):"]
    lines += [f"- {k}: {v:.0f} MiB" for k, v in res["peak_memory_mib"].items()]
    if "cpu_options" in res:
        lines += ["", "CPU options (AVAGA-R_u, second side, per-image time vs fp32 NCHW default):", ""]
        lines += ["| option | s / image | speed-up |", "|---|---|---|"]
        lines += [f"| {k} | {v['s_per_image']:.3f} | {v['speedup_vs_default']:.2f} |" for k, v in
                  res["cpu_options"].items()]  # fmt: skip
    return lines


def bench_markdown(res: Mapping[str, Any]) -> str:
    """The bench record as a markdown report: one table of figures against targets, one per-configuration table."""
    lines = _header(res) + _targets_table(res) + _configurations_table(res) + _memory_and_cpu_options(res)
    return "\n".join(lines) + "\n"


def write_bench(res: Mapping[str, Any], out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``bench.json`` and ``bench.md`` (atomically) under ``results/bench/`` (or ``out_dir``)."""
    d = Path(out_dir) if out_dir else paths.results_dir() / "bench"
    return write_json(d / "bench.json", dict(res)), write_text(d / "bench.md", bench_markdown(res))
