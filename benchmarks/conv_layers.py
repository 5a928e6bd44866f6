"""The reference network's four 3x3 convolutions alone, forward + backward, in XLA:CPU (as
JAX lowers them, and as sejax's kernels compute them) and in TensorFlow (oneDNN, what Keras
runs), timed side by side in one run: where the train step's gap to Keras comes from.

    python benchmarks/conv_layers.py                  # batch 32
    python benchmarks/conv_layers.py --batch 128 --repeats 5
    python benchmarks/conv_layers.py --onednn         # with sejax's oneDNN custom call

For each block's convolution shape it times, taking turns, median of ``--repeats``: the
gradient with respect to input and kernel of ``sum(conv(x, k) * dy)`` with ``lax.conv`` and
XLA's autodiff (``xla``), with ``sejax.model.xla_cpu_ops.conv2d_same`` (``sejax``: XLA's forward
convolution, the input gradient as a forward convolution, the kernel gradient as an im2col
matmul), and with ``tf.nn.conv2d`` under a ``tf.GradientTape`` in a ``tf.function`` (``tf``:
TensorFlow's oneDNN kernels); with ``--onednn`` also with ``sejax.model.onednn.conv2d_same``
(``onednn``: oneDNN primitives for all three, as XLA FFI custom calls, ``model.conv_impl``).
Prints one JSON line per block and one for the sum, with each variant's ms and GFLOP/s (3
convolutions' worth of FLOPs: forward, input and kernel gradients) and the float32 matmul
rate measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sejax.model import onednn
from sejax.model import xla_cpu_ops as kernels

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_throughput
from step_throughput import matmul_flops_per_s

# (time, frequency, input channels) -> output channels of the reference network's blocks.
BLOCKS = (((301, 64, 1), 32), ((150, 32, 32), 64), ((75, 16, 64), 128), ((37, 8, 128), 128))
NHWC = ("NHWC", "HWIO", "NHWC")


def _lax_conv(x: jax.Array, k: jax.Array) -> jax.Array:
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)


def _jax_grads(conv):
    def loss(x, k, dy):
        return jnp.sum(conv(x, k) * dy)

    return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _tf_grads():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    @tf.function
    def grads(x, k, dy):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            loss = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME") * dy)
        return tape.gradient(loss, [x, k])

    return grads, tf


def _run_jax(grads, inputs: tuple) -> list[np.ndarray]:
    return [np.asarray(g) for g in jax.block_until_ready(grads(*inputs))]


def _run_tf(grads, inputs: tuple) -> list[np.ndarray]:
    return [g.numpy() for g in grads(*inputs)]


def _elapsed_ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--onednn", action="store_true", help="also sejax's oneDNN custom call")
    args = parser.parse_args()
    tf_grads, tf = _tf_grads()
    variants = {"xla": _jax_grads(_lax_conv), "sejax": _jax_grads(kernels.conv2d_same)}
    if args.onednn:
        variants["onednn"] = _jax_grads(onednn.conv2d_same)
    rng = np.random.default_rng(0)
    totals: dict[str, float] = {}
    flops_total = 0.0
    for (t, f, cin), cout in BLOCKS:
        x = rng.standard_normal((args.batch, t, f, cin), np.float32)
        k = rng.standard_normal((3, 3, cin, cout), np.float32) * 0.1
        dy = rng.standard_normal((args.batch, t, f, cout), np.float32)
        jax_inputs = tuple(map(jnp.asarray, (x, k, dy)))
        tf_inputs = tuple(map(tf.constant, (x, k, dy)))
        runs = {name: functools.partial(_run_jax, g, jax_inputs) for name, g in variants.items()}
        runs["tf"] = functools.partial(_run_tf, tf_grads, tf_inputs)
        reference = runs["xla"]()
        for run in runs.values():  # compiles, and checks every variant computes the same
            for a, b in zip(run(), reference, strict=True):
                np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-2 * np.abs(b).max())
        ms = {name: [] for name in runs}
        for _ in range(args.repeats):  # taking turns, one call each
            for name, run in runs.items():
                ms[name].append(_elapsed_ms(run))
        flops = 3 * 2 * args.batch * t * f * 9 * cin * cout
        flops_total += flops
        row = {"block": f"{args.batch}x{t}x{f}x{cin}->{cout}", "gflop": round(flops / 1e9, 2)}
        for name, values in ms.items():
            median = statistics.median(values)
            totals[name] = totals.get(name, 0.0) + median
            row[f"{name}_ms"] = round(median, 1)
            row[f"{name}_gflop_per_s"] = round(flops / median / 1e6, 1)
        row["tf_over_sejax"] = round(row["sejax_ms"] / row["tf_ms"], 2)
        if args.onednn:
            row["onednn_over_xla"] = round(row["onednn_ms"] / row["xla_ms"], 2)
        print(json.dumps(row), flush=True)
    matmul = matmul_flops_per_s() / 1e9
    summary = {"block": "all four", "batch": args.batch, "matmul_gflop_per_s": round(matmul, 1),
               "cpus": os.cpu_count()}  # fmt: skip
    for name, total in totals.items():
        summary[f"{name}_ms"] = round(total, 1)
        summary[f"{name}_share_of_matmul_rate"] = round(flops_total / total / 1e6 / matmul, 3)
    summary["sejax_over_tf_time"] = round(totals["sejax"] / totals["tf"], 2)
    if args.onednn:
        summary["onednn_over_xla_time"] = round(totals["onednn"] / totals["xla"], 2)
        summary["onednn_over_tf_time"] = round(totals["onednn"] / totals["tf"], 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
