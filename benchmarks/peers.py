"""sejax against the same network in Keras 3 (TensorFlow) and PyTorch, timed in one run.

    python benchmarks/peers.py                                  # batch 32 and 128
    python benchmarks/peers.py --batch 32 --steps 5 --rounds 2 --frameworks sejax keras torch
    python benchmarks/peers.py --threads 1     # every framework on one CPU (a busy machine)

Every framework trains the reference network (``shared/reference-model.md``; the twins are
`keras_twin.py` and `torch_twin.py`, and their trainable parameter counts are checked equal
to sejax's) with Adam 1e-3 on one fixed batch, in training mode. sejax's number is
`step_throughput.measure` (the jit path, as ``step_throughput.py`` reports it); each peer's
is `time_steps`-style: the first step (compile or trace) timed on its own, ``--warmup``
untimed steps, then timed steps, median. Each framework runs in its own process (`worker`),
and on a shared CPU they take turns: each of ``--rounds`` rounds runs every framework for
``--steps`` timed steps while the others wait, in reversed order every other round (A B C,
C B A); a framework's step time is the median of its round medians.

Frameworks: ``sejax``; ``keras`` (``model.train_on_batch``, Keras's own ``tf.function``
train step, ``jit_compile=False`` as Keras picks on CPU); ``keras-xla`` (the same with
``jit_compile=True``); ``torch`` (eager); ``torch-compile`` (``torch.compile`` of the whole
step). ``keras-xla`` and ``torch-compile`` are opt-in: on the 2-core CPU XLA made Keras's step
3.7x slower, and ``torch.compile`` compiled for about a minute to gain ~6% (README).
``--threads N`` pins every framework (and the matmul rate) to N CPUs: on a machine busy with
other jobs a framework whose threads wait on each other (OpenMP barriers) slows down far more
than one that does not, so a 1-CPU run compares the frameworks' work rather than their
tolerance of a crowded machine. A framework that is not installed is skipped with a message.

Prints a ratio table (sejax examples/s over each peer's), then one JSON line per measured
configuration with the keys of ``step_throughput.py`` (``framework``, ``batch``,
``examples_per_s``, ``step_ms``, ``compile_s``, ``mfu`` ...), MFU against the float32 matmul
rate measured in the same run (the best of its measurements before and after each batch).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the twins, step_throughput

REFERENCE_TRAIN_FLOPS = 1.5e9  # per example, forward + backward (reference-model.md)
REFERENCE_TRAINABLE_PARAMS = 1_293_640
FRAMEWORKS = ("sejax", "keras", "keras-xla", "torch", "torch-compile")
DEFAULT_FRAMEWORKS = ("sejax", "keras", "torch")
REQUIRED_KEYS = ("framework", "batch", "examples_per_s", "step_ms", "compile_s", "mfu")
_NEEDS = {"keras": "tensorflow", "keras-xla": "tensorflow", "torch": "torch",
          "torch-compile": "torch"}  # fmt: skip

StepFn = Callable[[], Any]


# ------------------------------------------------------------------------------------------
# Timing.


class StepTimer:
    """Times one framework's step function; rounds of several timers can take turns."""

    def __init__(self, step_fn: StepFn):
        self.step_fn = step_fn
        self.compile_s: float | None = None
        self.rounds: list[list[float]] = []
        self.counted = 0  # timed steps beyond those in `rounds`

    def first(self) -> float:
        """The first step on its own: tracing/compilation plus one step."""
        start = time.perf_counter()
        self.step_fn()
        self.compile_s = time.perf_counter() - start
        return self.compile_s

    def untimed(self, n: int) -> None:
        for _ in range(n):
            self.step_fn()

    def timed(self, n: int) -> list[float]:
        """``n`` timed steps as one round; each ``step_fn`` must return only once finished."""
        times = []
        for _ in range(n):
            start = time.perf_counter()
            self.step_fn()
            times.append(time.perf_counter() - start)
        self.rounds.append(times)
        return times

    def add_round(self, step_s: float, steps: int) -> None:
        """A round of ``steps`` measured elsewhere (sejax's `measure` returns its median)."""
        self.rounds.append([step_s])
        self.counted += steps - 1

    def result(self, batch: int) -> dict[str, Any]:
        """Step time (median of the rounds' medians), examples/s and the spread of rounds."""
        medians = [statistics.median(r) for r in self.rounds]
        step_s = statistics.median(medians)
        return {
            "batch": batch,
            "compile_s": None if self.compile_s is None else round(self.compile_s, 2),
            "step_ms": round(1e3 * step_s, 2),
            "examples_per_s": round(batch / step_s, 2),
            "round_step_ms": [round(1e3 * m, 1) for m in medians],
            "timed_steps": self.counted + sum(len(r) for r in self.rounds),
        }


