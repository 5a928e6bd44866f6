"""Determinism on CPU: the same config and seed give bitwise-identical train states, and a run
stopped at any step (SIGTERM mid-epoch, or a crash with no checkpoint of that step) and resumed
ends bitwise-identical to an uninterrupted one: data order, dropout keys and optimizer state
are restored, not restarted. Runs are in-process on a tiny model so the test stays quick."""

from __future__ import annotations

import itertools
import json
import signal
from typing import Any

import pytest

from sejax import config as config_lib
from sejax import parallel, train, train_state
from sejax.checkpoints import open_for_reading
from sejax.preemption import Preempted
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
    make_parallel, create_state = parallel.make_parallel, train_state.create_train_state_from_config
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
        patch.setattr(train_state, "create_train_state_from_config", shared_statics)
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
    """A Parallel that calls ``action()`` right after its ``at_step``-th train step."""

    def __init__(self, par: parallel.Parallel, at_step: int, action) -> None:
        self._par, self._count, self._at, self._action = par, itertools.count(1), at_step, action

    def __getattr__(self, name: str):
        return getattr(self._par, name)

    def train_step(self, state, batch):
        out = self._par.train_step(state, batch)
        if next(self._count) == self._at:
            self._action()
        return out


def _interrupt_at(monkeypatch, shared, at_step: int, action) -> None:
    """Runs stop right after their ``at_step``-th step, by ``action``."""
    monkeypatch.setattr(
        parallel, "make_parallel", lambda *a, **k: _InterruptAt(shared(*a, **k), at_step, action)
    )


@pytest.fixture(scope="module")
def reference(tmp_path_factory, _compile_once):
    """An uninterrupted run (it also prepares the demo shards the other runs reuse)."""
    workdir = tmp_path_factory.mktemp("determinism") / "reference"
    train.train_and_evaluate(_config(), workdir)
    return workdir, final_state(workdir)


def test_same_config_and_seed_give_identical_states(reference, tmp_path):
    workdir, expected = reference
    train.train_and_evaluate(_config(data__path=str(workdir / "prepared")), tmp_path / "again")
    _check(final_state(tmp_path / "again"), expected)


@pytest.mark.parametrize("stop_at", [STEPS_PER_EPOCH + 3, STEPS_PER_EPOCH])  # mid, end of epoch
def test_sigterm_then_resume_is_bitwise_identical(
    reference, tmp_path, monkeypatch, _compile_once, stop_at
):
    workdir, expected = reference
    config = _config(data__path=str(workdir / "prepared"))
    _interrupt_at(monkeypatch, _compile_once, stop_at, lambda: signal.raise_signal(signal.SIGTERM))
    with pytest.raises(Preempted) as info:
        train.train_and_evaluate(config, tmp_path / "run")
    assert info.value.step == stop_at and info.value.exit_code == 128 + signal.SIGTERM
    monkeypatch.setattr(parallel, "make_parallel", _compile_once)  # no more interruptions
    assert open_for_reading(tmp_path / "run").latest_step() == stop_at
    train.train_and_evaluate(config, tmp_path / "run")
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
        train.train_and_evaluate(config, tmp_path / "run")
    monkeypatch.setattr(parallel, "make_parallel", _compile_once)
    train.train_and_evaluate(config, tmp_path / "run")  # redoes steps 8-12 from step 7
    _check(final_state(tmp_path / "run"), expected)
