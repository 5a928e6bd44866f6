"""Input pipeline throughput: shards -> tf.data -> device arrays, against what a step consumes.

    python benchmarks/input_pipeline.py                       # the RAVDESS corpus, batch 32 128
    python benchmarks/input_pipeline.py --shards DIR --batch 32 --epochs 2 --fed-steps 0
    python benchmarks/input_pipeline.py --data DIR --prepared-dir /tmp/shards

Shards come from ``--shards`` (prepared), else ``--data`` (a corpus folder, prepared once into
``--prepared-dir``, reused by later runs), else the shared RAVDESS copy beside the repository,
else the built-in demo corpus. For each batch size it runs ``--epochs`` epochs of
`sejax.data.input_pipeline.Shards.train_batches` over every example and puts each batch on the
devices with the train loop's ``Parallel.put_batch``, waiting for the arrays: epoch 0 reads and
parses the shards (tf.data's cache is empty), later epochs come from the cache, as every epoch
after the first does in training. Against it: the examples/s that sejax's train step consumes
(`step_throughput.measure`, same batch). With ``--fed-steps N`` it also runs N train steps on
pipeline batches and N on a fixed device batch, alternating, so the cost of feeding while
stepping on the same CPU shows. Prints one JSON line per batch size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # step_throughput

REPO = Path(__file__).resolve().parents[1]
SHARED_RAVDESS = REPO.parent / "shared" / "data" / "ravdess-speech-16k"


def resolve_shards(args: argparse.Namespace) -> tuple[Path, str]:
    """A folder of prepared shards, preparing ``--data`` (or RAVDESS, or the demo) if needed."""
    from sejax.configs.default import get_features_config
    from sejax.data import features, prepare

    if args.shards:
        return Path(args.shards), str(args.shards)
    cfg = get_features_config()
    data = Path(args.data) if args.data else SHARED_RAVDESS
    if not data.exists():
        from sejax.data import demo

        data = demo.generate_demo_corpus(Path(tempfile.gettempdir()) / "sejax-bench-demo")
    name = f"sejax-bench-shards-{data.name}-{features.fingerprint(cfg)[:8]}"
    out = Path(args.prepared_dir) if args.prepared_dir else Path(tempfile.gettempdir()) / name
    summary = prepare.prepare(data, out, cfg, progress=False)
    print(f"[input_pipeline] shards in {out} ({'reused' if summary['reused'] else 'prepared'}, "
          f"{summary['num_examples']} examples)", file=sys.stderr, flush=True)  # fmt: skip
    return out, str(data)


def pipeline_epochs(
    shards: Any, par: Any, indices: np.ndarray, norm: Any, batch: int, epochs: int, prefetch: int
) -> list[dict[str, float]]:
    """Examples/s of each epoch, from asking for the iterator to the last batch on device."""
    import jax

    out = []
    for epoch in range(epochs):
        start = time.perf_counter()
        n = 0
        for host in shards.train_batches(indices, norm, batch_size=batch, seed=0, epoch=epoch,
                                         shuffle_buffer=2048, prefetch=prefetch):  # fmt: skip
            jax.block_until_ready(par.put_batch(host))
            n += len(host["label"])
        seconds = time.perf_counter() - start
        out.append({"epoch": epoch, "examples": n, "seconds": round(seconds, 3),
                    "examples_per_s": round(n / seconds, 1)})  # fmt: skip
    return out


def fed_vs_fixed(
    shards: Any, par: Any, indices: np.ndarray, norm: Any, batch: int, steps: int, prefetch: int
) -> dict[str, float]:
    """Median step time fed by the pipeline vs on one fixed device batch, alternating."""
    import jax

    from sejax.configs import default
    from sejax.training import parallel, train_state

    config = default.get_config()
    config.train.batch_size = batch
    state = par.put_state(train_state.create_train_state(
        config, steps_per_epoch=100, seed=0, bn_axis_name=parallel.AXIS))  # fmt: skip
    batches = shards.train_batches(indices, norm, batch_size=batch, seed=0, epoch=99,
                                   shuffle_buffer=2048, prefetch=prefetch)  # fmt: skip
    fixed = par.put_batch(next(batches))
    state, metrics = par.train_step(state, fixed)  # compile
    jax.block_until_ready(metrics)
    times: dict[str, list[float]] = {"fed": [], "fixed": []}
    for _ in range(steps):
        for kind in ("fed", "fixed"):
            start = time.perf_counter()
            device_batch = par.put_batch(next(batches)) if kind == "fed" else fixed
            state, metrics = par.train_step(state, device_batch)
            jax.block_until_ready(metrics)
            times[kind].append(time.perf_counter() - start)
    fed, fixed_s = statistics.median(times["fed"]), statistics.median(times["fixed"])
    return {"fed_step_ms": round(1e3 * fed, 1), "fixed_step_ms": round(1e3 * fixed_s, 1),
            "fed_slowdown": round(fed / fixed_s, 3)}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", default=None, help="a folder of prepared shards")
    parser.add_argument("--data", default=None, help="a corpus folder to prepare first")
    parser.add_argument("--prepared-dir", default=None)
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--epochs", type=int, default=3, help="epoch 0 cold, the rest cached")
    parser.add_argument("--prefetch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed train steps (consumption)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--fed-steps", type=int, default=2)
    args = parser.parse_args(argv)

    folder, source = resolve_shards(args)

    import jax
    from step_throughput import measure

    from sejax.configs import default
    from sejax.data import input_pipeline
    from sejax.training import parallel

    device = jax.devices()[0]
    for batch in args.batch:
        shards = input_pipeline.Shards(folder)  # a fresh tf.data cache: epoch 0 reads shards
        indices = np.arange(len(shards.examples))
        norm = shards.normalization(indices, "per_band")
        config = default.get_config()
        config.train.batch_size = batch
        par = parallel.make_parallel(config.train)
        epochs = pipeline_epochs(shards, par, indices, norm, batch, args.epochs, args.prefetch)
        step = measure(batch, "jit", args.steps, args.warmup, 1, "float32")
        cached = [e["examples_per_s"] for e in epochs[1:]] or [epochs[0]["examples_per_s"]]
        row: dict[str, Any] = {
            "benchmark": "input_pipeline",
            "source": source,
            "num_examples": len(indices),
            "batch": batch,
            "device": f"{device.platform}:{device.device_kind}",
            "pipeline_cold_examples_per_s": epochs[0]["examples_per_s"],
            "pipeline_examples_per_s": max(cached),
            "step_examples_per_s": step["examples_per_s"],
            "step_ms": step["step_ms"],
            "headroom": round(max(cached) / step["examples_per_s"], 1),
            "headroom_cold": round(epochs[0]["examples_per_s"] / step["examples_per_s"], 1),
            "epochs": epochs,
        }
        if args.fed_steps > 0:
            row.update(fed_vs_fixed(shards, par, indices, norm, batch, args.fed_steps,
                                    args.prefetch))  # fmt: skip
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
