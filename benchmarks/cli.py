"""``python -m benchmarks [NAME ...]`` (``make bench``): run benchmarks, print and write their results.

``figures`` (the default) measures every figure of ``results/bench/bench.md`` (:func:`benchmarks.figures.
measure_figures`); ``attention_cost`` is the standalone paired attention-cost measurement
(:func:`benchmarks.attention_cost.measure_attention_cost`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from avaga_lib import paths
from avaga_lib.io import write_json
from benchmarks.attention_cost import measure_attention_cost
from benchmarks.figures import measure_figures
from benchmarks.report import write_bench


def _figures(args: argparse.Namespace) -> dict[str, Any]:
    return measure_figures(device=args.device, quick=args.quick, threads=args.threads)


def _attention_cost(args: argparse.Namespace) -> dict[str, Any]:
    return measure_attention_cost(image_size=args.image_size, batch=args.batch, reps=args.reps, device=args.device)


BENCHMARKS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "figures": _figures,
    "attention_cost": _attention_cost,
}
DEFAULT_BENCHMARKS = ("figures",)  # make bench; figures already measures the attention cost through the trainer step


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(DEFAULT_BENCHMARKS),
                        help=f"benchmarks among {list(BENCHMARKS)}")
    parser.add_argument("--image-size", type=int, default=256, help="attention_cost: input side")
    parser.add_argument("--batch", type=int, default=2, help="attention_cost: images per step")
    parser.add_argument("--reps", type=int, default=7, help="attention_cost: interleaved repetitions")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="figures: fewer repetitions, no CPU-option study")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="output folder (default: results/bench)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the benchmarks named on the command line (default: ``figures``), print and write their results.

    ``figures`` writes ``bench.json`` + ``bench.md`` under ``--out`` (default ``results/bench``); other benchmarks
    are added to ``bench.json`` under ``"extra"`` when run together with it, else written as ``<name>.json``.
    """
    args = build_parser().parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose among {list(BENCHMARKS)}")
    results = {name: BENCHMARKS[name](args) for name in args.names}
    out = Path(args.out) if args.out else paths.results_dir() / "bench"
    if "figures" in results:
        extra = {k: v for k, v in results.items() if k != "figures"}
        j, m = write_bench({**results["figures"], **({"extra": extra} if extra else {})}, out)
        print(f"wrote {j} and {m}")
    else:
        for name, r in results.items():
            print(f"wrote {write_json(out / f'{name}.json', r)}")
    return results
