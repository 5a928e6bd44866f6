"""Safe archive extraction (zip, tar, tar.gz/bz2/xz): an archive from the internet must not
write outside its folder.

Every member is checked before a single byte is written: no absolute or drive-letter paths,
no ``..``, no symbolic or hard links, no devices, fifos or sockets, no duplicate names,
nothing that resolves outside the target, no encrypted zip members, and no bomb (declared
sizes, member counts and zip compression ratios within limits). Only regular files and
folders are written, byte by byte by this module (never ``extractall``), and never more bytes
than a member declares. Extraction goes into a hidden temporary folder beside the target that
is renamed into place only when every member has been written (and, for zip, CRC-checked), so
a failed or interrupted extract never leaves a half-written target.
"""

from __future__ import annotations

import functools
import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sejax.errors import DataError
from sejax.io import replace_folder, staging_folder

__all__ = [
    "DEFAULT_MAX_MEMBERS",
    "DEFAULT_MAX_RATIO",
    "DEFAULT_MAX_TOTAL_BYTES",
    "safe_extract",
    "safe_extract_tar",
    "safe_extract_zip",
]

DEFAULT_MAX_TOTAL_BYTES = 16 << 30  # RAVDESS speech is 0.2 GB; the full audio-video set ~25 GB
DEFAULT_MAX_RATIO = 100.0  # audio compresses ~1.1x; bombs compress ~1000x
DEFAULT_MAX_MEMBERS = 200_000
_RATIO_MIN_BYTES = 1 << 20  # smaller members may compress well (text, silence) and are harmless
_COPY_CHUNK = 1 << 20


