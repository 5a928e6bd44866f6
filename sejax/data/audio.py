"""Audio loading: any file soundfile (or audioread) can decode -> mono float32 at one rate.

Feature extraction needs one waveform convention whatever the corpus ships: FLAC or WAV,
16-bit or float, mono or stereo, 16 or 48 kHz. Channels are averaged, PCM is scaled to
[-1, 1) as soundfile and librosa do, and other rates are resampled with soxr (librosa's
'soxr_hq'). Anything that cannot become such a waveform raises `BadAudio` (a `DataError`)
naming the file and saying what kind of problem it is, so `sejax prepare` can report it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sejax.corpora.files import ZIP_SEPARATOR, open_source
from sejax.errors import DataError

RESAMPLE_TYPE = "soxr_hq"
# Leading bytes of the containers soundfile or audioread decode: a file that starts with one
# of these and fails to decode is corrupt, anything else is not audio at all.
_MAGIC = {
    b"RIFF": "WAV", b"RIFX": "WAV", b"RF64": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg",
    b"FORM": "AIFF", b"ID3": "MP3", b"\xff\xfb": "MP3", b"\xff\xf3": "MP3", b"\xff\xf2": "MP3",
    b".snd": "AU", b"caff": "CAF",
}  # fmt: skip


class BadAudio(DataError):
    """A file that cannot become a waveform; ``kind`` says why in one word (`screening`)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@dataclasses.dataclass(frozen=True)
class Decoded:
    """A decoded clip: mono float32 at the requested rate, and what the file held."""

    wave: np.ndarray
    source_rate: int
    source_channels: int


def read_source(source: str) -> bytes:
    """The raw bytes of a file path or a zip member ("<zip>::<member>", `open_source`)."""
    if ZIP_SEPARATOR in source and not os.path.exists(source):
        with open_source(source) as f:
            return f.read()
    path = Path(source)
    if not path.exists():
        raise BadAudio(f"audio file not found: {source}", "unreadable")
    if not path.is_file():
        raise BadAudio(f"audio source is not a file: {source}", "unreadable")
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadAudio(f"cannot read audio file {source}: {e}", "unreadable") from e


def _decode_soundfile(
    data: bytes, on_header: Callable[[float], None] | None = None
) -> tuple[np.ndarray, int]:
    import soundfile as sf

    # One open for the header and the samples: `sf.info` then `sf.read` parse it twice.
    with sf.SoundFile(io.BytesIO(data)) as f:
        rate = int(f.samplerate)
        if on_header is not None and rate > 0:
            on_header(f.frames / rate)
        return f.read(dtype="float32", always_2d=True), rate


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


def container(data: bytes) -> str | None:
    """The audio container the leading bytes announce (``'WAV'``, ``'FLAC'``...), or None."""
    if data[4:8] == b"ftyp":
        return "MP4"
    return next((name for magic, name in _MAGIC.items() if data.startswith(magic)), None)


def wav_truncation(data: bytes) -> str | None:
    """Why a RIFF/WAVE file is cut short (its ``data`` chunk declares more bytes than follow).

    libsndfile silently decodes what is there, so a half-copied WAV would otherwise pass as a
    shorter clip. Sizes 0 and 0xFFFFFFFF are placeholders of streaming writers, not claims.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            present = len(data) - pos - 8
            if size not in (0, 0xFFFFFFFF) and present < size:
                return f"truncated: {present} of the {size} bytes of audio data its header declares"
            return None
        pos += 8 + size + (size & 1)  # chunks are padded to even sizes
    return None  # no data chunk: a broken header, which decoding reports


def decode(
    data: bytes,
    sample_rate: int,
    *,
    name: str,
    on_header: Callable[[float], None] | None = None,
) -> Decoded:
    """Decodes file bytes to a mono float32 waveform at ``sample_rate``; raises `BadAudio`.

    ``name`` is only used in error messages and for the suffix the fallback decoder needs.
    ``on_header``: called with the duration the header declares (seconds) before the samples
    are decoded, when soundfile can read the header; it may raise `BadAudio` to refuse the file.
    """
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise DataError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not data:
        raise BadAudio(f"audio file is empty (0 bytes): {name}", "empty")
    try:
        wave, rate = _decode_soundfile(data, on_header)
    except BadAudio:  # refused by on_header
        raise
    except Exception as sf_error:  # libsndfile raises several types for unknown formats
        try:
            wave, rate = _decode_audioread(data, name)
        except Exception as ar_error:
            kind = "corrupt" if container(data) else "not_audio"
            what = (f"a {container(data)} file that does not decode (corrupt or truncated)"
                    if kind == "corrupt" else "not audio (no known audio header)")  # fmt: skip
            raise BadAudio(
                f"cannot decode audio file {name}: {what} (soundfile: {sf_error}; audioread: "
                f"{type(ar_error).__name__}: {ar_error})",
                kind,
            ) from ar_error
    if wave.shape[0] == 0:
        raise BadAudio(f"audio file has no samples: {name}", "empty")
    if not np.all(np.isfinite(wave)):
        raise BadAudio(f"audio file contains NaN or Inf samples: {name}", "non_finite")
    channels = wave.shape[1]
    mono = wave.mean(axis=1, dtype=np.float32) if channels > 1 else wave[:, 0]
    return Decoded(resample(mono, rate, int(sample_rate)), int(rate), int(channels))


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """A mono waveform at ``rate`` Hz as contiguous float32 at ``target`` Hz: soxr's HQ filter
    (librosa's ``'soxr_hq'``), the one resampler for files and for waveforms given to a model.
    """
    if rate <= 0:
        raise DataError(f"sample_rate must be a positive integer, got {rate}")
    if rate != target:
        import librosa  # ImportError without the data extras: callers say what to install

        wave = librosa.resample(wave, orig_sr=rate, target_sr=target, res_type=RESAMPLE_TYPE)
    return np.ascontiguousarray(wave, dtype=np.float32)


def decode_audio(data: bytes, sample_rate: int, *, name: str) -> np.ndarray:
    """Decodes file bytes to a mono float32 waveform at ``sample_rate`` (see `decode`)."""
    return decode(data, sample_rate, name=name).wave


def load_audio(source: str, sample_rate: int) -> np.ndarray:
    """Reads ``source`` (a path, or "<zip>::<member>") as mono float32 at ``sample_rate``."""
    source = str(source)
    return decode_audio(read_source(source), sample_rate, name=source)
