"""Orchestration of ``make reproduce``: plan the runs of a params file, execute each notebook with papermill.

One run = (notebook, parameters) for one (dataset, category, run entry, seed). The executed notebook is kept as the
record of the run at ``<results_dir>/runs/<dataset>/<category>/<setting>.ipynb`` with its log beside it
(``.log``); the run itself writes ``<results_dir>/<dataset>/<category>/<setting>/`` (results contract).

Incremental: a run whose ``metrics.json`` exists and whose saved ``config.json`` hashes
(:func:`avaga_lib.config.config_hash`) to the planned config is skipped; ``force`` reruns it from scratch. A run
whose config changed is rerun from scratch (its stale folder is removed first, so no checkpoint of the old config
is resumed). A failing run keeps its log and executed notebook; the others go on; :class:`Summary` says what failed
and why, and the CLI exits non-zero.

Parallelism: ``jobs`` runs execute at once, each in its own papermill subprocess with
``OMP_NUM_THREADS = cores // jobs`` so parallel runs do not oversubscribe the CPU. Data that has to be generated or
converted (embedded set, Magnetic Tile, STC frame cache) is prepared once, sequentially, before any run starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from avaga_lib.config import PROFILES, RunConfig, config_hash, make_config
from avaga_lib.io import read_json, write_json, write_text
from avaga_lib.paths import project_root

NOTEBOOK_UNSUPERVISED = "03_train_unsupervised.ipynb"
NOTEBOOK_WEAK = "04_train_weakly_supervised.ipynb"
SETTING_OF_NOTEBOOK = {NOTEBOOK_UNSUPERVISED: "unsupervised", NOTEBOOK_WEAK: "weak"}
# Notebook parameter -> dotted config key (the parameters cell of notebooks 03/04 builds the config the same way).
PARAM_TO_CONFIG: dict[str, str] = {
    "dataset": "data.dataset",
    "root": "data.root",
    "category": "data.category",
    "image_size": "data.image_size",
    "variant": "model.variant",
    "latent": "model.latent",
    "attention_loss": "loss.attention_loss",
    "adversarial_recon": "loss.adversarial_recon",
    "sgb": "loss.sgb",
    "epochs": "train.epochs",
    "seed": "train.seed",
    "device": "train.device",
    "method": "method",
    "results_dir": "results_dir",
}
DEFAULT_KERNEL = "python3"  # the venv's own kernel (jupyter_client maps "python" to the running interpreter)


class PipelineError(ValueError):
    """A params file or a selection that cannot be planned (the message names the file / value and the fix)."""


@dataclass(frozen=True)
class RunSpec:
    """One planned run.

    Attributes:
        name: the run entry of the params file (``AVAGA-R_u``, ``AE-L2``, ...).
        group: ``main`` / ``ablations`` / ``baselines``.
        notebook: notebook to execute (absolute path).
        parameters: papermill parameters (all explicit, so the executed config equals ``config``).
        config: the config the notebook will build and save.
        output_notebook: where the executed notebook is kept.
        log: where papermill's output goes.
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
        return _absolute(self.config.run_dir)

    @property
    def label(self) -> str:
        """``<dataset>/<category>/<setting>``."""
        c = self.config
        return f"{c.data.dataset}/{c.data.category}/{c.setting_name}"


@dataclass
class Outcome:
    """What happened to one run."""

    spec: RunSpec
    status: str  # ok | skipped | failed
    seconds: float = 0.0
    error: str = ""


