"""Reliability of training runs, in-process on a tiny model so the tests stay quick.

- Determinism on CPU: the same config and seed give bitwise-identical train states, and a
  run stopped at any step (SIGTERM mid-epoch or at an epoch's end, or a crash with no
  checkpoint of that step) and resumed ends bitwise-identical to an uninterrupted one: data
  order, dropout keys and optimizer state are restored, not restarted.
- Faults during training: a NaN step stops the run naming it (the last good checkpoint
  intact) or, with train.on_non_finite=skip, is skipped and counted; a checkpoint write that
  fails stops the run clearly and the same command then resumes to the same bits.
"""

from __future__ import annotations

import itertools
import json
import signal
from typing import Any

import jax
import numpy as np
import pytest
from etils import epath

from sejax.configs import loading as config_lib
from sejax.errors import CheckpointError, ConfigError
from sejax.training import parallel, train, train_state
from sejax.training.checkpoints import open_for_reading
from sejax.training.preemption import Preempted
from sejax.training.train import NonFiniteError
from tests.conftest import assert_bitwise_equal, final_state, tiny_args

# 2 training actors (60 clips), batches of 8: 7 steps per epoch, 2 epochs. One conv block and
# no LSTM (XLA compiles it in seconds); BatchNorm and dropout are on, so their statistics and
# keys must be restored too.
OVERRIDES = {
    "data__demo_actors": "(19, 20, 21, 22, 23, 24)",
    "model__conv_channels": "(4,)",
    "model__lstm_layers": "0",
    "train__batch_size": "8",
    "train__num_epochs": "2",
    "train__log_every_steps": "1",
    "eval__batch_size": "32",
    "eval__splits": "()",
}
STEPS_PER_EPOCH = 7


@pytest.fixture(scope="module", autouse=True)
def _compile_once():
    """Every run of this module shares one Parallel and the same static state fields (model
    apply function, optimizer), so the train step compiles once, not once per run.

    (Separate processes, each compiling its own, are compared in test_preemption.py.)
    """
    make_parallel, create_state = parallel.make_parallel, train_state.create_train_state
    made: dict[str, Any] = {}

    def shared_parallel(*args, **kwargs):
        key = repr((args, sorted(kwargs.items())))
        if key not in made:
            made[key] = make_parallel(*args, **kwargs)
        return made[key]

    def shared_statics(config, *args, **kwargs):
        state = create_state(config, *args, **kwargs)
        key = repr((config.model, config.train, args, sorted(kwargs.items())))
        apply_fn, tx = made.setdefault(key, (state.apply_fn, state.tx))
        return state.replace(apply_fn=apply_fn, tx=tx)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parallel, "make_parallel", shared_parallel)
        patch.setattr(train_state, "create_train_state", shared_statics)
        yield shared_parallel


def _config(**changes: str):
    config = config_lib.load_config(None)
    args = tiny_args(**{**OVERRIDES, **changes})
    return config_lib.apply_overrides(config, config_lib.parse_override_args(args))


def _check(state, expected) -> None:
    assert state[0] == 2 * STEPS_PER_EPOCH
    assert_bitwise_equal(state, expected)


def _validations(workdir) -> dict[int, float]:
    rows = map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
    return {r["step"]: r["val_loss"] for r in rows if "val_loss" in r}


class _Crash(Exception):
    """Stands in for kill -9: the run ends at once, nothing of the current step is saved."""


class _InterruptAt:
    """A Parallel whose ``at_step``-th train step runs on a NaN batch (``poison``), then
    calls ``action()``."""

    def __init__(self, par: parallel.Parallel, at_step: int, action, poison: bool) -> None:
        self._par, self._count, self._at = par, itertools.count(1), at_step
        self._action, self._poison = action, poison

    def __getattr__(self, name: str):
        return getattr(self._par, name)

    def train_step(self, state, batch):
        now = next(self._count) == self._at
        if now and self._poison:
            features = batch["features"]
            batch = dict(batch, features=jax.device_put(features * np.nan, features.sharding))
        out = self._par.train_step(state, batch)
        if now:
            self._action()
        return out


