"""sejax computes the network as Keras does: the same weights give the same outputs and loss,
and gradients as exact as float64 allows (the Keras-parity row's check of the stack).

A small version of the reference network (two conv blocks, 8 LSTM units) is built in both
frameworks, sejax's freshly drawn Keras-style parameters (`model.initializers='keras'`) are
loaded into the Keras twin (`benchmarks/keras_twin.py`), and with dropout off the two are run
on one batch: inference logits (BatchNorm running averages), the training-mode loss (batch
statistics), every gradient, and the running averages after training forwards. sejax's
gradients are also checked against the same computation in float64; on this machine
TensorFlow's own convolution gradients sit farther from that reference than sejax's do (the
row's note in experiments/README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
keras_twin = pytest.importorskip("keras_twin")
keras = keras_twin.keras
tf = keras_twin.tf

from sejax.configs.default import get_model_config  # noqa: E402
from sejax.model import models  # noqa: E402

FRAMES, MELS, CHANNELS, UNITS = 16, 16, (4, 8), 8


def _models():
    cfg = get_model_config()
    cfg.update(conv_channels=CHANNELS, lstm_units=UNITS, conv_dropout=0.0, head_dropout=0.0,
               initializers="keras")  # fmt: skip
    model = models.build_model(cfg)
    variables = models.init_variables(model, jax.random.key(3), jnp.zeros((1, FRAMES, MELS)))
    twin = keras_twin.build_model(FRAMES, MELS, 8, UNITS, conv_channels=CHANNELS,
                                  conv_dropout=0.0, head_dropout=0.0)  # fmt: skip
    keras_twin.set_sejax_variables(twin, variables["params"], variables["batch_stats"])
    return cfg, model, variables, twin


def _batch(n=8):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, FRAMES, MELS)).astype(np.float32), rng.integers(0, 8, n)


def _loss(model, variables, x, y, params=None):
    logits, _ = model.apply(
        {"params": variables["params"] if params is None else params,
         "batch_stats": variables["batch_stats"]},
        x, train=True, mutable=["batch_stats"],
    )  # fmt: skip
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def _keras_grads(twin, x, y):
    with tf.GradientTape() as tape:
        logits = twin(x[..., None], training=True)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, True))
    grads = tape.gradient(loss, twin.trainable_variables)
    pairs = zip(twin.trainable_variables, grads, strict=True)
    return float(loss), {v.path: g.numpy() for v, g in pairs}


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def test_same_weights_give_the_same_logits_and_loss():
    _, model, variables, twin = _models()
    x, y = _batch()
    ours = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    theirs = twin.predict(x[..., None], verbose=0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    keras_loss, _ = _keras_grads(twin, x, y)
    loss = jax.jit(lambda v, x, y: _loss(model, v, x, y))(variables, x, y)
    assert float(loss) == pytest.approx(keras_loss, rel=1e-5)


def test_gradients_agree_with_keras_and_with_float64():
    cfg, model, variables, twin = _models()
    x, y = _batch()
    grads = jax.jit(jax.grad(lambda p: _loss(model, variables, x, y, p)))(variables["params"])
    _, keras_grads = _keras_grads(twin, x, y)
    # The recurrent layers and the head: the same numbers in both frameworks.
    lstm = [keras_grads[k] for k in keras_grads if "lstm" in k]
    ours = [w for i in range(2) for d in ("forward", "backward")
            for w in keras_twin._lstm_weights(grads[f"bilstm_{i}"][d])]  # fmt: skip
    assert len(lstm) == len(ours) == 12
    for theirs, mine in zip(lstm, ours, strict=True):
        assert _rel(mine, theirs) < 1e-3
    head = next(g for k, g in keras_grads.items() if "dense" in k and k.endswith("kernel"))
    assert _rel(grads["head"]["kernel"], head) < 1e-3
    # The convolutions: sejax's gradients are float32 roundings of the float64 ones.
    with jax.enable_x64(True):
        cfg64 = cfg.copy_and_resolve_references()
        cfg64.fast_ops = False  # lax's own ops, differentiated by JAX, in float64
        model64 = models.build_model(cfg64)
        as64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        exact = jax.grad(lambda p: _loss(model64, as64, x.astype(np.float64), y, p))(as64["params"])
    conv = [k for k in keras_grads if "conv2d" in k and k.endswith("kernel")]
    for i, key in enumerate(conv):
        reference = np.asarray(exact[f"conv_{i}"]["Conv_0"]["kernel"])
        assert _rel(grads[f"conv_{i}"]["Conv_0"]["kernel"], reference) < 1e-4
        assert _rel(keras_grads[key], reference) < 0.05  # TensorFlow: within a few percent


def test_training_steps_update_the_batchnorm_running_averages_as_keras_does():
    """Inference runs on the running averages (the Keras recipe keeps them): three training
    forwards on shifted, scaled batches move sejax's as they move Keras's moving statistics."""
    _, model, variables, twin = _models()
    forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[1])
    for k in range(3):
        x, _ = _batch(16)
        x = x * (2.0 + k) + 1.5 * k
        variables = {**variables, **forward(variables, x)}
        twin(x[..., None], training=True)
    norms = [layer for layer in twin.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == len(CHANNELS)
    for i, layer in enumerate(norms):
        ours = variables["batch_stats"][f"conv_{i}"]["BatchNorm_0"]
        mean, var = layer.moving_mean.numpy(), layer.moving_variance.numpy()
        np.testing.assert_allclose(ours["mean"], mean, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(ours["var"], var, rtol=1e-4)
        assert not np.allclose(ours["var"], 1.0)  # the averages moved
