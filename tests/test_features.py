"""sejax.data.features: librosa-exact log-Mel, crop/pad policy, validation and the fingerprint."""

import os
import re
import subprocess
import sys

import librosa
import ml_collections
import numpy as np
import pytest
import soundfile as sf

from sejax.configs.default import get_features_config
from sejax.data import audio, features
from sejax.errors import ConfigError


def _noise(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.1, n).astype(np.float32)


def _librosa_reference(wave: np.ndarray, cfg) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        win_length=cfg.win_length,
        window=cfg.window,
        center=cfg.center,
        power=cfg.power,
        n_mels=cfg.n_mels,
        fmin=cfg.fmin,
        fmax=cfg.fmax,
    )
    top_db = cfg.top_db if cfg.top_db > 0 else None
    ref = np.max if cfg.ref == "max" else 1.0
    return librosa.power_to_db(mel, ref=ref, amin=cfg.amin, top_db=top_db).T


def test_default_shape_is_reference():
    cfg = get_features_config()
    assert features.num_frames(cfg) == 301
    out = features.extract(_noise(52_000), cfg)
    assert out.shape == (301, 64) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"top_db": 80.0},
        {"window": "hamming", "power": 1.0, "fmin": 50.0, "fmax": 7000.0},
        {"center": False, "n_mels": 40, "amin": 1e-5},
        {"ref": "max"},
        {"ref": "max", "top_db": 80.0},
    ],
    ids=["default", "top_db", "hamming-magnitude", "uncentred", "ref-max", "ref-max-top_db"],
)
def test_equals_librosa(overrides):
    cfg = get_features_config()
    cfg.update(overrides)
    wave = features.fix_length(_noise(50_000) * np.linspace(0, 1, 50_000, dtype=np.float32), cfg)
    out = features.log_mel(wave, cfg)
    ref = _librosa_reference(wave, cfg)
    assert out.shape == ref.shape == (features.num_frames(cfg), cfg.n_mels)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)
    if cfg.top_db > 0:
        assert out.min() >= out.max() - cfg.top_db - 1e-4


def test_ref_max_takes_the_clip_level_out():
    """ref='max': a clip and the same clip 20 dB quieter give the same features (the loudest
    bin is 0 dB in both), where absolute dB shift by the gain."""
    cfg = get_features_config()
    cfg.ref = "max"
    wave = features.fix_length(_noise(50_000), cfg)
    loud, quiet = features.log_mel(wave, cfg), features.log_mel(wave * 0.1, cfg)
    assert loud.max() == 0.0 and quiet.max() == 0.0
    np.testing.assert_allclose(loud, quiet, atol=1e-3)
    cfg.ref = "one"
    absolute = features.log_mel(wave, cfg) - features.log_mel(wave * 0.1, cfg)
    np.testing.assert_allclose(absolute, 20.0, atol=1e-3)


def test_configs_made_before_ref_existed_read_as_ref_one_and_keep_their_fingerprint():
    """Shards and model bundles record the features config they were made with; one written
    before `ref` existed must still load, as 'one', with the fingerprint it was stored under."""
    cfg = get_features_config().to_dict()
    old = {k: v for k, v in cfg.items() if k != "ref"}
    assert features.canonical_config(old)["ref"] == "one"
    assert features.fingerprint(old) == features.fingerprint(cfg)
    assert features.fingerprint({**cfg, "ref": "max"}) != features.fingerprint(cfg)
    assert get_features_config().ref == features.ADDED_KEYS["ref"]


def test_silence_is_floored_at_amin():
    cfg = get_features_config()
    out = features.extract(np.zeros(100, np.float32), cfg)
    assert out.shape == (301, 64) and np.all(out == out[0, 0])
    # 10 log10(amin = 1e-10) = -100 dB, to float32 rounding of the log (1 ulp varies by CPU).
    np.testing.assert_allclose(out, -100.0, rtol=0, atol=1e-4)


def test_mel_filterbank_is_built_once_per_config():
    cfg = get_features_config()
    features.log_mel(_noise(1600), cfg)
    before = features._mel_basis.cache_info()
    features.log_mel(_noise(1600, seed=1), cfg)
    after = features._mel_basis.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses


def _small_cfg(crop="start"):
    cfg = get_features_config()
    cfg.update({"sample_rate": 10, "fmax": 5.0, "duration_s": 0.5, "crop": crop})
    return cfg


def test_fix_length_crop_start_keeps_the_beginning():
    wave = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(features.fix_length(wave, _small_cfg("start")), wave[:5])


def test_fix_length_crop_center_keeps_the_middle():
    wave = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(features.fix_length(wave, _small_cfg("center")), wave[3:8])


