"""The last outcome of each analysis notebook (05-07) over a results tree, and whether it is still current.

``make reproduce`` skips an analysis notebook only when it last *succeeded* on exactly the current inputs: a failed
notebook is never up to date, so the next call reruns it (and exits non-zero) until it succeeds. The record is
``<results_dir>/runs/report/status.json``, one entry per notebook: ``status`` (ok | failed), ``error``,
``fingerprint``, ``seconds``, ``finished`` (UTC). The fingerprint (:func:`inputs_fingerprint`) hashes what the
notebook's output depends on: the notebook file, its parameters, every run's ``config.json`` / ``metrics.json``
in the tree, those of the reference (``results/reference``), and the library's source files and paper tables.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from avaga_lib.io import read_json, write_json
from avaga_lib.paths import PACKAGE_DIR
from avaga_lib.run_folder import CONFIG_NAME, METRICS_NAME, ResultsTree

STATUS_NAME = "status.json"
RUN_FILES = (CONFIG_NAME, METRICS_NAME)  # what the analysis notebooks read of each run


def status_path(base: Path) -> Path:
    """``<base>/runs/report/status.json``."""
    return ResultsTree(base).report_runs_dir / STATUS_NAME


def _run_files(base: Path) -> list[Path]:
    """``config.json`` / ``metrics.json`` of every run folder ``<base>/<dataset>/<category>/<setting>/``."""
    if not base.is_dir():
        return []
    tree = ResultsTree(base)
    return sorted(p for name in RUN_FILES for p in tree.run_files(name))


def _library_files() -> Iterable[Path]:
    return sorted([*PACKAGE_DIR.rglob("*.py"), *PACKAGE_DIR.glob("paper_tables/*.csv")])


def inputs_fingerprint(base: Path | str, notebook: Path | str, parameters: Mapping[str, Any],
                       reference: Path | str | None = None) -> str:
    """Hash of a notebook's inputs over the results tree ``base`` (see the module docstring).

    Args:
        base: the results tree (absolute). notebook: the analysis notebook (its bytes; a missing one hashes as such).
        parameters: its papermill parameters. reference: the reference results tree (None: not an input).
    """
    digest = hashlib.sha256()

    def add(label: str, path: Path | None = None, data: bytes = b"") -> None:
        if path is not None:
            data = path.read_bytes() if path.is_file() else b"<missing>"
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("notebook", Path(notebook))
    add("parameters", data=json.dumps(dict(parameters), sort_keys=True, default=str).encode())
    for tree, tag in ((Path(base), "run"), *(((Path(reference), "reference"),) if reference is not None else ())):
        for p in _run_files(tree):
            add(f"{tag}:{p.relative_to(tree).as_posix()}", p)
    for p in _library_files():
        add(f"lib:{p.relative_to(PACKAGE_DIR).as_posix()}", p)
    return digest.hexdigest()[:16]


def read_status(base: Path | str) -> dict[str, dict[str, Any]]:
    """Every recorded outcome (empty when none was recorded or the file is unreadable: then all are stale)."""
    path = status_path(Path(base))
    try:
        data = read_json(path) if path.exists() else {}
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def record_outcome(base: Path | str, notebook: str, status: str, fingerprint: str, error: str = "",
                   seconds: float = 0.0) -> Path:
    """Record one notebook's outcome (the other notebooks' entries are kept). Returns the status file."""
    data = read_status(base)
    data[notebook] = {"status": status, "error": error, "fingerprint": fingerprint, "seconds": round(seconds, 1),
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return write_json(status_path(Path(base)), data)


def stale_notebooks(base: Path | str, fingerprints: Mapping[str, str]) -> list[str]:
    """The notebooks (keys of ``fingerprints``, in order) whose last outcome is missing, not ``ok``, or was
    recorded for other inputs."""
    data = read_status(base)
    return [name for name, fp in fingerprints.items()
            if data.get(name, {}).get("status") != "ok" or data.get(name, {}).get("fingerprint") != fp]
