"""Safe zip extraction: an archive from the internet must not write outside its folder.

Every member is checked before a single byte is written: no absolute or drive-letter paths,
no ``..``, no symlinks, no duplicate names, nothing that resolves outside the target, no
encrypted members, and no zip bomb (declared sizes and compression ratios within limits).
Extraction goes into a hidden temporary folder beside the target that is renamed into place
only when every member has been written and CRC-checked, so a failed or interrupted extract
never leaves a half-written target.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from sejax.errors import DataError

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_BYTES",
    "safe_extract_zip",
]

DEFAULT_MAX_TOTAL_BYTES = 16 << 30  # RAVDESS speech is 0.2 GB; the full audio-video set ~25 GB
DEFAULT_MAX_RATIO = 100.0  # audio compresses ~1.1x; bombs compress ~1000x
DEFAULT_MAX_MEMBERS = 200_000
_RATIO_MIN_BYTES = 1 << 20  # smaller members may compress well (text, silence) and are harmless
_COPY_CHUNK = 1 << 20


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this member may not be extracted, or None."""
    name = info.filename
    if not name or "\x00" in name:
        return "empty name or NUL byte in name"
    if name.startswith(("/", "\\")) or (len(name) >= 2 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "path contains '..'"
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link"
    # Many writers (Python's zipfile included) store permission bits only, no file type.
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "not a regular file or folder (device, fifo or socket)"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def _check_members(
    infos: list[zipfile.ZipInfo],
    zip_path: Path,
    target: Path,
    max_total_bytes: int,
    max_ratio: float,
    max_members: int,
) -> int:
    """Raise DataError unless every member is safe; returns the declared total size."""
    if len(infos) > max_members:
        raise DataError(f"{zip_path}: {len(infos)} members, more than the limit {max_members}")
    problems: list[str] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        problem = _member_problem(info)
        if problem is None:
            rel = PurePosixPath(info.filename.replace("\\", "/"))
            key = rel.as_posix().rstrip("/")
            resolved = (target / rel).resolve()
            if key in seen:
                problem = "duplicate member name"
            elif not resolved.is_relative_to(target):
                problem = f"resolves outside {target}"
            elif info.file_size >= _RATIO_MIN_BYTES and info.file_size > max_ratio * max(
                info.compress_size, 1
            ):
                ratio = info.file_size / max(info.compress_size, 1)
                problem = f"compression ratio {ratio:.0f}:1 exceeds {max_ratio:.0f}:1 (zip bomb?)"
            seen.add(key)
        if problem is not None:
            problems.append(f"  {info.filename!r}: {problem}")
        total += info.file_size
    if problems:
        shown = problems[:20] + (
            [f"  ... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise DataError(
            f"{zip_path}: refusing to extract, {len(problems)} unsafe member(s):\n"
            + "\n".join(shown)
        )
    if total > max_total_bytes:
        raise DataError(
            f"{zip_path}: declares {total:,} bytes uncompressed, more than the limit "
            f"{max_total_bytes:,} (max_total_bytes); refusing to extract"
        )
    return total


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    """Write one member, never more bytes than it declared (zipfile also checks the CRC)."""
    left = info.file_size
    with zf.open(info) as src, open(dest, "xb") as out:
        while chunk := src.read(min(_COPY_CHUNK, left + 1)):
            left -= len(chunk)
            if left < 0:
                raise DataError(f"{info.filename!r}: more data than its declared size")
            out.write(chunk)
    if left:
        raise DataError(f"{info.filename!r}: {left} bytes short of its declared size")


def safe_extract_zip(
    zip_path: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_ratio: float = DEFAULT_MAX_RATIO,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Extract `zip_path` into `target_dir` (which must not exist or be empty); returns it.

    Raises DataError, having written nothing, for an unsafe or unreadable archive, one larger
    than `max_total_bytes` uncompressed, or one with a member over 1 MiB compressed more than
    `max_ratio` times. Members keep their folders (``Actor_01/…``); file modes are not copied.
    """
    zip_path = Path(zip_path)
    target = Path(target_dir).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target}: already exists and is not an empty folder; not extracting")
    target.parent.mkdir(parents=True, exist_ok=True)
    target = target.parent.resolve() / target.name
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: cannot read as a zip archive ({e})") from e
    with zf:
        infos = zf.infolist()
        total = _check_members(infos, zip_path, target, max_total_bytes, max_ratio, max_members)
        free = shutil.disk_usage(target.parent).free
        if total > free:
            raise DataError(
                f"{zip_path}: needs {total:,} bytes but {target.parent} has {free:,} free"
            )
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
        )
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
            root = tmp.resolve()
            for info in infos:
                dest = root / info.filename.replace("\\", "/")
                # Re-check against the real folder: nothing outside it may be written even if
                # something changed between the check and here.
                if not dest.resolve().is_relative_to(root):
                    raise DataError(f"{zip_path}: {info.filename!r} resolves outside {root}")
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                try:
                    _copy_member(zf, info, dest)
                except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
                    raise DataError(f"{zip_path}: {info.filename!r}: cannot extract ({e})") from e
                except DataError as e:
                    raise DataError(f"{zip_path}: {e}") from None
            if target.exists():
                target.rmdir()  # empty, checked above
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