@dataclass
class Summary:
    """Every outcome of :func:`execute`."""

    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def by_status(self, status: str) -> list[Outcome]:
        """Outcomes with ``status``."""
        return [o for o in self.outcomes if o.status == status]

    @property
    def failed(self) -> list[Outcome]:
        """Failed runs."""
        return self.by_status("failed")

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise."""
        return 1 if self.failed else 0

    def text(self) -> str:
        """Human summary: counts, then one line per failure with its reason and log."""
        lines = [
            f"pipeline: {len(self.by_status('ok'))} ran, {len(self.by_status('skipped'))} skipped (finished, config "
            f"unchanged), {len(self.failed)} failed, in {self.seconds:.0f} s"
        ]
        for o in self.failed:
            lines.append(f"  FAILED {o.spec.label}: {o.error}\n         log: {o.spec.log}  notebook: "
                         f"{o.spec.output_notebook}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (written to ``<results_dir>/runs/summary.json``)."""
        return {
            "seconds": self.seconds,
            "runs": [
                {"run": o.spec.label, "status": o.status, "seconds": round(o.seconds, 1), "error": o.error,
                 "log": str(o.spec.log), "notebook": str(o.spec.output_notebook)}
                for o in self.outcomes
            ],
        }


# ----------------------------------------------------------------------------------------------------------------
# Planning


def _absolute(path: Path | str) -> Path:
    """Relative paths are relative to the project root (where papermill runs the notebooks)."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


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
        PipelineError: missing file, bad YAML or a missing/ill-typed key (named).
    """
    path = Path(params_file)
    if not path.exists():
        known = sorted(p.name for p in (project_root() / "params").glob("*.yaml"))
        raise PipelineError(f"params file {path} not found; known: {known}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping with dataset, profile, categories, seeds, runs")
    for key in ("dataset", "profile", "runs"):
        if key not in data:
            raise PipelineError(f"{path}: missing key '{key}' (see params/smoke.yaml for the schema)")
    if not isinstance(data["runs"], list) or not data["runs"]:
        raise PipelineError(f"{path}: 'runs' must be a non-empty list of {{name, group, notebook, parameters}}")
    for i, run in enumerate(data["runs"]):
        if not isinstance(run, dict) or "name" not in run or "notebook" not in run:
            raise PipelineError(f"{path}: runs[{i}] needs 'name' and 'notebook'")
        if run["notebook"] not in SETTING_OF_NOTEBOOK:
            raise PipelineError(f"{path}: runs[{i}].notebook '{run['notebook']}' is not one of "
                                f"{sorted(SETTING_OF_NOTEBOOK)}")
    return data


def default_params_file(dataset: str | None) -> Path:
    """``params/<file>.yaml`` for a dataset name (embedded -> smoke, mvtec -> paper_mvtec, else <dataset>)."""
    name = {None: "smoke", "": "smoke", "embedded": "smoke", "mvtec": "paper_mvtec"}.get(dataset, dataset)
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


def notebook_config(notebook: str, parameters: dict[str, Any], profile: str) -> RunConfig:
    """The config notebook 03/04 builds from its parameters (same mapping as their config cell).

    Raises:
        PipelineError: an unknown parameter or an impossible combination (named).
    """
    overrides: dict[str, Any] = {"train.setting": SETTING_OF_NOTEBOOK[notebook]}
    for key, value in parameters.items():
        if key == "profile":
            continue
        if key not in PARAM_TO_CONFIG:
            raise PipelineError(f"unknown notebook parameter '{key}'; known: {sorted(PARAM_TO_CONFIG)}")
        overrides[PARAM_TO_CONFIG[key]] = value
    try:
        return make_config(profile, overrides)
    except ValueError as exc:
        raise PipelineError(f"run {notebook} {parameters}: {exc}") from exc


