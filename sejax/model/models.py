"""The CNN+BiLSTM speech-emotion classifier (``shared/reference-model.md``).

Four conv blocks turn a log-Mel spectrogram ``[B, T, F]`` into a shorter sequence of
frequency-pooled feature vectors, two bidirectional LSTM layers read that sequence, and the
sequence is pooled over time into one vector per clip for the linear classifier. The defaults
of ``sejax.configs.default.get_model_config()`` build exactly the reference network.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from flax import traverse_util
from jax import lax

from sejax.errors import ConfigError
from sejax.model import onednn
from sejax.model import xla_cpu_ops as kernels

TEMPORAL_POOLINGS = ("mean", "max", "attention")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DROPOUT_RNGS = ("hash", "jax")
# Convolution gradients with model.fast_ops: kernels.conv2d_same's forward-conv input gradient
# and im2col-matmul kernel gradient, or XLA's own autodiff (faster on some CPUs and batches).
CONV_GRADS = ("im2col", "xla")
# Which kernel computes the convolutions (model.conv_impl; `sejax.model.onednn`): XLA's, oneDNN's,
# or 'auto': oneDNN's on CPU when its library builds. Same parameters either way.
CONV_IMPLS = onednn.IMPLS
# What computes a conv block's BatchNorm -> ReLU -> max-pool (model.block_impl): XLA's fusions
# of Flax's ops, or one C++ pass each way (`sejax.model.onednn.bn_relu_pool`, CPU, float32,
# pool 2; XLA's elsewhere), or 'auto': the C++ op on CPU when the library builds. Same
# variables and values either way.
BLOCK_IMPLS = onednn.BLOCK_IMPLS
# How fresh parameters are drawn (model.initializers): Flax's defaults, or as Keras 3 draws
# the same layers (`keras_initialization`).
INITIALIZERS = ("flax", "keras")
LSTM_GATES = ("i", "f", "g", "o")  # Flax's gate names, in Keras's kernel order (i, f, c, o)
# Allowed values of the string-valued model keys (config.model.<key>), checked by `build_model`
# and collected by the config's validation.
CHOICES: dict[str, tuple[str, ...]] = {
    "temporal_pooling": TEMPORAL_POOLINGS,
    "dtype": tuple(DTYPES),
    "conv_grad": CONV_GRADS,
    "conv_impl": CONV_IMPLS,
    "block_impl": BLOCK_IMPLS,
    "dropout_rng": DROPOUT_RNGS,
    "initializers": INITIALIZERS,
}


def _compute_dtype(name: str) -> Any:
    if name not in DTYPES:
        raise ConfigError(f"model.dtype={name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def _check_pooling(name: str) -> None:
    if name not in TEMPORAL_POOLINGS:
        raise ConfigError(
            f"model.temporal_pooling={name!r} is not one of {list(TEMPORAL_POOLINGS)}"
        )


class Dropout(nn.Module):
    """Inverted dropout drawing its mask from ``rng``: 'hash' (``kernels.hash_keep_mask``,
    ~5x cheaper on XLA:CPU) or 'jax' (``flax.linen.Dropout``, threefry bernoulli)."""

    rate: float
    rng: str = "hash"

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, deterministic: bool) -> jnp.ndarray:
        if self.rng == "jax":
            return nn.Dropout(self.rate, deterministic=deterministic)(x)
        if deterministic or self.rate == 0.0:
            return x
        keep = kernels.hash_keep_mask(self.make_rng("dropout"), x.shape, self.rate)
        return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))


class BatchNormReluPool(nn.Module):
    """``nn.BatchNorm`` -> ReLU -> 2x2 max-pool (VALID) as one fused op on XLA:CPU
    (`onednn.bn_relu_pool`). Its variables are ``nn.BatchNorm``'s (``scale``, ``bias``;
    ``mean``, ``var`` in ``batch_stats``), updated as Flax updates them, so checkpoints move
    between ``model.block_impl`` choices."""

    momentum: float = 0.99
    epsilon: float = 1e-3
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
        if not train:
            return onednn.bn_relu_pool.inference(
                x, scale, bias, ra_mean.value, ra_var.value, epsilon=self.epsilon
            )
        y, mean, var = onednn.bn_relu_pool.training(
            x, scale, bias, epsilon=self.epsilon, axis_name=self.axis_name
        )
        if not self.is_initializing():
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y


class ConvBlock(nn.Module):
    """3x3 conv (SAME, bias) -> BatchNorm -> ReLU -> max-pool (VALID, floor) -> dropout."""

    features: int
    kernel: int = 3
    pool: int = 2
    dropout: float = 0.1
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32
    fast_ops: bool = True
    conv_grad: str = "im2col"
    conv_impl: str = "auto"
    block_impl: str = "auto"
    dropout_rng: str = "hash"

    def _fusable(self, x: jnp.ndarray) -> bool:
        """Whether the fused op can compute this block: 2x2 pooling, and float32 activations
        and BatchNorm variables (not, e.g., float64 variables under ``jax_enable_x64``)."""
        bn = [self.variables.get(c, {}).get("BatchNorm_0", {}) for c in ("params", "batch_stats")]
        leaves = jax.tree.leaves(bn)
        return self.pool == 2 and all(a.dtype == jnp.float32 for a in (x, *leaves))

    def convolution(self) -> Callable[..., jax.Array]:
        """The ``lax.conv_general_dilated`` drop-in this block's ``nn.Conv`` runs (also what
        `benchmarks/step_profile.py` times alone)."""
        # fast_ops: same math, formulated for XLA:CPU (xla_cpu_ops); parameters identical.
        im2col = self.fast_ops and self.conv_grad == "im2col"
        conv = kernels.conv_general_dilated if im2col else lax.conv_general_dilated
        if onednn.use_onednn(self.conv_impl):  # float32 convs on oneDNN, others as before
            conv = functools.partial(onednn.conv_general_dilated, fallback=conv)
        return conv

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        x = nn.Conv(
            self.features,
            (self.kernel, self.kernel),
            padding="SAME",
            dtype=self.dtype,
            conv_general_dilated=self.convolution(),
        )(x)
        # The same math as below, one pass each way (the same variable names).
        if self._fusable(x) and onednn.use_fused_block(self.block_impl):
            x = BatchNormReluPool(
                self.bn_momentum, self.bn_epsilon, self.bn_axis_name, name="BatchNorm_0"
            )(x, train=train)
            return Dropout(self.dropout, self.dropout_rng)(x, deterministic=not train)
        # axis_name makes the batch statistics those of the global batch under pmap/shard_map.
        x = nn.BatchNorm(
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            axis_name=self.bn_axis_name,
            dtype=self.dtype,
        )(x)
        x = nn.relu(x)
        if self.fast_ops:
            x = kernels.max_pool(x, self.pool)
        else:
            window = (self.pool, self.pool)
            x = nn.max_pool(x, window, strides=window, padding="VALID")
        return Dropout(self.dropout, self.dropout_rng)(x, deterministic=not train)


class BiLstm(nn.Module):
    """One bidirectional LSTM layer returning the full sequence, directions concatenated."""

    units: int
    unroll: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        # Two distinct RNN objects: a shared one would tie the two directions' weights.
        def rnn(direction: str) -> nn.RNN:
            cell = nn.OptimizedLSTMCell(self.units, dtype=self.dtype, name=direction)
            return nn.RNN(cell, unroll=self.unroll)

        return nn.Bidirectional(rnn("forward"), rnn("backward"))(x)


class AttentionPooling(nn.Module):
    """Softmax attention over time: a learned score per frame, then the weighted mean."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        h = nn.tanh(nn.Dense(self.hidden, dtype=self.dtype)(x))
        scores = nn.Dense(1, dtype=self.dtype)(h)[..., 0].astype(jnp.float32)
        weights = nn.softmax(scores, axis=-1)
        return jnp.einsum("bt,btd->bd", weights, x.astype(jnp.float32))


