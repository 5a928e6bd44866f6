"""Train-step throughput of the reference network, and its model-FLOPs utilisation (MFU).

    python benchmarks/step_throughput.py                        # batch 32, both parallel paths
    python benchmarks/step_throughput.py --batch 32 128 --steps 20 --parallel jit
    python benchmarks/step_throughput.py --parallel jit --ops lax sejax-threefry sejax
    python benchmarks/step_throughput.py --parallel jit --ops sejax sejax-onednn

For each configuration: compile time (first step), the median step time over ``--steps``
timed steps after ``--warmup`` untimed ones, examples/s, achieved GFLOP/s (1.5 GFLOP per
example per training step, from ``reference-model.md``; ``--flops-per-example`` to change)
and MFU against the float32 matrix-multiply rate measured in the same run on the same
device. Needs only JAX (no TensorFlow, no librosa), so it runs on accelerator machines.
Ends with one JSON line per measured configuration.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from sejax.configs import default
from sejax.data import features
from sejax.training import parallel, train_state

REFERENCE_TRAIN_FLOPS = 1.5e9  # per example, forward + backward (reference-model.md)
# Model implementation choices (same network and parameters): sejax's XLA:CPU ops, the plain
# lax/flax formulation (reduce_window pooling, XLA conv autodiff, threefry dropout), and the
# convolutions on oneDNN (model.conv_impl='onednn', what the default 'auto' picks on CPU).
OPS = {
    "sejax": {
        "fast_ops": True,
        "conv_grad": "im2col",
        "dropout_rng": "hash",
        "conv_impl": "xla",
        "block_impl": "xla",
    },
    "sejax-xlaconv": {
        "fast_ops": True,
        "conv_grad": "xla",
        "dropout_rng": "hash",
        "conv_impl": "xla",
        "block_impl": "xla",
    },
    "lax": {"fast_ops": False, "dropout_rng": "jax", "conv_impl": "xla", "block_impl": "xla"},
    "sejax-threefry": {
        "fast_ops": True,
        "conv_grad": "im2col",
        "dropout_rng": "jax",
        "conv_impl": "xla",
        "block_impl": "xla",
    },
    "sejax-onednn": {
        "fast_ops": True,
        "dropout_rng": "hash",
        "conv_impl": "onednn",
        "block_impl": "xla",
    },
    # ... and each block's BatchNorm -> ReLU -> pool as one C++ pass (model.block_impl='fused').
    "sejax-fused": {
        "fast_ops": True,
        "dropout_rng": "hash",
        "conv_impl": "onednn",
        "block_impl": "fused",
    },
    "default": {},  # the default config as a user gets it (conv_impl, block_impl 'auto')
}


def matmul_flops_per_s(n: int = 2048, repeats: int = 10, dtype=jnp.float32) -> float:
    """The device's sustained dense matmul rate, measured here (the MFU denominator)."""
    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def measure(
    batch: int, mode: str, steps: int, warmup: int, unroll: int, dtype: str, ops: str = "sejax"
) -> dict:
    config = default.get_config()
    config.train.parallel, config.train.batch_size = mode, batch
    config.model.scan_unroll, config.model.dtype = unroll, dtype
    config.model.update(OPS[ops])
    par = parallel.make_parallel(config.train)
    fresh = train_state.create_train_state(
        config, steps_per_epoch=100, seed=0, bn_axis_name=parallel.AXIS
    )
    state = par.put_state(fresh)
    shape = (1, features.num_frames(config.features), config.features.n_mels)
    rng = np.random.default_rng(0)
    host = {
        "features": rng.normal(size=(batch, *shape[1:])).astype(np.float32),
        "label": rng.integers(0, config.model.num_classes, size=batch).astype(np.int32),
    }
    device_batch = par.put_batch(host)

    start = time.perf_counter()
    state, metrics = par.train_step(state, device_batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        state, metrics = par.train_step(state, device_batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = par.train_step(state, device_batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    return {
        "framework": "sejax",
        "parallel": mode,
        "devices": par.num_devices,
        "batch": batch,
        "scan_unroll": unroll,
        "dtype": dtype,
        "ops": ops,
        "compile_s": round(compile_s, 2),
        "step_ms": round(1e3 * step_s, 2),
        "examples_per_s": round(batch / step_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32])
    parser.add_argument("--parallel", nargs="+", default=["jit", "pmap"], choices=["jit", "pmap"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--unroll", type=int, default=1, help="model.scan_unroll")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--ops",
        nargs="+",
        default=["sejax"],
        choices=sorted(OPS),
        help="'sejax': sejax's XLA:CPU ops (sejax/model/xla_cpu_ops.py, conv_impl='xla'); "
        "'sejax-xlaconv': with model.conv_grad='xla'; 'lax': plain lax/flax ops; "
        "'sejax-onednn': convolutions on oneDNN (conv_impl='onednn', the default on CPU); "
        "'sejax-fused': and BatchNorm-ReLU-pool fused in C++ (block_impl='fused'); "
        "'default': the default config unchanged",
    )
    parser.add_argument("--flops-per-example", type=float, default=REFERENCE_TRAIN_FLOPS)
    args = parser.parse_args()

    peak = matmul_flops_per_s(dtype=jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
    device = jax.devices()[0]
    rows = []
    for mode, batch, ops in itertools.product(args.parallel, args.batch, args.ops):
        row = measure(batch, mode, args.steps, args.warmup, args.unroll, args.dtype, ops)
        achieved = row["examples_per_s"] * args.flops_per_example
        row.update(
            device=f"{device.platform}:{device.device_kind}",
            gflop_per_s=round(achieved / 1e9, 2),
            matmul_gflop_per_s=round(peak / 1e9, 2),
            mfu=round(achieved / peak, 4),
        )
        rows.append(row)
    for row in rows:
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
