"""Files sejax writes and reads the same way everywhere: whole or not at all.

``write_atomic`` (a file) and ``replace_folder`` (a folder of shards, a model, an extracted
archive) write beside the target and rename into place, so a crash, a full disk or a killed
process never leaves a torn result, and what was there before stays until the new one is
complete. ``read_json`` reads the small JSON records runs leave behind; ``tensorflow``
imports TensorFlow for the input pipeline only, kept off the accelerators JAX owns.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sejax.errors import DataError


def write_atomic(path: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Calls ``write(tmp)`` on a temporary path beside ``path``, then renames it over
    ``path``; on any failure the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | os.PathLike[str], record: Any, indent: int | None = 1) -> Path:
    """``record`` as JSON at ``path``, atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(record, indent=indent)))


def read_json(path: str | os.PathLike[str]) -> Any | None:
    """The JSON value in ``path``, or None when it is missing or not valid JSON (a record
    not written yet, or written by an interrupted run before writes were atomic)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def staging_folder(target: str | os.PathLike[str], suffix: str = ".partial") -> Path:
    """A new empty folder beside ``target`` (same file system, so the final rename is
    atomic), hidden by a leading dot, readable like any folder once renamed into place."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    return tmp


def replace_folder(
    tmp: str | os.PathLike[str], target: str | os.PathLike[str], *, replace_existing: bool = True
) -> Path:
    """Moves the finished folder ``tmp`` to ``target``, replacing what is there.

    An empty folder is replaced outright; an older non-empty one is moved aside first, put
    back if the rename fails, and removed only once the new folder is in place (with
    ``replace_existing=False`` it is never replaced: `DataError`). A folder that appears at
    ``target`` meanwhile (another process) is never overwritten: `DataError`.
    """
    tmp, target = Path(tmp), Path(target).absolute()
    tmp.chmod(0o755)
    if replace_existing and target.exists() and any(target.iterdir()):
        old = staging_folder(target, suffix=".old")
        os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(old / target.name, target)  # put the previous folder back
            shutil.rmtree(old, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return target
    try:
        os.replace(tmp, target)  # atomic; replaces an empty folder
    except OSError as e:
        raise DataError(
            f"{target} appeared while it was being written (another process?); run again"
        ) from e
    return target


def tensorflow() -> Any:
    """TensorFlow, imported on first use and kept off the accelerators (JAX owns them)."""
    import tensorflow as tf

    with contextlib.suppress(RuntimeError):  # already initialised: devices are fixed
        tf.config.set_visible_devices([], "GPU")
    return tf