def time_steps(step_fn: StepFn, warmup: int, steps: int, batch: int = 1) -> dict[str, Any]:
    """One framework alone: first step (compile) timed, ``warmup`` untimed, ``steps`` timed.

    ``step_fn`` must block until its step has finished. ``step_ms`` is the median.
    """
    timer = StepTimer(step_fn)
    timer.first()
    timer.untimed(warmup)
    timer.timed(steps)
    return timer.result(batch)


def add_flops(row: dict[str, Any], matmul_flops_per_s: float, device: str) -> dict[str, Any]:
    """GFLOP/s (1.5 GFLOP per example per step) and MFU against the measured matmul rate."""
    achieved = row["examples_per_s"] * REFERENCE_TRAIN_FLOPS
    row.update(
        device=device,
        gflop_per_s=round(achieved / 1e9, 2),
        matmul_gflop_per_s=round(matmul_flops_per_s / 1e9, 2),
        mfu=round(achieved / matmul_flops_per_s, 4),
    )
    return row


# ------------------------------------------------------------------------------------------
# The frameworks.


def available(name: str) -> bool:
    needs = _NEEDS.get(name)
    return needs is None or importlib.util.find_spec(needs) is not None


def sejax_params() -> int:
    """Trainable parameters of sejax's default (reference) model, from shapes only."""
    import jax
    import jax.numpy as jnp

    from sejax.configs import default
    from sejax.data import features
    from sejax.model import models

    config = default.get_config()
    model = models.build_model(config.model)
    x = jnp.zeros((1, features.num_frames(config.features), config.features.n_mels, 1))
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, x, train=False))
    return sum(int(leaf.size) for leaf in jax.tree.leaves(shapes["params"]))


def peer_step(name: str, batch: int) -> tuple[StepFn, int, dict[str, Any]]:
    """``(step, trainable parameters, framework info)`` of a Keras or PyTorch twin."""
    if name in ("keras", "keras-xla"):
        import keras_twin

        step, model = keras_twin.make_step(batch, jit_compile=name == "keras-xla")
        info = {"step": "train_on_batch", "jit_compile": name == "keras-xla",
                **keras_twin.versions()}  # fmt: skip
        return step, keras_twin.trainable_params(model), info
    if name in ("torch", "torch-compile"):
        import torch_twin

        step, model = torch_twin.make_step(batch, compile=name == "torch-compile")
        info = {"step": "torch.compile" if name == "torch-compile" else "eager",
                **torch_twin.versions()}  # fmt: skip
        return step, torch_twin.trainable_params(model), info
    raise ValueError(f"unknown framework {name!r}")


def pin(threads: int) -> None:
    """Restricts this process (and the workers it starts) to its first ``threads`` CPUs.

    Before any framework is imported, so each one sizes its thread pools to them (XLA and
    TensorFlow count schedulable CPUs, OpenMP too); 0 leaves every CPU.
    """
    if threads > 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])


