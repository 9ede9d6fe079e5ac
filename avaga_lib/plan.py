"""Planning ``make reproduce``: the runs of a params file, one per (seed, study run, category), and their state.

A params file (``params/*.yaml``) holds only what differs per dataset: dataset, root, profile, categories, seeds,
the notebook parameters common to every run, and optionally ``runs``, a subset of the study registry by run name or
group (default: every run of :mod:`avaga_lib.study`). Each planned run is the training notebook of its study run
(03 unsupervised, 04 weak) with explicit papermill parameters; :func:`avaga_lib.config.config_from_parameters` turns
them into the config the notebook will build, so the plan knows each run's folder and config hash in advance.

A run is finished when its ``metrics.json`` exists and its saved ``config.json`` hashes
(:func:`avaga_lib.config.config_hash`) to the planned config.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avaga_lib import study
from avaga_lib.config import PROFILES, RunConfig, config_from_parameters, config_hash
from avaga_lib.io import read_yaml_mapping
from avaga_lib.paths import absolute, project_root
from avaga_lib.run_folder import ResultsTree, RunFolder

PARAMS_KEYS: tuple[str, ...] = ("dataset", "root", "profile", "categories", "seeds", "parameters", "runs", "cluster")


class PipelineError(ValueError):
    """A params file or a selection that cannot be planned (the message names the file / value and the fix)."""


@dataclass(frozen=True)
class RunSpec:
    """One planned run.

    Attributes:
        name: the study run (``AVAGA-R_u``, ``AE-L2``, ...). group: ``main`` / ``ablations`` / ``baselines``.
        notebook: notebook to execute (absolute path). parameters: papermill parameters (all explicit, so the executed
        config equals ``config``). config: the config the notebook will build and save. output_notebook: where the
        executed notebook is kept. log: where papermill's output goes.
    """

    name: str
    group: str
    notebook: Path
    parameters: dict[str, Any]
    config: RunConfig
    output_notebook: Path
    log: Path

    @property
    def run_dir(self) -> Path:
        """The run's results folder."""
        return absolute(self.config.run_dir)

    @property
    def label(self) -> str:
        """``<dataset>/<category>/<setting>``."""
        c = self.config
        return f"{c.data.dataset}/{c.data.category}/{c.run_id}"


def _split_list(value: str | Sequence[Any] | None) -> list[str] | None:
    """``"a,b c"`` or ``["a", "b"]`` -> ``["a", "b"]``; None/"" -> None."""
    if value is None:
        return None
    if isinstance(value, str):
        items = [v for v in re.split(r"[,\s]+", value) if v]
        return items or None
    return [str(v) for v in value] or None


def load_params(params_file: Path | str) -> dict[str, Any]:
    """Read and check a params YAML file (schema: see ``params/smoke.yaml``).

    Raises:
        PipelineError: missing file, bad YAML, a missing/unknown key, or a run that is not in the study (named).
    """
    path = Path(params_file)
    if not path.exists():
        known = sorted(p.name for p in (project_root() / "params").glob("*.yaml"))
        raise PipelineError(f"params file {path} not found; known: {known}")
    data = read_yaml_mapping(path, PipelineError, "dataset, profile, categories, seeds")
    for key in ("dataset", "profile"):
        if key not in data:
            raise PipelineError(f"{path}: missing key '{key}' (see params/smoke.yaml for the schema)")
    unknown = sorted(set(data) - set(PARAMS_KEYS))
    if unknown:
        raise PipelineError(f"{path}: unknown key(s) {unknown}; known: {list(PARAMS_KEYS)} (the runs themselves are "
                            "declared in avaga_lib/study.py)")
    try:
        data["runs"] = study.select(_split_list(data.get("runs")))
    except ValueError as exc:
        raise PipelineError(f"{path}: runs: {exc}") from exc
    return data