def _speech_after_silence(silence_s: float, speech_s: float, rate: int = 16000) -> np.ndarray:
    """Faint noise (about 60 dB down), then a loud tone: a clip whose speech starts late."""
    rng = np.random.default_rng(0)
    quiet = 1e-3 * rng.standard_normal(round(silence_s * rate))
    t = np.arange(round(speech_s * rate)) / rate
    return np.concatenate([quiet, 0.5 * np.sin(2 * np.pi * 220 * t)]).astype(np.float32)


def test_fix_length_crop_speech_opens_just_before_the_speech():
    cfg = get_features_config()
    cfg.crop = "speech"
    wave = _speech_after_silence(1.2, 2.5)  # 3.7 s, speech from 1.2 s
    onset = features.speech_onset(wave, cfg)
    assert abs(onset - 1.2 * 16000) <= cfg.win_length  # the frame where the tone begins
    start = features.crop_start(wave, cfg)
    assert start == onset - round(features.SPEECH_MARGIN_S * 16000)
    out = features.fix_length(wave, cfg)
    assert len(out) == 48000
    np.testing.assert_array_equal(out[: len(wave) - start], wave[start:])
    np.testing.assert_array_equal(out[len(wave) - start :], 0.0)  # ran out: padded
    # The window holds the whole tone; from the start it would have lost 0.7 s of it.
    assert np.abs(out).max() == pytest.approx(0.5, abs=1e-3)
    cfg.crop = "start"
    assert np.count_nonzero(np.abs(features.fix_length(wave, cfg)) > 0.1) < np.count_nonzero(
        np.abs(out) > 0.1
    )


def test_fix_length_crop_speech_on_clips_without_a_late_onset():
    cfg = get_features_config()
    cfg.crop = "speech"
    assert features.crop_start(np.zeros(60000, np.float32), cfg) == 0  # digital silence
    early = _speech_after_silence(0.05, 3.5)  # speech within the margin of the start
    assert features.crop_start(early, cfg) == 0
    np.testing.assert_array_equal(features.fix_length(early, cfg), early[:48000])
    assert features.crop_start(np.ones(100, np.float32), cfg) == 0  # shorter than a frame


@pytest.mark.parametrize("crop", ["start", "center"])
def test_fix_length_pads_zeros_at_the_end(crop):
    wave = np.arange(1, 4, dtype=np.float32)
    out = features.fix_length(wave, _small_cfg(crop))
    np.testing.assert_array_equal(out, [1, 2, 3, 0, 0])
    assert out.dtype == np.float32
    exact = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(features.fix_length(exact, _small_cfg(crop)), exact)


def test_48khz_file_gives_the_features_of_its_16khz_version(tmp_path):
    cfg = get_features_config()
    cfg.duration_s = 1.0

    def speechlike(sr):  # band-limited, amplitude-modulated harmonics; same signal at any rate
        t = np.arange(sr) / sr
        env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
        tones = sum(np.sin(2 * np.pi * f * t + f) / (1 + f / 1000) for f in range(150, 7000, 250))
        return (0.05 * env * tones).astype(np.float32)

    sf.write(tmp_path / "hi.wav", speechlike(48000), 48000, subtype="FLOAT")
    sf.write(tmp_path / "lo.wav", speechlike(16000), 16000, subtype="FLOAT")
    hi = features.extract(audio.load_audio(str(tmp_path / "hi.wav"), 16000), cfg)
    lo = features.extract(audio.load_audio(str(tmp_path / "lo.wav"), 16000), cfg)
    assert hi.shape == lo.shape == (101, 64)
    loud = lo > lo.max() - 50.0  # compare where there is signal, not the numerical floor
    assert loud.mean() > 0.5
    diff = np.abs(hi - lo)
    assert diff[loud].mean() < 0.02
    # The resampler's onset transient touches frame 0 only; every other frame agrees closely.
    assert diff[1:][loud[1:]].max() < 0.25


# The default front end's fingerprint: every shard set prepared with the defaults carries it,
# so a change here (canonical form, payload, hash) silently re-prepares every corpus.
DEFAULT_FINGERPRINT = "a3875567ed2cfc77d0ee2cc778b58b7e4903806ffd3177fc56abae4d3256eded"


def test_fingerprint_is_stable_and_canonical():
    cfg = get_features_config()
    fp = features.fingerprint(cfg)
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert fp == DEFAULT_FINGERPRINT  # the same as when the defaults' shards were prepared
    assert features.fingerprint(get_features_config()) == fp
    as_dict = cfg.to_dict()
    as_dict["fmin"] = 0  # an int where a float is expected means the same front end
    assert features.fingerprint(as_dict) == fp
    assert features.fingerprint(ml_collections.ConfigDict(as_dict)) == fp


