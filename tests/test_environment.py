"""The conda environment and pyproject declare the same runtime set; the Makefile offers what the README promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_runtime_dependency_is_in_environment_yml() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    in_env = {_name(r) for r in pip_section if not r.startswith("-e")}
    missing = sorted({_name(d) for d in deps} - in_env)
    assert not missing, f"environment.yml lacks {missing}: add them to its pip section"
    # pinned versions must be identical, so conda users get the same torch as the venv
    for req in (d for d in deps if "==" in d):
        assert req in pip_section, f"environment.yml must pin {req} exactly as pyproject.toml does"


def test_make_help_lists_the_readme_targets() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("setup", "test", "reproduce", "data", "bench", "lab", "predict"):
        assert re.search(rf"^\s+{target}\s+\S", out, re.M), f"`make help` does not list {target}:\n{out}"