def default_params_file(dataset: str | None, profile: str | None = None) -> Path:
    """``params/<file>.yaml`` for a dataset name (embedded -> smoke, or cpu at ``PROFILE=cpu``; mvtec ->
    paper_mvtec; else <dataset>)."""
    embedded = "cpu" if profile == "cpu" else "smoke"  # the smoke file pins 64 px, which the cpu profile refuses
    name = {None: embedded, "": embedded, "embedded": embedded, "mvtec": "paper_mvtec"}.get(dataset, dataset)
    return project_root() / "params" / f"{name}.yaml"


def discover_categories(root: Path) -> list[str]:
    """Sub-folders of an MVTec-layout root that hold ``train/good`` (sorted).

    Raises:
        PipelineError: the root is missing or holds no category.
    """
    if not root.is_dir():
        raise PipelineError(f"ROOT={root} does not exist; expected a folder in MVTec layout")
    cats = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())
    if not cats:
        raise PipelineError(f"ROOT={root} holds no <category>/train/good folder; pass CATEGORIES= or fix the layout")
    return cats


def _run_parameters(run: study.StudyRun, common: dict[str, Any], profile: str) -> tuple[dict[str, Any], RunConfig]:
    """Papermill parameters of one run and the config notebook 03/04 builds from them.

    Args:
        run: the study run. common: every other parameter (dataset, category, seed, results_dir, epochs, ...).
        profile: ``smoke`` / ``paper``.

    Raises:
        PipelineError: an unknown parameter or an impossible combination (named).
    """
    params = {"run": run.name, **common}
    try:
        return params, config_from_parameters(run.setting, params, profile)
    except ValueError as exc:
        raise PipelineError(f"run {run.name} {common}: {exc}") from exc


def _categories(categories: str | Sequence[str] | None, spec_file: dict[str, Any], root: str,
                params_file: Path | str) -> list[str]:
    """The categories asked for, else the params file's, else every category folder of ROOT."""
    cats = _split_list(categories) or _split_list(spec_file.get("categories"))
    if cats is None:
        if not root:
            raise PipelineError(f"{params_file}: no categories listed and no ROOT to discover them from")
        cats = discover_categories(Path(root).expanduser())
    return cats


MAX_SEED = 2**32 - 1  # numpy's 32-bit seed range: one seed means the same streams in python, numpy and torch


def _seeds(seeds: str | Sequence[int | str] | None, spec_file: dict[str, Any], params_file: Path | str) -> list[int]:
    """``SEEDS=`` (else the params file's ``seeds``, else 0) as non-negative whole numbers.

    Raises:
        PipelineError: a seed that is not a whole number in 0 .. 2**32 - 1 (``SEEDS=-1`` would name a run
            ``...-seed-1``; ``SEEDS=abc`` would end in a traceback), naming where it came from.
    """
    given = _split_list(seeds)
    where = "SEEDS" if given else f"{params_file}: seeds"
    out: list[int] = []
    # as text, so a YAML true / 1.5 / -1 is refused like SEEDS=abc
    for text in given or _split_list(spec_file.get("seeds")) or ["0"]:
        if not re.fullmatch(r"[0-9]+", text) or int(text) > MAX_SEED:
            raise PipelineError(f"{where}={text!r}: seeds must be whole numbers from 0 to {MAX_SEED}, e.g. "
                                "SEEDS=0,1,2")
        out.append(int(text))
    return out


def _file_parameters(spec_file: dict[str, Any], profile: str) -> dict[str, Any]:
    """Epochs and image size of the profile (explicit, so the planned config does not depend on notebook defaults),
    then the params file's common parameters (None = the profile's value)."""
    return {
        "epochs": PROFILES[profile].get("train.epochs", RunConfig().train.epochs),
        "image_size": PROFILES[profile].get("data.image_size", RunConfig().data.image_size),
        **{k: v for k, v in (spec_file.get("parameters") or {}).items() if v is not None},
    }


