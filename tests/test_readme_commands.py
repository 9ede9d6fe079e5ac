"""Every command line the README (and docs/STC.md) shows must parse against the real CLI / Makefile (issue 12).

The lines are read from fenced code blocks (continuation lines joined) and from inline code spans. A
``python -m avaga_lib.cli ...`` line is parsed by :func:`avaga_lib.cli.parse_args` (the same parsing as ``main``),
so a sub-command or option that does not exist fails here; any other ``python -m avaga_lib.<module>`` fails too
(one entry point). A ``make <target> ...`` line must name targets that ``make help`` lists, and ``make -n`` with its
variables must expand. Placeholders such as ``<folder>`` and optional parts ``[OUT=<folder>]`` are filled in.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from avaga_lib.cli import parse_args

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs/STC.md")
PYTHONS = ("python", "python3", ".venv/bin/python")
MAKE_OPTIONS_WITH_VALUE = {"-j", "-C", "-f", "-l", "-o", "-W"}


def command_lines(text: str) -> list[str]:
    """Lines of fenced code blocks (a trailing ``\\`` joins the next line) and inline code spans of ``text``."""
    lines: list[str] = []
    in_block, pending = False, ""
    for raw in text.splitlines():
        if raw.strip().startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            lines += re.findall(r"`([^`\n]+)`", raw)
            continue
        line = f"{pending} {raw.strip()}".strip()
        if line.endswith("\\"):
            pending = line[:-1].rstrip()
            continue
        pending = ""
        lines.append(line)
    return lines


def tokens(line: str) -> list[str]:
    """Shell words of ``line`` without its comment, placeholders ``<...>`` filled, optional ``[...]`` kept."""
    line = re.sub(r"<[^<>]*>", "PLACEHOLDER", line)
    line = re.sub(r"\[([^\[\]]*=[^\[\]]*)\]", r"\1", line)  # [OUT=x] -> OUT=x
    return shlex.split(line, comments=True)


def _commands(kind: str) -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCUMENTS:
        for line in command_lines((ROOT / doc).read_text()):
            if line.split()[:1] not in ([w] for w in (*PYTHONS, "make")):
                continue  # prose in code spans, shell lines of other tools
            words = tokens(line)
            if (kind == "python" and len(words) >= 3 and words[0] in PYTHONS and words[1] == "-m"
                    and words[2].split(".")[0] == "avaga_lib"):
                found.append((f"{doc}: {line}", words))
            elif kind == "make" and words[:1] == ["make"]:
                found.append((f"{doc}: {line}", words))
    return found


PYTHON_COMMANDS = _commands("python")
MAKE_COMMANDS = _commands("make")


def test_the_extractor_finds_the_readme_commands() -> None:
    readme = [c for c, _ in PYTHON_COMMANDS if c.startswith("README.md")]
    assert len(readme) >= 4, readme  # download-mvtec, convert-mtd, train, stc
    assert len([c for c, _ in MAKE_COMMANDS if c.startswith("README.md")]) >= 5
    assert any("--image-size 128 --setting unsupervised" in c for c in readme)  # continuation line joined
    assert tokens("make predict RUN=r IMAGES=<folder of images> [OUT=<folder>]") == [
        "make", "predict", "RUN=r", "IMAGES=PLACEHOLDER", "OUT=PLACEHOLDER"]


@pytest.mark.parametrize("words", [w for _, w in PYTHON_COMMANDS], ids=[c for c, _ in PYTHON_COMMANDS])
def test_python_command_parses(words: list[str]) -> None:
    assert words[2] == "avaga_lib.cli", f"python -m {words[2]}: the one entry point is python -m avaga_lib.cli"
    try:
        args = parse_args(words[3:])
    except SystemExit as exc:  # argparse's error exit (the message is on stderr)
        pytest.fail(f"`{' '.join(words)}` does not parse against avaga_lib.cli (exit {exc.code})")
    assert args.command == words[3]


@pytest.fixture(scope="module")
def make_targets() -> set[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


@pytest.mark.parametrize("words", [w for _, w in MAKE_COMMANDS], ids=[c for c, _ in MAKE_COMMANDS])
def test_make_command_exists(words: list[str], make_targets: set[str]) -> None:
    targets, variables, skip = [], [], False
    for word in words[1:]:
        if skip:
            skip = False
        elif word in MAKE_OPTIONS_WITH_VALUE:
            skip = True
        elif "=" in word:
            variables.append(word)
        elif not word.startswith("-"):
            targets.append(word)
    assert targets, f"`{' '.join(words)}`: no make target"
    unknown = [t for t in targets if t not in make_targets]
    assert not unknown, f"`{' '.join(words)}`: targets {unknown} not in `make help` ({sorted(make_targets)})"
    dry = subprocess.run(["make", "-n", "--no-print-directory", *targets, *variables], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, f"`make -n {' '.join(targets + variables)}` failed: {dry.stderr[-500:]}"


def test_a_params_file_decides_the_dataset_unless_dataset_is_given() -> None:
    """`make reproduce PARAMS=params/mtd_cpu.yaml` plans Magnetic Tile: the Makefile passes --dataset only when
    DATASET= is set (a default of 'embedded' once overrode every params file)."""
    def dry(*variables: str) -> str:
        out = subprocess.run(["make", "-n", "--no-print-directory", "reproduce", *variables], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-500:]
        return out.stdout

    assert "--dataset" not in dry("PARAMS=params/mtd_cpu.yaml", "PROFILE=cpu")
    assert '--dataset "mtd"' in dry("DATASET=mtd")
    args = parse_args(shlex.split(dry("PARAMS=params/mtd_cpu.yaml").split("avaga_lib.cli", 1)[1].replace("\\\n", " ")))
    assert args.dataset is None and str(args.params) == "params/mtd_cpu.yaml"
