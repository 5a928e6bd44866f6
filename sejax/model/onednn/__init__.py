"""sejax's C++ custom calls for XLA:CPU: convolutions on oneDNN (``model.conv_impl``) and a
fused BatchNorm -> ReLU -> max-pool (``model.block_impl``, `bn_relu_pool`), one library
compiled from ``csrc/`` (`build`).

The network's 3x3 convolutions and both their gradients run as oneDNN primitives inside XLA
FFI custom calls (`ops`, ``csrc/onednn_conv.cc``), about 2x faster than XLA's own
convolution on CPU for forward plus gradients (``benchmarks/conv_layers.py --conv-impl``).
Parameters and the parameter tree are those of ``flax.linen.Conv``: only the kernel that
computes the convolution differs, and values and gradients agree with
``lax.conv_general_dilated`` to float32 rounding.

``model.conv_impl`` (`IMPLS`): 'xla' is XLA's convolution (with ``model.fast_ops`` and
``model.conv_grad``); 'onednn' asks for oneDNN; 'auto' (the default) takes oneDNN when the
process runs on CPU and the library builds, else XLA's. `use_onednn` decides, and when
oneDNN was asked for ('onednn', or 'auto' on a CPU where the oneDNN wheel is a dependency:
x86_64 Linux) but cannot be had, it warns once per process and XLA's convolution is used.
``model.block_impl`` ('auto', 'xla', 'fused'; `use_fused_block`) chooses the same way for
the fused block; a missing library is one warning for both.
Only float32 convolutions go to oneDNN; bfloat16 ones (``model.dtype``) keep XLA's.

Where the custom call can run: ``jax.jit``, ``jax.grad``, ``jax.pmap`` and ``jax.shard_map``
(with ``check_vma`` on or off) on CPU devices, single- or multi-host (each process loads its
own library; it is compiled per machine). Not under ``jit`` with automatically partitioned
inputs (the SPMD partitioner cannot split an opaque custom call; sejax's data parallelism is
pmap or shard_map), and ``vmap`` is a loop. A serialised ``jax.export`` artifact (or a
jax2tf SavedModel) would need this library wherever it is loaded, so ``sejax export`` traces
the network with ``conv_impl='xla'``.

Threading: oneDNN (GNU OpenMP build) runs on the calling XLA thread with as many OpenMP
threads as XLA's intra-op pool; executions are serialised (`set_serialize`) so concurrent
XLA thunks do not each start a team; each thread has its own scratchpad. libgomp is not
fork-safe once started: data workers use forkserver.
"""

from __future__ import annotations

import platform
import sys
import threading
import warnings

import jax

from sejax.model.onednn import bn_relu_pool
from sejax.model.onednn.ops import (
    DEFAULT_LAYOUT,
    LAYOUTS,
    cache_size,
    conv2d_same,
    conv_general_dilated,
    load,
    num_threads_used,
    set_num_threads,
    set_serialize,
    version,
)

__all__ = [
    "BLOCK_IMPLS",
    "DEFAULT_LAYOUT",
    "IMPLS",
    "LAYOUTS",
    "available",
    "bn_relu_pool",
    "cache_size",
    "conv2d_same",
    "conv_general_dilated",
    "load",
    "num_threads_used",
    "set_num_threads",
    "set_serialize",
    "use_fused_block",
    "use_onednn",
    "version",
]

IMPLS = ("auto", "xla", "onednn")
BLOCK_IMPLS = ("auto", "xla", "fused")  # model.block_impl (`use_fused_block`)

_lock = threading.Lock()
_load_error: str | None = None  # why the library is unavailable; "" once it loaded
_warned: set[str] = set()  # the kinds of fallback warned about in this process


def _unavailable() -> str | None:
    """Why the library cannot be loaded here (None: it is loaded). Tried once per process."""
    global _load_error
    with _lock:
        if _load_error is None:
            try:
                load()
                _load_error = ""
            except Exception as e:  # BuildError, OSError (ctypes), or anything unforeseen
                _load_error = f"{type(e).__name__}: {e}"
        return _load_error or None


def available() -> bool:
    """Whether the oneDNN library builds (or is built) and loads in this process."""
    return _unavailable() is None


def _warn_once(message: str, key: str) -> None:
    """One warning per process and ``key``, pointing at the code that asked (the caller of
    `use_onednn` / `use_fused_block`): the library missing is one warning, however many of
    its ops were asked for."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _wheel_platform() -> bool:
    """Where pyproject.toml installs the oneDNN wheel, so 'auto' expects it to work."""
    return sys.platform == "linux" and platform.machine() == "x86_64"


def _use_library(key: str, value: str, allowed: tuple[str, ...], asked: str, op: str) -> bool:
    """The shared choice behind `use_onednn` and `use_fused_block`: config key ``key`` set
    to ``value`` runs on the library here? 'xla' never; ``asked`` (the library by name) or
    'auto' on a CPU where it loads. Warns once when it cannot be had: the library missing
    (once for every op) where it was asked for or is a dependency, or ``asked`` off CPU."""
    if value not in allowed:
        raise ValueError(f"{key.split('.')[-1]}={value!r} is not one of {list(allowed)}")
    if value == "xla":
        return False
    backend = jax.default_backend()
    if backend != "cpu":
        if value == asked:
            _warn_once(
                f"{key}={asked!r} runs on CPU only, this process is on {backend}; "
                f"using XLA's {op} instead",
                key,
            )
        return False
    reason = _unavailable()
    if reason is None:
        return True
    if value == asked or _wheel_platform():
        _warn_once(
            f"sejax's C++ CPU library is unavailable: {reason}; using XLA's convolution and "
            "BatchNorm-ReLU-pool instead",
            "unavailable",
        )
    return False


def use_onednn(conv_impl: str) -> bool:
    """Whether a network with ``model.conv_impl=conv_impl`` runs its convolutions on oneDNN
    in this process (see the module docstring); ValueError for an unknown name."""
    return _use_library("model.conv_impl", conv_impl, IMPLS, "onednn", "convolution")


def use_fused_block(block_impl: str) -> bool:
    """Whether a conv block with ``model.block_impl=block_impl`` runs its BatchNorm -> ReLU ->
    pool as the fused C++ op (`bn_relu_pool`) in this process: 'fused', or 'auto' on a CPU, when
    the library loads; else XLA's ops, warned as `use_onednn` warns. ValueError for an unknown
    name."""
    return _use_library("model.block_impl", block_impl, BLOCK_IMPLS, "fused", "BatchNorm-ReLU-pool")
