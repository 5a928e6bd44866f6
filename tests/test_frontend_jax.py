"""sejax.data.frontend_jax: the jax.numpy log-Mel matches the librosa front end the shards use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jax
import librosa
import numpy as np
import pytest

from sejax.configs.default import get_features_config
from sejax.data import audio, features, frontend_jax
from tests.inference_fixtures import tiny_run

# dB tolerance: float32 FFT here vs librosa's float64 window product. Measured on demo and
# RAVDESS speech: max |diff| ~4e-4 dB over all frames and bands (features span ~-100..0 dB).
TOL_DB = 5e-3
REAL_RAVDESS = Path("/work/shared/data/ravdess-speech-16k")


def _cfg(**changes):
    cfg = get_features_config()
    for key, value in changes.items():
        cfg[key] = value
    return cfg


@pytest.mark.parametrize(("sr", "n_fft", "n_mels", "fmin", "fmax"), [
    (16000, 512, 64, 0.0, 8000.0), (22050, 1024, 80, 50.0, 9000.0), (8000, 255, 40, 20.0, 4000.0),
])  # fmt: skip
def test_filterbank_equals_librosa(sr, n_fft, n_mels, fmin, fmax):
    ours = frontend_jax.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                              dtype=np.float32)  # fmt: skip
    assert ours.shape == ref.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("window", ["hann", "hamming", "blackman"])
def test_window_equals_librosa(window):
    ref = librosa.util.pad_center(librosa.filters.get_window(window, 400, fftbins=True), size=512)
    ours = features.stft_window(window, 400, 512)  # what both front ends multiply frames by
    assert ours.dtype == np.float64 and ours.shape == (512,)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-15)  # scipy's window to 1 ulp


def test_matches_librosa_on_speech_like_demo_clips(tmp_path_factory):
    """The reference front end (3 s, 64 bands) on the synthetic emotional speech corpus,
    batched, against `sejax.data.features.extract` clip by clip."""
    _, demo = tiny_run(tmp_path_factory)
    cfg = get_features_config()
    files = sorted(str(p) for p in demo.rglob("*.wav"))[:12]
    waves = np.stack([features.fix_length(audio.load_audio(f, 16000), cfg) for f in files])
    got = np.asarray(jax.jit(frontend_jax.make_log_mel(cfg))(waves))
    ref = np.stack([features.log_mel(w, cfg) for w in waves])
    assert got.shape == ref.shape == (len(files), 301, 64)
    assert ref.max() - ref.min() > 60  # real dynamic range, not a trivial signal
    np.testing.assert_allclose(got, ref, atol=TOL_DB, rtol=0)


@pytest.mark.parametrize("changes", [
    {"window": "hamming", "top_db": 80.0},
    {"window": "blackman", "power": 1.0, "n_fft": 400, "win_length": 256, "hop_length": 128},
    {"center": False, "n_mels": 40, "fmin": 60.0, "fmax": 7600.0, "amin": 1e-5},
    {"n_fft": 511, "win_length": 511, "duration_s": 1.3},
    {"ref": "max", "top_db": 80.0},
])  # fmt: skip
def test_matches_librosa_across_configs(changes):
    cfg = _cfg(**changes)
    rng = np.random.default_rng(1)
    n = features.num_samples(cfg)
    t = np.arange(n) / cfg.sample_rate
    # A gliding harmonic tone with an amplitude envelope, noise, and a silent stretch.
    wave = (0.3 * np.sin(2 * np.pi * (150 + 60 * t) * t) * np.sin(np.pi * t / t[-1]) ** 2
            + 0.01 * rng.standard_normal(n)).astype(np.float32)  # fmt: skip
    wave[n // 3 : n // 2] = 0.0
    got = np.asarray(frontend_jax.log_mel(wave, cfg))
    ref = features.log_mel(wave, cfg)
    assert got.shape == ref.shape == (features.num_frames(cfg, n), cfg.n_mels)
    np.testing.assert_allclose(got, ref, atol=TOL_DB * (2 if cfg.power == 1.0 else 1), rtol=0)


def test_batch_rows_are_independent_and_top_db_is_per_clip():
    cfg = _cfg(top_db=40.0, duration_s=0.5)
    rng = np.random.default_rng(2)
    loud = 0.5 * rng.standard_normal(8000).astype(np.float32)
    quiet = 0.001 * rng.standard_normal(8000).astype(np.float32)
    fn = jax.jit(frontend_jax.make_log_mel(cfg))
    batch = np.asarray(fn(np.stack([loud, quiet])))
    np.testing.assert_allclose(batch[1], np.asarray(fn(quiet)), atol=1e-4)
    np.testing.assert_allclose(batch[1], features.log_mel(quiet, cfg), atol=TOL_DB)


def test_ref_max_is_per_clip_in_a_batch():
    cfg = _cfg(ref="max", duration_s=0.5)
    rng = np.random.default_rng(3)
    quiet = 0.001 * rng.standard_normal(8000).astype(np.float32)
    batch = np.asarray(jax.jit(frontend_jax.make_log_mel(cfg))(np.stack([500 * quiet, quiet])))
    assert np.allclose(batch.max(axis=(1, 2)), 0.0)
    np.testing.assert_allclose(batch[0], batch[1], atol=1e-3)
    np.testing.assert_allclose(batch[1], features.log_mel(quiet, cfg), atol=TOL_DB)


def test_bad_config_is_refused_by_name():
    with pytest.raises(Exception, match=r"features\.window"):
        frontend_jax.make_log_mel(_cfg(window="kaiser"))


def test_imports_neither_librosa_nor_tensorflow():
    code = ("import sys, sejax.data.frontend_jax, sejax.inference.predict, "
            "sejax.inference.export, sejax.inference.streaming; "
            "print(sorted(m for m in ('librosa', 'tensorflow') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(not REAL_RAVDESS.is_dir(), reason="real RAVDESS speech not available")
def test_matches_librosa_on_real_ravdess_speech():
    cfg = get_features_config()
    files = sorted(REAL_RAVDESS.glob("Actor_0[12]/*.flac"))[::15][:8]
    waves = np.stack([features.fix_length(audio.load_audio(str(f), 16000), cfg) for f in files])
    got = np.asarray(jax.jit(frontend_jax.make_log_mel(cfg))(waves))
    ref = np.stack([features.log_mel(w, cfg) for w in waves])
    np.testing.assert_allclose(got, ref, atol=TOL_DB, rtol=0)
