"""The results contract in one place: the files of a run folder, and where run folders sit in a results tree.

A run folder is ``<results_dir>/<dataset>/<category>/<setting>/`` (docs/ARCHITECTURE.md, "Results contract"):
``config.json`` (the config only), ``splits.json``, ``losses.csv``, ``calibration.json``, ``predictions.csv``, the
figures, git-ignored ``checkpoint.pt`` and ``maps/test_maps.npz``, and ``metrics.json``, which
:func:`avaga_lib.training.run.save_run` writes last: the marker that the run is finished. Beside the datasets, a
results tree holds ``runs/`` (executed notebooks, logs, ``summary.json``, the analysis notebooks' records under
``runs/report/``)
and folders that are no dataset (:data:`NON_DATASET_DIRS`).

Every other module asks :class:`RunFolder` / :class:`ResultsTree` for these paths, or takes a ``*_NAME`` constant
where the same file sits outside a run folder (``predict`` writes its own ``predictions.csv``, ``make_splits`` its
``splits.json`` wherever it is told), so no file name of the contract is spelled twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from avaga_lib.config import RunConfig
from avaga_lib.io import read_json
from avaga_lib.paths import absolute

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.json"  # written last by save_run: its presence is what "finished" means
LOSSES_NAME = "losses.csv"
PREDICTIONS_NAME = "predictions.csv"
CALIBRATION_NAME = "calibration.json"
SPLITS_NAME = "splits.json"
CHECKPOINT_NAME = "checkpoint.pt"
MAPS_DIR = "maps"  # git-ignored (results/*/*/*/maps/): the test maps and predict's default output
MAPS_NAME = f"{MAPS_DIR}/test_maps.npz"  # per-image test maps, relative to the run folder
LOSSES_FIGURE = "fig_losses.png"
SCORES_FIGURE = "fig_scores.png"
QUALITATIVE_FIGURE = "fig_qualitative.png"

RUNS_DIR = "runs"  # <results_dir>/runs/<dataset>/<category>/<setting>.ipynb|.log|.lock, and the study's summary
SUMMARY_NAME = "summary.json"
REPORT_RUNS_DIR = "report"  # runs/report/: the executed analysis notebooks, their logs and status
# Folders directly under a results tree that are not datasets (pipeline records, report output, scratch runs, the
# committed reference results, read only by avaga_lib.reporting.reference, and the cpu profile's own tree results/cpu).
NON_DATASET_DIRS = frozenset({RUNS_DIR, "tables", "scratch", "bench", "figures", "reference", "cpu"})


def config_from_record(record: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` of a saved ``config.json``'s content.

    Keys that are no config field are dropped: earlier ``save_run`` versions wrote record-only keys (``device``,
    ``pretrained_source``) beside the config. Configs saved before the study registry load too
    (:meth:`RunConfig.from_dict`).

    Raises:
        ValueError, TypeError: the content is not a run config.
    """
    known = set(RunConfig.__dataclass_fields__)
    return RunConfig.from_dict({k: v for k, v in record.items() if k in known})


@dataclass(frozen=True)
class RunFolder:
    """One run folder of the results contract (it need not exist yet).

    Attributes:
        path: the folder, ``<results_dir>/<dataset>/<category>/<setting>``.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # callers hold str run_dir values (runs frames, CLI)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS_NAME

    @property
    def losses_path(self) -> Path:
        return self.path / LOSSES_NAME

    @property
    def predictions_path(self) -> Path:
        return self.path / PREDICTIONS_NAME

    @property
    def calibration_path(self) -> Path:
        return self.path / CALIBRATION_NAME

    @property
    def splits_path(self) -> Path:
        return self.path / SPLITS_NAME

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT_NAME

    @property
    def maps_dir(self) -> Path:
        return self.path / MAPS_DIR

    @property
    def maps_path(self) -> Path:
        return self.path / MAPS_NAME

    def figure_path(self, name: str) -> Path:
        """One of the run's figures (:data:`LOSSES_FIGURE`, :data:`SCORES_FIGURE`, :data:`QUALITATIVE_FIGURE`)."""
        return self.path / name

    def is_finished(self) -> bool:
        """Whether ``metrics.json`` exists: save_run writes it last, after removing a stale one first, so a run killed
        while saving is never counted finished. (Whether it is the *planned* run is
        :func:`avaga_lib.plan.is_finished`.)
        """
        return self.metrics_path.exists()

    def config_record(self) -> Any:
        """``config.json`` as saved (raw JSON; a run config's fields plus any record-only key).

        Raises:
            FileNotFoundError: no ``config.json``; ValueError: not valid JSON.
        """
        return read_json(self.config_path)

    def load_config(self) -> RunConfig:
        """The run's config from ``config.json`` (:func:`config_from_record`).

        Raises:
            FileNotFoundError: no ``config.json``; ValueError, TypeError: not a run config.
        """
        return config_from_record(self.config_record())

    def metrics(self) -> Any:
        """``metrics.json`` as saved (raw JSON).

        Raises:
            FileNotFoundError: the run is not finished; ValueError: not valid JSON.
        """
        return read_json(self.metrics_path)


