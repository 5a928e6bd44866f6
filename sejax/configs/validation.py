"""Checking a config before any work: every value that can be checked without data or
devices, with an error naming the key and what it accepts."""

from __future__ import annotations

from typing import Any

import ml_collections

from sejax import corpora
from sejax.configs.loading import get
from sejax.corpora import base as corpora_base
from sejax.corpora import labels as labels_lib
from sejax.corpora import sources as sources_lib
from sejax.data import features, input_pipeline, screening, splits
from sejax.errors import ConfigError
from sejax.model import models
from sejax.training import augment, checkpoints, distributed, parallel, train_state

# Allowed values of the string-valued keys, each defined beside the code that reads the key;
# `validate` checks them and its errors list them.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.corpus": corpora.NAMES,
    "data.split_by": splits.SPLIT_MODES,
    "data.on_bad_name": corpora_base.ON_BAD_NAME,
    "data.normalization": input_pipeline.NORMALIZATIONS,
    "features.crop": features.CROP_POLICIES,
    "features.window": features.WINDOWS,
    "predict.frontend": features.FRONTENDS,
    "train.parallel": parallel.MODES,
    "train.optimizer": train_state.OPTIMIZERS,
    "train.schedule": train_state.SCHEDULES,
    "train.on_non_finite": train_state.NON_FINITE_POLICIES,
    "train.selection_metric": checkpoints.SELECTION_METRICS,
    "train.class_weights": augment.CLASS_WEIGHTS,
    **{f"model.{key}": allowed for key, allowed in models.CHOICES.items()},
}
# Keys whose value must be > 0.
POSITIVE: tuple[str, ...] = (
    "features.sample_rate", "features.duration_s", "features.n_fft", "features.win_length",
    "features.hop_length", "features.n_mels", "features.amin",
    "model.num_classes", "model.conv_kernel", "model.pool", "model.lstm_units",
    "train.batch_size", "train.num_epochs", "train.learning_rate", "train.log_every_steps",
    "train.eval_every_epochs", "train.checkpoint_every_epochs", "train.keep_checkpoints",
    "eval.batch_size", "data.examples_per_shard", "data.shuffle_buffer",
)  # fmt: skip


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks values that can be checked without data or devices; raises ConfigError."""
    for key, allowed in CHOICES.items():
        value = get(config, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not allowed; choose one of {list(allowed)}")
    for key in POSITIVE:
        value = get(config, key)
        if not value > 0:
            raise ConfigError(f"{key}={value!r} must be > 0")
    screening.Limits.from_config(config.data)  # data.min_duration_s / max_duration_s
    f = config.features
    if f.win_length > f.n_fft:
        raise ConfigError(f"features.win_length={f.win_length} must be <= features.n_fft={f.n_fft}")
    if not 0 <= f.fmin < f.fmax <= f.sample_rate / 2:
        raise ConfigError(
            f"features.fmin={f.fmin} and features.fmax={f.fmax} must satisfy "
            f"0 <= fmin < fmax <= sample_rate/2 = {f.sample_rate / 2}"
        )
    m = config.model
    models.build_model(m)  # the model's own keys, types and ranges
    # The time and frequency axes must survive every pooling stage (at least one frame left).
    frames = features.num_frames(f)
    bands = f.n_mels
    for _ in m.conv_channels:
        frames, bands = frames // m.pool, bands // m.pool
    if frames < 1 or bands < 1:
        raise ConfigError(
            f"features.duration_s={f.duration_s} and features.n_mels={f.n_mels} are too small "
            f"for {len(m.conv_channels)} pooling stages of model.pool={m.pool}: "
            f"{frames} frames x {bands} bands would remain"
        )
    _validate_labels(config)
    val, test = set(config.data.val_actors), set(config.data.test_actors)
    if val & test:
        raise ConfigError(
            f"data.val_actors and data.test_actors overlap on actors {sorted(val & test)}"
        )
    for split in config.eval.splits:
        if split not in splits.SPLIT_NAMES:
            raise ConfigError(f"eval.splits has {split!r}; choose from {list(splits.SPLIT_NAMES)}")
    check_average_last(config.eval.average_last_checkpoints, config.train.keep_checkpoints)
    distributed.check_config(config)
    _validate_split(config)
    _validate_training_extras(config)
    return config


def ints(key: str, value: Any) -> tuple[int, ...]:
    """``value`` as a tuple of integers, or a ConfigError naming ``key``."""
    if not isinstance(value, tuple | list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"{key}={value!r} must be a tuple of integers")
    return tuple(value)


def check_average_last(n: Any, keep: int, key: str = "eval.average_last_checkpoints") -> int:
    """A snapshot-ensemble size: an integer >= 0, at most the checkpoints a run keeps."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{key}={n!r} must be an integer >= 0 (0: the best checkpoint)")
    if n > keep:
        raise ConfigError(
            f"{key}={n} averages more checkpoints than train.keep_checkpoints={keep} keeps"
        )
    return n


