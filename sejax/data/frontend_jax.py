"""The log-Mel front end in ``jax.numpy``: waveform -> features on the accelerator.

`sejax.data.features.log_mel` (librosa, on the host) is the reference: shards are computed with
it. This module computes the same thing inside JAX, so the whole waveform -> emotion function
can be jitted, batched, run on a GPU/TPU and serialised with ``jax.export``
(`sejax.inference.export`). It imports neither librosa nor TensorFlow: the analysis window and
the frame count are the host front end's (`features.stft_window`, librosa's window;
`features.num_frames`), and the Slaney Mel filterbank is built here in numpy, to librosa's
formulas (tests check it equals librosa's to float32 precision, and the dB features to a small
tolerance on speech).

Steps, as in librosa with ``center=True, pad_mode='constant'``: zero-pad ``n_fft // 2`` on both
sides, cut frames every ``hop_length`` samples, multiply by the periodic window zero-padded to
``n_fft``, real FFT, ``|X| ** power``, Mel filterbank (float32 at full matmul precision: GPUs
would otherwise use TF32 and lose ~3 decimal digits), ``10 log10(max(S, amin))``, the
optional per-clip reference (``ref='max'``) and the optional per-clip ``top_db`` floor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sejax.data import features

# Slaney's Mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, np.float64)
    mel = hz / _F_SP
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, np.float64)
    hz = _F_SP * mel
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, hz)


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """The ``[n_mels, 1 + n_fft // 2]`` Slaney-normalised triangular filterbank (float32).

    Same arithmetic as ``librosa.filters.mel(..., htk=False, norm='slaney', dtype=float32)``:
    the triangles in float64, rounded to float32, then scaled by the area normalisation.
    """
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    mel_points = np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2)
    mel_f = _mel_to_hz(mel_points)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    enorm = 2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels])
    weights = (weights * enorm[:, None]).astype(np.float32)
    weights.setflags(write=False)
    return weights


def make_log_mel(cfg: Any) -> Callable[[jax.Array], jax.Array]:
    """A traceable ``waves [..., N] -> log-Mel [..., T, n_mels]`` for one features config.

    The config is validated and the window, filterbank and frame indices are built once here,
    so the returned function holds only array constants and can be jitted or exported.
    """
    c = features.canonical_config(cfg)
    n_fft, hop = c["n_fft"], c["hop_length"]
    window = jnp.asarray(features.stft_window(c["window"], c["win_length"], n_fft), jnp.float32)
    basis_t = jnp.asarray(
        mel_filterbank(c["sample_rate"], n_fft, c["n_mels"], c["fmin"], c["fmax"]).T
    )
    pad = n_fft // 2 if c["center"] else 0
    power, amin, top_db, ref_max = c["power"], c["amin"], c["top_db"], c["ref"] == "max"

    def log_mel(waves: jax.Array) -> jax.Array:
        waves = jnp.asarray(waves, jnp.float32)
        padded = jnp.pad(waves, [(0, 0)] * (waves.ndim - 1) + [(pad, pad)])
        frames = features.num_frames(c, waves.shape[-1])
        index = hop * np.arange(frames)[:, None] + np.arange(n_fft)[None, :]
        spectrum = jnp.fft.rfft(padded[..., index] * window, n=n_fft, axis=-1)
        if power == 2.0:  # |X|^2 without the square root
            spec = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
        else:
            spec = jnp.abs(spectrum) ** power
        mel = jnp.matmul(spec, basis_t, precision=jax.lax.Precision.HIGHEST)
        db = 10.0 * jnp.log10(jnp.maximum(mel, amin))
        if ref_max:
            db = db - db.max(axis=(-2, -1), keepdims=True)
        if top_db > 0:
            db = jnp.maximum(db, db.max(axis=(-2, -1), keepdims=True) - top_db)
        return db

    return log_mel


def log_mel(waves: jax.Array | np.ndarray, cfg: Any) -> jax.Array:
    """Log-Mel of one waveform ``[N]`` or a batch ``[B, N]`` (convenience, not jitted).

    For repeated calls build the function once with `make_log_mel` and ``jax.jit`` it.
    """
    return make_log_mel(cfg)(jnp.asarray(waves))