@dataclass(frozen=True)
class ResultsTree:
    """A results tree: run folders ``<path>/<dataset>/<category>/<setting>/`` and the study's records under
    ``<path>/runs/``. Which tree a profile writes is :meth:`for_profile` (the one place: the Makefile asks the CLI).

    Attributes:
        path: the tree's top folder.
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @staticmethod
    def for_profile(profile: str | None) -> str:
        """The results tree ``make reproduce PROFILE=<profile>`` writes, relative to the project root: ``results/cpu``
        for the cpu profile (its own tree and reference), ``results`` for any other."""
        return "results/cpu" if profile == "cpu" else "results"

    @classmethod
    def at(cls, results_dir: Path | str) -> ResultsTree:
        """The tree named by ``results_dir`` (relative to the project root unless absolute)."""
        return cls(absolute(results_dir))

    @classmethod
    def of_run_notebook(cls, notebook: Path | str) -> ResultsTree:
        """The tree an executed run notebook (:meth:`run_notebook`) belongs to."""
        return cls(Path(notebook).parents[3])

    @property
    def runs_dir(self) -> Path:
        """Executed run notebooks with their logs and claim files, and :attr:`summary_path`."""
        return self.path / RUNS_DIR

    @property
    def summary_path(self) -> Path:
        """The last study's outcomes (:class:`avaga_lib.orchestration.pipeline.Summary`)."""
        return self.runs_dir / SUMMARY_NAME

    @property
    def report_runs_dir(self) -> Path:
        """The executed analysis notebooks (05-07), their logs and their status record."""
        return self.runs_dir / REPORT_RUNS_DIR

    def run_notebook(self, dataset: str, category: str, setting: str) -> Path:
        """Where a run's executed notebook is kept (its log and lock beside it)."""
        return self.runs_dir / dataset / category / f"{setting}.ipynb"

    def run_files(self, name: str) -> list[Path]:
        """Every ``<dataset>/<category>/<setting>/<name>`` of the tree, sorted; folders of :data:`NON_DATASET_DIRS`
        are no datasets and a run set aside while a job replaces it (one level deeper) is not found."""
        return [p for p in sorted(self.path.glob(f"*/*/*/{name}")) if p.parts[-4] not in NON_DATASET_DIRS]

    def finished_runs(self) -> list[RunFolder]:
        """The finished run folders of the tree (:meth:`RunFolder.is_finished`), sorted by path."""
        return [RunFolder(p.parent) for p in self.run_files(METRICS_NAME)]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU.

    Raises:
        ValueError: the file is not a readable checkpoint (naming it and the way out).
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # our own file: holds RNG tuples
    except Exception as exc:  # a truncated file cannot happen with atomic writes, but a foreign one can
        raise ValueError(f"cannot read checkpoint {path} ({exc}); delete it or set train.resume=False") from exc


__all__ = [
    "CALIBRATION_NAME",
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "LOSSES_FIGURE",
    "LOSSES_NAME",
    "MAPS_DIR",
    "MAPS_NAME",
    "METRICS_NAME",
    "NON_DATASET_DIRS",
    "PREDICTIONS_NAME",
    "QUALITATIVE_FIGURE",
    "REPORT_RUNS_DIR",
    "RUNS_DIR",
    "SCORES_FIGURE",
    "SPLITS_NAME",
    "SUMMARY_NAME",
    "ResultsTree",
    "RunFolder",
    "config_from_record",
    "load_checkpoint",
]
