"""A deterministic synthetic emotional-speech corpus in the RAVDESS layout, for demos and tests.

Real corpora need a download and a licence; this one is generated in seconds and exercises the
same code paths (RAVDESS names, ``Actor_NN/`` folders, 16-bit WAV). Each clip is a small
source-filter "voice" saying one of two seven-syllable statements:

- source: a band-limited pulse train (all harmonics below 0.45 x the sample rate) following an
  f0 contour, shaped by a spectral tilt, plus aspiration noise (breathiness), jitter and
  shimmer; consonant-like noise bursts before most syllables;
- filter: four formant resonators per vowel, scaled per speaker (vocal-tract length);
- emotions change prosody only, as acted speech does: pitch level, accent size and contour
  (falling, rising, U-shaped, tremolo), syllable rate and rhythm, loudness, breathiness,
  tilt and jitter; strong intensity exaggerates the deviation from neutral;
- speakers differ in f0 (male ~110 Hz for odd actors, female ~205 Hz for even), formants,
  speaking rate, loudness, voice quality and how expressively they act, and every utterance
  draws its own variation of every parameter, so classes overlap and held-out speakers are a
  real test: a small CNN on log-Mel is far above chance (12.5 %) but not perfect.

Every clip is seeded from (seed, actor, emotion, intensity, statement, repetition), so a clip
is the same bytes whatever else is generated with it. ``demo.json`` records the parameters;
a folder that already holds the corpus they describe is returned untouched.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from sejax.corpora.ravdess import EMOTIONS, format_ravdess_name
from sejax.errors import ConfigError, DataError
from sejax.io import replace_folder, staging_folder

__all__ = ["DEMO_FORMAT", "GENERATOR_VERSION", "demo_file_names", "generate_demo_corpus"]

DEMO_FORMAT = "sejax-demo"
GENERATOR_VERSION = 1  # bump whenever the synthesis changes: old corpora are then regenerated
_WAV_HEADER_BYTES = 44  # soundfile's canonical PCM WAV header
_BATCH = 20  # clips synthesised together; results do not depend on it

# Prosody per emotion (rows in EMOTIONS order). Columns:
#   pitch   mean f0 offset from the speaker's base, semitones
#   accent  size of the pitch accents on stressed syllables, semitones
#   slope   f0 trend from first to last syllable, semitones
#   final   extra movement on the last syllable (rise > 0), semitones
#   curve   U-shape of the contour (> 0: dips in the middle), semitones
#   tremor  f0 tremolo depth at ~5-7 Hz, semitones
#   jitter  fast random f0 perturbation, semitones (std)
#   rate    syllable-rate factor
#   level   loudness, dB
#   breath  aspiration noise relative to the voice
#   dark    spectral tilt: 0 bright (pressed, tense) .. 1 dark (soft, lax)
#   gap     silent fraction of each syllable slot (staccato > 0.3)
#   attack  syllable envelope exponent (small: abrupt onsets)
_COLUMNS = (
    "pitch",
    "accent",
    "slope",
    "final",
    "curve",
    "tremor",
    "jitter",
    "rate",
    "level",
    "breath",
    "dark",
    "gap",
    "attack",
)
# fmt: off
_PROSODY = np.array([
    # pitch accent slope final curve tremor jitter rate  level breath dark  gap   attack
    [0.0,  1.5,  -2.0, -1.0, 0.0,  0.08,  0.10,  1.00, 0.0,  0.08,  0.50, 0.25, 0.60],  # neutral
    [-1.0, 1.0,  -2.5, -1.5, 0.0,  0.08,  0.08,  0.86, -3.0, 0.18,  0.68, 0.30, 0.90],  # calm
    [3.0,  3.5,  0.0,  1.0,  0.0,  0.12,  0.12,  1.15, 3.0,  0.06,  0.32, 0.20, 0.45],  # happy
    [-2.0, 0.7,  -3.5, -2.0, -0.5, 0.30,  0.18,  0.78, -5.0, 0.30,  0.80, 0.35, 1.00],  # sad
    [2.0,  3.0,  -3.0, -3.0, 0.0,  0.08,  0.30,  1.15, 7.0,  0.04,  0.10, 0.32, 0.30],  # angry
    [5.0,  1.8,  1.0,  1.0,  0.0,  0.80,  0.42,  1.28, 1.0,  0.30,  0.45, 0.20, 0.60],  # fearful
    [-1.5, 2.5,  -1.0, -2.5, 3.0,  0.08,  0.35,  0.82, -1.0, 0.20,  0.60, 0.30, 0.70],  # disgust
    [4.0,  4.5,  3.0,  5.0,  0.0,  0.12,  0.12,  1.00, 4.0,  0.10,  0.30, 0.22, 0.50],  # surprised
])
# Per-utterance variation (std) of each column; `rate` is multiplicative (log-normal).
_JITTER_STD = np.array(
    [1.5,  1.0,  1.9,  1.9,  1.25, 0.12,  0.075, 0.10, 2.5,  0.06,  0.15, 0.05, 0.19]
)
# fmt: on
_COL = {name: i for i, name in enumerate(_COLUMNS)}
_STRONG_SCALE = 1.5  # strong intensity: 1.5x the deviation from neutral ...
_STRONG_LEVEL_DB = 2.0  # ... and a little louder

# The two RAVDESS statements as syllables: vowel, relative duration, stress, consonant onset.
_VOWELS = ("I", "A", "O", "AE", "@")  # kids/sit, are, talk/dogs/door, by, the
_FORMANTS_HZ = np.array(  # adult male F1..F4; females and individuals scale them
    [
        [400.0, 1900.0, 2550.0, 3300.0],
        [730.0, 1090.0, 2440.0, 3300.0],
        [570.0, 840.0, 2410.0, 3300.0],
        [660.0, 1700.0, 2400.0, 3300.0],
        [500.0, 1500.0, 2500.0, 3300.0],
    ]
)
_BANDWIDTHS_HZ = np.array([70.0, 100.0, 130.0, 200.0])
_STATEMENTS = {
    # "Kids are talking by the door"
    1: {
        "vowel": [0, 1, 2, 0, 3, 4, 2],
        "dur": [1.1, 0.6, 1.0, 0.7, 0.9, 0.5, 1.5],
        "stress": [1.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.8],
        "onset": [1.0, 0.0, 1.0, 0.8, 0.8, 0.5, 1.0],
    },
    # "Dogs are sitting by the door"
    2: {
        "vowel": [2, 1, 0, 0, 3, 4, 2],
        "dur": [1.2, 0.6, 1.0, 0.7, 0.9, 0.5, 1.5],
        "stress": [1.0, 0.0, 1.0, 0.0, 0.5, 0.0, 0.8],
        "onset": [1.0, 0.0, 1.0, 0.8, 0.8, 0.5, 1.0],
    },
}
_BASE_SYLLABLE_RATE = 4.0  # syllables per second for a neutral, average speaker
_BASE_RMS_DBFS = -26.0


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _speaker(actor: int, seed: int) -> dict[str, float]:
    """Fixed traits of one synthetic actor; odd actors are male, as in RAVDESS."""
    r = _rng(seed, 1, actor)
    male = actor % 2 == 1
    return {
        "f0": (110.0 if male else 205.0) * float(np.exp(r.normal(0.0, 0.12))),
        "formant_scale": (1.0 if male else 1.16) * float(np.exp(r.normal(0.0, 0.04))),
        "rate": float(np.exp(r.normal(0.0, 0.10))),
        "level": float(r.normal(0.0, 2.5)),
        "breath": float(r.normal(0.0, 0.04)),
        "dark": float(r.normal(0.0, 0.10)),
        "expressive": float(np.exp(r.normal(0.0, 0.2))),
        "noise_db": float(r.normal(-62.0, 3.0)),
    }


def _utterance_params(
    label: int, intensity: int, speaker: dict[str, float], r: np.random.Generator
) -> dict[str, float]:
    """Prosody of one utterance: emotion x intensity x speaker style + its own variation."""
    neutral = _PROSODY[0]
    scale = speaker["expressive"] * (_STRONG_SCALE if intensity == 2 else 1.0)
    mean = neutral + scale * (_PROSODY[label] - neutral)
    noise = r.normal(0.0, 1.0, len(_COLUMNS)) * _JITTER_STD
    out = dict(zip(_COLUMNS, (mean + noise).tolist(), strict=True))
    rate = float(mean[_COL["rate"]])
    out["rate"] = max(0.5, rate) * float(np.exp(noise[_COL["rate"]])) * speaker["rate"]
    out["level"] += speaker["level"] + (_STRONG_LEVEL_DB if intensity == 2 else 0.0)
    out["breath"] = float(np.clip(out["breath"] + speaker["breath"], 0.01, 0.6))
    out["dark"] = float(np.clip(out["dark"] + speaker["dark"], 0.0, 1.0))
    out["gap"] = float(np.clip(out["gap"], 0.1, 0.5))
    out["attack"] = float(np.clip(out["attack"], 0.2, 1.5))
    out["tremor"] = max(0.0, out["tremor"])
    out["jitter"] = max(0.01, out["jitter"])
    return out


def _one_pole(x: np.ndarray, pole: float) -> np.ndarray:
    """Unity-DC-gain one-pole low-pass along the last axis (keeps float32)."""
    from scipy import signal

    return signal.lfilter(
        np.array([1.0 - pole], x.dtype), np.array([1.0, -pole], x.dtype), x, axis=-1
    )


def _formant_sections(formants_hz: np.ndarray, sample_rate: int) -> list[list[float]]:
    """Cascade of unity-DC-gain two-pole resonators (Klatt), as second-order sections."""
    sections = []
    for f, bw in zip(formants_hz, _BANDWIDTHS_HZ, strict=True):
        if f >= 0.45 * sample_rate:
            continue
        r = np.exp(-np.pi * bw / sample_rate)
        b1, b2 = 2.0 * r * np.cos(2.0 * np.pi * f / sample_rate), -(r**2)
        sections.append([1.0 - b1 - b2, 0.0, 0.0, 1.0, -b1, -b2])
    return sections


def _upsample(control: np.ndarray, factor: int, num_samples: int) -> np.ndarray:
    """Linear interpolation of a [B, M] control signal to [B, num_samples] audio samples."""
    frac = (np.arange(factor, dtype=np.float32) / factor)[None, None, :]
    step = np.diff(control, axis=1)[:, :, None]
    full = control[:, :-1, None] + step * frac
    return full.reshape(control.shape[0], -1)[:, :num_samples]


def _synthesize_batch(
    clips: list[dict[str, Any]], speaker: dict[str, float], sample_rate: int, num_samples: int
) -> np.ndarray:
    """[B, num_samples] float32 waveforms for clips of one speaker, vectorised over the batch.

    Slow quantities (envelopes, the f0 contour) are computed at a ~1 kHz control rate and
    interpolated; only the source, the filters and the noise run at the audio rate.
    """
    from scipy import signal

    f32 = np.float32
    sr = float(sample_rate)
    b = len(clips)
    factor = _control_factor(sample_rate)
    num_control = _num_control(num_samples, factor)
    tc = (np.arange(num_control) * factor / sr)[None, :]  # control times, s
    par = {k: np.array([c["params"][k] for c in clips])[:, None] for k in clips[0]["params"]}
    ctrl_noise = np.stack([c["control_noise"] for c in clips], axis=1)  # [2, B, M]
    noise = np.stack([c["noise"] for c in clips], axis=1)  # [3, B, N], float32

    # Syllable timeline, [B, S]: start and length of the voiced part of each syllable.
    sylls = [_STATEMENTS[c["statement"]] for c in clips]
    dur = np.array([s["dur"] for s in sylls]) * np.stack([c["dur_jitter"] for c in clips])
    slot = dur / (_BASE_SYLLABLE_RATE * par["rate"])  # seconds per syllable slot
    voiced = slot * (1.0 - par["gap"])
    onset = np.array([c["onset_s"] for c in clips])[:, None]
    starts = onset + np.concatenate([np.zeros((b, 1)), np.cumsum(slot, axis=1)[:, :-1]], axis=1)
    stress = np.array([s["stress"] for s in sylls]) * np.stack([c["accent_jitter"] for c in clips])
    consonant = np.array([s["onset"] for s in sylls])
    n_syll = starts.shape[1]

    # Control rate: which syllable each instant is in, the position x in [0, 1] inside it.
    cur = (tc[:, :, None] >= starts[:, None, :]).sum(axis=2) - 1  # [B, M]
    idx = np.clip(cur, 0, n_syll - 1)
    nxt = np.clip(cur + 1, 0, n_syll - 1)
    x = (tc - np.take_along_axis(starts, idx, 1)) / np.take_along_axis(voiced, idx, 1)
    inside = (cur >= 0) & (x < 1.0)
    xc = np.clip(x, 0.0, 1.0)
    bump = np.maximum(np.sin(np.pi * xc), 0.0)
    syll_stress = np.take_along_axis(stress, idx, 1)
    env = np.where(
        inside, bump ** par["attack"] * (1.0 - 0.3 * xc) * (0.75 + 0.25 * syll_stress), 0
    )
    accent = np.where(inside, bump * syll_stress, 0.0)
    dt = np.take_along_axis(starts, nxt, 1) - tc  # consonant burst: 50 ms before each vowel
    burst = np.take_along_axis(consonant, nxt, 1) * (1.0 - dt / 0.05)
    cons_env = np.where((dt > 0.0) & (dt < 0.05), burst, 0.0)

    # f0 contour, semitones around the speaker's base.
    first, end = starts[:, :1], starts[:, -1:] + voiced[:, -1:]
    u = np.clip((tc - first) / (end - first), 0.0, 1.0)
    last = np.clip((tc - starts[:, -1:]) / voiced[:, -1:], 0.0, 1.0)
    tremor_hz = np.array([c["tremor_hz"] for c in clips])[:, None]
    tremor_phase = np.array([c["tremor_phase"] for c in clips])[:, None]
    semitones = (
        par["pitch"]
        + par["slope"] * (u - 0.5)
        + par["curve"] * (4.0 * (u - 0.5) ** 2 - 1.0 / 3.0)
        + par["final"] * last**2
        + par["accent"] * accent
        + par["tremor"] * np.sin(2.0 * np.pi * tremor_hz * tc + tremor_phase)
        + par["jitter"] * ctrl_noise[0]
    )
    f0c = np.clip(speaker["f0"] * np.exp2(semitones / 12.0), 50.0, 0.2 * sr)
    amp = env * (1.0 + 0.5 * par["jitter"] * ctrl_noise[1])  # with shimmer

    # Phase of a linearly interpolated f0, exact per control interval: cycles at the interval
    # starts (float64, then wrapped) plus the quadratic within each interval (float32).
    period = factor / sr
    cycles = np.concatenate(
        [np.zeros((b, 1)), np.cumsum(0.5 * period * (f0c[:, 1:] + f0c[:, :-1]), axis=1)], axis=1
    )
    tau = (np.arange(factor) / sr).astype(f32)[None, None, :]
    slope_c = (np.diff(f0c, axis=1) / (2.0 * period)).astype(f32)[:, :, None]
    within = (
        np.mod(cycles[:, :-1], 1.0).astype(f32)[:, :, None]
        + f0c[:, :-1].astype(f32)[:, :, None] * tau
        + slope_c * tau**2
    )
    theta = within.reshape(b, -1)[:, :num_samples] * f32(2.0 * np.pi)

    # Band-limited pulse train: sum_{k=1..K} cos(k theta), K fixed per clip below 0.45 sr.
    harmonics = np.floor(0.45 * sr / f0c.max(axis=1, keepdims=True)).astype(f32)
    half = np.sin(theta / 2)
    tiny = np.abs(half) < 1e-4
    blit = np.where(
        tiny, harmonics, np.sin((harmonics + 0.5) * theta) / (2 * np.where(tiny, 1, half)) - 0.5
    )
    blit *= f32(1.0) / np.sqrt(harmonics)  # unit power whatever the number of harmonics
    # Aspiration: high-passed noise, stronger in the open phase of each glottal cycle.
    aspiration = np.diff(noise[0], axis=1, prepend=0) * f32(np.sqrt(0.5))
    aspiration *= 0.6 + 0.4 * np.cos(theta)
    breath = (2.0 * par["breath"]).astype(f32)
    excitation = _upsample(amp.astype(f32), factor, num_samples) * (blit + breath * aspiration)

    # Per syllable and clip: spectral tilt (two poles: bright .. dark) and the vowel's formants.
    # Between syllables the excitation is silent, so each syllable is filtered on its own.
    tract = np.zeros_like(excitation)
    vowel_sections = [
        _formant_sections(f * speaker["formant_scale"], sample_rate) for f in _FORMANTS_HZ
    ]
    tail = int(0.04 * sr)
    for i, clip in enumerate(clips):
        pole = 0.3 + 0.62 * float(par["dark"][i, 0])
        tilt = [1.0 - pole, 0.0, 0.0, 1.0, -pole, 0.0]
        for s, v in enumerate(_STATEMENTS[clip["statement"]]["vowel"]):
            lo = max(0, int(starts[i, s] * sr))
            hi = min(num_samples, int((starts[i, s] + voiced[i, s]) * sr) + tail)
            if lo >= hi:
                continue
            sos = np.array([tilt, tilt, *vowel_sections[v]], dtype=f32)
            tract[i, lo:hi] += signal.sosfilt(sos, excitation[i, lo:hi])
    cons = _upsample(cons_env.astype(f32), factor, num_samples)
    speech = tract + 0.1 * cons * np.diff(noise[1], axis=1, prepend=0)

    # Loudness: speech RMS over the voiced samples set to the utterance's level (dBFS).
    voiced_samples = np.maximum((env > 0.1).sum(axis=1, keepdims=True) * factor, 1)
    rms = np.sqrt(np.einsum("bn,bn->b", speech, speech)[:, None] / voiced_samples)
    gain = (10.0 ** ((_BASE_RMS_DBFS + par["level"]) / 20.0) / (rms + 1e-12)).astype(f32)
    floor = (10.0 ** (np.array([c["noise_db"] for c in clips])[:, None] / 20.0)).astype(f32)
    wave = speech * gain + floor * noise[2]
    return _soft_limit(wave)


def _soft_limit(wave: np.ndarray, knee: float = 0.5, ceiling: float = 0.98) -> np.ndarray:
    """Identity below `knee`, a tanh curve up to `ceiling` above it: loud clips saturate gently."""
    loud = np.abs(wave).max(axis=1) > knee
    if loud.any():
        w = wave[loud]
        room = ceiling - knee
        over = np.abs(w) > knee
        squashed = np.sign(w) * (knee + room * np.tanh((np.abs(w) - knee) / room))
        wave[loud] = np.where(over, squashed, w)
    return wave


def _control_factor(sample_rate: int) -> int:
    """Audio samples per control step (~1 ms)."""
    return max(1, sample_rate // 1000)


def _num_control(num_samples: int, factor: int) -> int:
    return -(-num_samples // factor) + 1


def _clip_plan(
    actor: int,
    label: int,
    intensity: int,
    statement: int,
    repetition: int,
    speaker: dict[str, float],
    seed: int,
    sample_rate: int,
    num_samples: int,
) -> dict[str, Any]:
    """Everything random about one clip, drawn from its own seed."""
    r = _rng(seed, 2, actor, label, intensity, statement, repetition)
    n_syll = len(_STATEMENTS[statement]["dur"])
    num_control = _num_control(num_samples, _control_factor(sample_rate))
    # Jitter and shimmer: ~1 kHz white noise, smoothed to ~100 Hz, unit variance.
    control_noise = _one_pole(r.standard_normal((2, num_control)), 0.5) * np.sqrt(1 - 0.5**2)
    return {
        "statement": statement,
        "params": _utterance_params(label, intensity, speaker, r),
        "dur_jitter": np.exp(r.normal(0.0, 0.12, n_syll)),
        "accent_jitter": np.clip(1.0 + 0.3 * r.normal(size=n_syll), 0.2, 2.0),
        "onset_s": float(r.uniform(0.15, 0.45)),
        "tremor_hz": float(r.uniform(5.0, 7.5)),
        "tremor_phase": float(r.uniform(0.0, 2.0 * np.pi)),
        "noise_db": speaker["noise_db"] + float(r.normal(0.0, 2.0)),
        "control_noise": control_noise,
        # Audio-rate noise (aspiration, consonant bursts, room): white, unit variance; uniform
        # rather than Gaussian because it is drawn 4x faster and sounds the same.
        "noise": (r.random((3, num_samples), dtype=np.float32) - 0.5) * np.float32(np.sqrt(12)),
    }


def _expected(
    actors: tuple[int, ...],
    statements: tuple[int, ...],
    repetitions: tuple[int, ...],
    intensities: tuple[int, ...],
) -> list[tuple[int, int, int, int, int]]:
    """(actor, label, intensity, statement, repetition) of every clip, RAVDESS design."""
    return [
        (actor, label, intensity, statement, repetition)
        for actor in actors
        for label in range(len(EMOTIONS))
        for intensity in intensities
        if not (label == 0 and intensity != 1)  # neutral has normal intensity only
        for statement in statements
        for repetition in repetitions
    ]


def _relpath(actor: int, label: int, intensity: int, statement: int, repetition: int) -> str:
    name = format_ravdess_name(
        label=label, intensity=intensity, statement=statement, repetition=repetition, actor=actor
    )
    return f"Actor_{actor:02d}/{name}"


def demo_file_names(
    *,
    actors: tuple[int, ...] = tuple(range(15, 25)),
    statements: tuple[int, ...] = (1, 2),
    repetitions: tuple[int, ...] = (1, 2),
    intensities: tuple[int, ...] = (1, 2),
) -> list[str]:
    """Relative paths (``Actor_NN/<RAVDESS name>.wav``) `generate_demo_corpus` writes."""
    return [_relpath(*key) for key in _expected(actors, statements, repetitions, intensities)]


def _check_args(
    actors: tuple[int, ...],
    statements: tuple[int, ...],
    repetitions: tuple[int, ...],
    intensities: tuple[int, ...],
    sample_rate: int,
    duration_s: float,
) -> None:
    def check(name: str, values: tuple[int, ...], allowed: set[int] | None) -> None:
        ok = len(values) > 0 and len(set(values)) == len(values)
        ok = ok and all(isinstance(v, int) and v >= 1 for v in values)
        if not ok or (allowed is not None and not set(values) <= allowed):
            domain = sorted(allowed) if allowed else "positive integers"
            raise ConfigError(f"demo {name} must be distinct values from {domain}, got {values}")

    check("actors", actors, None)
    check("statements", statements, {1, 2})
    check("repetitions", repetitions, {1, 2})
    check("intensities", intensities, {1, 2})
    if not isinstance(sample_rate, int) or sample_rate < 8000:
        raise ConfigError(f"demo sample_rate must be an integer >= 8000 Hz, got {sample_rate}")
    if not duration_s > 0.0:
        raise ConfigError(f"demo duration_s must be positive, got {duration_s}")


def _is_complete(out_dir: Path, params: dict[str, Any], names: list[str], size: int) -> bool:
    try:
        recorded = json.loads((out_dir / "demo.json").read_text())
    except (OSError, ValueError):
        return False
    if recorded.get("params") != params:
        return False
    for name in names:
        path = out_dir / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def generate_demo_corpus(
    out_dir: str | os.PathLike[str],
    *,
    actors: tuple[int, ...] = tuple(range(15, 25)),
    statements: tuple[int, ...] = (1, 2),
    repetitions: tuple[int, ...] = (1, 2),
    intensities: tuple[int, ...] = (1, 2),
    sample_rate: int = 16000,
    duration_s: float = 3.0,
    seed: int = 0,
) -> Path:
    """Write the synthetic corpus to ``out_dir/Actor_NN/*.wav`` (16-bit) and return out_dir.

    The defaults give RAVDESS's design for actors 15-24: 60 clips per actor (neutral in normal
    intensity only), 600 in all. The same arguments always give the same bytes. A folder that
    already holds this corpus (``demo.json`` and every file) is returned without regenerating;
    one holding a demo corpus with other parameters is replaced, atomically; any other
    non-empty folder is refused with DataError rather than overwritten.
    """
    import soundfile as sf

    actors, statements = tuple(actors), tuple(statements)
    repetitions, intensities = tuple(repetitions), tuple(intensities)
    _check_args(actors, statements, repetitions, intensities, sample_rate, duration_s)
    out_dir = Path(out_dir).expanduser().absolute()
    num_samples = round(sample_rate * duration_s)
    params = {
        "format": DEMO_FORMAT,
        "generator_version": GENERATOR_VERSION,
        "actors": list(actors),
        "statements": list(statements),
        "repetitions": list(repetitions),
        "intensities": list(intensities),
        "sample_rate": sample_rate,
        "duration_s": float(duration_s),
        "seed": seed,
    }
    keys = _expected(actors, statements, repetitions, intensities)
    names = [_relpath(*key) for key in keys]
    file_size = _WAV_HEADER_BYTES + 2 * num_samples
    if _is_complete(out_dir, params, names, file_size):
        return out_dir
    ours = (out_dir / "demo.json").is_file()
    if out_dir.exists() and not ours and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(
            f"{out_dir}: exists and is not a sejax demo corpus (no demo.json); "
            "not overwriting it, choose another folder"
        )

    tmp = staging_folder(out_dir)
    try:
        for actor in actors:
            speaker = _speaker(actor, seed)
            (tmp / f"Actor_{actor:02d}").mkdir()
            mine = [(key, name) for key, name in zip(keys, names, strict=True) if key[0] == actor]
            for i in range(0, len(mine), _BATCH):
                chunk = mine[i : i + _BATCH]
                plans = [
                    _clip_plan(*key, speaker, seed, sample_rate, num_samples) for key, _ in chunk
                ]
                waves = _synthesize_batch(plans, speaker, sample_rate, num_samples)
                for (_, name), wave in zip(chunk, waves, strict=True):
                    pcm = np.round(wave * 32767.0).astype("<i2")
                    # Encode in memory: writing to a path makes libsndfile fsync every file.
                    buf = io.BytesIO()
                    sf.write(buf, pcm, sample_rate, subtype="PCM_16", format="WAV")
                    (tmp / name).write_bytes(buf.getvalue())
        meta = {"params": params, "num_files": len(names), "label_names": list(EMOTIONS)}
        (tmp / "demo.json").write_text(json.dumps(meta, indent=2) + "\n")
        replace_folder(tmp, out_dir)  # an older demo corpus is swapped out, atomically
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
