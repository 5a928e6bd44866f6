"""On-device augmentation of training batches, and the loss options that go with it.

Everything here is pure ``jax.numpy`` on one device's slice of a normalised log-Mel batch
``{'features': [b, T, F], 'label': [b]}``, keyed by the train step's rng (which folds in the
step and the device), so a resumed run augments exactly as an uninterrupted one. The train
step (``sejax.training.steps``) calls ``apply`` before the forward pass and ``loss`` after it
when the
run's ``Recipe`` is not None; ``from_config`` returns None when every option is off, so the
reference training step runs untouched.

Order: speed, pitch, gain, noise, SpecAugment masks, mixup. Speed and pitch are spectrogram
approximations: the time axis is resampled (a tempo change, pitch kept) and the Mel axis is
shifted by a fraction of bands (a vocal-tract-length-like warp), both by linear interpolation
with the edge frame or band repeated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What the train step does to a batch and its loss. Zero / None switches a part off.

    ``band_std`` is the normalisation std per Mel band (dB per normalised unit), so a gain in
    dB becomes the right offset per band; ``class_weights`` multiply each example's loss.
    """

    num_classes: int
    time_masks: int = 0
    time_mask_width: int = 0
    freq_masks: int = 0
    freq_mask_width: int = 0
    mixup_alpha: float = 0.0
    gain_db: float = 0.0
    noise_std: float = 0.0
    speed: float = 0.0
    pitch_bands: float = 0.0
    label_smoothing: float = 0.0
    class_weights: tuple[float, ...] | None = None
    band_std: tuple[float, ...] | None = None

    @property
    def augments(self) -> bool:
        return bool(
            (self.time_masks and self.time_mask_width)
            or (self.freq_masks and self.freq_mask_width)
            or self.mixup_alpha or self.gain_db or self.noise_std or self.speed
            or self.pitch_bands
        )  # fmt: skip

    @property
    def changes_loss(self) -> bool:
        return bool(self.label_smoothing or self.class_weights is not None)


CLASS_WEIGHTS = ("none", "balanced")  # train.class_weights: plain loss, or inverse frequency


def balanced_class_weights(counts: Sequence[int]) -> tuple[float, ...]:
    """``N / (K * n_c)`` per class over the K classes present (scikit-learn's 'balanced'):
    the training set's mean example weight stays 1. Absent classes get 0."""
    counts = np.asarray(counts, np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return tuple(float(w) for w in weights)


def from_config(
    config: ml_collections.ConfigDict,
    *,
    band_std: np.ndarray | None = None,
    class_counts: Sequence[int] | None = None,
) -> Recipe | None:
    """The run's recipe from ``config.augment`` and ``config.train``; None when all is off.

    ``class_counts`` (training examples per class) are needed for
    ``train.class_weights='balanced'``.
    """
    a = config.augment
    weights = None
    if config.train.class_weights == "balanced":
        if class_counts is None:
            raise ValueError("train.class_weights='balanced' needs the training class counts")
        weights = balanced_class_weights(class_counts)
    recipe = Recipe(
        num_classes=int(config.model.num_classes),
        time_masks=int(a.time_masks),
        time_mask_width=int(a.time_mask_width),
        freq_masks=int(a.freq_masks),
        freq_mask_width=int(a.freq_mask_width),
        mixup_alpha=float(a.mixup_alpha),
        gain_db=float(a.gain_db),
        noise_std=float(a.noise_std),
        speed=float(a.speed),
        pitch_bands=float(a.pitch_bands),
        label_smoothing=float(config.train.label_smoothing),
        class_weights=weights,
        band_std=None if band_std is None else tuple(float(s) for s in np.ravel(band_std)),
    )
    return recipe if recipe.augments or recipe.changes_loss else None


# ------------------------------------------------------------------------------------------
# The transforms, each [b, T, F] -> [b, T, F].


def _interpolate(x: jax.Array, positions: jax.Array, axis: int) -> jax.Array:
    """``x`` read at fractional ``positions`` [b, n] along ``axis`` (1 or 2), clamped."""
    size = x.shape[axis]
    positions = jnp.clip(positions, 0.0, size - 1)
    lo = jnp.floor(positions).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, size - 1)
    frac = positions - lo
    expand = (lambda i: i[:, :, None]) if axis == 1 else (lambda i: i[:, None, :])
    x_lo = jnp.take_along_axis(x, expand(lo), axis=axis)
    x_hi = jnp.take_along_axis(x, expand(hi), axis=axis)
    return x_lo + expand(frac) * (x_hi - x_lo)


def speed(rng: jax.Array, x: jax.Array, max_change: float) -> jax.Array:
    """Time axis resampled by a factor in ``[1 - max_change, 1 + max_change]`` per example
    (> 1: faster speech, the end padded with the last frame)."""
    b, t, _ = x.shape
    factor = jax.random.uniform(rng, (b, 1), minval=1 - max_change, maxval=1 + max_change)
    return _interpolate(x, jnp.arange(t, dtype=jnp.float32)[None, :] * factor, axis=1)