def _interrupt_at(monkeypatch, shared, at_step: int, action=lambda: None, poison=False) -> None:
    """Runs stop right after their ``at_step``-th step, by ``action``."""
    monkeypatch.setattr(
        parallel, "make_parallel",
        lambda *a, **k: _InterruptAt(shared(*a, **k), at_step, action, poison),
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _compile_once):
    """An uninterrupted run (it also prepares the demo shards the other runs reuse)."""
    workdir = tmp_path_factory.mktemp("determinism") / "reference"
    train.train(_config(), workdir)
    return workdir, final_state(workdir)


def test_same_config_and_seed_give_identical_states(reference, tmp_path):
    workdir, expected = reference
    train.train(_config(data__path=str(workdir / "prepared")), tmp_path / "again")
    _check(final_state(tmp_path / "again"), expected)


@pytest.mark.parametrize("stop_at", [STEPS_PER_EPOCH + 3, STEPS_PER_EPOCH])  # mid, end of epoch
def test_sigterm_then_resume_is_bitwise_identical(
    reference, tmp_path, monkeypatch, _compile_once, stop_at
):
    workdir, expected = reference
    config = _config(data__path=str(workdir / "prepared"))
    _interrupt_at(monkeypatch, _compile_once, stop_at, lambda: signal.raise_signal(signal.SIGTERM))
    with pytest.raises(Preempted) as info:
        train.train(config, tmp_path / "run")
    assert info.value.step == stop_at and info.value.exit_code == 128 + signal.SIGTERM
    monkeypatch.setattr(parallel, "make_parallel", _compile_once)  # no more interruptions
    assert open_for_reading(tmp_path / "run").latest_step() == stop_at
    train.train(config, tmp_path / "run")
    _check(final_state(tmp_path / "run"), expected)
    # An epoch that ended as the signal came was validated before stopping, as usual.
    assert _validations(tmp_path / "run") == _validations(workdir)


def test_crash_then_resume_from_last_checkpoint_is_bitwise_identical(
    reference, tmp_path, monkeypatch, _compile_once
):
    workdir, expected = reference
    config = _config(data__path=str(workdir / "prepared"))

    def crash():
        raise _Crash

    _interrupt_at(monkeypatch, _compile_once, STEPS_PER_EPOCH + 5, crash)
    with pytest.raises(_Crash):
        train.train(config, tmp_path / "run")
    monkeypatch.setattr(parallel, "make_parallel", _compile_once)
    train.train(config, tmp_path / "run")  # redoes steps 8-12 from step 7
    _check(final_state(tmp_path / "run"), expected)


def test_device_resident_input_resumes_bitwise(reference, tmp_path, monkeypatch, _compile_once):
    """data.device_resident: batches gathered on the device; SIGTERM mid-epoch and resume
    ends bit-identical to an uninterrupted resident run."""
    workdir, tf_data = reference
    config = _config(data__path=str(workdir / "prepared"), data__device_resident="True")
    train.train(config, tmp_path / "straight")
    straight = final_state(tmp_path / "straight")
    assert straight[0] == 2 * STEPS_PER_EPOCH
    pairs = zip(straight[1], tf_data[1], strict=True)
    assert any(not np.array_equal(a, b) for (_, a), (_, b) in pairs)  # another data order
    sigterm = lambda: signal.raise_signal(signal.SIGTERM)  # noqa: E731
    _interrupt_at(monkeypatch, _compile_once, STEPS_PER_EPOCH + 3, sigterm)
    with pytest.raises(Preempted):
        train.train(config, tmp_path / "run")
    monkeypatch.setattr(parallel, "make_parallel", _compile_once)
    train.train(config, tmp_path / "run")
    assert_bitwise_equal(final_state(tmp_path / "run"), straight)