def plan_runs(
    params_file: Path | str | None = None,
    dataset: str | None = None,
    root: str | None = None,
    categories: str | Sequence[str] | None = None,
    variants: str | Sequence[str] | None = None,
    seeds: str | Sequence[int | str] | None = None,
    profile: str | None = None,
    results_dir: Path | str = "results",
    overrides: dict[str, Any] | None = None,
    notebooks_dir: Path | str | None = None,
) -> list[RunSpec]:
    """Plan every run of a params file, narrowed by the Makefile variables.

    Args:
        params_file: the YAML; None = :func:`default_params_file` of ``dataset``.
        dataset: overrides the file's dataset (then ``root`` usually too).
        root: dataset root ("" = the dataset's default location).
        categories: subset (comma/space separated or a list); None = the file's (or every folder of ROOT).
        variants: run names (``AVAGA-R_u``) or groups (``main``, ``ablations``, ``baselines``); None = all.
        seeds: training seeds; None = the file's.
        profile: ``smoke`` / ``paper``; None = the file's.
        results_dir: base of the results tree (relative = to the project root).
        overrides: notebook parameters applied to every run last (e.g. ``{"epochs": 1}`` in tests).
        notebooks_dir: where notebooks 03/04 live (default ``<project>/notebooks``).

    Raises:
        PipelineError: unknown variant/category, missing notebook, or a run whose config is invalid.
    """
    if params_file is None:
        params_file = default_params_file(dataset)
    spec_file = load_params(params_file)
    dataset = dataset or spec_file["dataset"]
    root = spec_file.get("root", "") if root is None else root
    profile = profile or spec_file["profile"]
    if profile not in PROFILES:
        raise PipelineError(f"PROFILE={profile} unknown; choose one of {sorted(PROFILES)}")
    cats = _split_list(categories) or _split_list(spec_file.get("categories"))
    if cats is None:
        if not root:
            raise PipelineError(f"{params_file}: no categories listed and no ROOT to discover them from")
        cats = discover_categories(Path(root).expanduser())
    seed_list = [int(s) for s in (_split_list(seeds) or _split_list(spec_file.get("seeds")) or ["0"])]
    wanted = _split_list(variants)
    runs = spec_file["runs"]
    if wanted:
        known = {r["name"] for r in runs} | {r.get("group", "") for r in runs}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise PipelineError(f"VARIANTS={unknown} not in {params_file}; known runs and groups: {sorted(known)}")
        runs = [r for r in runs if r["name"] in wanted or r.get("group") in wanted]
    nb_dir = Path(notebooks_dir) if notebooks_dir else project_root() / "notebooks"
    common = {k: v for k, v in (spec_file.get("parameters") or {}).items() if v is not None}
    results_str = str(results_dir)
    runs_dir = _absolute(results_dir) / "runs"
    specs: list[RunSpec] = []
    # category-major within a seed: parallel workers then start on different categories
    for seed in seed_list:
        for run in runs:
            for cat in cats:
                params: dict[str, Any] = {
                    "dataset": dataset,
                    "root": root or "",
                    "category": cat,
                    "profile": profile,
                    "seed": seed,
                    "results_dir": results_str,
                    # explicit epochs / image size, so the planned config does not depend on notebook defaults
                    "epochs": PROFILES[profile].get("train.epochs", RunConfig().train.epochs),
                    "image_size": PROFILES[profile].get("data.image_size", RunConfig().data.image_size),
                }
                params.update(common)
                params.update(run.get("parameters") or {})
                params.update(overrides or {})
                cfg = notebook_config(run["notebook"], params, profile)
                out_nb = runs_dir / dataset / cat / f"{cfg.setting_name}.ipynb"
                specs.append(
                    RunSpec(
                        name=run["name"],
                        group=run.get("group", "main"),
                        notebook=nb_dir / run["notebook"],
                        parameters=params,
                        config=cfg,
                        output_notebook=out_nb,
                        log=out_nb.with_suffix(".log"),
                    )
                )
    _check_unique(specs)
    return specs


def _check_unique(specs: Sequence[RunSpec]) -> None:
    seen: dict[Path, str] = {}
    for s in specs:
        if s.run_dir in seen:
            raise PipelineError(f"runs '{seen[s.run_dir]}' and '{s.name}' write the same folder {s.run_dir}; "
                                "give them different parameters")
        seen[s.run_dir] = s.name


# ----------------------------------------------------------------------------------------------------------------
# Skipping