def test_fingerprint_ignores_what_does_not_change_the_features():
    """Key order, mapping type, int for float and numpy scalars name the same front end: the
    fingerprint and the features are both unchanged."""
    cfg = get_features_config().to_dict()
    variants = [
        dict(reversed(list(cfg.items()))),
        {**cfg, "sample_rate": np.int64(16000), "center": np.bool_(True)},
        {**cfg, "duration_s": 3, "fmax": 8000, "power": 2, "top_db": 0},
        {**cfg, "fmin": np.float32(0.0), "hop_length": np.int32(160)},
    ]
    wave = _noise(52_000)
    reference = features.extract(wave, cfg)
    for variant in variants:
        assert features.fingerprint(variant) == DEFAULT_FINGERPRINT, variant
        np.testing.assert_array_equal(features.extract(wave, variant), reference)


def test_fingerprint_is_the_same_in_another_process():
    """Nothing process-specific (hash seed, import order) enters it."""
    code = (
        "from sejax.configs.default import get_features_config; from sejax.data import features; "
        "print(features.fingerprint(get_features_config()))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120, check=True)  # fmt: skip
    assert out.stdout.strip() == DEFAULT_FINGERPRINT


CHANGED = {
    "sample_rate": 22050,
    "duration_s": 2.5,
    "crop": "center",
    "n_fft": 1024,
    "win_length": 512,
    "hop_length": 128,
    "window": "hamming",
    "center": False,
    "n_mels": 80,
    "fmin": 20.0,
    "fmax": 7600.0,
    "power": 1.0,
    "amin": 1e-5,
    "top_db": 80.0,
    "ref": "max",
}


def test_fingerprint_changes_with_every_key(monkeypatch):
    """Every key changes the features of some clip, and so the fingerprint: shards computed
    with another value are never mistaken for these."""
    assert set(CHANGED) == set(features.KEYS)
    base = features.fingerprint(get_features_config())
    seen = {base}
    long_clip = _noise(52_000)  # longer than the window: crop matters
    long_clip[10_000:20_000] = 0.0  # silence: amin and top_db matter
    reference = features.extract(long_clip, get_features_config())
    for key, value in CHANGED.items():
        cfg = get_features_config()
        cfg[key] = value
        fp = features.fingerprint(cfg)
        assert fp not in seen, key
        seen.add(fp)
        out = features.extract(long_clip, cfg)
        assert out.shape != reference.shape or not np.array_equal(out, reference), key
    monkeypatch.setattr(features, "FEATURES_VERSION", features.FEATURES_VERSION + 1)
    assert features.fingerprint(get_features_config()) != base


def test_num_frames_is_the_frame_count_of_both_front_ends():
    for changes in ({}, {"n_fft": 511, "win_length": 511}, {"center": False}):
        cfg = get_features_config()
        cfg.update(changes)
        for length in (cfg.n_fft, 16000, 16001, 48000):
            wave = _noise(length)
            assert features.num_frames(cfg, length) == len(features.log_mel(wave, cfg)), changes
        assert features.num_frames(cfg) == features.num_frames(cfg, features.num_samples(cfg))
    cfg = get_features_config()
    cfg.center = False
    with pytest.raises(ValueError, match=r"fewer than features\.n_fft=512"):
        features.num_frames(cfg, 511)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("win_length", 1024, r"features\.win_length=1024 .*<= features\.n_fft=512"),
        ("fmax", 9000.0, r"features\.fmax=9000\.0 .*sample_rate/2 = 8000"),
        ("fmin", 8000.0, r"features\.fmin=8000\.0 .*fmin < features\.fmax"),
        ("n_mels", 0, r"features\.n_mels=0 .*> 0"),
        ("hop_length", -160, r"features\.hop_length=-160 .*> 0"),
        ("crop", "end", r"features\.crop='end' .*\['start', 'center', 'speech'\]"),
        ("window", "kaiser", r"features\.window='kaiser' .*\['hann', 'hamming', 'blackman'\]"),
        ("n_fft", 512.0, r"features\.n_fft=512\.0 must be a int"),
        ("center", "yes", r"features\.center='yes' must be a bool"),
        ("top_db", -1.0, r"features\.top_db=-1\.0 .*>= 0"),
        ("ref", "peak", r"features\.ref='peak' .*\['one', 'max'\]"),
    ],
)
def test_invalid_config_names_the_key(key, value, message):
    cfg = get_features_config().to_dict()
    cfg[key] = value
    with pytest.raises(ConfigError, match=message):
        features.canonical_config(cfg)
    with pytest.raises(ConfigError, match=message):
        features.log_mel(_noise(1600), cfg)


def test_unknown_and_missing_keys():
    cfg = get_features_config().to_dict()
    with pytest.raises(ConfigError, match=r"features\.n_mfcc"):
        features.fingerprint({**cfg, "n_mfcc": 13})
    del cfg["hop_length"]
    with pytest.raises(ConfigError, match=r"features\.hop_length"):
        features.num_frames(cfg)
