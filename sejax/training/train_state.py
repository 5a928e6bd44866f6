"""Training state and optimizer: everything a step reads and writes, in one pytree.

The state is a plain pytree of arrays (Orbax saves and restores it as is): the step count,
parameters, BatchNorm statistics, optimizer state and the dropout key as raw ``uint32`` key
data (typed PRNG keys do not serialise). ``apply_fn`` and ``tx`` are static fields.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct
from flax.training import train_state

from sejax.data import features
from sejax.errors import ConfigError
from sejax.model import models

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
NON_FINITE_POLICIES = ("stop", "skip")  # train.on_non_finite


class TrainState(train_state.TrainState):
    """Flax's TrainState (step, params, opt_state, apply_fn, tx) plus batch_stats and rng.

    ``rng`` is raw key data (``jax.random.key_data``); steps wrap it with
    ``jax.random.wrap_key_data`` and fold in the step, so dropout differs per step and
    resumes identically from a checkpoint.
    """

    batch_stats: Any = None
    rng: jax.Array | None = None
    # Updates skipped for a non-finite gradient (int32 scalar) under
    # train.on_non_finite='skip'; None under 'stop', where the loop stops instead.
    skipped_steps: jax.Array | None = None
    # train.ema_decay > 0: an exponential moving average of the params, which inference
    # (validation, test, precise BatchNorm, export) uses instead of the params themselves.
    ema_params: Any = None
    ema_decay: float = struct.field(pytree_node=False, default=0.0)

    @property
    def inference_params(self) -> Any:
        """The weights inference runs with: the moving average if kept, else the params."""
        return self.params if self.ema_params is None else self.ema_params

    def apply_gradients(self, *, grads: Any, **kwargs: Any) -> TrainState:
        """Flax's update; with a ``skipped_steps`` counter, a non-finite one is skipped.

        Skipping keeps the previous params, optimizer state and BatchNorm statistics (a
        select, not a branch: the step stays one compiled program) but still advances
        ``step``, so the data position and dropout keys move on as in any other step.
        """
        new = super().apply_gradients(grads=grads, **kwargs)
        if self.ema_params is not None:
            new = new.replace(ema_params=_ema_update(self.ema_params, new.params, self))
        if self.skipped_steps is None:
            return new
        ok = jnp.isfinite(optax.global_norm(grads)) & _all_finite((new.params, new.batch_stats))

        def keep(updated: Any, previous: Any) -> Any:
            return jax.tree.map(lambda u, p: jnp.where(ok, u, p), updated, previous)

        return new.replace(
            params=keep(new.params, self.params),
            opt_state=keep(new.opt_state, self.opt_state),
            batch_stats=keep(new.batch_stats, self.batch_stats),
            ema_params=None if self.ema_params is None else keep(new.ema_params, self.ema_params),
            skipped_steps=self.skipped_steps + jnp.where(ok, 0, 1).astype(jnp.int32),
        )


def _ema_update(ema: Any, params: Any, state: TrainState) -> Any:
    """One step of the moving average, with TensorFlow's warm-up of the decay
    (``min(decay, (1 + n) / (10 + n))`` after n updates), so the initial weights fade from it
    within a short run."""
    n = state.step.astype(jnp.float32)
    decay = jnp.minimum(state.ema_decay, (1.0 + n) / (10.0 + n))
    return jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), ema, params)


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]  # fmt: skip
    return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def is_finite(state: TrainState) -> bool:
    """Whether every float in params, BatchNorm statistics and optimizer state is finite.

    Checked before each checkpoint: a state that overflowed in its last update (finite
    gradient, infinite step) must not replace the last good checkpoint.
    """
    finite = _all_finite((state.params, state.batch_stats, state.opt_state))
    return bool(np.asarray(finite.addressable_data(0)))  # replicated: any local copy


def with_non_finite_policy(state: TrainState, policy: str) -> TrainState:
    """Adds (``'skip'``) or drops (``'stop'``) the skipped-updates counter.

    Also used after a restore, so a run resumed under another policy keeps working.
    """
    if policy not in NON_FINITE_POLICIES:
        raise ConfigError(
            f"train.on_non_finite={policy!r} is not allowed; choose one of "
            f"{list(NON_FINITE_POLICIES)}"
        )
    if policy == "stop":
        return state.replace(skipped_steps=None)
    if state.skipped_steps is None:
        return state.replace(skipped_steps=jnp.zeros((), jnp.int32))
    return state


def _get(train_cfg: ml_collections.ConfigDict, key: str) -> Any:
    if key not in train_cfg:
        raise ConfigError(f"train.{key} is missing from the config")
    return train_cfg[key]


def _number(train_cfg: ml_collections.ConfigDict, key: str) -> float:
    value = _get(train_cfg, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"train.{key}={value!r} must be a number")
    return float(value)


def make_schedule(train_cfg: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
    """Learning rate per step from train.learning_rate, schedule, warmup_epochs, num_epochs."""
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch={steps_per_epoch!r} must be a positive integer")
    lr = _number(train_cfg, "learning_rate")
    if lr <= 0:
        raise ConfigError(f"train.learning_rate={lr!r} must be > 0")
    num_epochs = _get(train_cfg, "num_epochs")
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ConfigError(f"train.num_epochs={num_epochs!r} must be a positive integer")
    schedule = _get(train_cfg, "schedule")
    total_steps = num_epochs * steps_per_epoch

    if schedule == "constant":
        return optax.constant_schedule(lr)
    if schedule == "cosine":
        return optax.cosine_decay_schedule(lr, decay_steps=total_steps)
    if schedule == "warmup_cosine":
        warmup_epochs = _number(train_cfg, "warmup_epochs")
        warmup_steps = round(warmup_epochs * steps_per_epoch)
        if warmup_epochs < 0 or warmup_steps >= total_steps:
            raise ConfigError(
                f"train.warmup_epochs={warmup_epochs!r} must be >= 0 and shorter than "
                f"train.num_epochs={num_epochs}"
            )
        return optax.warmup_cosine_decay_schedule(
            0.0, lr, warmup_steps=warmup_steps, decay_steps=total_steps
        )
    raise ConfigError(f"train.schedule={schedule!r} is not one of {list(SCHEDULES)}")


def _decay_mask(params: Any) -> Any:
    """Weight decay on kernels only: biases and BatchNorm scales/offsets are left alone."""
    return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(
    train_cfg: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Adam or AdamW over the schedule, after optional global-norm clipping.

    The learning rate is injected into the optimizer state, so ``learning_rate(opt_state)``
    reads the rate the last update used (and checkpoints carry it).
    """
    schedule = make_schedule(train_cfg, steps_per_epoch)
    name = _get(train_cfg, "optimizer")
    weight_decay = _number(train_cfg, "weight_decay")
    if weight_decay < 0:
        raise ConfigError(f"train.weight_decay={weight_decay!r} must be >= 0")
    if name == "adam":
        if weight_decay > 0:
            raise ConfigError(
                f"train.weight_decay={weight_decay!r} needs train.optimizer='adamw' "
                "(adam has no decoupled weight decay)"
            )
        opt = optax.inject_hyperparams(optax.adam)(learning_rate=schedule)
    elif name == "adamw":
        opt = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(
            learning_rate=schedule, weight_decay=weight_decay, mask=_decay_mask
        )
    else:
        raise ConfigError(f"train.optimizer={name!r} is not one of {list(OPTIMIZERS)}")

    clip = _number(train_cfg, "grad_clip_norm")
    if clip > 0:
        return optax.chain(optax.clip_by_global_norm(clip), opt)
    return opt


