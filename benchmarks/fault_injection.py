"""Fault injection: kill -9 a real training run at random moments, resume it, compare the bits.

Runs ``sejax train`` on the demo corpus, uninterrupted, as the reference. Then, per trial,
starts the same command in a fresh workdir, waits until it is training, kills it with SIGKILL
at a random moment (seeded), tries to restore every checkpoint the killed run left (a
checkpoint that Orbax lists but that does not restore is *corrupted*; half-written temporary
folders are counted separately, as ``partial``: they must be ignored), re-runs the same command
until it completes, and compares its final train state (params, BatchNorm statistics,
optimizer state, step, dropout key), leaf by leaf, bit for bit, with the reference's.

Small-but-real config (``TRAIN_OVERRIDES``): the demo corpus's 10 speakers with one take per
sentence (300 clips; actors 21-22 validate, 23-24 test), 1-s clips, 32 Mel bands, the
reference CNN+BiLSTM shrunk to conv channels (8, 16, 32) and one BiLSTM layer of 32 units,
batches of 16 (11 steps per epoch), 4 epochs, a checkpoint and a validation every epoch, the
train loss logged every step. The reference prepares the shards once; every other run reads
them (``--config.data.path``), so a trial's time goes to training. XLA's persistent
compilation cache (``<root>/jax_cache``) spares the re-runs most of the compile time; the
reference compiles from scratch, so a trial's state is also checked against an executable
compiled in another process. A second uninterrupted run is compared too; its timing sets the
kill window: a trial is killed at a moment drawn uniformly from its first logged step to as
long after as the second run took from its first step to its last plus 2 s, i.e. anywhere in
training, mid-step, mid-validation or mid-checkpoint-save.

    python benchmarks/fault_injection.py [--trials 10] [--seed 0] [--root DIR] [--keep]

Prints one line per trial, then ``{"trials": 10, "identical": ..., "corrupted_checkpoints":
...}`` (and more keys) as the last line. About 10 minutes on a shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sejax.training.checkpoints import state_leaves

TRAIN_OVERRIDES = {
    "data.demo_repetitions": "(1,)",
    "features.duration_s": "1.0",
    "features.n_mels": "32",
    "model.conv_channels": "(8, 16, 32)",
    "model.lstm_layers": "1",
    "model.lstm_units": "32",
    "train.batch_size": "16",
    "train.num_epochs": "4",
    "train.log_every_steps": "1",
    "eval.batch_size": "32",
}
RERUNS = 3  # attempts to complete a killed run
LAST_SAVE_S = 2.0  # the kill window reaches this far past the last step (its checkpoint)


def _command(workdir: Path, shards: Path | None) -> list[str]:
    overrides = [f"--config.{k}={v}" for k, v in TRAIN_OVERRIDES.items()]
    if shards is not None:
        overrides.append(f"--config.data.path={shards}")
    return [sys.executable, "-m", "sejax", "train", "--workdir", str(workdir), *overrides]


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", JAX_PLATFORMS="cpu")
    env.update(JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # fmt: skip
    return env


def _start(cmd: list[str], root: Path, log: Path) -> subprocess.Popen:
    # Its own session: the kill reaches the run and anything it started, nothing else.
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=_env(root), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def _logged_steps(workdir: Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"train_loss"' in line for line in path.read_text().splitlines())


def _run(cmd: list[str], root: Path, workdir: Path) -> tuple[int, float, list[float]]:
    """Runs to the end; returns (exit code, seconds, seconds at which each step was logged)."""
    started, logged = time.monotonic(), []
    proc = _start(cmd, root, workdir.parent / f"{workdir.name}.log")
    while proc.poll() is None:
        logged += [time.monotonic() - started] * (_logged_steps(workdir) - len(logged))
        time.sleep(0.05)
    return proc.returncode, time.monotonic() - started, logged


def _identical(a: tuple[int, list], b: tuple[int, list]) -> bool:
    import numpy as np

    (step_a, leaves_a), (step_b, leaves_b) = a, b
    return (step_a == step_b and [k for k, _ in leaves_a] == [k for k, _ in leaves_b]
            and all(x.dtype == y.dtype and np.array_equal(x, y)
                    for (_, x), (_, y) in zip(leaves_a, leaves_b, strict=True)))  # fmt: skip


def _check_checkpoints(workdir: Path) -> dict[str, Any]:
    """Restores every checkpoint a killed run left: listed ones must all restore."""
    from sejax.training.checkpoints import Checkpoints

    folder = workdir / "checkpoints"
    if not folder.is_dir():
        return {"listed": [], "corrupted": [], "partial": 0}
    ckpts = Checkpoints(folder, read_only=True)
    corrupted = []
    try:
        listed = list(ckpts._manager.all_steps())
        for step in listed:
            try:
                ckpts.restore_raw(step)  # the state and the meta
            except Exception as e:  # any failure to read a listed checkpoint is corruption
                corrupted.append(f"{step}: {type(e).__name__}: {str(e)[:200]}")
    finally:
        ckpts.close()
    partial = sum("tmp" in p.name for p in folder.iterdir())
    return {"listed": listed, "corrupted": corrupted, "partial": partial}


def _trial(i: int, rng: random.Random, root: Path, shards: Path, window: tuple[float, float],
           reference: tuple[int, list]) -> dict[str, Any]:  # fmt: skip
    workdir = root / f"trial_{i:02d}"
    cmd = _command(workdir, shards)
    proc = _start(cmd, root, root / f"trial_{i:02d}.log")
    started = time.monotonic()
    # Once it trains, a random moment within the training time of an uninterrupted run.
    delay = rng.uniform(*window)
    while proc.poll() is None and not _logged_steps(workdir):
        time.sleep(0.02)
    deadline = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    finished_first = proc.poll() is not None
    if not finished_first:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic() - started
    checks = _check_checkpoints(workdir)
    steps_at_kill = _logged_steps(workdir)
    runs, rc = 1, proc.returncode
    while rc != 0 and runs <= RERUNS:
        rc, _, _ = _run(cmd, root, workdir)
        runs += 1
    same = rc == 0 and _identical(state_leaves(workdir), reference)
    return {
        "trial": i,
        "killed_after_s": round(killed_at, 2),
        "finished_before_kill": finished_first,
        "logged_steps_at_kill": steps_at_kill,
        "checkpoints_at_kill": checks["listed"],
        "partial_at_kill": checks["partial"],
        "corrupted": checks["corrupted"],
        "runs": runs,
        "exit_code": rc,
        "identical": same,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="working folder (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    root = Path(args.root or tempfile.mkdtemp(prefix="sejax-faults-")).absolute()
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        rc, seconds, _ = _run(_command(root / "reference", None), root, root / "reference")
        if rc != 0:
            print(f"reference run failed ({rc}); see {root / 'reference.log'}", file=sys.stderr)
            return 1
        shards = root / "reference" / "prepared"
        reference = state_leaves(root / "reference")
        print(f"reference: {reference[0]} steps in {seconds:.0f} s (cold compile)", flush=True)
        rc, seconds, logged = _run(_command(root / "again", shards), root, root / "again")
        again = rc == 0 and _identical(state_leaves(root / "again"), reference)
        # From the first logged step to the last one plus the last checkpoint's save.
        window = (0.0, (logged[-1] - logged[0] if logged else seconds) + LAST_SAVE_S)
        print(f"second uninterrupted run: {seconds:.0f} s, steps logged from {logged[0]:.0f} s "
              f"to {logged[-1]:.0f} s, identical: {again}; kills within {window[1]:.1f} s of "
              "a trial's first step", flush=True)  # fmt: skip
        rng = random.Random(args.seed)
        results = []
        for i in range(args.trials):
            result = _trial(i, rng, root, shards, window, reference)
            results.append(result)
            print(json.dumps(result), flush=True)
        summary = {
            "trials": len(results),
            "identical": sum(r["identical"] for r in results),
            "corrupted_checkpoints": sum(len(r["corrupted"]) for r in results),
            "checkpoints_checked": sum(len(r["checkpoints_at_kill"]) for r in results),
            "partial_checkpoints_ignored": sum(r["partial_at_kill"] for r in results),
            "killed_mid_run": sum(not r["finished_before_kill"] for r in results),
            "second_uninterrupted_run_identical": again,
            "seconds": round(time.monotonic() - t0),
        }
        print(f"{summary['trials']} trials: {summary['identical']} bitwise-identical endings, "
              f"{summary['corrupted_checkpoints']} corrupted checkpoints "
              f"(of {summary['checkpoints_checked']} restored after the kills)")  # fmt: skip
        print(json.dumps(summary), flush=True)
        ok = summary["identical"] == summary["trials"] and not summary["corrupted_checkpoints"]
        return 0 if ok and again else 1
    finally:
        if not args.keep and not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
