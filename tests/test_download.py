"""Dataset downloads against a local HTTP server with Range support (never the internet)."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import socket
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from ulsad.data import download as dl
from ulsad.data import load_split
from ulsad.errors import ULSADError


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; logs (path, range, bytes sent)."""

    def do_GET(self) -> None:
        data = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404)
            return
        header = self.headers.get("Range")
        start = int(re.fullmatch(r"bytes=(\d+)-", header)[1]) if header else 0
        body = data[start:]
        # log before answering, so the client never sees a response the log lacks
        self.server.log.append((self.path, header, len(body)))  # type: ignore[attr-defined]
        if header and start >= len(data):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.log = {}, []  # type: ignore[attr-defined]
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _url(httpd: ThreadingHTTPServer, path: str) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}{path}"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _serve(monkeypatch, httpd, dataset: str, data: bytes, sha256: str | None = "auto", **kw):
    """Serve ``data`` as ``dataset``'s archive and point SOURCES at it."""
    name = "/archive.zip" if data[:2] == b"PK" else "/archive.tar.gz"
    httpd.files[name] = data
    digest = hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256
    source = dl.Source(dataset, "https://example.org/page", "test", _url(httpd, name), digest, **kw)
    monkeypatch.setitem(dl.SOURCES, dataset, source)
    return name


VISA_TAR = {
    "split_csv/1cls.csv": b"object,split,label,image,mask\n",
    "candle/Data/Images/Normal/0000.JPG": b"jpeg bytes" * 50,
}


