"""The reference CNN+BiLSTM in Keras 3 on TensorFlow: the seed's framework, for `peers.py`.

Exactly ``shared/reference-model.md``: four blocks of 3x3 conv (SAME, bias) -> BatchNorm
(momentum 0.99, eps 1e-3) -> ReLU -> 2x2 max-pool (VALID) -> Dropout 0.1, reshape to
``[B, 18, 512]``, two bidirectional LSTMs of 128 units returning sequences, mean over time,
Dropout 0.3, Dense 8 logits; sparse softmax cross-entropy, Adam lr 1e-3. Its trainable
parameter count equals sejax's (`REFERENCE_TRAINABLE_PARAMS`).

The step is what a Keras user gets: ``model.train_on_batch`` after ``model.compile``, which runs
Keras's own train function under ``tf.function`` (``jit_compile=False``, Keras's default on
CPU) or XLA-compiled (``jit_compile=True``). Importing this module imports TensorFlow.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

REFERENCE_TRAINABLE_PARAMS = 1_293_640
CONV_CHANNELS = (32, 64, 128, 128)


def build_model(
    num_frames: int = 301,
    num_mels: int = 64,
    num_classes: int = 8,
    lstm_units: int = 128,
    *,
    conv_channels: tuple[int, ...] = CONV_CHANNELS,
    conv_dropout: float = 0.1,
    head_dropout: float = 0.3,
) -> keras.Model:
    """The reference network as a functional Keras model: ``[B, T, F, 1]`` -> logits (the
    keyword arguments shrink it for tests, as sejax's ``config.model`` does)."""
    inputs = keras.Input((num_frames, num_mels, 1), name="features")
    x = inputs
    for channels in conv_channels:
        x = keras.layers.Conv2D(channels, 3, padding="same")(x)
        x = keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3)(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2, padding="valid")(x)
        x = keras.layers.Dropout(conv_dropout)(x)
    _, frames, bands, channels = x.shape
    x = keras.layers.Reshape((frames, bands * channels))(x)
    for _ in range(2):
        lstm = keras.layers.LSTM(lstm_units, return_sequences=True)
        x = keras.layers.Bidirectional(lstm, merge_mode="concat")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = keras.layers.Dropout(head_dropout)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    return keras.Model(inputs, outputs, name="reference_cnn_bilstm")


def _lstm_weights(cell: dict) -> list[np.ndarray]:
    """A Flax OptimizedLSTMCell's per-gate kernels as Keras's fused [kernel, recurrent, bias]
    (gates i, f, c, o in both)."""
    gates = "ifgo"
    return [
        np.concatenate([np.asarray(cell[f"i{g}"]["kernel"]) for g in gates], axis=1),
        np.concatenate([np.asarray(cell[f"h{g}"]["kernel"]) for g in gates], axis=1),
        np.concatenate([np.asarray(cell[f"h{g}"]["bias"]) for g in gates], axis=0),
    ]


def set_sejax_variables(model: keras.Model, params: dict, batch_stats: dict) -> keras.Model:
    """Loads a sejax CnnBiLstm's variables into ``build_model``'s network of the same shape,
    so both frameworks start from the same weights (the parity checks)."""
    layers = {kind: [layer for layer in model.layers if isinstance(layer, kind)]
              for kind in (keras.layers.Conv2D, keras.layers.BatchNormalization,
                           keras.layers.Bidirectional, keras.layers.Dense)}  # fmt: skip
    convs = zip(layers[keras.layers.Conv2D], layers[keras.layers.BatchNormalization], strict=True)
    for i, (conv, norm) in enumerate(convs):
        p, s = params[f"conv_{i}"], batch_stats[f"conv_{i}"]["BatchNorm_0"]
        conv.set_weights([np.asarray(p["Conv_0"]["kernel"]), np.asarray(p["Conv_0"]["bias"])])
        bn = p["BatchNorm_0"]
        norm.set_weights([np.asarray(x) for x in (bn["scale"], bn["bias"], s["mean"], s["var"])])
    for i, layer in enumerate(layers[keras.layers.Bidirectional]):
        cells = params[f"bilstm_{i}"]
        layer.set_weights(_lstm_weights(cells["forward"]) + _lstm_weights(cells["backward"]))
    (head,) = layers[keras.layers.Dense]
    head.set_weights([np.asarray(params["head"]["kernel"]), np.asarray(params["head"]["bias"])])
    return model


def compile_model(model: keras.Model, *, jit_compile: bool) -> keras.Model:
    """Adam 1e-3 and sparse softmax cross-entropy on logits, as the reference prescribes."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def make_step(
    batch: int,
    *,
    jit_compile: bool = False,
    seed: int = 0,
    num_frames: int = 301,
    num_mels: int = 64,
    num_classes: int = 8,
) -> tuple[Callable[[], float], keras.Model]:
    """``(step, model)``: ``step()`` runs one ``train_on_batch`` on a fixed batch and waits.

    The batch is a TensorFlow tensor already (sejax's side times a device-resident batch too);
    ``train_on_batch`` returns the loss as a Python float, so the step has finished on return.
    """
    keras.utils.set_random_seed(seed)
    model = compile_model(build_model(num_frames, num_mels, num_classes), jit_compile=jit_compile)
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, num_frames, num_mels, 1)).astype(np.float32))
    y = tf.constant(rng.integers(0, num_classes, size=batch).astype(np.int32))

    def step() -> float:
        return float(model.train_on_batch(x, y))

    return step, model


def versions() -> dict[str, object]:
    return {
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
    }
