"""Preemption and divergence: SIGTERM checkpoints the current step and resumes exactly; a NaN
loss stops training naming the step and saves nothing from the diverged state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import assert_bitwise_equal, final_state, tiny_args

# No LSTM: compiles in seconds; the loop, data order and checkpoints are what is tested here.
FAST = {"model__lstm_layers": "0", "train__log_every_steps": "1",
        "data__demo_actors": "(19, 20, 21, 22, 23, 24)"}  # fmt: skip


def _start(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sejax", "train", "--workdir", str(workdir), *args],
        cwd=workdir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _losses(workdir: Path) -> dict[tuple[int, str], float]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return {(r["step"], k): v for r in rows for k, v in r.items() if k.endswith("_loss")}


def test_sigterm_checkpoints_mid_epoch_and_resume_matches_an_uninterrupted_run(tmp_path):
    args = tiny_args(train__num_epochs="3", **FAST)
    run = tmp_path / "interrupted"
    proc = _start(run, *args)
    deadline = time.time() + 300
    while not (run / "metrics.jsonl").exists() or not (run / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by SIGTERM after step" in err
    stopped_at = int(err.split("after step ")[1].split(";")[0])
    assert str(stopped_at) in os.listdir(run / "checkpoints")

    resumed = _start(run, *args)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert f"Resuming from step {stopped_at}" in err
    shards = f"--config.data.path={run / 'prepared'}"
    straight = _start(tmp_path / "straight", *args, shards)
    out_b, err_b = straight.communicate(timeout=300)
    assert straight.returncode == 0, err_b[-2000:]
    assert json.loads(out.splitlines()[-1])["steps"] == json.loads(out_b.splitlines()[-1])["steps"]

    a, b = _losses(run), _losses(tmp_path / "straight")
    assert b.keys() <= a.keys() and len(b) > 10
    for key in b:
        assert a[key] == b[key], key
    # Three processes, each compiling its own step: the final states are bit for bit equal.
    assert_bitwise_equal(final_state(run), final_state(tmp_path / "straight"))


def test_nonfinite_loss_stops_naming_the_step_and_saves_nothing(tmp_path):
    args = tiny_args(train__learning_rate="1e30", train__grad_clip_norm="0.0", **FAST)
    proc = _start(tmp_path / "w", *args)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    assert "non-finite training loss or gradient at step" in err
    assert "Traceback" not in err
    checkpoints = tmp_path / "w" / "checkpoints"
    assert not checkpoints.exists() or not [p for p in checkpoints.iterdir() if p.name.isdigit()]
