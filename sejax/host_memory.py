"""Keep XLA:CPU's per-step temporary buffer mapped between steps (the glibc malloc policy).

XLA:CPU allocates one temporary buffer for each execution of a compiled program (265 MB for
the reference train step at batch 32) and frees it when the execution ends. glibc serves an
allocation that large from XLA's worker threads with a fresh ``mmap`` (a thread's own arena
cannot hold it, whatever the mmap limits say), and ``munmap``s it on free, so every step
faults the whole buffer in again, page by page: measured 64,700 minor faults and ~125 ms of
kernel time per batch-32 step on a 2-vCPU EPYC, a quarter of the step's CPU time
(benchmarks/RESULTS.md). TensorFlow avoids this with its own allocator; here three
``mallopt`` settings do: one arena (the main one, which can grow), no ``mmap`` for large
blocks, and no trimming of freed memory. Freed buffers are then reused: no faults, the same
values, memory held at its peak instead of returned between steps.

The settings must be made before JAX creates its CPU client (the first computation): a thread
keeps the arena it first allocated from. ``import sejax`` makes them; ``SEJAX_MALLOC_TUNING=0``
in the environment leaves glibc's defaults. Elsewhere than glibc (macOS, musl) nothing
changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ENV = "SEJAX_MALLOC_TUNING"

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))

_applied: bool | None = None


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has no such symbol)
    except (OSError, AttributeError):
        return None
    return libc


def reuse_freed_memory() -> bool:
    """Makes the settings once per process (later calls return the first answer): True when
    glibc accepted all three, False when opted out, not glibc, or refused."""
    global _applied
    if _applied is None:
        libc = None if os.environ.get(ENV, "1") == "0" else _glibc()
        _applied = libc is not None and all(libc.mallopt(p, v) == 1 for p, v in SETTINGS)
    return _applied
