"""Resumable, md5-verified downloads with the standard library only.

Bytes go to ``<dest>.part``; an interrupted transfer (dropped connection, timeout, Ctrl-C)
keeps it, and the next call asks the server for the rest with an HTTP ``Range`` request. A
server that ignores ``Range`` (status 200) or answers for another offset restarts the file from
zero. Only a file whose md5 matches is renamed to `dest`, atomically, so `dest` is either
absent or complete; a `dest` that already verifies is not downloaded again.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from sejax import __version__
from sejax.errors import ConfigError, DataError

__all__ = ["RAVDESS_MD5", "RAVDESS_URL", "download", "file_md5"]

# RAVDESS speech, audio-only, 24 actors x 60 files, 48 kHz 16-bit WAV (Zenodo record 1188976).
RAVDESS_URL = "https://zenodo.org/records/1188976/files/Audio_Speech_Actors_01-24.zip?download=1"
RAVDESS_MD5 = "bc696df654c87fed845eb13823edef8a"

Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None if unknown)

_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")
# Errors after which the .part file is kept and the transfer resumed.
_TRANSIENT = (OSError, http.client.HTTPException)


class _Interrupted(Exception):
    """The connection ended before the expected number of bytes arrived."""


def file_md5(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def _parse_content_range(value: str | None) -> tuple[int, int | None] | None:
    """(first byte, total or None) from a ``Content-Range`` header, None if absent/garbled."""
    match = _CONTENT_RANGE_RE.match((value or "").strip())
    if match is None:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _fetch(
    opener: urllib.request.OpenerDirector,
    url: str,
    part: Path,
    *,
    chunk_size: int,
    timeout: float,
    progress: Progress | None,
) -> None:
    """One request: append to (or restart) `part` until the server's body is complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"sejax/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # Nothing to send from this offset: the .part is already complete (the md5 then
            # decides) or longer than the file, in which case start again.
            match = re.search(r"/(\d+)\s*$", e.headers.get("Content-Range", ""))
            e.close()
            if match is None or int(match.group(1)) != offset:
                part.unlink()
                raise _Interrupted(f"{part.name} does not match the server's size") from None
            return
        if e.code == 429 or e.code >= 500:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from None
        raise DataError(f"{url}: HTTP {e.code} {e.reason}") from None
    with response:
        status = response.status if response.status is not None else 200
        expected: int | None
        if status == 206:
            content_range = _parse_content_range(response.headers.get("Content-Range"))
            if content_range is None or content_range[0] != offset:
                # A partial answer for some other range: unusable, start from zero.
                part.unlink()
                raise _Interrupted(f"server answered Range {offset}- with {content_range}")
            expected = content_range[1]
            mode = "ab"
        elif status == 200:
            offset = 0  # the server ignored Range (or there was none): whole file from zero
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise DataError(f"{url}: unexpected HTTP status {status}")
        done = offset
        with open(part, mode) as out:
            while chunk := response.read(chunk_size):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, expected)
            out.flush()
            os.fsync(out.fileno())
    if expected is not None and done != expected:
        # http.client does not raise when a connection closes early; check the length here.
        raise _Interrupted(f"got {done:,} of {expected:,} bytes")


def download(
    url: str,
    dest: str | os.PathLike[str],
    md5: str | None,
    *,
    chunk_size: int = 1 << 20,
    progress: Progress | None = None,
    timeout: float = 60.0,
    retries: int = 3,
    retry_wait_s: float = 1.0,
) -> Path:
    """Download `url` to `dest`, resuming a previous ``.part``; returns `dest`.

    `md5` (hex) is checked before `dest` is written: a mismatch removes the ``.part`` and
    raises DataError. With `md5=None` an existing `dest` is trusted and a new one is not
    verified. A dropped connection, a network error or an HTTP 429/5xx is retried up to `retries`
    times (waiting `retry_wait_s`, doubling), resuming the ``.part``; after that the ``.part``
    is kept, DataError says so, and calling again continues from it. Other HTTP errors raise
    DataError at once. `progress` is called
    with (bytes so far, total or None). Proxies come from the usual environment variables.
    """
    dest = Path(dest)
    if md5 is not None:
        md5 = md5.strip().lower()
        if not _MD5_RE.match(md5):
            raise ConfigError(f"md5 must be 32 hex digits, got {md5!r}")
    if dest.is_file() and (md5 is None or file_md5(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = urllib.request.build_opener()  # built per call: honours the current proxy env
    attempt = 0
    while True:
        try:
            _fetch(opener, url, part, chunk_size=chunk_size, timeout=timeout, progress=progress)
            break
        except DataError:
            raise
        except (_Interrupted, *_TRANSIENT) as e:
            attempt += 1
            if attempt > retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DataError(
                    f"{url}: download failed ({e}) after {retries} retries; "
                    f"{kept:,} bytes kept in {part}, run again to resume"
                ) from e
            time.sleep(retry_wait_s * 2 ** (attempt - 1))
    if md5 is not None:
        got = file_md5(part)
        if got != md5:
            part.unlink()
            raise DataError(
                f"{url}: md5 mismatch for {dest.name}: expected {md5}, got {got}; "
                "the corrupt download was removed, run again to fetch it afresh"
            )
    os.replace(part, dest)
    return dest
