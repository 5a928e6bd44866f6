"""A moving average of the weights (``train.ema_decay``): its update, the skip policy, and
inference (validation, test, precise BatchNorm, saved models) running with it."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sejax.cli import main as cli
from sejax.configs.default import get_config, get_model_config
from sejax.configs.validation import validate
from sejax.errors import ConfigError
from sejax.inference import bundle as bundle_lib
from sejax.model.models import build_model
from sejax.training import steps, train_state
from tests.conftest import final_state, tiny_args


def _state(decay: float, policy: str = "stop") -> train_state.TrainState:
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    state = train_state.TrainState.create(
        apply_fn=None, params=params, tx=optax.sgd(0.5),
        batch_stats={}, rng=jnp.zeros(2, jnp.uint32),
    )  # fmt: skip
    state = state.replace(ema_params=jax.tree.map(jnp.copy, params), ema_decay=decay)
    return train_state.with_non_finite_policy(state, policy)


@jax.jit
def _update(state, grad):
    return state.apply_gradients(grads=jax.tree.map(lambda p: jnp.full_like(p, grad), state.params))


def test_the_average_follows_the_params_with_a_warm_up():
    state = _state(0.9)
    history, expected = [], np.ones((2, 3))
    for n, grad in enumerate([1.0, -2.0, 0.5, 3.0]):
        state = _update(state, grad)
        history.append(np.asarray(state.params["w"]))
        decay = min(0.9, (1 + n) / (10 + n))  # n updates before this one
        expected = decay * expected + (1 - decay) * history[-1]
    np.testing.assert_allclose(state.ema_params["w"], expected, rtol=1e-6)
    assert not np.allclose(state.ema_params["w"], state.params["w"])
    assert state.inference_params is state.ema_params
    plain = _update(_state(0.9).replace(ema_params=None), 1.0)
    assert plain.ema_params is None and plain.inference_params is plain.params


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_skipped_update_leaves_the_average_alone(bad):
    state = _update(_state(0.9, "skip"), 1.0)
    skipped = _update(state, bad)
    assert int(skipped.skipped_steps) == 1
    np.testing.assert_array_equal(skipped.ema_params["w"], state.ema_params["w"])


def test_inference_and_precise_batch_norm_run_with_the_average():
    cfg = get_model_config()
    cfg.conv_channels, cfg.lstm_units, cfg.lstm_layers = (4, 8), 8, 1
    model = build_model(cfg)
    state = train_state.init_train_state(jax.random.PRNGKey(0), model, (1, 32, 16), optax.sgd(0))
    ema = jax.tree.map(lambda p: p * 0.5 + 0.01, state.params)
    averaged = state.replace(ema_params=ema, ema_decay=0.9)
    x = np.random.default_rng(0).normal(size=(4, 32, 16)).astype(np.float32)
    batch = {"features": x, "label": np.zeros(4, np.int32), "mask": np.ones(4, np.float32)}
    logits = steps.eval_step(averaged, batch, axis_name=None)[0]["logits"]
    want = model.apply({"params": ema, "batch_stats": state.batch_stats}, x, train=False)
    np.testing.assert_allclose(logits, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits, steps.eval_step(state, batch, axis_name=None)[0]["logits"])
    stats = steps.batch_stats_step(averaged, batch, axis_name=None)
    plain = model.clone(conv_dropout=0.0, head_dropout=0.0, bn_momentum=0.0)
    _, updates = plain.apply({"params": ema, "batch_stats": state.batch_stats}, x, train=True,
                             mutable=["batch_stats"])  # fmt: skip
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(updates["batch_stats"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("value", [1.0, -0.1, True])
def test_bad_decay_names_the_key(value):
    config = get_config()
    config.train.ema_decay = value
    with pytest.raises(ConfigError, match=r"train\.ema_decay"):
        validate(config)


def test_a_run_saves_and_serves_the_average(tmp_path, capsys):
    workdir = tmp_path / "run"
    args = tiny_args(train__num_epochs="2", train__ema_decay="0.9")
    assert cli.main(["train", "--workdir", str(workdir), *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    _, leaves = final_state(workdir)
    saved = dict(leaves)
    ema = {k.removeprefix("['ema_params']"): v for k, v in saved.items()
           if k.startswith("['ema_params']")}  # fmt: skip
    params = {k.removeprefix("['params']"): v for k, v in saved.items()
              if k.startswith("['params']")}  # fmt: skip
    assert ema and ema.keys() == params.keys()
    assert any(not np.array_equal(ema[k], params[k]) for k in ema)
    bundle = bundle_lib.load(workdir=workdir, checkpoint="latest")
    served = jax.tree_util.tree_leaves_with_path(bundle.variables["params"])
    for path, value in served:  # the saved model is the average, not the last step
        np.testing.assert_array_equal(value, ema[jax.tree_util.keystr(path)])
    assert cli.main(["evaluate", "--workdir", str(workdir), "--split", "test"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["uar"] == pytest.approx(summary["test"]["uar"])
