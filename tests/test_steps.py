"""The per-device train and eval steps, run unmapped (axis_name=None) on one device."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from sejax.configs.default import get_config, get_model_config
from sejax.errors import ConfigError
from sejax.model.models import build_model
from sejax.training import steps
from sejax.training.train_state import init_train_state, make_optimizer

train_step = jax.jit(functools.partial(steps.train_step, axis_name=None))
eval_step = jax.jit(functools.partial(steps.eval_step, axis_name=None))


def tiny_model(bn_axis_name=None):
    cfg = get_model_config()
    cfg.conv_channels = (4, 8)
    cfg.lstm_units = 8
    cfg.lstm_layers = 1
    cfg.conv_dropout = cfg.head_dropout = 0.0
    return build_model(cfg, bn_axis_name=bn_axis_name)


def tiny_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "features": rng.normal(size=(n, 32, 16)).astype(np.float32),
        "label": (np.arange(n) % 8).astype(np.int32),
    }


@pytest.fixture(scope="module")
def state():
    """One model and optimizer for the module, so the steps compile once."""
    train_cfg = get_config().train
    train_cfg.learning_rate = 1e-2
    tx = make_optimizer(train_cfg, steps_per_epoch=10)
    # XLA:CPU compiles the default (partitionable) threefry draws for 4-D conv kernels
    # several times slower; the other stream keeps the test fast. Values do not matter.
    with jax.threefry_partitionable(False):
        return init_train_state(jax.random.PRNGKey(0), tiny_model(), (1, 32, 16), tx)


def test_train_steps_lower_the_loss(state):
    batch = tiny_batch()
    losses = []
    for _ in range(8):
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 8
    assert losses[-1] < 0.8 * losses[0], losses
    assert set(metrics) == {"loss", "accuracy", "grad_norm", "learning_rate"}
    assert float(metrics["learning_rate"]) == pytest.approx(1e-2)
    assert float(metrics["grad_norm"]) > 0
    assert 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_train_step_updates_batch_stats_and_keeps_rng(state):
    new_state, _ = train_step(state, tiny_batch())
    old_mean = state.batch_stats["conv_0"]["BatchNorm_0"]["mean"]
    new_mean = new_state.batch_stats["conv_0"]["BatchNorm_0"]["mean"]
    assert not np.allclose(old_mean, new_mean)
    np.testing.assert_array_equal(state.rng, new_state.rng)  # folded with the step instead
    # Same state and batch, same result: the step is a pure function.
    again, _ = train_step(state, tiny_batch())
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(again), strict=True):
        np.testing.assert_array_equal(a, b)


def test_dropout_key_changes_with_the_step_and_device(state):
    key = jax.jit(steps._dropout_key, static_argnums=1)
    data = jax.random.key_data
    a = data(key(state, None))
    np.testing.assert_array_equal(a, data(key(state, None)))
    assert not np.array_equal(a, data(key(state.replace(step=state.step + 1), None)))
    # Unmapped runs use device index 0, so one mapped device matches them exactly.
    per_device = jax.vmap(
        lambda s: data(steps._dropout_key(s, "i")), in_axes=None, axis_size=2, axis_name="i"
    )
    mapped = per_device(state)
    np.testing.assert_array_equal(mapped[0], a)
    assert not np.array_equal(mapped[1], a)


def test_eval_step_masks_padding(state):
    state, _ = train_step(state, tiny_batch())
    full = tiny_batch(6, seed=1)
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    per_example, totals = eval_step(state, {**full, "mask": mask})
    assert per_example["logits"].shape == (6, 8)
    np.testing.assert_array_equal(per_example["loss"][4:], 0.0)
    assert float(totals["count"]) == 4.0
    assert float(totals["loss_sum"]) == pytest.approx(float(per_example["loss"][:4].sum()))
    expected = steps.cross_entropy(per_example["logits"][:4], full["label"][:4])
    np.testing.assert_allclose(per_example["loss"][:4], expected, rtol=1e-5)
    predictions = np.argmax(per_example["logits"][:4], axis=-1)
    assert float(totals["correct"]) == float(np.sum(predictions == full["label"][:4]))

    # Inference uses running statistics, so a row does not depend on its neighbours.
    shuffled = {k: v[::-1].copy() for k, v in {**full, "mask": mask}.items()}
    reversed_out, reversed_totals = eval_step(state, shuffled)
    np.testing.assert_allclose(
        reversed_out["logits"][::-1], per_example["logits"], rtol=1e-5, atol=1e-6
    )
    assert float(reversed_totals["correct"]) == float(totals["correct"])


def test_model_and_step_must_agree_on_the_batchnorm_axis(state):
    wrong = state.replace(apply_fn=tiny_model(bn_axis_name="data").apply)
    with pytest.raises(ConfigError, match="bn_axis_name"):
        train_step(wrong, tiny_batch())
