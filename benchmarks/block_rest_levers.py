"""A lever against the step's limit (RESULTS.md, 2026-12-02): a conv block's BatchNorm ->
ReLU -> max-pool computed on the pooled tensor, against the model's formulation.

    python benchmarks/block_rest_levers.py [BATCH]

An affine map per channel followed by ReLU is monotone, so max-pooling commutes with it:
pool(ReLU(a*x + b)) = ReLU(a*maxpool(x) + b) where a >= 0, and with minpool where a < 0. The
batch statistics still come from the full tensor. Forward + backward (w.r.t. the conv output,
scale and bias) of the reference network's four block shapes, taking turns, median of 7;
prints each block's times, the speed-up and the largest relative difference of the outputs
and gradients. Measured slower (0.90x at batch 32), so the model keeps its formulation.
"""

from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from sejax.model import xla_cpu_ops

EPS = 1e-3  # the reference network's BatchNorm epsilon


def batch_stats(c: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean = jnp.mean(c, axis=(0, 1, 2))
    return mean, jnp.maximum(jnp.mean(c * c, axis=(0, 1, 2)) - mean * mean, 0.0)


def current(c: jax.Array, gamma: jax.Array, beta: jax.Array) -> jax.Array:
    mean, var = batch_stats(c)
    y = (c - mean) * jax.lax.rsqrt(var + EPS) * gamma + beta
    return xla_cpu_ops.max_pool(jax.nn.relu(y), 2)


def pool_first(c: jax.Array, gamma: jax.Array, beta: jax.Array) -> jax.Array:
    mean, var = batch_stats(c)
    a = gamma * jax.lax.rsqrt(var + EPS)
    b = beta - mean * a
    pooled = jnp.where(a >= 0, xla_cpu_ops.max_pool(c, 2), -xla_cpu_ops.max_pool(-c, 2))
    return jax.nn.relu(pooled * a + b)


def forward_backward(f):
    """Jitted ``(c, gamma, beta, cotangent) -> (f's output, its vjp w.r.t. all three)``."""

    def run(c, g, b, cotangent):
        out, vjp = jax.vjp(f, c, g, b)
        return out, vjp(cotangent)

    return jax.jit(run)


def compare(baseline, candidate, batch: int) -> None:
    """Times ``baseline`` and ``candidate`` (``forward_backward`` functions) on the reference
    network's four block shapes, taking turns, median of 7; prints each block's times, the
    speed-up and the largest relative differences of the output and the three gradients."""
    shapes = [(batch, 301, 64, 32), (batch, 150, 32, 64), (batch, 75, 16, 128), (batch, 37, 8, 128)]
    rng = np.random.default_rng(0)
    variants = {"baseline": baseline, "candidate": candidate}
    total = dict.fromkeys(variants, 0.0)
    for shape in shapes:
        channels = shape[-1]
        c = jnp.asarray(rng.normal(size=shape), jnp.float32)
        # Scales of both signs, kept away from 0 (a near-zero scale makes ties in every window).
        g = jnp.asarray((np.abs(rng.normal(size=channels)) + 0.5)
                        * np.sign(rng.normal(size=channels)), jnp.float32)  # fmt: skip
        b = jnp.asarray(rng.normal(size=channels), jnp.float32)
        ct = jnp.asarray(rng.normal(size=(batch, shape[1] // 2, shape[2] // 2, channels)),
                         jnp.float32)  # fmt: skip
        (out_a, grads_a), (out_b, grads_b) = (f(c, g, b, ct) for f in variants.values())
        diffs = [float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-12))
                 for x, y in zip((out_a, *grads_a), (out_b, *grads_b), strict=True)]  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in variants}
        for r in range(7):
            for name in variants if r % 2 == 0 else reversed(variants):
                start = time.perf_counter()
                jax.block_until_ready(variants[name](c, g, b, ct))
                times[name].append(time.perf_counter() - start)
        med = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        for name in med:
            total[name] += med[name]
        print(shape, {n: round(v, 1) for n, v in med.items()},
              "speed-up", round(med["baseline"] / med["candidate"], 2),
              "max relative difference (output, d input, d scale, d bias)",
              [f"{d:.1e}" for d in diffs])  # fmt: skip
    print("all four", {n: round(v, 1) for n, v in total.items()},
          "speed-up", round(total["baseline"] / total["candidate"], 2))  # fmt: skip


def main() -> None:
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    compare(forward_backward(current), forward_backward(pool_first), batch)


if __name__ == "__main__":
    main()
