"""One training and one evaluation step, written once from the point of view of one device.

``sejax.training.parallel`` maps these over devices (``jax.pmap`` or ``jax.shard_map``) with the
data axis named ``axis_name``; each device sees its slice of the global batch and a
replicated state. Gradients, loss and metrics are averaged over the axis with ``lax.pmean``
and BatchNorm averages its statistics over the same axis (the model's ``bn_axis_name``), so
one step on D devices equals one step on one device with the same global batch. With
``axis_name=None`` the steps run unmapped on one device (no collectives).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from sejax.errors import ConfigError
from sejax.training import augment
from sejax.training.train_state import TrainState, learning_rate

# optax.tree.norm since optax 0.2.5; global_norm is its deprecated alias.
_tree_norm = getattr(getattr(optax, "tree", None), "norm", None) or optax.global_norm

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


def _pmean(x: Any, axis_name: str | None) -> Any:
    return x if axis_name is None else lax.pmean(x, axis_name)


def _psum(x: Any, axis_name: str | None) -> Any:
    return x if axis_name is None else lax.psum(x, axis_name)


def _as_varying(tree: Any, axis_name: str | None) -> Any:
    """Mark replicated values as per-device, so gradients w.r.t. them stay local.

    Under ``shard_map`` with type checking (``check_vma``) JAX otherwise sums the gradient of
    a replicated input over the axis by itself, and the explicit ``pmean`` below would then
    scale it by the device count. Under ``pmap`` (and older JAX) the cast changes nothing.
    """
    if axis_name is None:
        return tree
    cast = getattr(lax, "pcast", None)
    if cast is None:  # JAX before pcast: pvary, or no type tracking at all
        pvary = getattr(lax, "pvary", None)
        return tree if pvary is None else pvary(tree, axis_name)

    def leaf(x: jax.Array) -> jax.Array:
        try:
            return cast(x, axis_name, to="varying")
        except ValueError:  # already varying along the axis
            return x

    return jax.tree.map(leaf, tree)


def _check_bn_axis(state: TrainState, axis_name: str | None) -> None:
    """BatchNorm must average over the step's axis, or the devices' statistics diverge."""
    module = _module(state)
    if module is None or not hasattr(module, "bn_axis_name"):
        return
    if module.bn_axis_name != axis_name:
        raise ConfigError(
            f"the model was built with bn_axis_name={module.bn_axis_name!r} but the step runs "
            f"over axis_name={axis_name!r}: build it with "
            f"build_model(config.model, bn_axis_name={axis_name!r})"
        )


def _module(state: TrainState) -> Any:
    """The Flax module whose ``apply`` is the state's ``apply_fn`` (None for a plain function)."""
    return getattr(state.apply_fn, "__self__", None)


def _dropout_key(state: TrainState, axis_name: str | None) -> jax.Array:
    """A fresh key per step and per device; unmapped runs use device index 0."""
    key = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
    index = 0 if axis_name is None else lax.axis_index(axis_name)
    return jax.random.fold_in(key, index)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy on integer labels, in float32."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def train_step(
    state: TrainState, batch: Batch, *, axis_name: str | None, recipe: augment.Recipe | None = None
) -> tuple[TrainState, Metrics]:
    """One optimizer update on this device's slice ``{'features': [b,T,F], 'label': [b]}``.

    Returns the new (replicated) state and global-batch metrics: loss, accuracy, grad_norm
    (before clipping) and learning_rate (the rate this update used). A ``recipe``
    (`sejax.training.augment`) augments the batch and sets the loss; None is the reference step.
    """
    _check_bn_axis(state, axis_name)
    dropout_key = _dropout_key(state, axis_name)
    if recipe is not None:
        batch = augment.apply(recipe, jax.random.fold_in(dropout_key, 1), batch)

    def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["features"],
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        if recipe is None:
            loss = jnp.mean(cross_entropy(logits, batch["label"]))
        else:
            loss = augment.loss(recipe, logits, batch)
        return loss, (logits, updates["batch_stats"])

    params = _as_varying(state.params, axis_name)
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grads = _pmean(grads, axis_name)
    # Already global when bn_axis_name == axis_name; the mean keeps replicas identical anyway.
    batch_stats = _pmean(batch_stats, axis_name)
    new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)

    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.float32))
    metrics = {
        "loss": _pmean(loss, axis_name),
        "accuracy": _pmean(accuracy, axis_name),
        "grad_norm": _tree_norm(grads),
    }
    lr = learning_rate(new_state.opt_state)
    if lr is not None:
        metrics["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return new_state, metrics


def batch_stats_step(state: TrainState, batch: Batch, *, axis_name: str | None) -> Any:
    """The BatchNorm statistics (mean, var) of this global training batch, as inference runs
    the network: every layer's statistics with the weights inference uses (the current ones,
    or their moving average with ``train.ema_decay``), dropout off.

    The mean of these over several batches replaces the running averages before evaluation
    (precise BatchNorm, ``train.precise_bn_batches``): training itself is unchanged.
    """
    _check_bn_axis(state, axis_name)
    module = _module(state)
    if module is None or not all(hasattr(module, k) for k in ("conv_dropout", "head_dropout")):
        raise ConfigError("train.precise_bn_batches needs a sejax CnnBiLstm train state")
    # Momentum 0: the "running average" the layer returns is exactly this batch's statistics.
    inference_like = module.clone(conv_dropout=0.0, head_dropout=0.0, bn_momentum=0.0)
    _, updates = inference_like.apply(
        {"params": state.inference_params, "batch_stats": state.batch_stats},
        batch["features"],
        train=True,
        mutable=["batch_stats"],
    )
    return _pmean(updates["batch_stats"], axis_name)


def eval_step(
    state: TrainState, batch: Batch, *, axis_name: str | None
) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """Inference on ``{'features', 'label', 'mask'}`` (mask 0 marks padding rows).

    Returns ``(per_example, totals)``: per-example ``logits`` [b, C] and ``loss`` [b] (0 on
    padding), and the masked ``loss_sum``, ``correct`` and ``count`` summed over devices.
    """
    logits = state.apply_fn(
        {"params": state.inference_params, "batch_stats": state.batch_stats},
        batch["features"],
        train=False,
    )
    mask = batch["mask"].astype(jnp.float32)
    loss = cross_entropy(logits, batch["label"]) * mask
    correct = (jnp.argmax(logits, axis=-1) == batch["label"]).astype(jnp.float32) * mask
    totals = {"loss_sum": jnp.sum(loss), "correct": jnp.sum(correct), "count": jnp.sum(mask)}
    return {"logits": logits, "loss": loss}, _psum(totals, axis_name)
