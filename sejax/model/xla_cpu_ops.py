"""Max-pooling and convolution written the way XLA:CPU runs fast; same math as the lax ops.

Profiling the reference train step on XLA:CPU (``benchmarks/README.md``) showed two
hot spots that are not FLOPs but formulation:

* ``lax.reduce_window`` max-pooling differentiates into ``select_and_scatter``, which XLA:CPU
  runs element by element (3-25x slower than the whole forward pool). ``max_pool`` below is
  the maximum of the ``p*p`` strided slices of the window instead: the forward values are
  identical and its gradient is an elementwise select that fuses with its neighbours.
* the gradient of ``lax.conv_general_dilated`` with respect to the kernel lowers to a
  "backward filter" convolution that XLA:CPU runs at a fraction of its matmul rate.
  ``conv2d_same`` keeps XLA's forward convolution, computes the input gradient as another
  forward convolution (flipped, transposed kernel) and the kernel gradient as one matrix
  product of the im2col patches with the output gradient.

Both are hand-written because no library offers these formulations for XLA:CPU, and they are
measurably faster there (``benchmarks/step_throughput.py --fast-ops both``). They are
selected by ``model.fast_ops`` (default on); gradients agree with the lax versions to float32
rounding, and tests check both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

_NHWC = ("NHWC", "HWIO", "NHWC")


# The max-pool's gradient is routed by the argmax each window keeps from the forward pass (a
# custom_vjp), not left to autodiff of the maximum chain: jaxlib 0.10's XLA:CPU miscompiled that
# autodiff gradient inside the jitted train step (the reference network's BatchNorm gradients off
# by more than 100 %; eager mode right; tests/test_model_gradients.py), and the argmax routing
# ran 1.26-1.47x (jax 0.12) and 1.8x (jax 0.10, against reduce_window) faster in the step,
# interleaved in one process beside a training job (RESULTS.md, 2026-12-02).


def _window_parts(x: jax.Array, window: int) -> list[jax.Array]:
    """The ``window * window`` strided slices of the pooled windows, row-major."""
    _, h, w, _ = x.shape
    x = x[:, : h // window * window, : w // window * window]
    return [x[:, i::window, j::window] for i in range(window) for j in range(window)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def max_pool(x: jax.Array, window: int) -> jax.Array:
    """``window x window`` max-pool with stride ``window``, VALID (floor), on ``[B, H, W, C]``."""
    return _max_pool_argmax_fwd(x, window)[0]


def _max_pool_argmax_fwd(x: jax.Array, window: int) -> tuple[jax.Array, tuple]:
    parts = _window_parts(x, window)
    best, argmax = parts[0], jnp.zeros(parts[0].shape, jnp.int8)
    for k, part in enumerate(parts[1:], start=1):
        better = part > best  # ties keep the first, as the maximum chain's gradient favours
        best = jnp.where(better, part, best)
        argmax = jnp.where(better, jnp.int8(k), argmax)
    return best, (argmax, x.shape)


def _max_pool_argmax_bwd(window: int, residuals: tuple, dy: jax.Array) -> tuple[jax.Array]:
    argmax, (n, h, w, c) = residuals
    h2, w2 = h // window, w // window
    pieces = [jnp.where(argmax == k, dy, jnp.zeros_like(dy)) for k in range(window * window)]
    dx = jnp.stack(pieces, axis=-1).reshape(n, h2, w2, c, window, window)
    dx = dx.transpose(0, 1, 4, 2, 5, 3).reshape(n, h2 * window, w2 * window, c)
    return (jnp.pad(dx, ((0, 0), (0, h - h2 * window), (0, w - w2 * window), (0, 0))),)


max_pool.defvjp(_max_pool_argmax_fwd, _max_pool_argmax_bwd)


def _same_pads(kernel_shape: Sequence[int]) -> list[tuple[int, int]]:
    """lax's SAME padding at stride 1: k - 1 in total, the extra one after."""
    return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel_shape]


def _conv(x: jax.Array, kernel: jax.Array, pads: list[tuple[int, int]]) -> jax.Array:
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_NHWC)


