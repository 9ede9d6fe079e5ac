"""Checks before any worker starts (issue 22): every bad input of a study in one message, nothing written.

:func:`check_study` is what ``python -m avaga_lib.cli pipeline`` asks before it starts a cluster, opens a log or
touches a run folder: the data of every (dataset, root) and the categories asked of it (file lists only, nothing is
generated, converted or decoded), the results tree (creatable, writable, enough free disk for the checkpoints of the
runs to do: :func:`checkpoint_bytes`), and the cluster's submit command.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from avaga_lib.config import RunConfig
from avaga_lib.data import SOURCES, DataLayoutError, scan_category, synthetic
from avaga_lib.data import mtd as mtd_source
from avaga_lib.models.networks import build_networks
from avaga_lib.models.registry import method_of
from avaga_lib.orchestration import scheduler
from avaga_lib.paths import absolute, shared_magnetic_tile
from avaga_lib.plan import RunSpec, is_finished
from avaga_lib.run_folder import ResultsTree

DATA_FIXES: dict[str, str] = {
    "mvtec": "download MVTec AD with `python -m avaga_lib.cli download-mvtec --dest data` and pass ROOT=data/mvtec "
             "(the folder that holds bottle/, cable/, ...)",
    "folder": "pass ROOT=<folder in MVTec layout: <category>/train/good, <category>/test/<good|defect>>",
    "mtd": "run `python -m avaga_lib.cli convert-mtd SRC` or pass ROOT=<converted folder>",
}
# train._snapshot saves the weights and both Adam moments (exp_avg, exp_avg_sq) of every parameter: 3 copies
CHECKPOINT_COPIES = 3


@dataclass
class StudyCheck:
    """What :func:`check_study` found.

    Attributes:
        problems: each names the bad input and its fix; any problem means the study must not start. notes: what was
        checked, for the terminal (the disk-space estimate).
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def message(self) -> str:
        """One message for the terminal: the problem (or a list of them) and that nothing was started."""
        if len(self.problems) == 1:
            return f"pipeline: {self.problems[0]}\npipeline: nothing was started or written"
        return (f"pipeline: {len(self.problems)} problems; nothing was started or written:\n"
                + "\n".join(f"  - {p}" for p in self.problems))


def check_study(specs: Sequence[RunSpec], results_dir: Path | str, choice: scheduler.ClusterChoice | None = None,
                force: bool = False, jobs: int = 1, runs_per_gpu: int = 1) -> StudyCheck:
    """Check a planned study before any worker starts, writing nothing: its data, its results folder, the
    cluster's submit command and the runs per GPU.

    Only the runs still to do count (every run with ``force``): a finished study is skipped without its data.

    Args:
        specs: from :func:`plan_runs` (seeds and run names were checked there). results_dir: ``RESULTS=`` (relative = to
        the project root). choice: the parsed ``CLUSTER=`` (:func:`avaga_lib.orchestration.scheduler.parse_cluster`,
        which checked its extra);
            None = not checked.
        force: every run is redone. jobs: runs at a time (each holds a temporary checkpoint copy while it writes one).
        runs_per_gpu: ``RUNS_PER_GPU=`` (:func:`avaga_lib.orchestration.scheduler.check_runs_per_gpu`).

    Returns:
        :class:`StudyCheck` (problems empty = the study may start).
    """
    check = StudyCheck()
    todo = [s for s in specs if force or not is_finished(s)]
    groups: dict[tuple[str, str], list[str]] = {}
    for s in todo:
        cats = groups.setdefault((s.config.data.dataset, s.config.data.root), [])
        if s.config.data.category not in cats:
            cats.append(s.config.data.category)
    for (dataset, root), cats in groups.items():
        check.problems += _data_problems(dataset, root, cats)
    check.problems += [f"{s.label}: {p}" for s in todo for p in method_of(s.config.method).check(s.config)]
    check.problems += _results_problems(absolute(results_dir), todo, max(1, jobs), check.notes)
    cluster_checks = [lambda: scheduler.check_runs_per_gpu(runs_per_gpu)]
    if choice is not None:
        cluster_checks.append(lambda: scheduler.check_submitter(choice))
    for cluster_check in cluster_checks:
        try:
            cluster_check()
        except scheduler.ClusterError as exc:
            check.problems.append(str(exc))
    return check


def _data_problems(dataset: str, root: str, categories: list[str]) -> list[str]:
    """Problems of one dataset root and the categories asked of it (nothing is generated or converted here)."""
    source = SOURCES.get(dataset)
    fix = DATA_FIXES.get(dataset, DATA_FIXES["folder"])
    if source is None:
        return [f"DATASET={dataset} unknown; choose one of {', '.join(SOURCES)}"]
    if source.prepares_given_root:
        # stc: ROOT may be the release (extracted per scene when the runs start) or its cache; only its presence is
        # cheap to check here
        given = Path(root).expanduser() if root else None
        return [f"ROOT={root} does not exist (DATASET={dataset}: the release or its cache)"] \
            if given is not None and not given.exists() else []
    if root:
        path = Path(root).expanduser()
        if not path.is_dir():
            return [f"ROOT={root} does not exist or is not a folder (DATASET={dataset}); {fix}"]
    elif source.default_root is None:
        return [f"DATASET={dataset} needs ROOT= (it has no default location); {fix}"]
    else:
        path = source.default_root()
        made = _made_on_first_use(dataset, path)
        if dataset == "mtd" and made is not None and shared_magnetic_tile() is None:
            return [f"DATASET=mtd: no converted copy at {path} and no release at ../shared/data/magnetic_tile; {fix}"]
        if made is not None:
            unknown = [c for c in categories if c not in made]
            return [f"CATEGORIES: {', '.join(unknown)} not in DATASET={dataset} (its categories: {', '.join(made)})"] \
                if unknown else []
    return _layout_problems(path, dataset, categories, fix)


