"""Prototype for the step's limit (RESULTS.md, 2026-12-02): a conv block's BatchNorm (batch
statistics) -> ReLU -> 2x2 max-pool as hand-written C++ FFI kernels, against the model's
formulation (`block_rest_levers.current`), forward + backward per block shape.

    python benchmarks/block_rest_fused.py [BATCH]

`csrc/bn_relu_pool.cc` (compiled here with g++ -O3 -fopenmp against jaxlib's FFI headers, into a
temporary folder): the statistics stay in XLA; one pass normalises, applies ReLU, pools and keeps
each window's argmax; the backward takes one pooled-size pass (the input at the argmax) and one
full-size pass (dx = u + v*x, plus scale*dy at the argmax), the per-channel sums in XLA between
them. Not wired into the model: no BatchNorm running averages, no cross-device statistics, no
tests beyond the differences printed here. Prints each block's times, the speed-up and the
largest relative differences of the output and the three gradients.
"""

from __future__ import annotations

import ctypes
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from block_rest_levers import EPS, current  # this folder's lever benchmark

SOURCE = Path(__file__).with_name("csrc") / "bn_relu_pool.cc"


def _load() -> None:
    out = Path(tempfile.mkdtemp()) / "libbrp.so"
    subprocess.run(["g++", "-std=c++17", "-O3", "-march=x86-64-v3", "-fPIC", "-shared",
                    "-fopenmp", "-fvisibility=hidden", "-isystem", jax.ffi.include_dir(),
                    str(SOURCE), "-o", str(out)], check=True)  # fmt: skip
    lib = ctypes.CDLL(str(out))
    for name, sym in (("brp_fwd", "BrpFwd"), ("brp_gather", "BrpGather"), ("brp_bwd", "BrpBwd")):
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, sym)), platform="cpu")


def _pooled(c):
    n, h, w, ch = c.shape
    return (n, h // 2, w // 2, ch)


def _stats(c):
    mean = jnp.mean(c, axis=(0, 1, 2))
    var = jnp.maximum(jnp.mean(c * c, axis=(0, 1, 2)) - mean * mean, 0.0)
    return mean, var


@jax.custom_vjp
def fused(c, gamma, beta):
    return _fwd(c, gamma, beta)[0]


def _fwd(c, gamma, beta):
    mean, var = _stats(c)
    rstd = jax.lax.rsqrt(var + EPS)
    a = gamma * rstd
    b = beta - mean * a
    shape = _pooled(c)
    outs = (jax.ShapeDtypeStruct(shape, jnp.float32), jax.ShapeDtypeStruct(shape, jnp.uint8))
    p, idx = jax.ffi.ffi_call("brp_fwd", outs)(c, a, b)
    return p, (c, idx, mean, rstd, a)


def _bwd(res, dp):
    c, idx, mean, rstd, a = res
    m = c.shape[0] * c.shape[1] * c.shape[2]
    g = jnp.where(idx < 4, dp, 0.0)
    xs = jax.ffi.ffi_call("brp_gather", jax.ShapeDtypeStruct(dp.shape, jnp.float32))(c, idx)
    s1 = jnp.sum(g, axis=(0, 1, 2))
    s2 = jnp.sum(g * (xs - mean) * rstd, axis=(0, 1, 2))
    u = -a * s1 / m + a * mean * rstd * s2 / m
    v = -a * rstd * s2 / m
    dx = jax.ffi.ffi_call("brp_bwd", jax.ShapeDtypeStruct(c.shape, jnp.float32))(c, idx, g, a, u, v)
    return dx, s2, s1


fused.defvjp(_fwd, _bwd)


def _forward_backward(f):
    def run(c, g, b, ct):
        out, vjp = jax.vjp(f, c, g, b)
        return out, vjp(ct)

    return jax.jit(run)


def main() -> None:
    _load()
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    shapes = [(batch, 301, 64, 32), (batch, 150, 32, 64), (batch, 75, 16, 128), (batch, 37, 8, 128)]
    rng = np.random.default_rng(0)
    variants = {"xla": _forward_backward(current), "fused": _forward_backward(fused)}
    total = dict.fromkeys(variants, 0.0)
    for shape in shapes:
        ch = shape[-1]
        c = jnp.asarray(rng.normal(size=shape), jnp.float32)
        g = jnp.asarray((np.abs(rng.normal(size=ch)) + 0.5) * np.sign(rng.normal(size=ch)),
                        jnp.float32)  # fmt: skip
        b = jnp.asarray(rng.normal(size=ch), jnp.float32)
        ct = jnp.asarray(rng.normal(size=_pooled(c)), jnp.float32)
        (oa, ga), (ob, gb) = (f(c, g, b, ct) for f in variants.values())
        diffs = [float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(x)) + 1e-12))
                 for x, y in zip((oa, *ga), (ob, *gb), strict=True)]  # fmt: skip
        times: dict[str, list[float]] = {n: [] for n in variants}
        for r in range(7):
            for n in variants if r % 2 == 0 else reversed(variants):
                start = time.perf_counter()
                jax.block_until_ready(variants[n](c, g, b, ct))
                times[n].append(time.perf_counter() - start)
        med = {n: 1e3 * statistics.median(t) for n, t in times.items()}
        for n in med:
            total[n] += med[n]
        print(shape, {n: round(v, 1) for n, v in med.items()},
              "speed-up", round(med["xla"] / med["fused"], 2),
              "max relative difference (output, d input, d scale, d bias)",
              [f"{d:.1e}" for d in diffs])  # fmt: skip
    print("all four", {n: round(v, 1) for n, v in total.items()},
          "speed-up", round(total["xla"] / total["fused"], 2))  # fmt: skip


if __name__ == "__main__":
    main()
