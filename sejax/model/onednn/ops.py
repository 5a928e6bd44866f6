"""The oneDNN convolution as a differentiable JAX op: the compiled library loaded with
ctypes, its three handlers registered as XLA FFI targets (CPU), and a ``jax.custom_vjp``
tying forward, backward-data and backward-weights together.

``conv2d_same(x, w, b)`` equals ``lax.conv_general_dilated(x, w, (1, 1), 'SAME',
dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + b`` for float32 inputs, to float rounding.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sejax.model import xla_cpu_ops
from sejax.model.onednn import build

Layout = Literal["plain", "any_weights", "any", "auto"]
# oneDNN memory formats (csrc/onednn_conv.cc): 'plain' hands over NHWC/HWIO as they are;
# 'any_weights' lets oneDNN reorder the weights (not the activations) to the format its
# fastest kernels want, about 2x faster backward passes than 'plain'; 'any' reorders all.
# 'auto' is 'any_weights', except the backward-weights pass on CPUs without AVX-512 (channels
# multiples of 8), which takes 'any': 1.3-1.8x faster there on a Zen 3, bitwise the same.
LAYOUTS: dict[str, int] = {"plain": 0, "any_weights": 1, "any": 2, "auto": 3}
DEFAULT_LAYOUT: Layout = "auto"

FORWARD = "sejax_onednn_conv2d_fwd"
BACKWARD_DATA = "sejax_onednn_conv2d_bwd_data"
BACKWARD_WEIGHTS = "sejax_onednn_conv2d_bwd_weights"
# The fused BatchNorm-ReLU-pool's handlers (csrc/bn_relu_pool.cc; the op: `bn_relu_pool`).
BN_RELU_POOL_FORWARD = "sejax_bn_relu_pool_fwd"
BN_RELU_POOL_FORWARD_KEEP = "sejax_bn_relu_pool_fwd_keep"
BN_RELU_POOL_GATHER = "sejax_bn_relu_pool_gather"
BN_RELU_POOL_BACKWARD = "sejax_bn_relu_pool_bwd"
_SYMBOLS = {
    FORWARD: "OnednnConv2dForward",
    BACKWARD_DATA: "OnednnConv2dBackwardData",
    BACKWARD_WEIGHTS: "OnednnConv2dBackwardWeights",
    BN_RELU_POOL_FORWARD: "SejaxBnReluPoolForward",
    BN_RELU_POOL_FORWARD_KEEP: "SejaxBnReluPoolForwardKeep",
    BN_RELU_POOL_GATHER: "SejaxBnReluPoolGather",
    BN_RELU_POOL_BACKWARD: "SejaxBnReluPoolBackward",
}

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def load() -> ctypes.CDLL:
    """The library, built or found by `build.library` and registered with XLA once per
    process. Raises build.BuildError, or OSError when the library does not load."""
    global _lib
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(str(build.library()))
            for target, symbol in _SYMBOLS.items():
                capsule = jax.ffi.pycapsule(getattr(lib, symbol))
                jax.ffi.register_ffi_target(target, capsule, platform="cpu")
            lib.OnednnConvSetNumThreads.argtypes = [ctypes.c_int]
            lib.OnednnConvLastUsedNumThreads.restype = ctypes.c_int
            lib.OnednnConvSetSerialize.argtypes = [ctypes.c_int]
            lib.OnednnConvCacheSize.restype = ctypes.c_long
            lib.OnednnConvVersion.argtypes = [ctypes.c_char_p, ctypes.c_int]
            lib.OnednnConvVersion.restype = ctypes.c_int
            _lib = lib
        return _lib


def set_num_threads(n: int) -> None:
    """oneDNN's thread count; ``n <= 0`` (the default) matches XLA's intra-op pool, one
    thread per core. Applies to primitives created afterwards (the cache keys on it)."""
    load().OnednnConvSetNumThreads(int(n))


def num_threads_used() -> int:
    """The thread count the most recent convolution ran with (0 before the first)."""
    return int(load().OnednnConvLastUsedNumThreads())


def set_serialize(on: bool) -> None:
    """Run one oneDNN convolution at a time (the default). XLA runs independent thunks
    concurrently (the two backward convolutions, the devices of a shard_map), and each
    calling thread would start its own full OpenMP team: more threads than cores."""
    load().OnednnConvSetSerialize(int(bool(on)))


def cache_size() -> int:
    """Cached oneDNN primitives, one per (pass, shape, layout, thread count)."""
    return int(load().OnednnConvCacheSize())


def version() -> str:
    """E.g. 'oneDNN 3.2.0 (cpu runtime: OpenMP)'."""
    buf = ctypes.create_string_buffer(128)
    load().OnednnConvVersion(buf, len(buf))
    return buf.value.decode()


# The FFI calls. Inside shard_map (check_vma=True) ffi_call drops its inputs' varying manual
# axes from its results, so they would look replicated and custom_vjp would reject the
# cotangents; the two helpers restore them as JAX's own rules would.


def _varying_axes(a: jax.Array) -> frozenset:
    """The shard_map mesh axes ``a`` varies over (empty outside shard_map)."""
    manual = getattr(jax.typeof(a), "manual_axis_type", None)
    return frozenset(getattr(manual, "varying", frozenset()))


def _mark_varying(out: jax.Array, *inputs: jax.Array) -> jax.Array:
    """``out`` with the varying axes of its inputs (``pcast``: free at run time)."""
    missing = frozenset().union(*map(_varying_axes, inputs)) - _varying_axes(out)
    return lax.pcast(out, tuple(sorted(missing)), to="varying") if missing else out


def _as_cotangent(ct: jax.Array, primal: jax.Array) -> jax.Array:
    """A cotangent typed like its primal: summed over the axes only it varies over (dw of
    replicated weights from a sharded batch), as JAX's transpose rules do."""
    extra = _varying_axes(ct) - _varying_axes(primal)
    if extra:
        ct = lax.psum(ct, tuple(sorted(extra)))
    missing = _varying_axes(primal) - _varying_axes(ct)
    return lax.pcast(ct, tuple(sorted(missing)), to="varying") if missing else ct


