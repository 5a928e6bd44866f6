"""Shared fixtures: a tiny model and a small demo corpus keep end-to-end tests fast."""

from __future__ import annotations

import os
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Commands run by the tests keep compiled programs in a cache of the test run's own, not in
# the user's ~/.cache/sejax (sejax.cli.main.compilation_cache_dir).
os.environ.setdefault("SEJAX_COMPILATION_CACHE", tempfile.mkdtemp(prefix="sejax-test-jax-"))

# Overrides that shrink the default run to seconds: 8 demo actors with one take each
# (train 17-20, validate 21-22, test 23-24), 1 s clips, 32 Mel bands and a small CNN+BiLSTM.
TINY_OVERRIDES = {
    "data.demo_actors": "(17, 18, 19, 20, 21, 22, 23, 24)",
    "data.demo_repetitions": "(1,)",
    "features.duration_s": "1.0",
    "features.n_mels": "32",
    "model.conv_channels": "(8, 16, 32)",
    "model.lstm_units": "32",
    "model.lstm_layers": "1",
    "train.batch_size": "16",
    "train.learning_rate": "3e-3",
    "train.num_epochs": "12",
    "train.log_every_steps": "4",
    "eval.batch_size": "16",
}


def tiny_args(**changes: str) -> list[str]:
    """``--config.key=value`` arguments for the tiny run, with ``changes`` applied."""
    overrides = dict(TINY_OVERRIDES)
    overrides.update({k.replace("__", "."): v for k, v in changes.items()})
    return [f"--config.{k}={v}" for k, v in overrides.items()]


def final_state(workdir, step: int | None = None) -> tuple[int, list[tuple[str, np.ndarray]]]:
    """A checkpoint of ``workdir`` (the latest by default): its step and every state leaf,
    path by path."""
    from sejax.training.checkpoints import state_leaves

    return state_leaves(workdir, step)


def assert_bitwise_equal(a, b) -> None:
    """Two ``final_state`` results hold the same step and bit-identical leaves."""
    (step_a, leaves_a), (step_b, leaves_b) = a, b
    assert step_a == step_b
    assert [k for k, _ in leaves_a] == [k for k, _ in leaves_b]
    differ = [k for (k, x), (_, y) in zip(leaves_a, leaves_b, strict=True)
              if x.dtype != y.dtype or not np.array_equal(x, y)]  # fmt: skip
    assert not differ, f"{len(differ)} of {len(leaves_a)} leaves differ, e.g. {differ[:3]}"