def test_download_extract_verify_and_skip_when_done(server, monkeypatch, tmp_path: Path) -> None:
    data = _tar(VISA_TAR)
    _serve(monkeypatch, server, "visa", data)
    root = dl.download("visa", tmp_path)
    assert root == tmp_path / "visa"
    assert (root / "split_csv/1cls.csv").read_bytes() == VISA_TAR["split_csv/1cls.csv"]
    assert (root / dl.MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["visa"]  # archive removed
    assert server.log == [("/archive.tar.gz", None, len(data))]
    assert dl.download("visa", tmp_path) == root
    assert len(server.log) == 1  # idempotent: no second request


def test_zip_with_subfolder_gives_a_loadable_root(server, monkeypatch, tmp_path: Path) -> None:
    members = {f"BTech_Dataset_transformed/01/train/ok/{i:04d}.png": _png() for i in range(3)}
    _serve(monkeypatch, server, "btad", _zip(members), subdir="BTech_Dataset_transformed")
    monkeypatch.setenv("ULSAD_DATA", str(tmp_path / "cache"))
    root = dl.download("btad")
    assert root == tmp_path / "cache/btad/BTech_Dataset_transformed"
    assert len(load_split("btad", root, "01", "train")) == 3


def test_checksum_mismatch_deletes_and_extracts_nothing(server, monkeypatch, tmp_path) -> None:
    _serve(monkeypatch, server, "visa", _tar(VISA_TAR), sha256="0" * 64)
    with pytest.raises(ULSADError, match=r"checksum mismatch.*expected sha256 0000"):
        dl.download("visa", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no extracted folder, no .part left


def test_resume_requests_only_the_missing_bytes(server, monkeypatch, tmp_path: Path) -> None:
    data = _tar({**VISA_TAR, "big.bin": bytes(range(256)) * 400})
    _serve(monkeypatch, server, "visa", data)
    done = len(data) // 3
    (tmp_path / "archive.tar.gz.part").write_bytes(data[:done])
    root = dl.download("visa", tmp_path)
    assert server.log == [("/archive.tar.gz", f"bytes={done}-", len(data) - done)]
    assert (root / "big.bin").read_bytes() == bytes(range(256)) * 400


def test_complete_part_file_is_verified_without_refetching(server, monkeypatch, tmp_path) -> None:
    data = _tar(VISA_TAR)
    _serve(monkeypatch, server, "visa", data)
    (tmp_path / "archive.tar.gz.part").write_bytes(data)
    assert (dl.download("visa", tmp_path) / "split_csv").is_dir()
    assert server.log == [("/archive.tar.gz", f"bytes={len(data)}-", 0)]  # 416, nothing sent


@pytest.mark.parametrize("make", [_tar, _zip])
@pytest.mark.parametrize("evil", ["../evil.txt", "/tmp/ulsad_evil.txt", "a/../../evil.txt"])
def test_path_traversal_member_is_rejected(tmp_path: Path, make, evil: str) -> None:
    archive = tmp_path / "dl" / "x.archive"
    archive.parent.mkdir()
    archive.write_bytes(make({"ok.txt": b"fine", evil: b"bad"}))
    with pytest.raises(ULSADError, match="unsafe member"):
        dl.extract(archive, tmp_path / "dl" / "out")
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["x.archive"]
    assert not (tmp_path / "evil.txt").exists()


def test_tar_symlink_escaping_is_rejected(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tf:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "x.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(ULSADError, match=r"unsafe member '\.\./\.\./etc/passwd'"):
        dl.extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unreachable_url_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/archive.tar"
    monkeypatch.setitem(dl.SOURCES, "visa", dl.Source("VisA", "https://example.org/page", "x", url))
    with pytest.raises(ULSADError, match=r"could not reach .*download it by hand from https://"):
        dl.download("visa", tmp_path)
    assert not (tmp_path / "visa").exists()


@pytest.fixture
def log_on_stderr(capsys) -> Iterator[None]:
    """ulsad's log lines on stderr, as the CLI shows them (`ulsad.cli.configure_logging`; under
    pytest, logging is already configured, so the CLI leaves it to pytest)."""
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger("ulsad").addHandler(handler)
    yield
    logging.getLogger("ulsad").removeHandler(handler)


def test_http_error_and_unknown_digest(
    server, monkeypatch, tmp_path: Path, capsys, log_on_stderr
) -> None:
    with pytest.raises(ULSADError, match="HTTP 404"):
        dl.fetch(_url(server, "/missing"), tmp_path / "m", sha256=None, page="p")
    data = _tar(VISA_TAR)
    _serve(monkeypatch, server, "visa", data, sha256=None)
    dl.download("visa", tmp_path)
    assert hashlib.sha256(data).hexdigest() in capsys.readouterr().err


def test_licence_and_manual_only_datasets_do_not_download(server, monkeypatch, tmp_path) -> None:
    _serve(monkeypatch, server, "mvtec_ad", _tar(VISA_TAR), needs_licence=True)
    with pytest.raises(ULSADError, match=r"accept its licence at https://example\.org/page"):
        dl.download("mvtec_ad", tmp_path)
    assert server.log == []
    assert (dl.download("mvtec_ad", tmp_path, accept_licence=True) / "split_csv").is_dir()
    with pytest.raises(ULSADError, match=r"no direct download link.*github\.com/stepanje/MPDD"):
        dl.download("mpdd", tmp_path)
    with pytest.raises(ULSADError, match="no download for 'folder'"):
        dl.download("folder", tmp_path)
    assert {s.url is None for s in dl.SOURCES.values()} == {True, False}


def test_existing_unfinished_target_is_not_overwritten(server, monkeypatch, tmp_path) -> None:
    _serve(monkeypatch, server, "visa", _tar(VISA_TAR))
    (tmp_path / "visa").mkdir()
    (tmp_path / "visa" / "mine.txt").write_text("user data")
    with pytest.raises(ULSADError, match="not a finished download"):
        dl.download("visa", tmp_path)
    assert (tmp_path / "visa" / "mine.txt").read_text() == "user data"
    assert server.log == []


def test_default_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ULSAD_DATA", str(tmp_path))
    assert dl.default_cache() == tmp_path
    monkeypatch.delenv("ULSAD_DATA")
    assert dl.default_cache() == Path.home() / ".cache/ulsad/datasets"


def test_progress_bar_counts_the_bytes_of_a_resumed_download(server, monkeypatch, tmp_path,
                                                             capsys) -> None:  # fmt: skip
    """`progress=True`: a bar on stderr from the resumed offset to the archive's full size."""
    data = _tar({**VISA_TAR, "big.bin": bytes(range(256)) * 4000})
    _serve(monkeypatch, server, "visa", data)
    done = len(data) // 3
    (tmp_path / "archive.tar.gz.part").write_bytes(data[:done])
    root = dl.download("visa", tmp_path, progress=True)
    assert (root / "big.bin").read_bytes() == bytes(range(256)) * 4000
    err = capsys.readouterr().err
    total = f"{len(data) / 1024:.2f}k"
    assert f"{done / 1024:.2f}k/{total}" in err and f"100%|██████████| {total}/{total}" in err, err


@pytest.mark.parametrize(("terminal", "quiet"), [(True, False), (True, True), (False, False)])
def test_cli_download_shows_progress_only_on_a_terminal_without_quiet(
    server, monkeypatch, tmp_path, capsys, terminal, quiet
) -> None:
    from ulsad.cli import main

    _serve(monkeypatch, server, "visa", _tar(VISA_TAR))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    argv = ["download", "visa", "--dest", str(tmp_path), *(["--quiet"] if quiet else [])]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert ("100%" in captured.err) == (terminal and not quiet), captured.err
    assert captured.out.startswith("visa is in ")
