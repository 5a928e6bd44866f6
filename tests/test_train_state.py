"""Optimizer, learning-rate schedules and the initial training state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from sejax.configs.default import get_config, get_model_config
from sejax.errors import ConfigError
from sejax.model.models import build_model
from sejax.training.train_state import (
    TrainState,
    abstract_variables,
    create_train_state,
    init_train_state,
    learning_rate,
    make_optimizer,
    make_schedule,
    model_from_config,
)


def train_config(**overrides):
    # A fresh ConfigDict, so overrides may change a value's type (bad values on purpose).
    return ml_collections.ConfigDict({**get_config().train.to_dict(), **overrides})


def test_constant_schedule():
    schedule = make_schedule(train_config(learning_rate=3e-4), steps_per_epoch=10)
    assert [float(schedule(s)) for s in (0, 150, 10_000)] == pytest.approx([3e-4] * 3)


def test_cosine_schedule():
    schedule = make_schedule(train_config(schedule="cosine", num_epochs=4), steps_per_epoch=25)
    # 100 steps in all: full rate, half way down at 50, zero at the end.
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(50)) == pytest.approx(5e-4)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)


def test_warmup_cosine_schedule():
    cfg = train_config(schedule="warmup_cosine", warmup_epochs=1.0, num_epochs=3)
    schedule = make_schedule(cfg, steps_per_epoch=10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)  # linear warm-up over 10 steps
    assert float(schedule(10)) == pytest.approx(1e-3)  # peak
    assert float(schedule(20)) == pytest.approx(5e-4)  # half way through the cosine
    assert float(schedule(30)) == pytest.approx(0.0, abs=1e-9)


def test_optimizer_reports_the_rate_each_update_used():
    cfg = train_config(schedule="warmup_cosine", warmup_epochs=1.0, num_epochs=3)
    tx = make_optimizer(cfg, steps_per_epoch=4)
    schedule = make_schedule(cfg, steps_per_epoch=4)
    params = {"w": jnp.ones(3)}
    state = tx.init(params)
    for step in range(6):
        _, state = tx.update({"w": jnp.ones(3)}, state, params)
        assert float(learning_rate(state)) == pytest.approx(float(schedule(step)))
    assert learning_rate(optax.adam(1e-3).init(params)) is None


def test_gradient_clipping_changes_the_update():
    """A huge first gradient, clipped, no longer dominates Adam's second-moment estimate."""
    params = {"w": jnp.zeros(4)}
    grads = [{"w": jnp.full(4, 1e3)}, {"w": jnp.array([1.0, -1.0, 1.0, -1.0])}]

    def second_update(clip):
        tx = make_optimizer(train_config(grad_clip_norm=clip), steps_per_epoch=1)
        state = tx.init(params)
        for g in grads:
            updates, state = tx.update(g, state, params)
        return np.asarray(updates["w"])

    unclipped = second_update(0.0)
    np.testing.assert_allclose(second_update(1e9), unclipped)  # never active
    assert np.abs(second_update(1.0) - unclipped).max() > 1e-5