class CnnBiLstm(nn.Module):
    """Log-Mel ``[B, T, F]`` (or ``[B, T, F, 1]``) -> emotion logits ``[B, num_classes]``.

    Fields mirror ``config.model``. ``bn_axis_name`` names the mapped axis over which
    BatchNorm averages its batch statistics (the data-parallel axis), so the network sees
    the statistics of the global batch whatever the device count. ``dtype`` is the compute
    dtype; parameters, BatchNorm statistics and logits stay float32.
    """

    num_classes: int = 8
    conv_channels: Sequence[int] = (32, 64, 128, 128)
    conv_kernel: int = 3
    pool: int = 2
    conv_dropout: float = 0.1
    lstm_layers: int = 2
    lstm_units: int = 128
    temporal_pooling: str = "mean"
    head_dropout: float = 0.3
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    scan_unroll: int = 1
    dtype: str = "float32"
    fast_ops: bool = True
    conv_grad: str = "im2col"
    conv_impl: str = "auto"
    block_impl: str = "auto"
    dropout_rng: str = "hash"
    initializers: str = "flax"  # read by `init_variables`, not by the forward pass
    bn_axis_name: str | None = None

    def _check_input(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] != 1:
            raise ValueError(f"expected features [B, T, F] or [B, T, F, 1], got {x.shape}")
        frames, bands = x.shape[1], x.shape[2]
        blocks = len(self.conv_channels)
        if frames // self.pool**blocks < 1 or bands // self.pool**blocks < 1:
            raise ConfigError(
                f"input of {frames} frames x {bands} Mel bands is too small for {blocks} conv "
                f"blocks with {self.pool}x{self.pool} pooling (each axis needs at least "
                f"{self.pool**blocks}): raise features.duration_s (or features.n_mels) or use "
                "fewer model.conv_channels"
            )
        return x

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        _check_pooling(self.temporal_pooling)
        dtype = _compute_dtype(self.dtype)
        x = self._check_input(x).astype(dtype)

        for i, channels in enumerate(self.conv_channels):
            x = ConvBlock(
                channels,
                kernel=self.conv_kernel,
                pool=self.pool,
                dropout=self.conv_dropout,
                bn_momentum=self.bn_momentum,
                bn_epsilon=self.bn_epsilon,
                bn_axis_name=self.bn_axis_name,
                dtype=dtype,
                fast_ops=self.fast_ops,
                conv_grad=self.conv_grad,
                conv_impl=self.conv_impl,
                block_impl=self.block_impl,
                dropout_rng=self.dropout_rng,
                name=f"conv_{i}",
            )(x, train=train)

        # Time stays the sequence axis; each step sees all pooled bands of all channels.
        batch, frames, bands, channels = x.shape
        x = x.reshape(batch, frames, bands * channels)

        for i in range(self.lstm_layers):
            x = BiLstm(self.lstm_units, unroll=self.scan_unroll, dtype=dtype, name=f"bilstm_{i}")(x)

        if self.temporal_pooling == "mean":
            x = jnp.mean(x.astype(jnp.float32), axis=1)
        elif self.temporal_pooling == "max":
            x = jnp.max(x, axis=1)
        else:
            x = AttentionPooling(self.lstm_units, dtype=dtype, name="attention")(x)

        x = Dropout(self.head_dropout, self.dropout_rng)(x, deterministic=not train)
        x = nn.Dense(self.num_classes, dtype=dtype, name="head")(x)
        return x.astype(jnp.float32)


