"""Where the train step's time goes: each part of the reference network's step timed alone,
forward + backward under ``jit``, on the model's own ops, taking turns in one process.

    python benchmarks/step_profile.py --batch 32 --repeats 5
    python benchmarks/step_profile.py --batch 128 --ops sejax     # XLA's convolutions

Parts: each conv block's convolution alone (the block's own ``nn.Conv`` drop-in) and the
whole block (convolution, BatchNorm on batch statistics, ReLU, max-pool, dropout), so a
block's remainder is block - convolution; the BiLSTM layers; the head (mean over time,
dropout, Dense, softmax cross-entropy); the optimizer update (the default config's global-norm
clip and Adam on all 1.29 M parameters); and the whole train step. Each part's backward pass
takes the gradient with respect to its parameters and its input (what the step needs), from
a fixed random cotangent. The parts' sum against the step shows what fusing across parts
gains or loses. Needs only JAX. Ends with one JSON line per part and one summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from sejax.configs import default
from sejax.data import features
from sejax.model import models
from sejax.training import train_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
import step_throughput  # this folder's step benchmark


def _fwd_bwd(module: nn.Module, variables: dict, x: jax.Array, **kwargs) -> Callable[[], object]:
    """A thunk running ``module``'s forward and its vjp w.r.t. params and input, jitted."""
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    cotangent = None

    def forward(p, inp):
        out = module.apply({"params": p, **rest}, inp, rngs={"dropout": jax.random.key(1)},
                           mutable=list(rest) or False, **kwargs)  # fmt: skip
        return out[0] if rest else out

    cotangent = jax.random.normal(jax.random.key(2), jax.eval_shape(forward, params, x).shape)

    @jax.jit
    def run(p, inp):
        out, vjp = jax.vjp(forward, p, inp)
        return vjp(cotangent.astype(out.dtype))

    return lambda: run(params, x)


def parts(config, batch: int) -> dict[str, Callable[[], object]]:
    m = config.model
    model = models.build_model(m)
    shape = (batch, features.num_frames(config.features), config.features.n_mels, 1)
    x = jax.random.normal(jax.random.key(0), shape, jnp.float32)
    out: dict[str, Callable[[], object]] = {}
    for i, channels in enumerate(m.conv_channels):
        block = models.ConvBlock(channels, kernel=m.conv_kernel, pool=m.pool,
                                 dropout=m.conv_dropout, bn_momentum=m.bn_momentum,
                                 bn_epsilon=m.bn_epsilon, fast_ops=m.fast_ops,
                                 conv_grad=m.conv_grad, conv_impl=m.conv_impl,
                                 block_impl=m.block_impl, dropout_rng=m.dropout_rng)  # fmt: skip
        conv = nn.Conv(channels, (m.conv_kernel,) * 2, padding="SAME",
                       conv_general_dilated=block.convolution())  # fmt: skip
        name = f"block {i + 1} ({'x'.join(map(str, x.shape[1:]))} -> {channels})"
        out[f"{name}: convolution"] = _fwd_bwd(conv, conv.init(jax.random.key(3), x), x)
        variables = block.init(jax.random.key(3), x, train=False)
        out[f"{name}: whole block"] = _fwd_bwd(block, variables, x, train=True)
        x = block.apply(variables, x, train=False)
    b, t, f, c = x.shape
    seq = x.reshape(b, t, f * c)

    class Lstms(nn.Module):
        @nn.compact
        def __call__(self, s):
            for i in range(m.lstm_layers):
                s = models.BiLstm(m.lstm_units, unroll=m.scan_unroll, name=f"bilstm_{i}")(s)
            return s

    lstms = Lstms()
    lstm_vars = lstms.init(jax.random.key(4), seq)
    out[f"BiLSTM x{m.lstm_layers} ({t}x{f * c} -> {2 * m.lstm_units})"] = _fwd_bwd(
        lstms, lstm_vars, seq
    )
    hidden = lstms.apply(lstm_vars, seq)
    labels = jnp.arange(b) % m.num_classes

    class Head(nn.Module):
        @nn.compact
        def __call__(self, h):
            h = jnp.mean(h, axis=1)
            h = models.Dropout(m.head_dropout, m.dropout_rng)(h, deterministic=False)
            logits = nn.Dense(m.num_classes)(h)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    head = Head()
    out["head + loss"] = _fwd_bwd(head, head.init(jax.random.key(5), hidden), hidden)

    params = model.init(jax.random.key(6), jnp.zeros(shape), train=False)["params"]
    tx = train_state.make_optimizer(config.train, steps_per_epoch=100)
    opt_state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def update(g, s, p):
        updates, s = tx.update(g, s, p)
        return optax.apply_updates(p, updates), s

    out["optimizer (clip + Adam)"] = lambda: update(grads, opt_state, params)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--ops", default="default", choices=sorted(step_throughput.OPS))
    args = parser.parse_args()

    config = default.get_config()
    config.train.batch_size = args.batch
    config.model.update(step_throughput.OPS[args.ops])
    thunks = parts(config, args.batch)
    for thunk in thunks.values():  # compile, then one warm-up call
        jax.block_until_ready(thunk())
        jax.block_until_ready(thunk())
    times: dict[str, list[float]] = {name: [] for name in thunks}
    for r in range(args.repeats):  # taking turns, order reversed every other round
        order = list(thunks) if r % 2 == 0 else list(reversed(thunks))
        for name in order:
            start = time.perf_counter()
            jax.block_until_ready(thunks[name]())
            times[name].append(time.perf_counter() - start)
    step = step_throughput.measure(args.batch, "jit", steps=args.repeats, warmup=1, unroll=1,
                                   dtype="float32", ops=args.ops)  # fmt: skip
    step_ms = step["step_ms"]
    medians = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    print(f"| part (batch {args.batch}, ops {args.ops}) | ms | share of the step |")
    print("| --- | --- | --- |")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.1f} | {ms / step_ms:.2f} |")
    convs = sum(ms for name, ms in medians.items() if name.endswith("convolution"))
    blocks = sum(ms for name, ms in medians.items() if name.endswith("whole block"))
    total = sum(ms for name, ms in medians.items() if not name.endswith("convolution"))
    print(f"| sum of the parts (blocks, LSTMs, head, optimizer) | {total:.1f} | "
          f"{total / step_ms:.2f} |")  # fmt: skip
    print(f"| the whole train step | {step_ms:.1f} | 1.00 |")
    for name, ms in medians.items():
        print(json.dumps({"part": name, "batch": args.batch, "ops": args.ops, "ms": round(ms, 2),
                          "rounds_ms": [round(1e3 * t, 2) for t in times[name]]}))  # fmt: skip
    print(json.dumps({
        "batch": args.batch, "ops": args.ops, "step_ms": step_ms,
        "convolutions_ms": round(convs, 2), "blocks_ms": round(blocks, 2),
        "block_remainder_ms": round(blocks - convs, 2), "parts_sum_ms": round(total, 2),
        "cpus": os.cpu_count(), "jax": jax.__version__,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