def pitch(rng: jax.Array, x: jax.Array, max_bands: float) -> jax.Array:
    """Content moved up or down the Mel axis by up to ``max_bands`` bands per example."""
    b, _, f = x.shape
    shift = jax.random.uniform(rng, (b, 1), minval=-max_bands, maxval=max_bands)
    return _interpolate(x, jnp.arange(f, dtype=jnp.float32)[None, :] - shift, axis=2)


def gain(
    rng: jax.Array, x: jax.Array, max_db: float, band_std: Sequence[float] | None
) -> jax.Array:
    """A gain of up to ``max_db`` dB: in log-Mel dB an additive offset, divided by the
    normalisation std of each band to land in normalised units."""
    db = jax.random.uniform(rng, (x.shape[0], 1, 1), minval=-max_db, maxval=max_db)
    std = jnp.ones(x.shape[-1]) if band_std is None else jnp.asarray(band_std, jnp.float32)
    return x + db / std


def noise(rng: jax.Array, x: jax.Array, max_std: float) -> jax.Array:
    """Gaussian noise whose std is uniform in ``[0, max_std]`` per example (normalised units)."""
    level_rng, noise_rng = jax.random.split(rng)
    level = jax.random.uniform(level_rng, (x.shape[0], 1, 1), maxval=max_std)
    return x + level * jax.random.normal(noise_rng, x.shape, x.dtype)


def mask_axis(rng: jax.Array, x: jax.Array, num_masks: int, max_width: int, axis: int) -> jax.Array:
    """SpecAugment: ``num_masks`` spans of 0..``max_width`` cells along ``axis`` set to 0."""
    b, size = x.shape[0], x.shape[axis]
    width_rng, start_rng = jax.random.split(rng)
    width = jax.random.randint(width_rng, (b, num_masks), 0, min(max_width, size) + 1)
    start = jnp.floor(jax.random.uniform(start_rng, (b, num_masks)) * (size - width + 1))
    pos = jnp.arange(size)[None, None, :]
    masked = ((pos >= start[..., None]) & (pos < (start + width)[..., None])).any(axis=1)
    masked = masked[:, :, None] if axis == 1 else masked[:, None, :]
    return jnp.where(masked, jnp.zeros((), x.dtype), x)


def mixup(
    rng: jax.Array, x: jax.Array, targets: jax.Array, alpha: float
) -> tuple[jax.Array, jax.Array]:
    """Each example mixed with another of the batch, weight ``max(l, 1 - l)``, l ~ Beta."""
    lam_rng, perm_rng = jax.random.split(rng)
    lam = jax.random.beta(lam_rng, alpha, alpha, (x.shape[0],))
    lam = jnp.maximum(lam, 1.0 - lam)  # the example keeps the larger share (and its label)
    perm = jax.random.permutation(perm_rng, x.shape[0])
    x = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm]
    return x, lam[:, None] * targets + (1 - lam[:, None]) * targets[perm]


def apply(recipe: Recipe, rng: jax.Array, batch: Batch) -> Batch:
    """The augmented batch; with mixup it also carries soft ``target`` labels [b, C]."""
    x = batch["features"]
    keys = iter(jax.random.split(rng, 7))
    if recipe.speed:
        x = speed(next(keys), x, recipe.speed)
    if recipe.pitch_bands:
        x = pitch(next(keys), x, recipe.pitch_bands)
    if recipe.gain_db:
        x = gain(next(keys), x, recipe.gain_db, recipe.band_std)
    if recipe.noise_std:
        x = noise(next(keys), x, recipe.noise_std)
    if recipe.freq_masks and recipe.freq_mask_width:
        x = mask_axis(next(keys), x, recipe.freq_masks, recipe.freq_mask_width, axis=2)
    if recipe.time_masks and recipe.time_mask_width:
        x = mask_axis(next(keys), x, recipe.time_masks, recipe.time_mask_width, axis=1)
    out = dict(batch, features=x)
    if recipe.mixup_alpha:
        targets = jax.nn.one_hot(batch["label"], recipe.num_classes, dtype=jnp.float32)
        out["features"], out["target"] = mixup(next(keys), x, targets, recipe.mixup_alpha)
    return out


def loss(recipe: Recipe, logits: jax.Array, batch: Batch) -> jax.Array:
    """Mean softmax cross-entropy against the (mixed, smoothed) targets, class-weighted.

    With class weights each example's loss is multiplied by the weight of its (mixed) label;
    the mean is over examples, so balanced weights keep the loss on the usual scale.
    """
    targets: Any = batch.get("target")
    if targets is None:
        targets = jax.nn.one_hot(batch["label"], logits.shape[-1], dtype=jnp.float32)
    smoothed = targets
    if recipe.label_smoothing:
        smoothed = optax.smooth_labels(targets, recipe.label_smoothing)
    per_example = optax.softmax_cross_entropy(logits.astype(jnp.float32), smoothed)
    if recipe.class_weights is not None:
        per_example = per_example * (targets @ jnp.asarray(recipe.class_weights, jnp.float32))
    return jnp.mean(per_example)