def plan_runs(
    params_file: Path | str | None = None,
    dataset: str | None = None,
    root: str | None = None,
    categories: str | Sequence[str] | None = None,
    runs: str | Sequence[str] | None = None,
    seeds: str | Sequence[int | str] | None = None,
    profile: str | None = None,
    results_dir: Path | str = "results",
    overrides: dict[str, Any] | None = None,
    notebooks_dir: Path | str | None = None,
) -> list[RunSpec]:
    """Plan every run of a params file, narrowed by the Makefile variables.

    Args:
        params_file: the YAML; None = :func:`default_params_file` of ``dataset``. dataset: overrides the file's dataset
        (then ``root`` usually too). root: dataset root ("" = the dataset's default location). categories: subset
        (comma/space separated or a list); None = the file's (or every folder of ROOT). runs: run names (``AVAGA-R_u``)
        or groups (``main``, ``ablations``, ``baselines``); None = all the
            file's runs (``RUNS=``).
        seeds: training seeds; None = the file's. profile: ``smoke`` / ``paper``; None = the file's.
        results_dir: base of the results tree (relative = to the project root). overrides: notebook parameters applied
        to every run last (e.g. ``{"epochs": 1}`` in tests). notebooks_dir: where notebooks 03/04 live (default
        ``<project>/notebooks``).

    Raises:
        PipelineError: unknown run/category, missing notebook, or a run whose config is invalid.
    """
    params_file = default_params_file(dataset, profile) if params_file is None else params_file
    spec_file = load_params(params_file)
    dataset = dataset or spec_file["dataset"]
    root = spec_file.get("root", "") if root is None else root
    profile = profile or spec_file["profile"]
    if profile not in PROFILES:
        raise PipelineError(f"PROFILE={profile} unknown; choose one of {sorted(PROFILES)}")
    cats = _categories(categories, spec_file, root, params_file)
    seed_list = _seeds(seeds, spec_file, params_file)
    try:
        selected = study.select(_split_list(runs), spec_file["runs"])
    except ValueError as exc:
        raise PipelineError(f"RUNS={_split_list(runs)} not all in {params_file}: {exc}") from exc
    nb_dir = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    common = {"dataset": dataset, "root": root or "", "profile": profile, "results_dir": str(results_dir),
              **_file_parameters(spec_file, profile)}
    tree = ResultsTree.at(results_dir)
    specs: list[RunSpec] = []
    # category-major within a seed: parallel workers then start on different categories
    for seed in seed_list:
        for run in selected:
            for cat in cats:
                params, cfg = _run_parameters(run, {**common, "category": cat, "seed": seed, **(overrides or {})},
                                             profile)
                out_nb = tree.run_notebook(dataset, cat, cfg.run_id)
                specs.append(RunSpec(run.name, run.group, nb_dir / run.notebook, params, cfg, out_nb,
                                     out_nb.with_suffix(".log")))
    _check_unique(specs)
    return specs


def _check_unique(specs: Sequence[RunSpec]) -> None:
    seen: dict[Path, str] = {}
    for s in specs:
        if s.run_dir in seen:
            raise PipelineError(f"runs '{seen[s.run_dir]}' and '{s.name}' write the same folder {s.run_dir}; "
                                "give them different parameters")
        seen[s.run_dir] = s.name


def saved_config(run_dir: Path) -> RunConfig | None:
    """The config saved in a run folder, or None when absent/unreadable.

    Record-only keys beside the config fields are dropped (:meth:`avaga_lib.run_folder.RunFolder.load_config`).
    """
    folder = RunFolder(run_dir)
    if not folder.config_path.exists():
        return None
    try:
        return folder.load_config()
    except (ValueError, TypeError):
        return None


def is_finished(spec: RunSpec) -> bool:
    """True when the run's metrics.json exists and its saved config hashes to the planned one."""
    if not RunFolder(spec.run_dir).is_finished():
        return False
    saved = saved_config(spec.run_dir)
    return saved is not None and config_hash(saved) == config_hash(spec.config)