def set_threads(name: str, threads: int) -> None:
    """The same thread count for TensorFlow and PyTorch (0: each framework's default)."""
    if threads <= 0:
        return
    if name.startswith("keras"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif name.startswith("torch"):
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------
# One process per framework: no two frameworks' thread pools, OpenMP runtimes or allocators
# share a process (Keras measured ~20% slower beside an imported PyTorch and JAX), and a
# waiting framework sleeps on a pipe instead of spinning.


def worker(args: argparse.Namespace) -> int:
    """Runs one framework at one batch size on the parent's commands, one JSON reply each.

    Started as ``peers.py --worker NAME``: builds the step, runs the first step and the
    warm-up, replies ``ready``; then for every ``timed N`` line runs N timed steps (sejax:
    one `step_throughput.measure` of N steps) and replies with the times.
    """
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a framework prints goes to stderr, not into the replies
    sys.stdout = sys.stderr
    name, batch = args.worker, args.batch[0]

    def send(message: dict[str, Any]) -> None:
        reply.write(json.dumps(message) + "\n")
        reply.flush()

    if name == "sejax":
        import jax
        from step_throughput import measure

        jax.config.update("jax_compilation_cache_dir", args.jax_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        send({"ready": True, "params": sejax_params(), "parallel": "jit"})
        for line in sys.stdin:
            n = int(line.split()[1])
            row = measure(batch, "jit", n, args.warmup, args.unroll, args.dtype, args.sejax_ops)
            send({"step_s": [row.pop("step_ms") / 1e3], "steps": n, "row": row})
        return 0

    set_threads(name, args.threads)
    step, params, info = peer_step(name, batch)
    timer = StepTimer(step)
    timer.first()
    timer.untimed(args.warmup)
    send({"ready": True, "params": params, "compile_s": round(timer.compile_s, 2), **info})
    for line in sys.stdin:
        n = int(line.split()[1])
        send({"step_s": timer.timed(n), "steps": n})
    return 0


class Worker:
    """The parent's handle on a `worker` process."""

    def __init__(self, name: str, batch: int, args: argparse.Namespace, log_dir: str):
        self.name = name
        self.log = Path(log_dir) / f"{name}-{batch}.log"
        command = [sys.executable, __file__, "--worker", name, "--batch", str(batch),
                   "--warmup", str(args.warmup), "--threads", str(args.threads),
                   "--unroll", str(args.unroll), "--dtype", args.dtype,
                   "--sejax-ops", args.sejax_ops, "--jax-cache", args.jax_cache]  # fmt: skip
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, text=True)  # fmt: skip

    def receive(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the {self.name} worker died; the end of its log:\n{tail}")
        return json.loads(line)

    def timed(self, steps: int) -> dict[str, Any]:
        self.proc.stdin.write(f"timed {steps}\n")
        self.proc.stdin.flush()
        return self.receive()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=120)


def run_batch(args: argparse.Namespace, batch: int, frameworks: Sequence[str]) -> list[dict]:
    """Every framework at one batch size, each in its process, taking turns round by round."""
    workers: dict[str, Worker] = {}
    timers: dict[str, StepTimer] = {}
    infos: dict[str, dict[str, Any]] = {}
    try:
        for name in frameworks:  # one at a time: compilations never overlap
            workers[name] = Worker(name, batch, args, args.log_dir)
            ready = workers[name].receive()
            if ready["params"] != REFERENCE_TRAINABLE_PARAMS:
                raise AssertionError(f"{name}: {ready['params']} trainable parameters, the "
                                     f"reference has {REFERENCE_TRAINABLE_PARAMS}")  # fmt: skip
            timers[name] = StepTimer(lambda: None)
            timers[name].compile_s = ready.pop("compile_s", None)
            infos[name] = {k: v for k, v in ready.items() if k != "ready"}
            print(f"[peers] batch {batch}: {name} ready ({ready['params']:,} trainable "
                  f"parameters)", file=sys.stderr, flush=True)  # fmt: skip
        for r in range(args.rounds):
            order = list(frameworks) if r % 2 == 0 else list(reversed(frameworks))
            for name in order:
                got = workers[name].timed(args.steps)
                if "row" in got:  # sejax: `measure`'s median and its own compile time
                    row = got["row"]
                    if timers[name].compile_s is None:
                        timers[name].compile_s = row["compile_s"]
                    timers[name].add_round(got["step_s"][0], got["steps"])
                    infos[name].update({k: v for k, v in row.items() if k not in
                                        ("framework", "batch", "compile_s",
                                         "examples_per_s")})  # fmt: skip
                else:
                    timers[name].rounds.append(got["step_s"])
                print(f"[peers] batch {batch} round {r}: {name} "
                      f"{1e3 * statistics.median(timers[name].rounds[-1]):.0f} ms/step",
                      file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for w in workers.values():
            with contextlib.suppress(Exception):
                w.close()
    return [{"framework": name, **timers[name].result(batch), **infos[name]}
            for name in frameworks]  # fmt: skip


def ratio_table(rows: Sequence[dict]) -> list[str]:
    """sejax examples/s over every peer's, per batch size."""
    lines = ["| batch | framework | step ms | examples/s | MFU | sejax / this |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for row in rows:
        ratio = row.get("sejax_ratio")
        lines.append(
            f"| {row['batch']} | {row['framework']} | {row['step_ms']:.0f} | "
            f"{row['examples_per_s']:.1f} | {row['mfu']:.3f} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--frameworks", nargs="+", default=list(DEFAULT_FRAMEWORKS),
                        choices=FRAMEWORKS)  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPUs (and TensorFlow/PyTorch threads) for every framework; "
                        "0: all CPUs, each framework's default")  # fmt: skip
    parser.add_argument("--unroll", type=int, default=1, help="sejax model.scan_unroll")
    parser.add_argument("--sejax-ops", default="default",
                        help="sejax's ops, a key of step_throughput.OPS (imported only after "
                        "--threads pins the CPUs); default: the default config, as a user "
                        "gets it")  # fmt: skip
    parser.add_argument("--dtype", default="float32", choices=["float32"])
    parser.add_argument("--worker", default=None, choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--jax-cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pin(args.threads)
    if args.worker:
        return worker(args)

    frameworks = []
    for name in args.frameworks:
        if available(name):
            frameworks.append(name)
        else:
            print(f"[peers] skipping {name}: {_NEEDS[name]} is not installed", file=sys.stderr)

    import jax
    from step_throughput import matmul_flops_per_s

    device = jax.devices()[0]
    device_name = f"{device.platform}:{device.device_kind}"
    peaks = [matmul_flops_per_s()]
    rows: list[dict] = []
    # sejax compiles once per round (a fresh step each `measure`): a persistent cache private
    # to this run makes the later rounds cheap without hiding the first compile.
    with tempfile.TemporaryDirectory(prefix="sejax-peers-") as tmp:
        args.jax_cache, args.log_dir = str(Path(tmp) / "jax-cache"), tmp
        for batch in args.batch:
            rows += run_batch(args, batch, frameworks)
            peaks.append(matmul_flops_per_s())
    peak = max(peaks)  # the machine's rate, least disturbed by other jobs

    by_batch = {r["batch"]: r["examples_per_s"] for r in rows if r["framework"] == "sejax"}
    used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for row in rows:
        add_flops(row, peak, device_name)
        row["matmul_gflop_per_s_measured"] = [round(p / 1e9, 1) for p in peaks]
        row["cpus"], row["cpus_used"] = os.cpu_count(), used
        if row["framework"] != "sejax" and row["batch"] in by_batch:
            row["sejax_ratio"] = round(by_batch[row["batch"]] / row["examples_per_s"], 3)
    for line in ratio_table(rows):
        print(line)
    for row in rows:
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