def build_model(
    model_cfg: ml_collections.ConfigDict, *, bn_axis_name: str | None = None
) -> CnnBiLstm:
    """A ``CnnBiLstm`` from ``config.model``; unknown keys and bad values raise ConfigError."""
    known = {
        f.name for f in CnnBiLstm.__dataclass_fields__.values() if f.name not in ("parent", "name")
    } - {"bn_axis_name"}
    cfg = dict(model_cfg)
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown model config keys {unknown}; known keys: {sorted(known)}")
    for key, allowed in CHOICES.items():
        if key in cfg and cfg[key] not in allowed:
            raise ConfigError(
                f"model.{key}={cfg[key]!r} is not allowed; choose one of {list(allowed)}"
            )
    ints = ("num_classes", "conv_kernel", "pool", "lstm_layers", "lstm_units", "scan_unroll")
    for key in ints:
        low = 0 if key == "lstm_layers" else 1
        if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < low):
            raise ConfigError(f"model.{key}={cfg[key]!r} must be an integer >= {low}")
    if "conv_channels" in cfg:
        channels = tuple(cfg["conv_channels"])
        if not all(isinstance(c, int) and c > 0 for c in channels):
            raise ConfigError(f"model.conv_channels={channels!r} must be positive integers")
        cfg["conv_channels"] = channels
    if "fast_ops" in cfg and not isinstance(cfg["fast_ops"], bool):
        raise ConfigError(f"model.fast_ops={cfg['fast_ops']!r} must be True or False")
    for key in ("conv_dropout", "head_dropout"):
        if key in cfg and not 0.0 <= cfg[key] < 1.0:
            raise ConfigError(f"model.{key}={cfg[key]!r} must be in [0, 1)")
    return CnnBiLstm(**cfg, bn_axis_name=bn_axis_name)