def saved_config(run_dir: Path) -> RunConfig | None:
    """The config saved in a run folder, or None when absent/unreadable.

    ``save_run`` adds record-only keys (``device``, ``pretrained_source``) beside the config fields; they are
    dropped here.
    """
    path = run_dir / "config.json"
    if not path.exists():
        return None
    try:
        data = read_json(path)
        known = set(RunConfig.__dataclass_fields__)
        return RunConfig.from_dict({k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError):
        return None


def is_finished(spec: RunSpec) -> bool:
    """True when the run's metrics.json exists and its saved config hashes to the planned one."""
    if not (spec.run_dir / "metrics.json").exists():
        return False
    saved = saved_config(spec.run_dir)
    return saved is not None and config_hash(saved) == config_hash(spec.config)


# ----------------------------------------------------------------------------------------------------------------
# Execution


def prepare_data(specs: Sequence[RunSpec]) -> dict[tuple[str, str, str], str]:
    """Generate / convert / extract each (dataset, root, category) once, before runs start in parallel.

    Returns:
        Errors per (dataset, root, category) that could not be prepared (their runs are marked failed).
    """
    from avaga_lib.data import resolve_root

    errors: dict[tuple[str, str, str], str] = {}
    done: set[tuple[str, str, str]] = set()
    for s in specs:
        d = s.config.data
        # embedded / mtd defaults are per dataset; stc extracts per scene
        key = (d.dataset, d.root, d.category if d.dataset == "stc" else "")
        if key in done:
            continue
        done.add(key)
        try:
            resolve_root(d)
        except Exception as exc:  # noqa: BLE001 - recorded per run, the others go on
            errors[key] = f"{type(exc).__name__}: {exc}"
    return errors


def _error_from_log(log: Path) -> str:
    """The exception line of a failed papermill run (last ``SomethingError: ...`` line of its log)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "no log"
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", ln).strip() for ln in text.splitlines()]
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")
    hits = [ln for ln in lines if pattern.match(ln) and not ln.startswith("PapermillExecutionError")]
    if hits:
        return hits[-1][:400]
    rest = [ln for ln in lines if ln]
    return rest[-1][:400] if rest else "failed without output"


def _papermill_command(spec: RunSpec, kernel: str) -> list[str]:
    return [
        sys.executable, "-m", "papermill", str(spec.notebook), str(spec.output_notebook),
        "-k", kernel, "--cwd", str(project_root()), "-y", yaml.safe_dump(spec.parameters), "--log-output",
        "--no-progress-bar",
    ]


def run_papermill(spec: RunSpec, kernel: str = DEFAULT_KERNEL, threads: int | None = None) -> Outcome:
    """Execute one run's notebook in a papermill subprocess (output notebook + log kept whatever happens)."""
    t0 = time.perf_counter()
    if not spec.notebook.exists():
        return Outcome(spec, "failed", 0.0, f"notebook {spec.notebook} missing")
    spec.output_notebook.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), AVAGA_NUM_THREADS=str(threads))
    with open(spec.log, "w") as log:
        log.write("$ " + " ".join(_papermill_command(spec, kernel)[:6]) + "\n")
        log.flush()
        proc = subprocess.run(_papermill_command(spec, kernel), stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=project_root(), check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        return Outcome(spec, "failed", seconds, _error_from_log(spec.log))
    if not (spec.run_dir / "metrics.json").exists():
        return Outcome(spec, "failed", seconds, f"notebook finished but wrote no {spec.run_dir / 'metrics.json'}")
    return Outcome(spec, "ok", seconds)


def run_inline(spec: RunSpec | RunConfig, figures: bool = True) -> Path:
    """Train, evaluate and save one run in this process (library calls only; used by notebooks 05-07 when they
    find no results, and by tests). Returns the run folder."""
    from avaga_lib.data import make_splits
    from avaga_lib.evaluate import evaluate_run
    from avaga_lib.run import save_run
    from avaga_lib.train import train_run

    cfg = spec.config if isinstance(spec, RunSpec) else spec
    run_dir = _absolute(cfg.run_dir)
    splits = make_splits(cfg.data, cfg.train.setting, save_dir=run_dir)
    result = train_run(cfg, splits=splits, progress=False)
    ev = evaluate_run(result.cfg, result.model, splits)
    return save_run(cfg, result, ev, figures=figures)


def execute(
    specs: Sequence[RunSpec],
    force: bool = False,
    jobs: int = 1,
    kernel: str = DEFAULT_KERNEL,
    log: Callable[[str], None] = print,
    runner: Callable[[RunSpec, str, int | None], Outcome] | None = None,
) -> Summary:
    """Execute the planned runs: skip finished ones, run the rest (``jobs`` at once), never stop at a failure.

    Args:
        specs: from :func:`plan_runs`.
        force: rerun finished runs (their folders are removed first).
        jobs: parallel runs (each its own papermill subprocess with ``cores // jobs`` threads).
        kernel: Jupyter kernel name.
        log: progress lines.
        runner: replaces :func:`run_papermill` (tests).

    Returns:
        :class:`Summary`; also written to ``<results_dir>/runs/summary.json``.
    """
    t0 = time.perf_counter()
    summary = Summary()
    todo: list[RunSpec] = []
    for s in specs:
        if not force and is_finished(s):
            summary.outcomes.append(Outcome(s, "skipped"))
            continue
        if s.run_dir.exists() and (force or saved_config(s.run_dir) is not None):
            # forced, or a stale run of another config: start clean (no resume of a checkpoint of the old config)
            shutil.rmtree(s.run_dir)
        todo.append(s)
    if summary.outcomes:
        log(f"skipping {len(summary.outcomes)} finished run(s) (metrics.json present, config unchanged)")
    data_errors = prepare_data(todo) if todo else {}
    runnable = []
    for s in todo:
        d = s.config.data
        err = data_errors.get((d.dataset, d.root, d.category if d.dataset == "stc" else ""))
        if err:
            s.log.parent.mkdir(parents=True, exist_ok=True)
            write_text(s.log, f"data preparation failed: {err}\n")
            summary.outcomes.append(Outcome(s, "failed", 0.0, f"data: {err}"))
        else:
            runnable.append(s)
    jobs = max(1, int(jobs))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    run_one = runner or run_papermill

    def _go(i_spec: tuple[int, RunSpec]) -> Outcome:
        i, s = i_spec
        log(f"[{i + 1}/{len(runnable)}] {s.label} ({s.notebook.name}) ...")
        out = run_one(s, kernel, threads)
        log(f"[{i + 1}/{len(runnable)}] {s.label}: {out.status} in {out.seconds:.0f} s"
            + (f" — {out.error}" if out.error else ""))
        return out

    if jobs == 1:
        summary.outcomes += [_go(x) for x in enumerate(runnable)]
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            summary.outcomes += list(pool.map(_go, enumerate(runnable)))
    summary.seconds = time.perf_counter() - t0
    if specs:
        write_json(specs[0].output_notebook.parents[2] / "summary.json", summary.to_dict())
    return summary


def default_jobs(specs: Sequence[RunSpec], makeflags: str | None = None) -> int:
    """Parallel runs when none were asked for: ``make -j N`` wins; else CPU-only smoke runs use every core.

    Small CPU runs scale badly across threads (measured in docs/PERFORMANCE.md: one thread per run is faster per
    core than two), so on a CPU-only machine smoke runs go one per core; GPU or paper-profile runs stay sequential
    unless ``-j``/``JOBS`` says otherwise, so they never share one GPU by surprise.
    """
    asked = jobs_from_makeflags(makeflags)
    if asked > 1:
        return asked
    import torch

    if specs and all(s.config.profile == "smoke" for s in specs) and not torch.cuda.is_available():
        return max(1, min(os.cpu_count() or 1, len(specs)))
    return 1


def jobs_from_makeflags(makeflags: str | None = None) -> int:
    """Parallel jobs requested by ``make -j N`` (read from ``MAKEFLAGS``; ``-j`` alone = all cores; none = 1)."""
    flags = os.environ.get("MAKEFLAGS", "") if makeflags is None else makeflags
    m = re.search(r"(?:^|\s)-j\s*(\d+)|--jobs[= ](\d+)", flags)
    if m:
        return int(m.group(1) or m.group(2))
    if re.search(r"(?:^|\s)-j(?:\s|$)|--jobs(?:\s|$)", flags.split(" -- ")[0]):
        return os.cpu_count() or 1
    return 1


# ----------------------------------------------------------------------------------------------------------------
# Analysis notebooks (06, 07) and the HTML report


def run_report_notebooks(
    results_dir: Path | str = "results",
    kernel: str = DEFAULT_KERNEL,
    notebooks: Sequence[str] = ("05_ablations.ipynb", "06_threshold_study.ipynb", "07_report.ipynb"),
    log: Callable[[str], None] = print,
    extra_parameters: dict[str, Any] | None = None,
) -> dict[str, Outcome]:
    """Execute the analysis notebooks (05-07) over ``results_dir`` and write ``<results_dir>/report.html`` from 07.

    Returns:
        Outcome per notebook name (a failure is recorded, the next notebook still runs).
    """
    from avaga_lib.report import export_html

    base = _absolute(results_dir)
    outcomes: dict[str, Outcome] = {}
    for name in notebooks:
        src = project_root() / "notebooks" / name
        out_nb = base / "runs" / "report" / name
        params = {"results_dir": str(results_dir), "train_if_missing": False, **(extra_parameters or {})}
        spec = RunSpec(name=name, group="report", notebook=src, parameters=params, config=RunConfig(),
                       output_notebook=out_nb, log=out_nb.with_suffix(".log"))
        t0 = time.perf_counter()
        log(f"executing {name} over {results_dir} ...")
        out_nb.parent.mkdir(parents=True, exist_ok=True)
        with open(spec.log, "w") as fh:
            proc = subprocess.run(_papermill_command(spec, kernel), stdout=fh, stderr=subprocess.STDOUT,
                                  cwd=project_root(), env=dict(os.environ), check=False)
        status = "ok" if proc.returncode == 0 else "failed"
        outcomes[name] = Outcome(spec, status, time.perf_counter() - t0,
                                 "" if status == "ok" else _error_from_log(spec.log))
        log(f"{name}: {status}" + (f" — {outcomes[name].error} (log {spec.log})" if status != "ok" else ""))
        if name.startswith("07") and status == "ok":
            html = export_html(out_nb, base / "report.html")
            log(f"report: {html}")
    return outcomes


def ensure_demo_runs(
    results_dir: Path | str,
    variants: str | Sequence[str],
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
    from avaga_lib.data import generate_dataset

    base = _absolute(results_dir)
    data = generate_dataset(base / "demo_data", categories=[category], n_train=8, n_test_good=4, n_test_bad=4,
                            size=image_size)
    specs = plan_runs(project_root() / "params" / "smoke.yaml", dataset="folder", root=str(data),
                      categories=[category], variants=variants, seeds=[0], results_dir=base,
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


def report_up_to_date(results_dir: Path | str = "results") -> bool:
    """True when ``report.html`` is newer than every run's metrics.json and than notebooks 05-07 (so a second
    ``make reproduce`` that skipped every run need not re-execute the analysis notebooks)."""
    base = _absolute(results_dir)
    html = base / "report.html"
    if not html.exists():
        return False
    inputs = [p for p in base.glob("*/*/*/metrics.json") if p.parts[-4] not in ("runs", "scratch")]
    inputs += list((project_root() / "notebooks").glob("0[5-7]_*.ipynb"))
    newest = max((p.stat().st_mtime for p in inputs), default=0.0)
    return html.stat().st_mtime > newest
