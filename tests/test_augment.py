"""On-device augmentation and loss options: off by default, each transform does its one job,
and the train step with a recipe is deterministic in the step's rng."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sejax.configs import loading as config_lib
from sejax.configs.default import get_config, get_model_config
from sejax.configs.validation import validate
from sejax.errors import ConfigError
from sejax.model.models import build_model
from sejax.training import augment, steps
from sejax.training.train_state import init_train_state, make_optimizer

B, T, F, C = 8, 16, 8, 8
KEY = jax.random.key(0)


def batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"features": jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32),
            "label": jnp.arange(B, dtype=jnp.int32) % C}  # fmt: skip


def test_defaults_leave_the_reference_step_untouched():
    assert augment.from_config(get_config(), band_std=np.ones(F), class_counts=[1] * C) is None
    off = augment.Recipe(num_classes=C)
    assert not off.augments and not off.changes_loss
    b = batch()
    out = augment.apply(off, KEY, b)
    assert set(out) == {"features", "label"}
    np.testing.assert_array_equal(out["features"], b["features"])
    logits = jax.random.normal(KEY, (B, C))
    np.testing.assert_allclose(
        augment.loss(off, logits, b), jnp.mean(steps.cross_entropy(logits, b["label"])), rtol=1e-6
    )


def test_from_config_reads_every_key():
    config = config_lib.apply_overrides(get_config(), [
        ("augment.time_masks", "2"), ("augment.freq_masks", "1"), ("augment.mixup_alpha", "0.2"),
        ("augment.gain_db", "6"), ("augment.noise_std", "0.1"), ("augment.speed", "0.1"),
        ("augment.pitch_bands", "2"), ("train.label_smoothing", "0.1"),
        ("train.class_weights", "balanced"),
    ])  # fmt: skip
    recipe = augment.from_config(config, band_std=np.full(64, 2.0), class_counts=[1, 3] + [2] * 6)
    assert recipe.time_masks == 2 and recipe.time_mask_width == 20 and recipe.freq_masks == 1
    assert recipe.mixup_alpha == 0.2 and recipe.gain_db == 6 and recipe.speed == 0.1
    assert recipe.band_std == (2.0,) * 64 and recipe.label_smoothing == 0.1
    assert recipe.class_weights[:2] == pytest.approx((2.0, 2 / 3))  # 16 / (8 * n_c)


def test_balanced_weights_keep_the_mean_example_weight_at_one():
    counts = np.array([96, 192, 192, 0, 192])
    w = np.array(augment.balanced_class_weights(counts))
    assert w[3] == 0 and np.sum(w * counts) / counts.sum() == pytest.approx(1.0)
    assert w[0] == pytest.approx(2 * w[1])


def test_masks_zero_whole_spans():
    x = jnp.ones((B, T, F))
    mask_axis = jax.jit(augment.mask_axis, static_argnums=(2, 3, 4))  # one compile per axis
    timed = mask_axis(KEY, x, 2, 3, 1)
    zero_frames = (timed == 0).all(axis=2)  # a masked frame is masked in every band
    assert ((timed == 0) == zero_frames[:, :, None]).all()
    assert zero_frames.sum() > 0 and zero_frames.sum(axis=1).max() <= 6
    banded = mask_axis(KEY, x, 1, F, 2)
    zero_bands = (banded == 0).all(axis=1)
    assert ((banded == 0) == zero_bands[:, None, :]).all()
    np.testing.assert_array_equal(mask_axis(KEY, x, 2, 3, 1), timed)  # same key, same masks


def test_gain_is_a_db_offset_per_band_and_noise_is_zero_mean():
    x = jnp.zeros((B, T, F))
    std = np.linspace(1.0, 4.0, F)
    gained = np.asarray(augment.gain(KEY, x, 6.0, std))
    db = gained * std  # back to dB: one offset per example, the same in every band and frame
    assert np.allclose(db, db[:, :1, :1]) and np.abs(db).max() <= 6.0 and db.std() > 0.5
    noisy = np.asarray(augment.noise(KEY, jnp.zeros((64, T, F)), 0.5))
    assert abs(noisy.mean()) < 0.02 and 0.1 < noisy.std() < 0.5


def test_speed_and_pitch_resample_the_right_axis():
    ramp = jnp.broadcast_to(jnp.arange(T, dtype=jnp.float32)[None, :, None], (B, T, F))
    sped = np.asarray(augment.speed(KEY, ramp, 0.2))
    slopes = sped[:, 1, 0] - sped[:, 0, 0]  # frame t reads source frame t * factor
    assert np.all((slopes >= 0.8 - 1e-6) & (slopes <= 1.2 + 1e-6)) and slopes.std() > 0
    assert np.allclose(sped, sped[:, :, :1])  # bands untouched
    bands = jnp.broadcast_to(jnp.arange(F, dtype=jnp.float32)[None, None, :], (B, T, F))
    shifted = np.asarray(augment.pitch(KEY, bands, 2.0))
    assert np.allclose(shifted, shifted[:, :1, :])  # frames untouched
    middle = shifted[:, 0, F // 2] - F // 2  # the band read: -shift
    assert np.abs(middle).max() <= 2.0 and middle.std() > 0


def test_mixup_keeps_the_larger_share_and_its_label():
    b = batch()
    targets = jax.nn.one_hot(b["label"], C)
    x, soft = jax.jit(augment.mixup, static_argnums=3)(KEY, b["features"], targets, 0.4)
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-6)
    assert (soft.max(-1) >= 0.5).all() and (jnp.argmax(soft, -1) == b["label"]).all()
    assert x.shape == b["features"].shape


def test_loss_smooths_and_weights():
    logits = jax.random.normal(KEY, (B, C))
    b = batch()
    smooth = augment.Recipe(num_classes=C, label_smoothing=0.2)
    want = optax.softmax_cross_entropy(logits, 0.8 * jax.nn.one_hot(b["label"], C) + 0.2 / C)
    np.testing.assert_allclose(augment.loss(smooth, logits, b), want.mean(), rtol=1e-6)
    weights = tuple(float(w) for w in np.arange(1, C + 1))
    weighted = augment.Recipe(num_classes=C, class_weights=weights)
    ce = steps.cross_entropy(logits, b["label"])
    want = jnp.mean(ce * jnp.asarray(weights)[b["label"]])
    np.testing.assert_allclose(augment.loss(weighted, logits, b), want, rtol=1e-6)


def test_config_rejects_bad_values():
    for key, value, message in [
        ("augment.time_masks", "-1", "integer >= 0"),
        ("augment.mixup_alpha", "-0.5", "must be >= 0"),
        ("augment.speed", "1.5", "must be < 1"),
        ("augment.pitch_bands", "64.0", "must be < features.n_mels=64"),
        ("train.label_smoothing", "1.0", r"must be in \[0, 1\)"),
        ("train.class_weights", "inverse", "choose one of"),
    ]:
        config = config_lib.apply_overrides(get_config(), [(key, value)])
        with pytest.raises(ConfigError, match=message):
            validate(config)


# ------------------------------------------------------------------------------------------
# The hook in the train step.


@pytest.fixture(scope="module")
def state():
    cfg = get_model_config()
    cfg.conv_channels, cfg.lstm_layers = (4,), 0  # no LSTM: the step compiles in seconds
    tx = make_optimizer(get_config().train, steps_per_epoch=10)
    with jax.threefry_partitionable(False):  # faster to compile on CPU; values do not matter
        return init_train_state(jax.random.PRNGKey(0), build_model(cfg), (1, T, F), tx)


def test_train_step_with_a_recipe_is_deterministic_in_the_step(state):
    """The recipe-off step is the reference (test_defaults_leave_the_reference_step_untouched
    and tests/test_steps.py). One compile, without mixup (its Beta sampler is slow to
    compile on CPU; test_mixup_keeps_the_larger_share_and_its_label covers it)."""
    full = augment.Recipe(num_classes=C, time_masks=2, time_mask_width=4, freq_masks=1,
                          freq_mask_width=2, gain_db=6.0, noise_std=0.2,
                          speed=0.1, pitch_bands=1.0, label_smoothing=0.1,
                          class_weights=(1.0,) * C, band_std=(5.0,) * F)  # fmt: skip
    step = jax.jit(functools.partial(steps.train_step, axis_name=None, recipe=full))
    b = batch()
    _, first = step(state, b)
    _, again = step(state, b)  # same state (step, rng): the same augmentation
    _, later = step(state.replace(step=state.step + 1), b)  # another step: another one
    assert float(first["loss"]) == float(again["loss"]) != float(later["loss"])
    assert np.isfinite(float(later["loss"]))
