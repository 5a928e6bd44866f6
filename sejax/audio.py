"""Audio loading: any file soundfile (or audioread) can decode -> mono float32 at one rate.

Feature extraction needs one waveform convention whatever the corpus ships: FLAC or WAV,
16-bit or float, mono or stereo, 16 or 48 kHz. Channels are averaged, PCM is scaled to
[-1, 1) as soundfile and librosa do, and other rates are resampled with soxr (librosa's
'soxr_hq'). Anything that cannot become such a waveform raises `DataError` naming the file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from sejax.errors import DataError

# Separates the archive from the member in a zip source ("<zip path>::<member name>").
ZIP_SEPARATOR = "::"
RESAMPLE_TYPE = "soxr_hq"


def read_source(source: str) -> bytes:
    """The raw bytes of a file path or a zip member ("<zip>::<member>", via `corpus`)."""
    if ZIP_SEPARATOR in source and not os.path.exists(source):
        from sejax import corpus  # a zip member: the corpus module knows how to open it

        with corpus.open_source(source) as f:
            return f.read()
    path = Path(source)
    if not path.exists():
        raise DataError(f"audio file not found: {source}")
    if not path.is_file():
        raise DataError(f"audio source is not a file: {source}")
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read audio file {source}: {e}") from e


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave, int(rate)


def _decode_audioread(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Fallback for formats libsndfile lacks; audioread needs a real path, so use a temp file."""
    import audioread

    suffix = Path(name.split(ZIP_SEPARATOR)[-1]).suffix
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="sejax-audio-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with audioread.audio_open(tmp) as f:
            rate, channels = int(f.samplerate), int(f.channels)
            pcm = b"".join(f)  # interleaved signed 16-bit little-endian
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    wave = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / np.float32(32768.0)
    return wave.reshape(-1, max(channels, 1)), rate


def decode_audio(data: bytes, sample_rate: int, *, name: str) -> np.ndarray:
    """Decodes file bytes to a mono float32 waveform at ``sample_rate``.

    ``name`` is only used in error messages and for the suffix the fallback decoder needs.
    """
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise DataError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not data:
        raise DataError(f"audio file is empty (0 bytes): {name}")
    try:
        wave, rate = _decode_soundfile(data)
    except Exception as sf_error:  # libsndfile raises several types for unknown formats
        try:
            wave, rate = _decode_audioread(data, name)
        except Exception as ar_error:
            raise DataError(
                f"cannot decode audio file {name}: not audio, corrupt, or an unsupported "
                f"format (soundfile: {sf_error}; audioread: {type(ar_error).__name__}: "
                f"{ar_error})"
            ) from ar_error
    if wave.shape[0] == 0:
        raise DataError(f"audio file has no samples: {name}")
    if not np.all(np.isfinite(wave)):
        raise DataError(f"audio file contains NaN or Inf samples: {name}")
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if rate != sample_rate:
        import librosa

        mono = librosa.resample(
            mono, orig_sr=rate, target_sr=int(sample_rate), res_type=RESAMPLE_TYPE
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(source: str, sample_rate: int) -> np.ndarray:
    """Reads ``source`` (a path, or "<zip>::<member>") as mono float32 at ``sample_rate``."""
    source = str(source)
    return decode_audio(read_source(source), sample_rate, name=source)