def test_precise_bn_changes_only_inference_statistics(reference, tmp_path):
    """train.precise_bn_batches (on by default, so every run above uses it, resumes included)
    recomputes the BatchNorm averages at each epoch's end: a run with it off trains the same
    weights bit for bit and keeps other BatchNorm averages."""
    workdir, precise = reference
    config = _config(data__path=str(workdir / "prepared"), train__precise_bn_batches="0")
    train.train(config, tmp_path / "running_averages")
    running = final_state(tmp_path / "running_averages")
    pairs = list(zip(precise[1], running[1], strict=True))
    stats = [(a, b) for (name, a), (_, b) in pairs if "batch_stats" in name]
    others = [(a, b) for (name, a), (_, b) in pairs if "batch_stats" not in name]
    assert stats and all(not np.array_equal(a, b) for a, b in stats)
    assert others and all(np.array_equal(a, b) for a, b in others)


# ------------------------------------------------------------------------------------------
# Faults during training.


def _metrics(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_nan_step_stops_naming_it_and_keeps_the_last_good_checkpoint(
    reference, tmp_path, monkeypatch, _compile_once
):
    workdir, _ = reference
    config = _config(data__path=str(workdir / "prepared"))
    _interrupt_at(monkeypatch, _compile_once, STEPS_PER_EPOCH + 3, poison=True)
    with pytest.raises(NonFiniteError, match=rf"at step {STEPS_PER_EPOCH + 3} \(loss nan"):
        train.train(config, tmp_path / "run")
    ckpts = open_for_reading(tmp_path / "run")
    assert ckpts.all_steps() == [STEPS_PER_EPOCH]  # nothing after the NaN step
    ckpts.close()
    assert_bitwise_equal(
        final_state(tmp_path / "run", STEPS_PER_EPOCH), final_state(workdir, STEPS_PER_EPOCH)
    )


def test_skip_policy_skips_the_nan_step_and_counts_it(
    reference, tmp_path, monkeypatch, _compile_once
):
    workdir, _ = reference
    config = _config(data__path=str(workdir / "prepared"), train__on_non_finite="skip")
    _interrupt_at(monkeypatch, _compile_once, STEPS_PER_EPOCH + 3, poison=True)
    summary = train.train(config, tmp_path / "run").summary
    assert summary["steps"] == 2 * STEPS_PER_EPOCH and summary["skipped_steps"] == 1
    step, leaves = final_state(tmp_path / "run")
    state = dict(leaves)
    assert step == 2 * STEPS_PER_EPOCH and int(state["['skipped_steps']"]) == 1
    assert all(np.isfinite(x).all() for _, x in leaves if x.dtype.kind == "f")
    epochs = {r["epoch"]: r for r in _metrics(tmp_path / "run") if "epoch" in r}
    assert epochs[1]["train_skipped_steps"] == 0 and epochs[2]["train_skipped_steps"] == 1
    logged = [r for r in _metrics(tmp_path / "run") if r["step"] == STEPS_PER_EPOCH + 3]
    assert any(np.isnan(r.get("train_loss", 0.0)) for r in logged)  # the skipped step's loss


def test_failed_checkpoint_write_stops_clearly_and_resumes_identically(
    reference, tmp_path, monkeypatch
):
    workdir, expected = reference
    config = _config(data__path=str(workdir / "prepared"))
    real_write = epath.Path.write_text
    final = f"/{2 * STEPS_PER_EPOCH}.orbax-checkpoint-tmp"

    def disk_full_at_the_end(self, *args, **kwargs):
        if final in str(self):
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(epath.Path, "write_text", disk_full_at_the_end)
    with pytest.raises(CheckpointError, match="No space left on device"):
        train.train(config, tmp_path / "run")
    monkeypatch.setattr(epath.Path, "write_text", real_write)
    assert open_for_reading(tmp_path / "run").latest_step() == STEPS_PER_EPOCH
    train.train(config, tmp_path / "run")  # the same command, disk freed
    _check(final_state(tmp_path / "run"), expected)


def test_batch_that_does_not_divide_over_the_devices_fails_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel.Parallel, "num_devices", property(lambda self: 4))
    config = _config(train__batch_size="6", data__path=str(tmp_path / "no_such_corpus"))
    with pytest.raises(ConfigError, match=r"train\.batch_size=6 must be a positive multiple"):
        train.train(config, tmp_path / "run")
    assert not (tmp_path / "run" / "prepared").exists()
