"""Runs trained in this process, without the orchestrator: one run from its spec, and the tiny demo tree that the
analysis notebooks 05-07 train when they find no results (so they depend on the library, not on what executes the
study)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from avaga_lib.config import RunConfig
from avaga_lib.data import generate_dataset
from avaga_lib.paths import absolute, project_root
from avaga_lib.plan import RunSpec, is_finished, plan_runs
from avaga_lib.training.run import run_one


def run_inline(spec: RunSpec | RunConfig, figures: bool = True) -> Path:
    """Train, evaluate and save one run in this process (library calls only; used by notebooks 05-07 when they
    find no results, and by tests). Returns the run folder."""
    cfg = spec.config if isinstance(spec, RunSpec) else spec
    cfg = replace(cfg, results_dir=str(absolute(cfg.results_dir)))  # relative trees resolve from the project root
    return run_one(cfg, figures=figures)


def ensure_demo_runs(
    results_dir: Path | str,
    runs: str | Sequence[str],
    category: str = "weave",
    epochs: int = 1,
    image_size: int = 64,
    log: Callable[[str], None] = print,
) -> list[RunSpec]:
    """Train (in-process) the missing runs of a small demo tree so notebooks 05-07 have real results to show.

    The demo data is a tiny generated copy of one embedded category (8 training images, 8 test images) under
    ``<results_dir>/demo_data``, read as a ``folder`` dataset; every run goes through the real trainer, evaluator
    and ``save_run``. Used only when a notebook finds no results under its ``results_dir``.

    Returns:
        The demo runs (finished).
    """
    base = absolute(results_dir)
    data = generate_dataset(base / "demo_data", categories=[category], n_train=8, n_test_good=4, n_test_bad=4,
                            size=image_size)
    specs = plan_runs(project_root() / "params" / "smoke.yaml", dataset="folder", root=str(data),
                      categories=[category], runs=runs, seeds=[0], results_dir=base,
                      overrides={"epochs": epochs, "image_size": image_size, "device": "cpu"})
    for s in specs:
        if is_finished(s):
            continue
        if s.run_dir.exists():
            shutil.rmtree(s.run_dir)
        t0 = time.perf_counter()
        run_inline(s, figures=s.name in ("AVAGA-R_u", "AVAGA-R_w"))  # the report's qualitative grid uses these
        log(f"demo run {s.label} trained in {time.perf_counter() - t0:.0f} s")
    return specs


__all__ = ["ensure_demo_runs", "run_inline"]
