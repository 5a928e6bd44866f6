"""Resumable, md5-checked downloads against a local HTTP server (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import threading
import zipfile

import pytest

from sejax.data import download as dl
from sejax.errors import ConfigError, DataError


def _payload() -> bytes:
    """A small zip, the kind of file the downloader fetches."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(4):
            zf.writestr(f"Actor_01/03-01-0{i + 1}-01-01-01-01.wav", bytes(range(256)) * 40)
    return buf.getvalue()


class _Server:
    """http.server with Range support and switches for misbehaving like real servers do."""

    def __init__(self, data: bytes):
        self.data = data
        self.honour_range = True
        self.cut_after: int | None = None  # close the connection after this many body bytes
        self.cuts_left = 0
        self.requests: list[str | None] = []  # Range header of each request
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                if self.path.startswith("/missing"):
                    self.send_error(404, "Not Found")
                    return
                data, start = server.data, 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match and server.honour_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None and server.cuts_left > 0:
                    server.cuts_left -= 1
                    self.wfile.write(body[: server.cut_after])
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def url(self, path: str = "/file.zip") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    s = _Server(_payload())
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    dest = tmp_path / "sub" / "file.zip"
    seen = []
    got = dl.download(
        server.url(),
        dest,
        _md5(server.data),
        chunk_size=1000,
        progress=lambda d, t: seen.append((d, t)),
    )
    assert got == dest
    assert dest.read_bytes() == server.data
    assert not dest.with_name("file.zip.part").exists()
    assert seen[-1] == (len(server.data), len(server.data))
    assert zipfile.ZipFile(dest).testzip() is None


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "file.zip"
    dl.download(server.url(), dest, _md5(server.data))
    assert len(server.requests) == 1
    dl.download(server.url(), dest, _md5(server.data))
    dl.download(server.url(), dest, None)
    assert len(server.requests) == 1


def test_existing_corrupt_dest_is_replaced(server, tmp_path):
    dest = tmp_path / "file.zip"
    dest.write_bytes(b"stale")
    dl.download(server.url(), dest, _md5(server.data))
    assert dest.read_bytes() == server.data


def test_resumes_from_part_file_with_range(server, tmp_path):
    dest = tmp_path / "file.zip"
    part = tmp_path / "file.zip.part"
    part.write_bytes(server.data[:1234])
    dl.download(server.url(), dest, _md5(server.data))
    assert dest.read_bytes() == server.data
    assert server.requests == ["bytes=1234-"]


def test_interrupted_transfer_is_resumed(server, tmp_path):
    server.cut_after, server.cuts_left = 3000, 2  # two dropped connections, then a good one
    dest = tmp_path / "file.zip"
    dl.download(server.url(), dest, _md5(server.data), retry_wait_s=0)
    assert dest.read_bytes() == server.data
    assert server.requests == [None, "bytes=3000-", "bytes=6000-"]


def test_gives_up_keeping_part_then_resumes_on_next_call(server, tmp_path):
    server.cut_after, server.cuts_left = 1000, 2
    dest = tmp_path / "file.zip"
    with pytest.raises(DataError, match="run again to resume"):
        dl.download(server.url(), dest, _md5(server.data), retries=1, retry_wait_s=0)
    part = tmp_path / "file.zip.part"
    assert part.read_bytes() == server.data[:2000]
    assert not dest.exists()
    dl.download(server.url(), dest, _md5(server.data))
    assert dest.read_bytes() == server.data
    assert server.requests[-1] == "bytes=2000-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    server.honour_range = False
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(b"garbage that must not be kept")
    dl.download(server.url(), dest, _md5(server.data))
    assert dest.read_bytes() == server.data
    assert server.requests == ["bytes=29-"]


def test_complete_part_file_gets_416_and_verifies(server, tmp_path):
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(server.data)
    dl.download(server.url(), dest, _md5(server.data))
    assert dest.read_bytes() == server.data


def test_oversized_part_file_restarts(server, tmp_path):
    dest = tmp_path / "file.zip"
    (tmp_path / "file.zip.part").write_bytes(server.data + b"extra")
    dl.download(server.url(), dest, _md5(server.data), retry_wait_s=0)
    assert dest.read_bytes() == server.data
    assert server.requests[-1] is None


def test_md5_mismatch_removes_part(server, tmp_path):
    dest = tmp_path / "file.zip"
    wrong = "0" * 32
    with pytest.raises(DataError) as info:
        dl.download(server.url(), dest, wrong)
    message = str(info.value)
    assert "md5 mismatch" in message
    assert wrong in message and _md5(server.data) in message
    assert not dest.exists()
    assert not (tmp_path / "file.zip.part").exists()


def test_http_error_is_data_error(server, tmp_path):
    with pytest.raises(DataError, match="HTTP 404"):
        dl.download(server.url("/missing.zip"), tmp_path / "x.zip", None)
    assert len(server.requests) == 1  # a 404 is final, not retried
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataError, match="download failed"):
        dl.download(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", None, retry_wait_s=0)
    assert list(tmp_path.iterdir()) == []


def test_bad_md5_argument():
    with pytest.raises(ConfigError, match="32 hex digits"):
        dl.download("http://127.0.0.1:9/x", "/nonexistent/x", "not-an-md5")


def test_ravdess_constants_and_file_md5(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{32}", dl.RAVDESS_MD5)
    assert dl.RAVDESS_URL.startswith("https://zenodo.org/") and "1188976" in dl.RAVDESS_URL
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    assert dl.file_md5(path, chunk_size=7) == _md5(b"abc" * 1000)