def learning_rate(opt_state: Any) -> jax.Array | None:
    """The learning rate of the last update (injected hyperparameter), or None if absent."""
    nodes = jax.tree.leaves(opt_state, is_leaf=lambda x: hasattr(x, "hyperparams"))
    for node in nodes:
        if "learning_rate" in getattr(node, "hyperparams", {}):
            return node.hyperparams["learning_rate"]
    return None


def _key_data(rng: jax.Array) -> jax.Array:
    if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    return jnp.asarray(rng, jnp.uint32)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _init_variables(model: nn.Module, rng: jax.Array, input_shape: tuple[int, ...]) -> Any:
    # Compiled once per (model config, input shape): modules hash by their fields.
    return models.init_variables(model, rng, jnp.zeros(input_shape, jnp.float32))


def model_from_config(
    config: ml_collections.ConfigDict, *, bn_axis_name: str | None = None
) -> tuple[models.CnnBiLstm, tuple[int, int, int]]:
    """The network a run's config describes and the shape of one example batch,
    ``(1, frames, n_mels)`` from ``config.features``.

    The one place a config becomes a network: training, restoring a checkpoint, serving a
    model and benchmarks all build it here. ``bn_axis_name`` names the mapped axis that
    BatchNorm averages its batch statistics over in training; it changes no variable.
    """
    model = models.build_model(config.model, bn_axis_name=bn_axis_name)
    return model, (1, features.num_frames(config.features), int(config.features.n_mels))


def abstract_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of the ``{'params', 'batch_stats'}``
    of the network ``config`` describes: a restore target that needs no optimizer."""
    model, shape = model_from_config(config)
    variables = jax.eval_shape(lambda: _init_variables(model, jax.random.PRNGKey(0), shape))
    return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def create_train_state(
    config: ml_collections.ConfigDict,
    steps_per_epoch: int,
    *,
    seed: int,
    bn_axis_name: str | None,
) -> TrainState:
    """The model, optimizer and fresh state that a run's config describes.

    Training, restoring a checkpoint and benchmarks all build the same state from the same
    keys (`model_from_config`, `make_optimizer`, ``train.ema_decay``, ``train.on_non_finite``).
    """
    model, shape = model_from_config(config, bn_axis_name=bn_axis_name)
    tx = make_optimizer(config.train, steps_per_epoch)
    state = init_train_state(jax.random.PRNGKey(seed), model, shape, tx)
    ema_decay = float(config.train.ema_decay)
    if ema_decay > 0:
        state = state.replace(ema_params=jax.tree.map(jnp.copy, state.params), ema_decay=ema_decay)
    return with_non_finite_policy(state, config.train.on_non_finite)


def init_train_state(
    rng: jax.Array, model: nn.Module, input_shape: Sequence[int], tx: optax.GradientTransformation
) -> TrainState:
    """A fresh state of ``model`` and ``tx`` on the default device (global, not replicated).

    ``input_shape`` is one example batch's feature shape, e.g. ``(1, T, F)``; only the
    trailing dimensions matter to the parameter shapes. `create_train_state` builds all of
    it from a run's config.
    """
    if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
        rng = jax.random.wrap_key_data(jnp.asarray(rng, jnp.uint32))
    init_rng, state_rng = jax.random.split(rng)
    variables = _init_variables(model, init_rng, tuple(input_shape))
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        apply_fn=model.apply,
        params=params,
        tx=tx,
        opt_state=tx.init(params),
        batch_stats=variables.get("batch_stats", {}),
        rng=_key_data(state_rng),
    )
