"""Audio files of a corpus, from a folder or from a zip read in place: listing and opening.

Every corpus reader (`sejax.corpora.base.read_named`, the manifest reader) lists its audio
here, so what counts as audio (``.wav``/``.flac`` in any letter case; hidden files and
``__MACOSX/`` skipped), how a zip member is named (``<zip path>::<member name>``) and how bad
files are reported are the same for every corpus. Nothing here knows a naming convention.
"""

from __future__ import annotations

import functools
import io
import os
import zipfile
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from sejax.errors import DataError

__all__ = ["AUDIO_EXTENSIONS", "ZIP_SEPARATOR", "format_bad", "list_audio", "open_source"]

AUDIO_EXTENSIONS = (".wav", ".flac")
ZIP_SEPARATOR = "::"  # a zip member's source is "<zip path>::<member name>"

_MAX_LISTED = 20  # bad names shown in full in one error message; the rest are counted


def _is_audio(rel: PurePosixPath) -> bool:
    """Audio files only; hidden files and macOS resource forks are skipped silently."""
    if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
        return False
    return rel.suffix.lower() in AUDIO_EXTENSIONS


def _folder_members(root: Path) -> list[tuple[str, str]]:
    """(relative posix name, absolute path) of every audio file under `root`, recursively."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for filename in filenames:
            path = Path(dirpath, filename)
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if _is_audio(rel):
                found.append((rel.as_posix(), str(path)))
    return found


def _zip_members(zip_path: Path) -> list[tuple[str, str]]:
    """(member name, source) of every audio member of the zip, without extracting it."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: cannot read as a zip archive ({e})") from e
    found = []
    for info in infos:
        if info.is_dir():
            continue
        if _is_audio(PurePosixPath(info.filename)):
            found.append((info.filename, f"{zip_path}{ZIP_SEPARATOR}{info.filename}"))
    return found


def format_bad(bad: list[tuple[str, str]], root: Path, corpus: str) -> str:
    """The error for bad files: every one (up to a cap) with its reason, and the way out."""
    lines = [f"  {name}: {reason}" for name, reason in bad[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    return (
        f"{root}: {len(bad)} audio file(s) are not valid {corpus} recordings:\n"
        + "\n".join(lines)
        + "\nRename or remove them, or pass on_bad_name='skip' (config data.on_bad_name) "
        "to leave them out and list them in the prepared metadata."
    )


def list_audio(path: str | os.PathLike[str], corpus: str) -> tuple[Path, list[tuple[str, str]]]:
    """(resolved root, [(name relative to root, source)]) of every audio file in a folder
    (recursive) or a zip (read in place); `DataError` for a missing path or no audio."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    root = root.resolve()
    if root.is_dir():
        members = _folder_members(root)
    elif zipfile.is_zipfile(root):
        members = _zip_members(root)
    else:
        raise DataError(f"{root}: neither a folder nor a zip archive of {corpus} audio")
    if not members:
        raise DataError(
            f"{root}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)}, any case)"
        )
    return root, sorted(members, key=lambda m: m[1])


@functools.lru_cache(maxsize=4)
def _open_zip(path: str, mtime_ns: int, size: int, pid: int) -> zipfile.ZipFile:
    """An open zip, reused: reading the central directory of 1440 members takes ~10 ms.

    Keyed by modification time and size (a replaced file is reopened) and by process id (a
    forked child must not share the parent's file offset).
    """
    return zipfile.ZipFile(path)


def open_source(source: str) -> BinaryIO:
    """A seekable binary file for a `Recording.source`: a file path or ``<zip>::<member>``.

    A zip member is read into memory (clips are small) so decoders can seek freely; the open
    zip is cached per process for the next member. Close the result when done.
    """
    if ZIP_SEPARATOR not in source or os.path.exists(source):
        try:
            return open(source, "rb")  # the caller closes it
        except OSError as e:
            raise DataError(f"{source}: cannot open ({e.strerror or e})") from e
    zip_path, _, member = source.partition(ZIP_SEPARATOR)
    try:
        st = os.stat(zip_path)
        zf = _open_zip(zip_path, st.st_mtime_ns, st.st_size, os.getpid())
        data = zf.read(member)
    except KeyError as e:
        raise DataError(f"{source}: no member {member!r} in {zip_path}") from e
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
        # RuntimeError: encrypted member; BadZipFile also covers a CRC mismatch.
        raise DataError(f"{source}: cannot read zip member ({e})") from e
    return io.BytesIO(data)