def _validate_split(config: ml_collections.ConfigDict) -> None:
    """A random split needs data.allow_leakage and parts that leave train and test rows."""
    data = config.data
    if data.split_by != "random":
        return
    if not data.allow_leakage:
        raise ConfigError(splits.RANDOM_SPLIT_NEEDS_LEAKAGE)
    parts = data.random_parts
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 2:
        raise ConfigError(f"data.random_parts={parts!r} must be an integer >= 2")
    val = set(ints("data.random_val_parts", data.random_val_parts))
    test = set(ints("data.random_test_parts", data.random_test_parts))
    bad = sorted(p for p in val | test if not 0 <= p < parts)
    if bad:
        raise ConfigError(f"data.random_val_parts/random_test_parts name parts {bad}, not in "
                          f"0..{parts - 1} (data.random_parts={parts})")  # fmt: skip
    if val & test:
        raise ConfigError(
            f"data.random_val_parts and data.random_test_parts share {sorted(val & test)}"
        )
    if not test or len(val | test) >= parts:
        raise ConfigError(
            f"data.random_test_parts={sorted(test)} and data.random_val_parts={sorted(val)} must "
            f"leave at least one of the {parts} parts for test and one for training"
        )


def _validate_training_extras(config: ml_collections.ConfigDict) -> None:
    """Loss options (train.label_smoothing), train.precise_bn_batches, train.ema_decay and
    config.augment."""
    t = config.train
    precise = t.precise_bn_batches
    if isinstance(precise, bool) or not isinstance(precise, int) or precise < 0:
        raise ConfigError(f"train.precise_bn_batches={precise!r} must be an integer >= 0")
    ema = t.ema_decay
    if isinstance(ema, bool) or not isinstance(ema, int | float) or not 0.0 <= ema < 1.0:
        raise ConfigError(f"train.ema_decay={ema!r} must be a number in [0, 1) (0: off)")
    if not 0.0 <= t.label_smoothing < 1.0:
        raise ConfigError(f"train.label_smoothing={t.label_smoothing!r} must be in [0, 1)")
    a = config.augment
    for key in ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width"):
        value = a[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"augment.{key}={value!r} must be an integer >= 0")
    for key in ("mixup_alpha", "gain_db", "noise_std", "speed", "pitch_bands"):
        if not a[key] >= 0:
            raise ConfigError(f"augment.{key}={a[key]!r} must be >= 0 (0 disables it)")
    if a.speed >= 1.0:
        raise ConfigError(f"augment.speed={a.speed!r} must be < 1 (a factor in [1-s, 1+s])")
    if a.pitch_bands >= config.features.n_mels:
        raise ConfigError(
            f"augment.pitch_bands={a.pitch_bands!r} must be < features.n_mels="
            f"{config.features.n_mels}"
        )


def _validate_labels(config: ml_collections.ConfigDict) -> None:
    """Target labels match the model's outputs; label map and extra sources are well formed."""
    labels = config.data.labels
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError(f"data.labels={labels!r} must be a non-empty tuple of label names")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"data.labels={labels!r} names a label twice")
    if len(labels) != config.model.num_classes:
        raise ConfigError(
            f"data.labels has {len(labels)} labels but model.num_classes="
            f"{config.model.num_classes}; set --config.model.num_classes={len(labels)}"
        )
    labels_lib.parse_label_map(config.data.label_map, labels, corpora.NAMES)
    sources_lib.parse_sources(config.data.extra_sources)
