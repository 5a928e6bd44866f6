"""A conv block's BatchNorm -> ReLU -> 2x2 max-pool as one differentiable op on XLA:CPU
(``model.block_impl='fused'``; the kernels: ``csrc/bn_relu_pool.cc``).

XLA:CPU runs these memory-bound passes as several fusions over the full-size activation, about
half of the train step after the convolutions moved to oneDNN (``benchmarks/step_profile.py``).
Here the forward is one pass (normalise, ReLU, pool, keep each window's argmax) and the
backward two (the input at the argmax, pooled size; then ``dx`` in one full-size pass), with
the per-channel statistics and sums left in XLA, where ``pmean``/``psum`` make them those of
the global batch under ``pmap``/``shard_map``.

The math is Flax's ``nn.BatchNorm`` (fast variance ``E[x^2] - E[x]^2`` clipped at 0, biased,
statistics averaged over ``axis_name``) followed by ``nn.relu`` and a VALID 2x2 max-pool whose
ties go to the first position; values and gradients agree with that composition to float32
rounding (``tests/test_bn_relu_pool.py``). float32 only, CPU only, pool 2 only: `ConvBlock`
falls back to XLA's formulation otherwise.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from sejax.model.onednn import ops


def _pooled(x: jax.Array) -> tuple[int, int, int, int]:
    n, h, w, c = x.shape
    return (n, h // 2, w // 2, c)


def _forward_call(x: jax.Array, a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    shape = _pooled(x)
    outs = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.uint8))
    p, idx = ops._call(ops.BN_RELU_POOL_FORWARD, outs)(x, a, b)
    return ops._mark_varying(p, x, a, b), ops._mark_varying(idx, x, a, b)


def _forward_keep_call(x, a, b) -> tuple[jax.Array, jax.Array, jax.Array]:
    shape = _pooled(x)
    f32, u8 = jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.uint8)
    outs = ops._call(ops.BN_RELU_POOL_FORWARD_KEEP, (f32, u8, f32))(x, a, b)
    return tuple(ops._mark_varying(o, x, a, b) for o in outs)


def _gather_call(x: jax.Array, idx: jax.Array) -> jax.Array:
    xs = ops._call(ops.BN_RELU_POOL_GATHER, ops._f32(idx.shape))(x, idx)
    return ops._mark_varying(xs, x, idx)


def _backward_call(x, idx, g, alpha, u, v) -> jax.Array:
    dx = ops._call(ops.BN_RELU_POOL_BACKWARD, ops._f32(x.shape))(x, idx, g, alpha, u, v)
    return ops._mark_varying(dx, x, idx, g, alpha, u, v)


def _active(idx: jax.Array, g: jax.Array) -> jax.Array:
    """The pooled cotangent where the window's ReLU passed its maximum (0 elsewhere)."""
    return jnp.where(idx < 4, g, jnp.zeros_like(g))


# Inference: the affine map from given (running-average) statistics.


@jax.custom_vjp
def affine_relu_pool(x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``maxpool2x2(relu(a * x + b))`` of ``x [N, H, W, C]`` with per-channel ``a``, ``b``."""
    return _forward_call(x, a, b)[0]


def _affine_fwd(x, a, b):
    p, idx = _forward_call(x, a, b)
    return p, (x, idx, a)


def _affine_bwd(residuals, g):
    x, idx, a = residuals
    g = _active(idx, g)
    zeros = jnp.zeros_like(a)
    dx = _backward_call(x, idx, g, a, zeros, zeros)
    xs = _gather_call(x, idx)
    da, db = jnp.sum(g * xs, axis=(0, 1, 2)), jnp.sum(g, axis=(0, 1, 2))
    return ops._as_cotangent(dx, x), ops._as_cotangent(da, a), ops._as_cotangent(db, a)


affine_relu_pool.defvjp(_affine_fwd, _affine_bwd)


def inference(x, scale, bias, mean, var, *, epsilon: float) -> jax.Array:
    """BatchNorm with the given statistics (``use_running_average=True``), ReLU, pool."""
    a = scale * lax.rsqrt(var + epsilon)
    return affine_relu_pool(x, a, bias - mean * a)


# Training: batch statistics, their gradient included.


def _batch_stats(x: jax.Array, axis_name: str | None) -> tuple[jax.Array, jax.Array]:
    """Flax's fast variance: one pass for E[x] and E[x^2], one pmean of both when mapped."""
    mu, mu2 = jnp.mean(x, axis=(0, 1, 2)), jnp.mean(x * x, axis=(0, 1, 2))
    if axis_name is not None:
        mu, mu2 = lax.pmean(jnp.stack([mu, mu2]), axis_name)
    return mu, jnp.maximum(0.0, mu2 - mu * mu)


def _count(x: jax.Array, axis_name: str | None) -> jax.Array:
    """Elements per channel in the (global) batch."""
    m = jnp.float32(x.shape[0] * x.shape[1] * x.shape[2])
    return m if axis_name is None else lax.psum(m, axis_name)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _train(x, scale, bias, epsilon: float, axis_name: str | None):
    return _train_fwd(x, scale, bias, epsilon, axis_name)[0]


def _train_fwd(x, scale, bias, epsilon, axis_name):
    mean, var = _batch_stats(x, axis_name)
    rstd = lax.rsqrt(var + epsilon)
    a = scale * rstd
    p, idx, xs = _forward_keep_call(x, a, bias - mean * a)
    return (p, mean, var), (x, idx, xs, mean, rstd, a, scale)


def _train_bwd(epsilon, axis_name, residuals, cotangents):
    # The mean and variance outputs feed only the running averages (`training` stops their
    # gradient), so their cotangents are zero and not used.
    x, idx, xs, mean, rstd, a, scale = residuals
    g = _active(idx, cotangents[0])
    s1 = jnp.sum(g, axis=(0, 1, 2))  # dL/dbias on this device
    s2 = jnp.sum(g * (xs - mean) * rstd, axis=(0, 1, 2))  # dL/dscale on this device
    # dx = a * (g_full - S1/M - xhat * S2/M), with S the sums over the global batch.
    if axis_name is None:
        t1, t2 = s1, s2
    else:
        t1, t2 = lax.psum(jnp.stack([s1, s2]), axis_name)
    m = _count(x, axis_name)
    u = a * (mean * rstd * t2 - t1) / m
    v = -a * rstd * t2 / m
    dx = _backward_call(x, idx, g, a, u, v)
    return ops._as_cotangent(dx, x), ops._as_cotangent(s2, scale), ops._as_cotangent(s1, scale)


_train.defvjp(_train_fwd, _train_bwd)


def training(
    x: jax.Array, scale: jax.Array, bias: jax.Array, *, epsilon: float, axis_name: str | None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """BatchNorm with batch statistics (over ``axis_name`` too), ReLU, pool:
    ``(pooled, batch mean, batch variance)``, the statistics for the running averages."""
    ops.load()
    p, mean, var = _train(x, scale, bias, epsilon, axis_name)
    return p, lax.stop_gradient(mean), lax.stop_gradient(var)