@jax.custom_vjp
def conv2d_same(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Stride-1 SAME convolution of ``[B, H, W, Cin]`` with an ``[kh, kw, Cin, Cout]`` kernel."""
    return _conv(x, kernel, _same_pads(kernel.shape[:2]))


def _conv2d_same_fwd(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, tuple]:
    return conv2d_same(x, kernel), (x, kernel)


def _conv2d_same_bwd(residuals: tuple, dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, kernel = residuals
    kh, kw, cin, cout = kernel.shape
    pads = _same_pads((kh, kw))
    # Input gradient: correlate dy with the flipped kernel, in/out channels swapped.
    flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
    dx = _conv(dy, flipped, [(hi, lo) for lo, hi in pads])
    # Kernel gradient: patches [N, kh*kw*Cin] contracted with dy [N, Cout] over N = B*H*W.
    _, h, w, _ = x.shape
    padded = jnp.pad(x, ((0, 0), *pads, (0, 0)))
    patches = jnp.concatenate(
        [padded[:, i : i + h, j : j + w, :] for i in range(kh) for j in range(kw)], axis=-1
    )
    dkernel = lax.dot_general(
        patches.reshape(-1, kh * kw * cin),
        dy.reshape(-1, cout).astype(patches.dtype),
        (((0,), (0,)), ((), ())),
        preferred_element_type=jnp.float32,
    )
    return dx.astype(x.dtype), dkernel.reshape(kernel.shape).astype(kernel.dtype)


conv2d_same.defvjp(_conv2d_same_fwd, _conv2d_same_bwd)


def _is_same_padding(padding: Any, kernel_shape: Sequence[int]) -> bool:
    if isinstance(padding, str):
        return padding.upper() == "SAME"
    return [tuple(p) for p in padding] == _same_pads(kernel_shape)


def is_conv2d_same(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    **kwargs: Any,
) -> bool:
    """Whether ``lax.conv_general_dilated`` with these arguments is what `conv2d_same`
    computes: a stride-1, undilated, ungrouped SAME 2-D convolution in NHWC/HWIO."""
    ones = (1,) * (lhs.ndim - 2)
    nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
    return (
        lhs.ndim == 4
        and tuple(window_strides) == ones
        and tuple(lhs_dilation or ones) == ones
        and tuple(rhs_dilation or ones) == ones
        and feature_group_count == 1
        and not kwargs
        and dimension_numbers is not None
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc
        and _is_same_padding(padding, rhs.shape[:2])
    )


def same_conv_dropin(
    conv2d: Callable[[jax.Array, jax.Array], jax.Array],
    *,
    dtypes: tuple[Any, ...] | None = None,
    fallback: Callable[..., jax.Array] = lax.conv_general_dilated,
) -> Callable[..., jax.Array]:
    """A drop-in for ``lax.conv_general_dilated`` (``flax.linen.Conv(conv_general_dilated=)``)
    that computes what `is_conv2d_same` accepts (of ``dtypes``, when given) as
    ``conv2d(lhs, rhs)`` and hands anything else to ``fallback`` unchanged."""

    def conv_general_dilated(
        lhs: jax.Array,
        rhs: jax.Array,
        window_strides: Sequence[int],
        padding: Any,
        lhs_dilation: Sequence[int] | None = None,
        rhs_dilation: Sequence[int] | None = None,
        dimension_numbers: Any = None,
        feature_group_count: int = 1,
        precision: Any = None,
        **kwargs: Any,
    ) -> jax.Array:
        options = dict(
            lhs_dilation=lhs_dilation,
            rhs_dilation=rhs_dilation,
            dimension_numbers=dimension_numbers,
            feature_group_count=feature_group_count,
            **kwargs,
        )
        wanted = dtypes is None or (lhs.dtype in dtypes and rhs.dtype in dtypes)
        if wanted and is_conv2d_same(lhs, rhs, window_strides, padding, **options):
            return conv2d(lhs, rhs)
        return fallback(lhs, rhs, window_strides, padding, precision=precision, **options)

    return conv_general_dilated


# Stride-1, undilated, ungrouped SAME 2-D convolutions in NHWC/HWIO take `conv2d_same`.
conv_general_dilated = same_conv_dropin(conv2d_same)


def _fmix32(h: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection that mixes every input bit into every
    output bit."""
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def hash_keep_mask(key: jax.Array, shape: Sequence[int], rate: float) -> jax.Array:
    """Dropout keep-mask (True with probability ``1 - rate``) from a counter-based hash.

    Two 32-bit words drawn from ``key`` seed a double MurmurHash3 finalizer applied to the
    element index: a few integer ops per element that XLA fuses into the dropout multiply,
    where ``jax.random.bernoulli`` (threefry) costs about 5x more on XLA:CPU and was ~10% of
    the reference train step. ``rate`` is quantised to 2**-32.
    """
    size = int(np.prod(shape))
    if size >= 2**32:
        raise ValueError(f"hash dropout supports fewer than 2**32 elements, got {size}")
    seed = jax.random.bits(key, (2,), jnp.uint32)
    counter = lax.iota(jnp.uint32, size).reshape(tuple(shape))
    bits = _fmix32(_fmix32(counter ^ seed[0]) + seed[1])
    return bits >= jnp.uint32(min(round(rate * 2**32), 2**32 - 1))
