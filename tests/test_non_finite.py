"""Non-finite values: the skip policy keeps the previous state for a NaN/Inf gradient, the stop
policy names the step whether the loss or only the gradient is bad, and the config checks the
policy's name. (End to end, on a training run: tests/test_reliability.py.)"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.errors import ConfigError
from sejax.training import train, train_state


def _state(policy: str) -> train_state.TrainState:
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    state = train_state.TrainState.create(
        apply_fn=None, params=params, tx=optax.adam(0.1),
        batch_stats={"mean": jnp.zeros(3)}, rng=jnp.zeros(2, jnp.uint32),
    )  # fmt: skip
    return train_state.with_non_finite_policy(state, policy)


@jax.jit
def _update(state, scale, batch_mean):
    grads = jax.tree.map(lambda p: jnp.full_like(p, scale), state.params)
    return state.apply_gradients(grads=grads, batch_stats={"mean": batch_mean})


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_skip_keeps_params_opt_state_and_batch_stats(bad):
    state = _update(_state("skip"), 1.0, jnp.ones(3))  # one good update first
    assert int(state.skipped_steps) == 0
    skipped = _update(state, bad, jnp.full(3, 5.0))
    assert int(skipped.step) == int(state.step) + 1  # the data position moves on
    assert int(skipped.skipped_steps) == 1
    for name in ("params", "opt_state", "batch_stats"):
        for a, b in zip(_leaves(getattr(skipped, name)), _leaves(getattr(state, name)),
                        strict=True):  # fmt: skip
            np.testing.assert_array_equal(a, b, err_msg=name)
    resumed = _update(skipped, 1.0, jnp.ones(3))
    assert int(resumed.skipped_steps) == 1
    assert not np.array_equal(resumed.params["w"], state.params["w"])


def test_skip_also_guards_an_update_that_overflows():
    state = _state("skip").replace(params={"w": jnp.full((2, 3), 3e38), "b": jnp.zeros(3)})
    state = state.replace(tx=optax.sgd(-1.0), opt_state=optax.sgd(-1.0).init(state.params))
    out = _update(state, 1e38, jnp.ones(3))  # finite gradient, infinite new params
    assert int(out.skipped_steps) == 1 and np.isfinite(np.asarray(out.params["w"])).all()


def test_stop_policy_leaves_the_update_alone():
    state = _state("stop")
    assert state.skipped_steps is None
    out = _update(state, np.nan, jnp.ones(3))
    assert np.isnan(np.asarray(out.params["w"])).all()
    assert not train_state.is_finite(out) and train_state.is_finite(state)


class _Checkpoints:
    def close(self) -> None:
        pass

    def latest_step(self) -> int:
        return 40


@pytest.mark.parametrize(
    "bad", [{"loss": np.float32(np.nan)}, {"grad_norm": np.float32(np.inf)}]
)  # the loss, or only the gradient
def test_stop_names_the_first_bad_step(bad):
    good = {"loss": np.float32(1.0), "grad_norm": np.float32(2.0)}
    pending = [good, {**good, **bad}, good]
    with pytest.raises(train.NonFiniteError, match=r"at step 49 .*latest: checkpoint step 40"):
        train._check_finite(pending, 50, _Checkpoints())
    assert len(train._check_finite(pending, 50, _Checkpoints(), skip=True)) == 3


def test_means_leave_skipped_steps_out():
    metrics = [{"loss": 1.0}, {"loss": float("nan")}, {"loss": 3.0}]
    assert train._mean(metrics) == {"loss": 2.0}
    assert np.isnan(train._mean([{"loss": float("inf")}])["loss"])


def test_config_names_the_allowed_policies():
    config = config_lib.apply_overrides(
        config_lib.load_config(None), [("train.on_non_finite", "ignore")]
    )
    with pytest.raises(ConfigError, match=r"train\.on_non_finite='ignore'.*\['stop', 'skip'\]"):
        validate(config)
    with pytest.raises(ConfigError, match=r"train\.on_non_finite"):
        train_state.with_non_finite_policy(_state("stop"), "ignore")
