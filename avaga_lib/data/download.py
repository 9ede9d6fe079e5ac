"""MVTec AD download: resumable HTTP download checked against a SHA-256, then safe, atomic extraction.

The archive address has moved several times (PROTOCOL_NOTES 14), so it is a setting (argument, ``MVTEC_URL``
environment variable or ``python -m avaga_lib.cli download-mvtec --url ...``); the SHA-256 is what is trusted.
The dataset is CC BY-NC-SA 4.0: non-commercial use only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from avaga_lib import paths
from avaga_lib.data.records import DataLayoutError

MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"  # PROTOCOL_NOTES 14
MVTEC_ARCHIVE = "mvtec_anomaly_detection.tar.xz"
# Last known public address (it has moved before: override with MVTEC_URL or --url; the checksum guards it).
MVTEC_URL = os.environ.get(
    "MVTEC_URL",
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/420938113-1629952094/"
    "mvtec_anomaly_detection.tar.xz",
)
CHUNK = 1 << 20  # 1 MiB reads: progress granularity vs. syscall count


class ChecksumError(DataLayoutError):
    """The downloaded file does not have the expected SHA-256 (the partial file has been deleted)."""


class UnsafeArchiveError(DataLayoutError):
    """The archive holds a member with an absolute path, ``..``, a link or a device; nothing was extracted."""


def sha256_of(path: Path | str) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: Path | str, sha256: str | None, timeout: float = 60.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` with an HTTP Range request), check its SHA-256.

    A ``dest`` already present with the right checksum is not downloaded again. A server that ignores the Range
    header (answers 200) makes the download restart from zero.

    Raises:
        ChecksumError: the finished file's SHA-256 differs from ``sha256``; the partial file is deleted.
        DataLayoutError: network / HTTP failure (the partial file is kept, so the next call resumes).
    """
    dest = Path(dest)
    if dest.is_file() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416:  # 416: the range starts at the end, i.e. the partial file is already complete
            raise DataLayoutError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
        resp = None
    except urllib.error.URLError as exc:
        raise DataLayoutError(f"download of {url} failed: {exc.reason}; check the address (setting MVTEC_URL)") from exc
    if resp is not None:
        with resp:
            if resp.status == 200 and have:  # Range ignored: start over
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            mode = "ab" if have else "wb"
            with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                             desc=dest.name, disable=not progress, leave=False) as bar:
                try:
                    for block in iter(lambda: resp.read(CHUNK), b""):
                        f.write(block)
                        bar.update(len(block))
                except OSError as exc:
                    raise DataLayoutError(f"download of {url} interrupted after {f.tell()} bytes ({exc}); "
                                          f"run again to resume from {part}") from exc
    if sha256 is not None:
        got = sha256_of(part)
        if got != sha256:
            part.unlink()
            raise ChecksumError(f"SHA-256 of {url} is {got}, expected {sha256}: the file is corrupt or not the "
                                f"expected archive; deleted the partial file {part}")
    os.replace(part, dest)
    return dest


def _check_member(m: tarfile.TarInfo, archive: Path) -> None:
    name = m.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"{archive}: member '{name}' has an absolute path; refusing to extract")
    if ".." in Path(name.replace("\\", "/")).parts:
        raise UnsafeArchiveError(f"{archive}: member '{name}' contains '..'; refusing to extract")
    if m.issym() or m.islnk():
        raise UnsafeArchiveError(f"{archive}: member '{name}' is a link (to '{m.linkname}'); refusing to extract")
    if m.isdev() or m.isfifo() or not (m.isfile() or m.isdir()):
        raise UnsafeArchiveError(f"{archive}: member '{name}' is a device or special file; refusing to extract")


def extract_archive(archive: Path | str, dest: Path | str) -> Path:
    """Extract a tar archive into ``dest`` safely and atomically; return ``dest``.

    Every member is checked first (no absolute path, no ``..``, no link, no device); then the archive is
    extracted with tarfile's ``filter="data"`` into a temporary sibling of ``dest`` that is renamed onto ``dest``
    at the end, so ``dest`` is either absent or complete.

    Raises:
        UnsafeArchiveError: a member is unsafe (nothing is extracted).
        DataLayoutError: ``dest`` already exists, or the archive cannot be read.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DataLayoutError(f"{dest} already exists; remove it to extract {archive} again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m, archive)
                tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataLayoutError(f"cannot extract {archive}: {exc} (corrupt or not a tar archive)") from exc
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def download_mvtec(
    dest: Path | str | None = None,
    url: str | None = None,
    sha256: str | None = MVTEC_SHA256,
    keep_archive: bool = True,
) -> Path:
    """Download and extract MVTec AD; return the dataset root (``<dest>/mvtec``, categories directly inside).

    Args:
        dest: folder for the archive and the extracted root (default: ``paths.data_dir()``).
        url: archive address (default :data:`MVTEC_URL`, itself overridable with the ``MVTEC_URL`` variable).
        sha256: expected checksum (PROTOCOL_NOTES 14); ``None`` skips the check (tests only).
        keep_archive: keep the ~5 GB archive after extraction.
    """
    dest = Path(dest) if dest is not None else paths.data_dir()
    root = dest / "mvtec"
    if root.is_dir():
        return root
    archive = download_file(url or MVTEC_URL, dest / MVTEC_ARCHIVE, sha256)
    extract_archive(archive, root)
    if not keep_archive:
        archive.unlink()
    return root