def _f32(shape: tuple[int, ...]) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), jnp.float32)


def _call(target: str, results: Any) -> Callable[..., Any]:
    # vmap: a loop over the mapped axis (correct, not fast: fold extra axes into N instead).
    return jax.ffi.ffi_call(target, results, vmap_method="sequential")


def _forward(x: jax.Array, w: jax.Array, b: jax.Array | None, layout: int) -> jax.Array:
    args = (x, w) if b is None else (x, w, b)
    y = _call(FORWARD, _f32((*x.shape[:3], w.shape[3])))(*args, layout=np.int64(layout))
    return _mark_varying(y, *args)


def _backward_data(dy: jax.Array, w: jax.Array, x_shape: tuple[int, ...], layout: int):
    dx = _call(BACKWARD_DATA, _f32(x_shape))(dy, w, layout=np.int64(layout))
    return _mark_varying(dx, dy, w)


def _backward_weights(x: jax.Array, dy: jax.Array, w_shape: tuple[int, ...], bias: bool, layout):
    results = [_f32(w_shape)] + ([_f32((w_shape[3],))] if bias else [])
    out = [
        _mark_varying(o, x, dy)
        for o in _call(BACKWARD_WEIGHTS, results)(x, dy, layout=np.int64(layout))
    ]
    return out[0], (out[1] if bias else None)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _conv(x: jax.Array, w: jax.Array, b: jax.Array | None, layout: int) -> jax.Array:
    return _forward(x, w, b, layout)


def _conv_fwd(x, w, b, layout):
    # b (None: an empty pytree, no residual) only tells the backward pass whether to return db.
    return _forward(x, w, b, layout), (x, w, b)


def _conv_bwd(layout, residuals, g):
    x, w, b = residuals
    dx = _backward_data(g, w, x.shape, layout)
    dw, db = _backward_weights(x, g, w.shape, b is not None, layout)
    return _as_cotangent(dx, x), _as_cotangent(dw, w), None if b is None else _as_cotangent(db, b)


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv2d_same(
    x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, layout: Layout = DEFAULT_LAYOUT
) -> jax.Array:
    """``y [N, H, W, Cout] = x [N, H, W, Cin] * w [KH, KW, Cin, Cout] (+ b [Cout])``: stride
    1, SAME padding (the extra row/column after, as lax pads even kernels), float32, on
    oneDNN. Raises build.BuildError or OSError if the library is unavailable."""
    load()
    x, w = jnp.asarray(x), jnp.asarray(w)
    if x.ndim != 4 or w.ndim != 4 or w.shape[2] != x.shape[3]:
        raise ValueError(f"expected x [N,H,W,Cin] and w [KH,KW,Cin,Cout], got {x.shape}, {w.shape}")
    if b is not None:
        b = jnp.asarray(b)
        if b.shape != (w.shape[3],):
            raise ValueError(f"bias must have shape ({w.shape[3]},), got {b.shape}")
    if any(a.dtype != jnp.float32 for a in (x, w, b) if a is not None):
        raise TypeError(f"float32 inputs required, got {x.dtype} and {w.dtype}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    return _conv(x, w, b, LAYOUTS[layout])


def conv_general_dilated(
    *args: Any, fallback: Callable[..., jax.Array] = lax.conv_general_dilated, **kwargs: Any
) -> jax.Array:
    """Drop-in for ``lax.conv_general_dilated`` (``flax.linen.Conv(conv_general_dilated=)``):
    float32 stride-1 SAME 2-D convolutions in NHWC/HWIO run on oneDNN (`conv2d_same`), any
    other (bfloat16, strided, dilated, grouped, other layouts) goes to ``fallback``."""
    dropin = xla_cpu_ops.same_conv_dropin(conv2d_same, dtypes=(jnp.float32,), fallback=fallback)
    return dropin(*args, **kwargs)