def test_adamw_decays_kernels_not_biases():
    tx = make_optimizer(train_config(optimizer="adamw", weight_decay=0.1), steps_per_epoch=1)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zeros, tx.init(params), params)
    assert float(jnp.abs(updates["kernel"]).min()) > 0
    np.testing.assert_array_equal(updates["bias"], 0.0)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"learning_rate": 0.0}, "train.learning_rate"),
        ({"schedule": "linear"}, "train.schedule"),
        ({"optimizer": "sgd"}, "train.optimizer"),
        ({"weight_decay": 1e-4}, "train.weight_decay"),  # adam has no decoupled decay
        ({"optimizer": "adamw", "weight_decay": -1.0}, "train.weight_decay"),
        ({"num_epochs": 0}, "train.num_epochs"),
        ({"schedule": "warmup_cosine", "warmup_epochs": 30.0}, "train.warmup_epochs"),
        ({"grad_clip_norm": "5"}, "train.grad_clip_norm"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_optimizer(train_config(**overrides), steps_per_epoch=10)


def test_bad_steps_per_epoch():
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        make_optimizer(train_config(), steps_per_epoch=0)


def test_schedule_names_the_allowed_values():
    with pytest.raises(ConfigError, match="'constant', 'cosine', 'warmup_cosine'"):
        make_schedule(train_config(schedule="step"), steps_per_epoch=1)


@pytest.fixture(scope="module")
def tiny_model():
    cfg = get_model_config()
    cfg.conv_channels = (4, 8)
    cfg.lstm_units = 8
    cfg.lstm_layers = 1
    return build_model(cfg)


def test_init_train_state(tiny_model):
    tx = make_optimizer(train_config(), steps_per_epoch=1)

    def create(rng):
        # XLA:CPU compiles the default (partitionable) threefry draws for 4-D conv kernels
        # several times slower; the other stream keeps the test fast.
        with jax.threefry_partitionable(False):
            return init_train_state(rng, tiny_model, (1, 32, 16), tx)

    state = create(jax.random.PRNGKey(0))
    assert isinstance(state, TrainState)
    assert state.step.shape == () and state.step.dtype == jnp.int32 and int(state.step) == 0
    assert state.rng.dtype == jnp.uint32
    assert set(state.batch_stats) == {"conv_0", "conv_1"}
    assert set(state.params) == {"conv_0", "conv_1", "bilstm_0", "head"}
    # Everything is a plain numeric array: Orbax saves it without special handling.
    for leaf in jax.tree.leaves(state):
        assert isinstance(leaf, jax.Array)
        assert not jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key)
    # A typed key gives the same state as its raw key data; another seed another one.
    typed = create(jax.random.key(0))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(typed), strict=True):
        np.testing.assert_array_equal(a, b)
    other = create(jax.random.PRNGKey(1))
    assert not np.array_equal(state.rng, other.rng)
    assert not np.array_equal(state.params["head"]["kernel"], other.params["head"]["kernel"])


def _tiny_run_config(**train: object) -> ml_collections.ConfigDict:
    config = get_config()
    config.features.duration_s, config.features.n_mels = 1.0, 16
    config.model.update(conv_channels=(4, 8), lstm_units=8, lstm_layers=1)
    config.train.update(train)
    return config


def test_create_train_state_builds_the_run_from_its_config():
    """The config-level state: the network `model_from_config` describes on its input shape
    (whose variables `abstract_variables` gives without an optimizer), the optimizer of
    ``config.train``, a moving average for ``train.ema_decay`` and a skipped-step counter
    for ``train.on_non_finite='skip'``. Shapes only (``jax.eval_shape``): nothing compiles."""
    config = _tiny_run_config()
    model, shape = model_from_config(config)
    assert shape == (1, 101, 16) and model.conv_channels == (4, 8) and model.bn_axis_name is None
    assert model_from_config(config, bn_axis_name="data")[0].bn_axis_name == "data"

    def create(cfg):
        return jax.eval_shape(lambda: create_train_state(cfg, 10, seed=0, bn_axis_name=None))

    state = create(config)
    variables = abstract_variables(config)
    assert jax.tree.structure(state.params) == jax.tree.structure(variables["params"])
    of_state = {"params": state.params, "batch_stats": state.batch_stats}
    shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(of_state)]
    assert shapes == [(x.shape, x.dtype) for x in jax.tree.leaves(variables)]
    assert set(state.batch_stats) == {"conv_0", "conv_1"}
    assert state.ema_params is None and state.skipped_steps is None
    assert learning_rate(state.opt_state) is not None  # config.train's optimizer state
    special = create(_tiny_run_config(ema_decay=0.99, on_non_finite="skip"))
    assert special.ema_decay == 0.99 and special.skipped_steps.shape == ()
    assert jax.tree.structure(special.ema_params) == jax.tree.structure(state.params)
