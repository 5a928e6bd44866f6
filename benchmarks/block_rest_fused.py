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
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from block_rest_levers import EPS, batch_stats, compare, current, forward_backward

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


@jax.custom_vjp
def fused(c, gamma, beta):
    return _fwd(c, gamma, beta)[0]


def _fwd(c, gamma, beta):
    mean, var = batch_stats(c)
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


def main() -> None:
    _load()
    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    compare(forward_backward(current), forward_backward(fused), batch)


if __name__ == "__main__":
    main()
