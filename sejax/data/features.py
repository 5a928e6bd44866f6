"""The log-Mel front end: a fixed-length window of audio -> [T, F] float32 dB, time first.

All parameters come from ``config.features`` (see `sejax.configs.default`). The arithmetic
is librosa's (`librosa.stft` + a Slaney-style Mel filterbank + ``power_to_db`` with ref 1.0, or
``ref=np.max`` when ``features.ref='max'``), so features equal ``librosa.feature.melspectrogram``
followed by ``librosa.power_to_db``;
the window (scipy's, as librosa's) and the filterbank (librosa's) are built once per
configuration. `fingerprint`
names a configuration, so shards prepared with one front end are never read as if they came
from another.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from sejax.errors import ConfigError

# Bump when the computation changes for the same config (filterbank norm, dB formula...):
# the fingerprint changes with it and old shards are refused instead of silently reused.
FEATURES_FORMAT = "sejax-logmel"
FEATURES_VERSION = 1

# The two implementations of this front end: 'librosa' (this module, on the host: what shards
# are made with) and 'jax' (sejax.data.frontend_jax, inside the jitted model); inference
# (predict.frontend) picks one.
FRONTENDS = ("jax", "librosa")
CROP_POLICIES = ("start", "center", "speech")
# features.ref: the dB reference. 'one': 10*log10(S / 1.0), absolute levels (the reference);
# 'max': librosa's ref=np.max, each clip's loudest Mel bin is 0 dB, so a clip's level (the
# speaker's loudness, the microphone gain) is taken out before the per-band standardisation.
DB_REFERENCES = ("one", "max")
# crop='speech': the window opens this long before the first frame whose RMS energy is within
# SPEECH_DB of the clip's loudest frame (frames of win_length samples, hop_length apart).
SPEECH_DB = 40.0
SPEECH_MARGIN_S = 0.1
# features.window: the STFT window, by its symmetric numpy form (see `stft_window`).
SYMMETRIC_WINDOWS = {"hann": np.hanning, "hamming": np.hamming, "blackman": np.blackman}
WINDOWS = tuple(SYMMETRIC_WINDOWS)
# Every key of config.features and the Python type its value must have.
KEYS: dict[str, type] = {
    "sample_rate": int,
    "duration_s": float,
    "crop": str,
    "n_fft": int,
    "win_length": int,
    "hop_length": int,
    "window": str,
    "center": bool,
    "n_mels": int,
    "fmin": float,
    "fmax": float,
    "power": float,
    "amin": float,
    "top_db": float,
    "ref": str,
}
# Keys added after FEATURES_VERSION 1 and the value their absence means: configs, shards and
# model bundles written before a key existed read as that value, and a key at this value is left
# out of the fingerprint, so what they were made with keeps its fingerprint.
ADDED_KEYS: dict[str, Any] = {"ref": "one"}


def _as_dict(cfg: Any) -> dict[str, Any]:
    if hasattr(cfg, "to_dict"):  # ml_collections.ConfigDict
        return dict(cfg.to_dict())
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise ConfigError(f"features config must be a ConfigDict or a mapping, got {type(cfg)}")


def _coerce(key: str, value: Any, kind: type) -> Any:
    ok = (
        (kind is bool and isinstance(value, bool | np.bool_))
        or (kind is int and isinstance(value, int | np.integer) and not isinstance(value, bool))
        or (kind is float and isinstance(value, int | float | np.number)
            and not isinstance(value, bool))
        or (kind is str and isinstance(value, str))
    )  # fmt: skip
    if not ok:
        raise ConfigError(f"features.{key}={value!r} must be a {kind.__name__}")
    return kind(value)


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"features.{key}={value!r} is not allowed; {allowed}")


def canonical_config(cfg: Any) -> dict[str, Any]:
    """Validates a features config and returns it as a plain dict with canonical types.

    Canonical types (``fmin=0`` becomes ``0.0``) make the fingerprint depend on values only.
    Raises ConfigError naming the key ``features.<name>`` and what it accepts.
    """
    raw = {**ADDED_KEYS, **_as_dict(cfg)}
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"unknown features config key(s) {['features.' + k for k in unknown]}; "
            f"known keys: {sorted(KEYS)}"
        )
    missing = [k for k in KEYS if k not in raw]
    if missing:
        raise ConfigError(f"features config lacks key(s) {['features.' + k for k in missing]}")
    c = {key: _coerce(key, raw[key], kind) for key, kind in KEYS.items()}

    for key in ("sample_rate", "duration_s", "n_fft", "win_length", "hop_length", "n_mels",
                "power", "amin"):  # fmt: skip
        _require(c[key] > 0, key, c[key], "must be > 0")
    _require(c["crop"] in CROP_POLICIES, "crop", c["crop"], f"choose one of {list(CROP_POLICIES)}")
    _require(c["window"] in WINDOWS, "window", c["window"], f"choose one of {list(WINDOWS)}")
    _require(
        c["win_length"] <= c["n_fft"], "win_length", c["win_length"],
        f"must be <= features.n_fft={c['n_fft']}",
    )  # fmt: skip
    nyquist = c["sample_rate"] / 2
    _require(
        0.0 <= c["fmin"] < c["fmax"], "fmin", c["fmin"],
        f"must satisfy 0 <= features.fmin < features.fmax={c['fmax']}",
    )  # fmt: skip
    _require(
        c["fmax"] <= nyquist, "fmax", c["fmax"],
        f"must be <= sample_rate/2 = {nyquist} (features.sample_rate={c['sample_rate']})",
    )  # fmt: skip
    _require(c["top_db"] >= 0.0, "top_db", c["top_db"], "must be >= 0 (0 disables the clip)")
    _require(c["ref"] in DB_REFERENCES, "ref", c["ref"], f"choose one of {list(DB_REFERENCES)}")
    n = round(c["sample_rate"] * c["duration_s"])
    _require(
        n >= (1 if c["center"] else c["n_fft"]), "duration_s", c["duration_s"],
        f"the window must hold at least {1 if c['center'] else c['n_fft']} samples",
    )  # fmt: skip
    return c


def num_samples(cfg: Any) -> int:
    """Samples in the fixed analysis window, ``round(sample_rate * duration_s)``."""
    c = canonical_config(cfg)
    return round(c["sample_rate"] * c["duration_s"])


def num_frames(cfg: Any, length: int | None = None) -> int:
    """Frames T of `log_mel` of a ``length``-sample waveform (default: the fixed window), as
    both front ends cut them: ``1 + (N - n_fft) // hop`` after ``n_fft // 2`` zeros on each
    side when centred (``1 + N // hop`` for an even ``n_fft``, librosa's count)."""
    c = canonical_config(cfg)
    n = num_samples(c) if length is None else int(length)
    if c["center"]:
        n += 2 * (c["n_fft"] // 2)
    if n < c["n_fft"]:
        raise ValueError(f"{n} samples are fewer than features.n_fft={c['n_fft']}")
    return 1 + (n - c["n_fft"]) // c["hop_length"]


def recorded_config(cfg: Any) -> dict[str, Any]:
    """`canonical_config` less the `ADDED_KEYS` at their default: what shards record and the
    fingerprint hashes, the same as before those keys existed."""
    return {k: v for k, v in canonical_config(cfg).items()
            if k not in ADDED_KEYS or v != ADDED_KEYS[k]}  # fmt: skip


def fingerprint(cfg: Any) -> str:
    """sha256 of the canonical JSON of the `recorded_config` plus the format version tag."""
    payload = {"format": FEATURES_FORMAT, "version": FEATURES_VERSION,
               "config": recorded_config(cfg)}  # fmt: skip
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def speech_onset(wave: np.ndarray, cfg: Any) -> int:
    """The first sample of the first frame whose RMS energy is within `SPEECH_DB` of the
    loudest frame's: where speech starts after a clip's leading silence (RAVDESS clips open
    with up to a second of it). Numpy, not librosa's ``effects.trim``, so that inference
    crops the same way without librosa."""
    c = canonical_config(cfg)
    frame, hop = c["win_length"], c["hop_length"]
    wave = np.asarray(wave, dtype=np.float32)
    if len(wave) <= frame:
        return 0
    frames = np.lib.stride_tricks.sliding_window_view(wave, frame)[::hop]
    energy = np.mean(np.square(frames, dtype=np.float64), axis=1)
    if energy.max() <= 0:
        return 0  # digital silence: nothing to find
    loud = energy >= energy.max() * 10.0 ** (-SPEECH_DB / 10.0)
    return int(np.argmax(loud)) * hop


def crop_start(wave: np.ndarray, cfg: Any) -> int:
    """Where `fix_length` starts its window in ``wave``: 0 ('start', the reference), the
    middle ('center'), or `SPEECH_MARGIN_S` before the `speech_onset` ('speech')."""
    c = canonical_config(cfg)
    n = num_samples(c)
    if c["crop"] == "speech":
        margin = round(SPEECH_MARGIN_S * c["sample_rate"])
        return max(0, speech_onset(wave, c) - margin)
    if c["crop"] == "center" and len(wave) > n:
        return (len(wave) - n) // 2
    return 0


def fix_length(wave: np.ndarray, cfg: Any) -> np.ndarray:
    """The fixed analysis window of a 1-D waveform: exactly ``round(sample_rate *
    duration_s)`` samples from `crop_start` on, zero-padded at the end where the clip runs out.

    ``crop='start'`` keeps the first N samples (the reference recipe), ``'center'`` the
    middle N of a longer clip, ``'speech'`` the N from just before speech starts, so the
    window holds the utterance instead of its leading silence. Shorter clips are zero-padded
    at the end.
    """
    c = canonical_config(cfg)
    n = num_samples(c)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"fix_length expects a 1-D waveform, got shape {wave.shape}")
    start = crop_start(wave, c)
    window = wave[start : start + n]
    if len(window) < n:
        return np.pad(window, (0, n - len(window)))
    return np.ascontiguousarray(window)


@functools.lru_cache(maxsize=16)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The [n_mels, 1 + n_fft // 2] Slaney filterbank, built once per configuration."""
    import librosa

    basis = librosa.filters.mel(
        sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, dtype=np.float32
    )
    basis.setflags(write=False)
    return basis


@functools.lru_cache(maxsize=16)
def stft_window(window: str, win_length: int, n_fft: int) -> np.ndarray:
    """`librosa.stft`'s analysis window, centred in ``n_fft`` zeros; float64, as there. Both
    front ends use it.

    librosa calls scipy's periodic window (``get_window(window, N, fftbins=True)``), which is
    the symmetric window of ``N + 1`` points without its last: numpy's `np.hanning`,
    `np.hamming` and `np.blackman` give it within 1 ulp of float64. numpy rather than scipy
    here because importing ``scipy.signal`` took 1.6 s of a 3.5 s ``sejax predict``.
    """
    symmetric = SYMMETRIC_WINDOWS[window]
    left = (n_fft - win_length) // 2
    w = np.pad(symmetric(win_length + 1)[:-1], (left, n_fft - win_length - left))
    w.setflags(write=False)
    return w


def log_mel(wave: np.ndarray, cfg: Any) -> np.ndarray:
    """Log-Mel spectrogram of a 1-D waveform, ``[T, n_mels]`` float32 (time first).

    ``T = 1 + len(wave) // hop_length`` when ``center`` (librosa's convention). dB is
    ``10 * log10(max(S, amin))`` (ref 1.0), less its maximum when ``ref='max'``, clipped to
    ``max - top_db`` when ``top_db > 0``.

    The steps and precision of ``librosa.stft`` (zero padding, float64 window product and FFT
    in blocks of ``librosa.util.MAX_MEM_BLOCK`` bytes, complex64 result, ``|X| ** power``),
    written as array calls on time-first frames: librosa frames time-last, FFTs along the
    strided axis and needs a transpose after the Mel product. 2.5 against 3.1-3.6 ms per clip
    for decoding + features, one core (equal features: tests/test_features.py). The blocks
    matter: whole-clip float64 temporaries (2.4 MB) are fresh memory each clip, and the page
    faults made it 4.4 ms.
    """
    import librosa

    c = canonical_config(cfg)
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"log_mel expects a 1-D waveform, got shape {wave.shape}")
    n_fft, hop = c["n_fft"], c["hop_length"]
    if c["center"]:
        wave = np.pad(wave, n_fft // 2)  # pad_mode='constant'
    frames = np.lib.stride_tricks.sliding_window_view(wave, n_fft)[::hop]  # [T, n_fft], a view
    window = stft_window(c["window"], c["win_length"], n_fft)
    spec = np.empty((len(frames), 1 + n_fft // 2), np.float32)
    block = max(1, librosa.util.MAX_MEM_BLOCK // (n_fft * window.itemsize))
    for i in range(0, len(frames), block):
        spectrum = np.fft.rfft(frames[i : i + block] * window, axis=-1).astype(np.complex64)
        spec[i : i + block] = np.abs(spectrum) ** c["power"]
    basis = _mel_basis(c["sample_rate"], n_fft, c["n_mels"], c["fmin"], c["fmax"])
    db = 10.0 * np.log10(np.maximum(spec @ basis.T, c["amin"]))
    if c["ref"] == "max":
        db -= db.max()
    if c["top_db"] > 0:
        db = np.maximum(db, db.max() - c["top_db"])
    return np.ascontiguousarray(db, dtype=np.float32)


def extract(wave: np.ndarray, cfg: Any) -> np.ndarray:
    """The features of one clip: `log_mel` of the `fix_length` window, ``[num_frames, n_mels]``."""
    return log_mel(fix_length(wave, cfg), cfg)
