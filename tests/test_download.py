"""MVTec AD download path against archives built here and served from 127.0.0.1 (good, corrupt, malicious)."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from avaga_lib.config import DataConfig
from avaga_lib.data import make_splits
from avaga_lib.data.download import (
    ChecksumError,
    DataLayoutError,
    UnsafeArchiveError,
    download_file,
    download_mvtec,
    extract_archive,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    log: list[tuple[str, str | None, int]] = []  # (path, Range header, bytes sent)
    honor_range = True

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        start = 0
        if rng and self.honor_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                self.log.append((self.path, rng, 0))
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.log.append((self.path, rng, len(body)))

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture()
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"files": {}, "log": [], "honor_range": True})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def _tar_xz(add: callable) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        add(tar)
    return buf.getvalue()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _member(tar: tarfile.TarFile, name: str, data: bytes = b"x", **kw: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kw.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def test_good_archive_downloads_extracts_and_loads(server, tiny_dataset: Path, tmp_path: Path) -> None:
    url, h = server
    archive = _tar_xz(lambda tar: tar.add(tiny_dataset / "weave", arcname="weave"))
    h.files["/mvtec.tar.xz"] = archive
    root = download_mvtec(tmp_path, url=url + "/mvtec.tar.xz", sha256=_sha(archive))
    assert root == tmp_path / "mvtec" and (root / "weave" / "train" / "good").is_dir()
    assert not list(tmp_path.glob(".*extract*")) and not list(tmp_path.glob("*.part"))
    s = make_splits(DataConfig(dataset="mvtec", root=str(root), category="weave"), "weak")
    assert len(s.train) + len(s.val) == 12 and len(s.weak) == 1 and s.has_masks


def test_resume_uses_range_and_wrong_range_server_restarts(server, tmp_path: Path) -> None:
    url, h = server
    payload = bytes(range(256)) * 4000  # ~1 MB
    h.files["/f.bin"] = payload
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(payload[:300_000])  # an interrupted earlier download
    download_file(url + "/f.bin", dest, _sha(payload), progress=False)
    assert dest.read_bytes() == payload
    assert h.log[-1] == ("/f.bin", "bytes=300000-", len(payload) - 300_000)  # only the rest was sent
    # a server ignoring Range (200): the download restarts from zero and is still right
    h.honor_range = False
    dest2 = tmp_path / "g.bin"
    (tmp_path / "g.bin.part").write_bytes(b"garbage!" * 100)
    download_file(url + "/f.bin", dest2, _sha(payload), progress=False)
    assert dest2.read_bytes() == payload
    # complete already: not downloaded again
    n = len(h.log)
    download_file(url + "/f.bin", dest, _sha(payload), progress=False)
    assert len(h.log) == n


def test_wrong_checksum_deletes_partial_and_says_so(server, tmp_path: Path) -> None:
    url, h = server
    h.files["/a.tar.xz"] = b"corrupted bytes, not the archive"
    with pytest.raises(ChecksumError, match="deleted the partial file") as e:
        download_file(url + "/a.tar.xz", tmp_path / "a.tar.xz", "0" * 64, progress=False)
    assert "a.tar.xz.part" in str(e.value)
    assert not (tmp_path / "a.tar.xz.part").exists() and not (tmp_path / "a.tar.xz").exists()


def test_corrupt_archive_fails_cleanly(server, tmp_path: Path) -> None:
    url, h = server
    good = _tar_xz(lambda tar: _member(tar, "cat/train/good/a.png", b"y" * 5000))
    bad = good[: len(good) // 2]
    h.files["/bad.tar.xz"] = bad
    archive = download_file(url + "/bad.tar.xz", tmp_path / "bad.tar.xz", _sha(bad), progress=False)
    with pytest.raises(DataLayoutError, match="bad.tar.xz"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.extract*"))


def test_http_error_names_url(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(DataLayoutError, match="HTTP 404"):
        download_file(url + "/missing.tar.xz", tmp_path / "m.tar.xz", None, progress=False)


@pytest.mark.parametrize(
    "name, kw, why",
    [
        ("../evil.txt", {}, "'..'"),
        ("/tmp/abs_evil.txt", {}, "absolute"),
        ("cat/link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}, "link"),
        ("cat/hard", {"type": tarfile.LNKTYPE, "linkname": "cat/ok.txt"}, "link"),
        ("cat/dev", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}, "device"),
    ],
)
def test_malicious_archive_is_refused(server, tmp_path: Path, name: str, kw: dict, why: str) -> None:
    url, h = server

    def add(tar: tarfile.TarFile) -> None:
        _member(tar, "cat/ok.txt")
        _member(tar, name, b"" if kw else b"evil", **kw)

    blob = _tar_xz(add)
    h.files["/evil.tar.xz"] = blob
    archive = download_file(url + "/evil.tar.xz", tmp_path / "dl" / "evil.tar.xz", _sha(blob), progress=False)
    with pytest.raises(UnsafeArchiveError, match=why) as e:
        extract_archive(archive, tmp_path / "dl" / "out")
    assert name in str(e.value)
    assert not (tmp_path / "dl" / "out").exists() and not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["evil.tar.xz"]  # nothing extracted or left
