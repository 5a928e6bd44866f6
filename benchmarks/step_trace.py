"""Where the real train step's time goes: a profiler trace of the jitted step, op by op.

    python benchmarks/step_trace.py --batch 32 [--steps 4] [--top 25]

`step_profile.py` times each part of the network alone; this traces the whole compiled step
as training runs it (`jax.profiler.trace`) and sums each XLA operation's time on XLA:CPU's
threads (the thunks: fusions, the oneDNN and fused-block custom calls, the LSTM scans'
while loops), grouped by kind (a custom call's target, a fusion's kind) and by the network
part its source line names (conv_0..conv_3, bilstm_*, the head, the optimizer). Times are
thread-milliseconds per step: XLA runs independent operations on its threads side by side,
and the C++ custom calls spread their work over OpenMP threads the trace does not show, so
the sum is not the step's wall time. Also prints the step's minor page faults and kernel
time (`resource.getrusage`), which no trace shows (`sejax.host_memory`).

Reads the trace with the XPlane protobuf that TensorFlow ships (TensorFlow is in the
benchmark extras for the Keras twin). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from sejax.configs import default
from sejax.data import features
from sejax.training import parallel, train_state

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_throughput import OPS  # this folder's step benchmark

# Trace events that wrap or wait for others rather than compute.
NOT_WORK = ("ThunkExecutor", "Await", "Threadpool", "end: ")
PARTS = re.compile(r"/(conv_\d|bilstm_\d|Dense_\d|head)/")


def hlo_ops(compiled_text: str) -> dict[str, tuple[str, str]]:
    """Each HLO instruction's name -> (kind, network part) from the compiled module."""
    ops = {}
    for line in compiled_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if not m:
            continue
        target = re.search(r'custom_call_target="(\w+)"', line)
        op_name = re.search(r'op_name="([^"]+)"', line)
        source = op_name.group(1) if op_name else ""
        part = PARTS.search(source)
        if part:
            where = part.group(1)
        elif any(k in source for k in ("adam", "optax", "clip", "scale_by")):
            where = "optimizer"
        else:
            where = "other"
        kind = target.group(1) if target else re.sub(r"[.\d]+$", "", m.group(1))
        ops[m.group(1)] = (kind, where)
    return ops


def op_times(trace_dir: str) -> collections.Counter:
    """Picoseconds per operation name summed over XLA:CPU's threads in the trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(Path(trace_dir).rglob("*.xplane.pb"))[-1]
    space = xplane_pb2.XSpace()
    space.ParseFromString(path.read_bytes())
    times: collections.Counter = collections.Counter()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            if "XLAEigen" not in line.name and "PjRtCpuClient" not in line.name:
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "?")
                if not any(name.startswith(w) or w in name for w in NOT_WORK):
                    times[name] += event.duration_ps
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4, help="traced steps")
    parser.add_argument("--ops", default="default", choices=sorted(OPS))
    parser.add_argument("--top", type=int, default=25, help="operations listed one by one")
    args = parser.parse_args()

    config = default.get_config()
    config.train.parallel, config.train.batch_size = "jit", args.batch
    config.model.update(OPS[args.ops])
    par = parallel.make_parallel(config.train)
    state = par.put_state(train_state.create_train_state(
        config, steps_per_epoch=100, seed=0, bn_axis_name=parallel.AXIS
    ))  # fmt: skip
    rng = np.random.default_rng(0)
    frames = features.num_frames(config.features)
    batch = par.put_batch({
        "features": rng.normal(size=(args.batch, frames, config.features.n_mels)).astype("f4"),
        "label": rng.integers(0, config.model.num_classes, size=args.batch).astype(np.int32),
    })  # fmt: skip
    ops = hlo_ops(par._train.lower(state, batch).compile().as_text())
    for _ in range(3):  # compile and warm up
        state, metrics = par.train_step(state, batch)
    jax.block_until_ready(metrics)

    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(args.steps):
        state, metrics = par.train_step(state, batch)
        jax.block_until_ready(metrics)
    wall = (time.perf_counter() - start) / args.steps
    after = resource.getrusage(resource.RUSAGE_SELF)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(args.steps):
                state, metrics = par.train_step(state, batch)
                jax.block_until_ready(metrics)
        times = op_times(trace_dir)

    per_step = {name: ps / 1e9 / args.steps for name, ps in times.items()}  # ms
    by_kind: collections.Counter = collections.Counter()
    by_part: collections.Counter = collections.Counter()
    for name, ms in per_step.items():
        kind, where = ops.get(name, (name, "other"))
        by_kind[kind] += ms
        by_part[where] += ms
    print(f"batch {args.batch}, ops {args.ops}: step {1e3 * wall:.1f} ms (untraced), "
          f"{(after.ru_minflt - before.ru_minflt) / args.steps:.0f} minor page faults and "
          f"{1e3 * (after.ru_stime - before.ru_stime) / args.steps:.1f} ms of kernel time per "
          f"step; traced operations {sum(per_step.values()):.1f} thread-ms per step")  # fmt: skip
    print("by kind (thread-ms per step):")
    for kind, ms in by_kind.most_common(15):
        print(f"  {ms:8.2f}  {kind}")
    print("by network part:")
    for where, ms in by_part.most_common():
        print(f"  {ms:8.2f}  {where}")
    print(f"the {args.top} longest operations:")
    for name, ms in sorted(per_step.items(), key=lambda kv: -kv[1])[: args.top]:
        kind, where = ops.get(name, (name, "other"))
        print(f"  {ms:8.2f}  {where:<10} {kind:<36} {name}")
    print(json.dumps({
        "batch": args.batch, "ops": args.ops, "step_ms": round(1e3 * wall, 2),
        "minor_faults_per_step": round((after.ru_minflt - before.ru_minflt) / args.steps),
        "kernel_ms_per_step": round(1e3 * (after.ru_stime - before.ru_stime) / args.steps, 1),
        "by_kind_ms": {k: round(v, 2) for k, v in by_kind.most_common()},
        "by_part_ms": {k: round(v, 2) for k, v in by_part.most_common()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
