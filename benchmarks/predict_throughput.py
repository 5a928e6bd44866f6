"""Batched prediction: clips/s of the reference network in inference mode, sejax against Keras.

    python benchmarks/predict_throughput.py --batch 32 128 --clips 512 --rounds 3

Both run the same network on the same log-Mel windows (``[B, 301, 64]``, the 3 s reference
input) in inference mode (BatchNorm averages, no dropout): sejax the jitted ``apply`` that
`sejax.inference.predict.Predictor` runs (the default config, so ``model.conv_impl='auto'``:
oneDNN convolutions on a CPU; ``--ops`` names others), Keras ``model.predict(x,
batch_size=B)``, what a Keras user calls. Each framework runs in its own process (thread pools
and OpenMP runtimes do not share one), they take turns round by round, and a round's time is
the whole pass over ``--clips`` clips after a warm-up pass; the clips/s reported is the median
round's. One JSON line per framework and batch, then the ratio sejax / Keras.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # keras_twin, step_throughput


def _inputs(clips: int, frames: int, mels: int) -> Any:
    import numpy as np

    return np.random.default_rng(0).normal(size=(clips, frames, mels)).astype(np.float32)


def sejax_pass(batch: int, clips: int, ops: str) -> tuple[Any, dict[str, Any]]:
    """A function running one pass over the clips (blocking), and what it ran."""
    import jax
    import numpy as np
    from step_throughput import OPS

    from sejax.configs import default
    from sejax.training import train_state

    config = default.get_config()
    config.model.update(OPS[ops])
    model, shape = train_state.model_from_config(config)
    variables = jax.jit(lambda key: model.init(key, np.zeros((1, *shape[1:]), np.float32),
                                               train=False))(jax.random.key(0))  # fmt: skip
    apply = jax.jit(lambda v, x: model.apply(v, x, train=False))
    x = _inputs(clips, shape[1], shape[2])
    batches = [jax.device_put(x[i : i + batch]) for i in range(0, clips - clips % batch, batch)]

    def run() -> None:
        outs = [apply(variables, b) for b in batches]
        jax.block_until_ready(outs)

    return run, {"ops": ops, "jax": jax.__version__}


def keras_pass(batch: int, clips: int) -> tuple[Any, dict[str, Any]]:
    import keras_twin

    model = keras_twin.build_model()
    x = _inputs(clips - clips % batch, 301, 64)[..., None]

    def run() -> None:
        model.predict(x, batch_size=batch, verbose=0)

    return run, {"step": "model.predict", **keras_twin.versions()}


def worker(args: argparse.Namespace) -> int:
    """One framework, one batch size: a warm-up pass, then a timed pass per line on stdin."""
    reply = sys.stdout
    sys.stdout = sys.stderr
    if args.worker == "sejax":
        run, info = sejax_pass(args.batch[0], args.clips, args.ops)
    else:
        run, info = keras_pass(args.batch[0], args.clips)
    start = time.perf_counter()
    run()  # compiles (sejax) or builds the predict function (Keras)
    info["first_pass_s"] = round(time.perf_counter() - start, 2)
    reply.write(json.dumps({"ready": True, **info}) + "\n")
    reply.flush()
    for _ in sys.stdin:
        start = time.perf_counter()
        run()
        reply.write(json.dumps({"pass_s": time.perf_counter() - start}) + "\n")
        reply.flush()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ops", default="default", help="sejax's ops: a step_throughput.OPS key")
    parser.add_argument("--worker", choices=("sejax", "keras"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    rows = []
    for batch in args.batch:
        procs = {}
        for name in ("sejax", "keras"):
            cmd = [sys.executable, __file__, "--worker", name, "--batch", str(batch),
                   "--clips", str(args.clips), "--ops", args.ops]  # fmt: skip
            procs[name] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           text=True)  # fmt: skip
        info = {name: json.loads(p.stdout.readline()) for name, p in procs.items()}
        times: dict[str, list[float]] = {name: [] for name in procs}
        for r in range(args.rounds):
            order = list(procs) if r % 2 == 0 else list(reversed(procs))
            for name in order:
                procs[name].stdin.write("go\n")
                procs[name].stdin.flush()
                times[name].append(json.loads(procs[name].stdout.readline())["pass_s"])
        for p in procs.values():
            p.stdin.close()
            p.wait()
        clips = args.clips - args.clips % batch
        for name in procs:
            rows.append({"framework": name, "batch": batch, "clips": clips,
                         "clips_per_s": round(clips / statistics.median(times[name]), 1),
                         "round_s": [round(t, 3) for t in times[name]], **info[name]})  # fmt: skip
    by = {(r["framework"], r["batch"]): r["clips_per_s"] for r in rows}
    for row in rows:
        print(json.dumps(row))
    for batch in args.batch:
        ratio = by[("sejax", batch)] / by[("keras", batch)]
        print(f"batch {batch}: sejax {by[('sejax', batch)]} clips/s, Keras "
              f"{by[('keras', batch)]} clips/s, sejax / Keras {ratio:.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