def _path_problem(name: str) -> str | None:
    """Why a member's name may not be written, or None (both archive formats)."""
    if not name or "\x00" in name:
        return "empty name or NUL byte in name"
    if name.startswith(("/", "\\")) or (len(name) >= 2 and name[1] == ":"):
        return "absolute path"
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        return "path contains '..'"
    return None


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why this member may not be extracted, or None."""
    problem = _path_problem(info.filename)
    if problem is not None:
        return problem
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
    _raise_problems(problems, zip_path)
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


def _prepare_target(target_dir: str | os.PathLike[str]) -> Path:
    """The absolute target, which must not exist or be an empty folder; its parent exists."""
    target = Path(target_dir).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(f"{target}: already exists and is not an empty folder; not extracting")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.parent.resolve() / target.name


def _check_free_space(total: int, archive: Path, target: Path) -> None:
    free = shutil.disk_usage(target.parent).free
    if total > free:
        raise DataError(f"{archive}: needs {total:,} bytes but {target.parent} has {free:,} free")


def _extract_into(
    target: Path,
    archive: Path,
    members: Sequence[tuple[str, bool, Any]],
    copy: Callable[[Any, Path], None],
    read_errors: tuple[type[BaseException], ...],
) -> None:
    """Writes checked ``(name, is_dir, member)`` entries with ``copy(member, dest)`` into a
    hidden folder beside ``target``, renamed into place only when every one is written and
    removed on any failure, so ``target`` is either complete or untouched."""
    tmp = staging_folder(target)
    try:
        root = tmp.resolve()
        for name, is_dir, member in members:
            dest = root / PurePosixPath(name.replace("\\", "/"))
            # Re-check against the real folder: nothing outside it may be written even if
            # something changed between the check and here.
            if not dest.resolve().is_relative_to(root):
                raise DataError(f"{archive}: {name!r} resolves outside {root}")
            if is_dir:
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                copy(member, dest)
            except read_errors as e:
                raise DataError(f"{archive}: {name!r}: cannot extract ({e})") from e
            except DataError as e:
                raise DataError(f"{archive}: {e}") from None
        # The target was empty (or absent) when checked; whatever appeared since is kept.
        replace_folder(tmp, target, replace_existing=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    target = _prepare_target(target_dir)
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: cannot read as a zip archive ({e})") from e
    with zf:
        infos = zf.infolist()
        total = _check_members(infos, zip_path, target, max_total_bytes, max_ratio, max_members)
        _check_free_space(total, zip_path, target)
        members = [(info.filename, info.is_dir(), info) for info in infos]
        copy = functools.partial(_copy_member, zf)
        errors = (zipfile.BadZipFile, EOFError, OSError, RuntimeError)
        _extract_into(target, zip_path, members, copy, errors)
    return target


# ------------------------------------------------------------------------------------------
# tar archives.


def _tar_member_problem(info: tarfile.TarInfo, target: Path, max_member_bytes: int) -> str | None:
    """Why this tar member may not be extracted, or None."""
    problem = _path_problem(info.name)
    if problem is not None:
        return problem
    if info.issym() or info.islnk():
        kind = "symbolic" if info.issym() else "hard"
        link = PurePosixPath(info.linkname)
        # A symbolic link is relative to its folder, a hard link to the archive's root.
        base = target / PurePosixPath(info.name).parent if info.issym() else target
        dest = (base / link).resolve()
        if link.is_absolute() or ".." in link.parts or not dest.is_relative_to(target):
            return f"{kind} link to {info.linkname!r}, outside the archive's folder"
        return f"{kind} link to {info.linkname!r} (only files and folders are extracted)"
    if not (info.isfile() or info.isdir()):
        return "not a regular file or folder (device, fifo or socket)"
    if info.issparse():
        return "sparse file"
    if info.size > max_member_bytes:
        return f"declares {info.size:,} bytes, more than the limit {max_member_bytes:,}"
    return None


def _check_tar_members(
    infos: list[tarfile.TarInfo], tar_path: Path, target: Path, max_total_bytes: int
) -> int:
    """Raise DataError unless every member is safe; returns the declared total size."""
    problems: list[str] = []
    seen: set[str] = set()
    total = 0
    for info in infos:
        problem = _tar_member_problem(info, target, max_total_bytes)
        if problem is None:
            key = PurePosixPath(info.name).as_posix().rstrip("/")
            if key in seen:
                problem = "duplicate member name"
            elif not (target / key).resolve().is_relative_to(target):
                problem = f"resolves outside {target}"
            seen.add(key)
        if problem is not None:
            problems.append(f"  {info.name!r}: {problem}")
        total += max(info.size, 0)
    _raise_problems(problems, tar_path)
    if total > max_total_bytes:
        raise DataError(
            f"{tar_path}: declares {total:,} bytes, more than the limit {max_total_bytes:,} "
            "(max_total_bytes); refusing to extract"
        )
    return total


def _raise_problems(problems: list[str], path: Path) -> None:
    if problems:
        shown = problems[:20] + (
            [f"  ... and {len(problems) - 20} more"] if len(problems) > 20 else []
        )
        raise DataError(
            f"{path}: refusing to extract, {len(problems)} unsafe member(s):\n" + "\n".join(shown)
        )


def _tar_members(
    tf: tarfile.TarFile, tar_path: Path, max_members: int, max_total_bytes: int
) -> list[tarfile.TarInfo]:
    """The headers, read without extracting. Sizes are checked as each header is read: an
    absurd one is refused by name before the reader tries to skip over its data."""
    infos: list[tarfile.TarInfo] = []
    total = 0
    try:
        while (info := tf.next()) is not None:
            infos.append(info)
            total += max(info.size, 0)
            if len(infos) > max_members:
                raise DataError(f"{tar_path}: more than {max_members} members; refusing")
            if total > max_total_bytes:
                raise DataError(
                    f"{tar_path}: refusing to extract, {info.name!r} declares {info.size:,} "
                    f"bytes, which brings the archive over the limit {max_total_bytes:,} "
                    "(max_total_bytes)"
                )
    except (tarfile.TarError, EOFError, OSError) as e:
        raise DataError(f"{tar_path}: cannot read as a tar archive ({e})") from e
    return infos


def _open_tar(tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, "r:*")
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"{tar_path}: cannot read as a tar archive ({e})") from e


def _copy_exactly(src: IO[bytes], dest: Path, size: int, name: str) -> None:
    """Write ``size`` bytes of ``src`` to a new file; fewer is an error."""
    left = size
    with open(dest, "xb") as out:
        while left and (chunk := src.read(min(_COPY_CHUNK, left))):
            out.write(chunk)
            left -= len(chunk)
    if left:
        raise DataError(f"{name!r}: {left} bytes short of its declared size")


def safe_extract_tar(
    tar_path: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> Path:
    """Extract a tar archive (plain or gzip/bzip2/xz-compressed) into ``target_dir``.

    Like `safe_extract_zip`: ``target_dir`` must not exist or be empty; DataError, having
    written nothing, for a link, device, absolute or ``..`` path, duplicate, or declared sizes
    over ``max_total_bytes`` (one member or all together). Modes and owners are not copied.
    """
    tar_path = Path(tar_path)
    target = _prepare_target(target_dir)
    with _open_tar(tar_path) as tf:
        infos = _tar_members(tf, tar_path, max_members, max_total_bytes)
        total = _check_tar_members(infos, tar_path, target, max_total_bytes)
        _check_free_space(total, tar_path, target)

        def copy(info: tarfile.TarInfo, dest: Path) -> None:
            src = tf.extractfile(info)
            if src is None:
                raise DataError(f"{info.name!r}: no data")
            _copy_exactly(src, dest, info.size, info.name)

        members = [(info.name, info.isdir(), info) for info in infos]
        _extract_into(target, tar_path, members, copy, (tarfile.TarError, EOFError, OSError))
    return target


def safe_extract(archive: str | os.PathLike[str], target_dir: str | os.PathLike[str]) -> Path:
    """`safe_extract_zip` or `safe_extract_tar`, by the archive's content (not its name)."""
    archive = Path(archive)
    if zipfile.is_zipfile(archive):
        return safe_extract_zip(archive, target_dir)
    if archive.is_file() and tarfile.is_tarfile(archive):
        return safe_extract_tar(archive, target_dir)
    raise DataError(f"{archive}: neither a zip nor a tar archive")
