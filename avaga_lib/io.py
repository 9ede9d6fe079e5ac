"""File writing of the study: atomic JSON / CSV / torch checkpoints (temp file in the same folder, then rename).

Every other module writes through here, so an interrupted run never leaves a half-written file behind. Files and
swapped-in folders end with the mode a plain ``open()`` / ``mkdir()`` would give (``0666`` / ``0777`` minus the
umask), not the ``0600`` / ``0700`` of :mod:`tempfile`, so results on a shared file system stay readable by others.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml


def current_umask() -> int:
    """This process's umask, read without changing it where the system allows.

    ``os.umask`` can only be read by setting it, and another thread creating a file in between would get the
    temporary value, so Linux's ``/proc/self/status`` is read first; the set-and-restore is the fallback.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path | str, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` then rename the temp file onto ``path`` (same folder, so the rename is atomic).

    The file ends with mode ``0666 & ~umask``, as ``open(path, "w")`` would create it (``mkstemp`` makes ``0600``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        writer(tmp_path)
        # the writer may have replaced the temp file (or written through a path): set the mode on what is there now
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # issue 22: "No space left on device" named no file
            free = shutil.disk_usage(path.parent).free
            raise OSError(exc.errno, f"no space left to write {path} ({free / 1e6:.0f} MB free on its file system): "
                          "free space or choose another RESULTS= folder; the previous file, if any, is unchanged",
                          str(path)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # JSON has no NaN; "unavailable" metrics are written as null
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: Path | str, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (NaN/inf become null)."""
    text = json.dumps(_jsonable(data), indent=2, sort_keys=False)
    return atomic_write(path, lambda p: p.write_text(text + "\n"))


def read_json(path: Path | str) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_csv(path: Path | str, frame: Any) -> Path:
    """Write a pandas DataFrame as CSV atomically (no index)."""
    return atomic_write(path, lambda p: frame.to_csv(p, index=False))


def write_text(path: Path | str, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda p: p.write_text(text))


def save_torch(path: Path | str, obj: Any) -> Path:
    """``torch.save`` atomically (checkpoints)."""
    import torch  # lazy: io is the bottom layer (config, pipeline planning, report tables) and never needs torch else

    return atomic_write(path, lambda p: torch.save(obj, p))


def replace_dir(tmp: Path | str, dst: Path | str) -> Path:
    """Swap a fully written temporary folder ``tmp`` in as ``dst`` (same parent, so each rename is atomic).

    An existing ``dst`` is first moved aside and deleted only after the new folder is in place, so at every moment
    either the old or the new complete folder exists under ``dst``. ``tmp`` gets the mode ``mkdir`` would have given
    it (``0777 & ~umask``): callers make it with ``tempfile.mkdtemp``, whose ``0700`` would hide it from others.
    """
    tmp, dst = Path(tmp), Path(dst)
    os.chmod(tmp, 0o777 & ~current_umask())
    if dst.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        os.replace(dst, old / "d")
        os.replace(tmp, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)
    return dst


def read_yaml_mapping(path: Path | str, error: type[Exception], expected: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping (params files, cluster files).

    Raises:
        error: the file is not valid YAML, or holds something else than a mapping (``expected`` says what).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping with {expected}")
    return data
