"""``make bench``: measured costs of the study's choices.

Part of issue 3: :func:`bench_attention_cost`, the price of the guided-attention term (eq. 3) in a training step,
as the ratio of the median step time with L_attn to the median step time without it. Both variants run in the same
process on the same model, their repetitions interleaved (ABAB...), so drifts of the machine (other processes,
thermal) hit both alike. Further benchmarks (issue 8) add their own functions and register them in ``BENCHMARKS``.

Issue 8: :func:`bench_issue8` (``avaga_lib.perf.run_benchmark``) measures every figure of ``make bench`` in one run
(training throughput and FLOP/s vs a measured GEMM peak at 256 / 128 px for AVAGA-R_u and R_w, attention cost
through the trainer's own step, data-wait fraction, evaluation throughput, peak memory, MVTec study estimate) and
:func:`main` writes them to ``results/bench/bench.json`` + ``bench.md``. ``make bench`` runs it alone;
``python -m avaga_lib.bench attention_cost`` runs the standalone paired attention-cost measurement.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from avaga_lib.config import LossConfig, ModelConfig


def _train_step_fn(
    image_size: int, batch: int, variant: str, setting: str, device: torch.device, seed: int
) -> Callable[[bool], None]:
    """A closure running one full training step (generator objective + backward + Adam, then the D step)."""
    from avaga_lib.losses import discriminator_objective, generator_objective
    from avaga_lib.model import Discriminator, build_model

    torch.manual_seed(seed)
    mcfg = ModelConfig(variant=variant, pretrained="none")  # weights do not change the cost
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = build_model(mcfg, image_size, setting)
    disc = Discriminator(image_size)
    model.to(device).train()
    disc.to(device).train()
    opt_g = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))  # A.1 lr; betas as TrainConfig
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999))
    x = torch.rand(batch, 3, image_size, image_size, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    with_attn, without_attn = LossConfig(), replace(LossConfig(), attention_loss=False)

    def step(attention: bool) -> None:
        loss_cfg = with_attn if attention else without_attn
        loss, _, out = generator_objective(model, disc, x, labels, loss_cfg, mcfg, setting)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        d_loss, _ = discriminator_objective(disc, x, out.recon.detach())
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def bench_attention_cost(
    image_size: int = 256,
    batch: int = 2,
    variant: str = "R",
    reps: int = 7,
    warmup: int = 1,
    device: str = "cpu",
    setting: str = "unsupervised",
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Cost of the attention loss: median train-step time with L_attn / without, interleaved repetitions.

    "Without" is the ``attention_loss=False`` ablation: it still computes the (detached) Grad-CAM for logging,
    which in closed form is one (B, 512) x (512, 512) product and a weighted channel sum, negligible next to a step.

    Args:
        image_size: input side (paper: 256).
        batch: images per step (2 keeps a CPU run short).
        variant: "R" or "D".
        reps: timed repetitions of each variant (interleaved, alternating which goes first).
        warmup: untimed repetitions of each variant first (allocator, thread pools).
        device: "cpu" or "cuda".
        setting: "unsupervised" (L_attn, eq. 4) or "weak" (L_a, eq. 6).
        seed: model init / input seed.
        verbose: print a one-line summary.

    Returns:
        dict with ``ratio`` (median with / median without), ``ratio_paired`` (median of per-pair ratios),
        ``with_s`` / ``without_s`` (median seconds), the raw times and the settings.
    """
    dev = torch.device(device)
    step = _train_step_fn(image_size, batch, variant, setting, dev, seed)
    for _ in range(warmup):
        step(True)
        step(False)
    t_with: list[float] = []
    t_without: list[float] = []
    for r in range(reps):
        order = (True, False) if r % 2 == 0 else (False, True)  # alternate which variant runs first
        for attention in order:
            t0 = time.perf_counter()
            step(attention)
            (t_with if attention else t_without).append(time.perf_counter() - t0)
    med_with, med_without = statistics.median(t_with), statistics.median(t_without)
    result = {
        "benchmark": "attention_cost",
        "image_size": image_size,
        "batch": batch,
        "variant": variant,
        "setting": setting,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "reps": reps,
        "with_s": med_with,
        "without_s": med_without,
        "ratio": med_with / med_without,
        "ratio_paired": statistics.median(a / b for a, b in zip(t_with, t_without)),
        "times_with_s": t_with,
        "times_without_s": t_without,
        "target": 1.05,  # issue 3: the attention term may cost at most 5% of a step
    }
    if verbose:
        print(
            f"attention cost ({variant}, {setting}, {image_size}px, batch {batch}, {dev}): step with L_attn "
            f"{med_with:.3f} s / without {med_without:.3f} s = ratio {result['ratio']:.3f} "
            f"(paired median {result['ratio_paired']:.3f}; target <= 1.05)"
        )
    return result


def bench_issue8(device: str = "cpu", quick: bool = False, threads: int | None = None, **_: Any) -> dict[str, Any]:
    """Every figure of issue 8 in one run (see :func:`avaga_lib.perf.run_benchmark`); ignores the per-figure knobs."""
    from avaga_lib.perf import run_benchmark

    return run_benchmark(device=device, quick=quick, threads=threads)


BENCHMARKS: dict[str, Callable[..., dict[str, Any]]] = {
    "attention_cost": bench_attention_cost,
    "issue8": bench_issue8,
}
DEFAULT_BENCHMARKS = ("issue8",)  # make bench; issue8 already measures the attention cost through the trainer step


def main(argv: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the benchmarks named on the command line (default: ``issue8``), print and write their results.

    ``issue8`` writes ``results/bench/bench.json`` + ``bench.md`` (or under ``--out``); other benchmarks are added
    to ``bench.json`` under ``"extra"`` when run together with it, else written as ``<name>.json``.
    """
    import argparse

    from avaga_lib import paths
    from avaga_lib.io import write_json
    from avaga_lib.perf import write_bench

    parser = argparse.ArgumentParser(prog="python -m avaga_lib.bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(DEFAULT_BENCHMARKS),
                        help=f"benchmarks among {list(BENCHMARKS)}")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="issue8: fewer repetitions, no CPU-option study")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", default=None, help="output folder (default: results/bench)")
    args = parser.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    for name in args.names:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark '{name}'; choose among {list(BENCHMARKS)}")
        kwargs: dict[str, Any] = {"image_size": args.image_size, "batch": args.batch, "reps": args.reps,
                                  "device": args.device}
        if name == "issue8":
            kwargs |= {"quick": args.quick, "threads": args.threads}
        results[name] = BENCHMARKS[name](**kwargs)
    out = args.out or str(paths.results_dir() / "bench")
    if "issue8" in results:
        extra = {k: v for k, v in results.items() if k != "issue8"}
        j, m = write_bench({**results["issue8"], **({"extra": extra} if extra else {})}, out)
        print(f"wrote {j} and {m}")
    else:
        for name, r in results.items():
            print(f"wrote {write_json(f'{out}/{name}.json', r)}")
    return results


if __name__ == "__main__":
    main()