def _made_on_first_use(dataset: str, path: Path) -> tuple[str, ...] | None:
    """The categories a default root will hold once the first run prepares it (embedded generated, Magnetic Tile
    converted), or None when it is already there and is read as it is."""
    if dataset == "embedded" and not synthetic.is_current(path):
        return synthetic.CATEGORIES
    if dataset == "mtd" and not (path / mtd_source.MARKER).is_file():
        return (mtd_source.MTD_CATEGORY,)
    return None


def _layout_problems(path: Path, dataset: str, categories: list[str], fix: str) -> list[str]:
    """Missing categories in one message (with those present), then the layout of each present one."""
    found = sorted(p.name for p in path.iterdir() if (p / "train" / "good").is_dir())
    if not found:
        return [f"ROOT={path} holds no <category>/train/good folder (DATASET={dataset}); {fix}"]
    missing = [c for c in categories if not (path / c).is_dir()]
    problems = [f"CATEGORIES: {', '.join(missing)} not in {path} (categories there: {', '.join(found)}); fix "
                "CATEGORIES= or ROOT="] if missing else []
    for cat in categories:
        if cat in missing:
            continue
        try:
            scan_category(path, cat)  # file lists only, no image is decoded
        except DataLayoutError as exc:
            problems.append(str(exc))
    return problems


def checkpoint_bytes(cfg: RunConfig) -> int:
    """Estimated size of a run's ``checkpoint.pt``: parameters x bytes x :data:`CHECKPOINT_COPIES` (weights and
    Adam's two moments) + buffers; the RNG states and loss history are a few kB.

    The networks are built on the meta device (no memory, no pretrained weights read): 0.2 s for AVAGA-R. Measured
    at 64 px: 28.7 M parameters -> 345 MB, the size of a smoke AVAGA-R checkpoint.
    """
    with torch.device("meta"):
        model, disc, _ = build_networks(replace(cfg, model=replace(cfg.model, pretrained="none")))
    nets = [n for n in (model, disc) if n is not None]
    params = sum(p.numel() * p.element_size() for n in nets for p in n.parameters())
    buffers = sum(b.numel() * b.element_size() for n in nets for b in n.buffers())
    return CHECKPOINT_COPIES * params + buffers


def _size(n: float) -> str:
    """Bytes in decimal units, three digits at most (345 MB, 4.1 GB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if n < 100 else f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _checkpoint_estimate(todo: Sequence[RunSpec]) -> dict[str, tuple[int, int]]:
    """Per run name: (estimated checkpoint bytes, runs); networks built once per distinct architecture."""
    sizes: dict[tuple[str, int, str, str], int] = {}
    per_name: dict[str, tuple[int, int]] = {}
    for s in todo:
        c = s.config
        key = (c.method, c.data.image_size, c.train.setting, repr(c.model))
        if key not in sizes:
            sizes[key] = checkpoint_bytes(c)
        size, n = per_name.get(s.name, (sizes[key], 0))
        per_name[s.name] = (max(size, sizes[key]), n + 1)
    return per_name


def _existing_parent(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _results_problems(base: Path, todo: Sequence[RunSpec], jobs: int, notes: list[str]) -> list[str]:
    """RESULTS can be created or written, and its disk holds the checkpoints of the runs to do (plus one temporary
    copy per run at a time: checkpoints are written atomically, beside the old one)."""
    there = _existing_parent(base)
    fix = "pass RESULTS=<a writable folder> (make) / --results-dir"
    if not there.is_dir():
        return [f"RESULTS={base} cannot be created: {there} is a file, not a folder; {fix}"]
    if not os.access(there, os.W_OK | os.X_OK):
        return [f"RESULTS={base} is not writable ({there} is read-only for this user); {fix}"]
    runs = ResultsTree(base).runs_dir
    if runs.exists() and not (runs.is_dir() and os.access(runs, os.W_OK | os.X_OK)):
        return [f"{runs} (run logs, executed notebooks, summary.json) is not a writable folder; {fix}"]
    if not todo:
        return []
    per_name = _checkpoint_estimate(todo)
    need = sum(size * n for size, n in per_name.values()) + max(size for size, _ in per_name.values()) * min(
        jobs, len(todo))
    free = shutil.disk_usage(there).free
    small, large = min(per_name.items(), key=lambda kv: kv[1][0]), max(per_name.items(), key=lambda kv: kv[1][0])
    each = (f"{_size(small[1][0])} ({small[0]}) to {_size(large[1][0])} ({large[0]}) each" if small != large
            else f"{_size(large[1][0])} each")
    estimate = (f"{len(todo)} run(s) to do write ~{_size(need)} of checkpoints ({each}: parameters x 4 bytes x "
                f"{CHECKPOINT_COPIES} for weights and Adam moments, plus one temporary copy per run at a time)")
    notes.append(f"pipeline: {estimate}; {_size(free)} free at {there}")
    if need > free:
        return [f"RESULTS={base} has {_size(free)} free but the {estimate}; free space or pass RESULTS=<a larger "
                "disk>"]
    return []


__all__ = ["CHECKPOINT_COPIES", "DATA_FIXES", "StudyCheck", "check_study", "checkpoint_bytes"]
