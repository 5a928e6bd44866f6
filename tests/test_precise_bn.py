"""Precise BatchNorm (``train.precise_bn_batches``): inference statistics recomputed from
training batches with the current weights, so evaluation sees what training saw."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sejax.configs.default import get_config, get_model_config
from sejax.configs.validation import validate
from sejax.errors import ConfigError
from sejax.model.models import build_model
from sejax.training import steps
from sejax.training.parallel import AXIS, make_parallel
from sejax.training.train_state import init_train_state


@pytest.fixture(scope="module")
def setup():
    cfg = get_model_config()
    cfg.conv_channels, cfg.lstm_units, cfg.lstm_layers = (4, 8), 8, 1
    cfg.conv_dropout, cfg.head_dropout = 0.2, 0.3  # on: calibration must switch it off
    model = build_model(cfg, bn_axis_name=AXIS)
    state = init_train_state(jax.random.PRNGKey(0), model, (1, 32, 16), optax.adam(1e-3))
    # Stale running averages, as a short run's lagging momentum leaves them.
    stale = jax.tree.map(lambda x: x + 3.0, state.batch_stats)
    state = state.replace(batch_stats=stale)
    train_cfg = get_config().train
    train_cfg.batch_size = 8
    par = make_parallel(train_cfg, devices=jax.devices()[:1])
    rng = np.random.default_rng(0)
    batches = [
        {"features": (rng.normal(size=(8, 32, 16)) * 2 + 1).astype(np.float32),
         "label": rng.integers(0, 8, size=8).astype(np.int32)}
        for _ in range(3)
    ]  # fmt: skip
    return model, par, par.put_state(state), batches


def _inference_like(model, state, features):
    """Train-mode BatchNorm (batch statistics), no dropout: the network calibration targets."""
    plain = model.clone(bn_axis_name=None, conv_dropout=0.0, head_dropout=0.0)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    logits, updates = plain.apply(variables, features, train=True, mutable=["batch_stats"])
    return logits, updates["batch_stats"]


def test_calibrated_on_a_batch_the_inference_network_matches_training_mode(setup):
    model, par, state, batches = setup
    batch = batches[0]
    eval_batch = {**batch, "mask": np.ones(8, np.float32)}
    target, _ = _inference_like(model, state, batch["features"])
    stale_logits = par.eval_step(state, par.put_batch(eval_batch))["logits"]
    assert not np.allclose(stale_logits, target, atol=1e-2)  # the stale averages are wrong
    calibrated = par.precise_batch_stats(state, [par.put_batch(batch)])
    logits = par.eval_step(calibrated, par.put_batch(eval_batch))["logits"]
    np.testing.assert_allclose(logits, target, rtol=1e-4, atol=1e-4)


def test_statistics_are_the_mean_over_batches_and_nothing_else_changes(setup):
    model, par, state, batches = setup
    plain_state = jax.device_get(state)
    per_batch = []
    for batch in batches:
        frozen = plain_state.replace(
            batch_stats=jax.tree.map(jnp.zeros_like, plain_state.batch_stats)
        )
        _, stats = _inference_like(model, frozen, batch["features"])
        # Momentum 0.99 from zeros: the returned average is 1% of this batch's statistics.
        per_batch.append(jax.tree.map(lambda x: x / (1 - model.bn_momentum), stats))
    expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *per_batch)
    calibrated = par.precise_batch_stats(state, (par.put_batch(b) for b in batches))
    for got, want in zip(jax.tree.leaves(calibrated.batch_stats), jax.tree.leaves(expected),
                         strict=True):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    for key in ("params", "opt_state", "step", "rng"):
        for a, b in zip(jax.tree.leaves(getattr(calibrated, key)),
                        jax.tree.leaves(getattr(state, key)), strict=True):  # fmt: skip
            assert np.array_equal(np.asarray(a), np.asarray(b))


def test_needs_at_least_one_batch(setup):
    _, par, state, _ = setup
    with pytest.raises(ValueError, match="at least one batch"):
        par.precise_batch_stats(state, [])


def test_a_negative_batch_count_is_refused_by_key():
    config = get_config()
    config.train.precise_bn_batches = -1
    with pytest.raises(ConfigError, match=r"train\.precise_bn_batches=-1"):
        validate(config)


def test_batch_stats_step_refuses_a_model_it_cannot_calibrate():
    import flax.linen as nn

    class Plain(nn.Module):
        @nn.compact
        def __call__(self, x, *, train):
            return nn.BatchNorm(use_running_average=not train)(x)

    state = init_train_state(jax.random.PRNGKey(0), Plain(), (2, 4), optax.sgd(0.1))
    with pytest.raises(ConfigError, match="precise_bn_batches"):
        steps.batch_stats_step(state, {"features": jnp.ones((2, 4))}, axis_name=None)