def init_variables(model: nn.Module, rng: jax.Array, x: jnp.ndarray) -> dict[str, Any]:
    """Fresh variables for ``model`` on inputs shaped like ``x``, drawn the way a
    `CnnBiLstm`'s ``initializers`` names: Flax's defaults, or Keras's
    (`keras_initialization`). Other modules get their own (Flax) initialisers."""
    variables = model.init(rng, x, train=False)  # Flax's draws stay those of earlier runs
    if getattr(model, "initializers", "flax") == "keras":
        keras_rng = jax.random.fold_in(rng, 1)
        variables = dict(variables, params=keras_initialization(variables["params"], keras_rng))
    return variables


def keras_initialization(params: Any, rng: jax.Array) -> Any:
    """``params`` re-drawn as Keras 3 initialises the same layers, for like-for-like
    comparisons with a Keras script of the network.

    Conv and Dense kernels: ``glorot_uniform`` (fans count the receptive field). Each LSTM
    cell: Keras keeps one input kernel ``[in, 4u]`` (``glorot_uniform`` over that whole shape)
    and one recurrent kernel ``[u, 4u]`` (``orthogonal`` over the whole shape, so the four
    gates' blocks share one orthonormal basis), gates in the order i, f, c, o, and a bias of
    zeros except ones for the forget gate (``unit_forget_bias``). Flax's
    ``OptimizedLSTMCell`` keeps a kernel per gate, so the fused draws are split into them.
    Biases and BatchNorm parameters are the same in both (zeros; scale ones).
    """
    flat = traverse_util.flatten_dict(params)
    cells = sorted({path[:-2] for path in flat if path[-2:] == ("ii", "kernel")})
    keys = iter(jax.random.split(rng, len(flat) + 2 * len(cells)))
    glorot = jax.nn.initializers.glorot_uniform()
    out = dict(flat)
    for path, value in flat.items():
        in_cell = path[:-2] in cells
        if path[-1] == "kernel" and not in_cell:  # conv [kh, kw, in, out] or dense [in, out]
            out[path] = glorot(next(keys), value.shape, value.dtype)
    for cell in cells:
        kernel = flat[(*cell, "ii", "kernel")]
        (inputs, units), dtype = kernel.shape, kernel.dtype
        input_kernel = glorot(next(keys), (inputs, 4 * units), dtype)
        recurrent = jax.nn.initializers.orthogonal()(next(keys), (units, 4 * units), dtype)
        for g, gate in enumerate(LSTM_GATES):
            block = slice(g * units, (g + 1) * units)
            out[(*cell, f"i{gate}", "kernel")] = input_kernel[:, block]
            out[(*cell, f"h{gate}", "kernel")] = recurrent[:, block]
            out[(*cell, f"h{gate}", "bias")] = jnp.full((units,), gate == "f", dtype)
    return traverse_util.unflatten_dict(out)
