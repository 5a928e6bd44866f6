"""sejax.data.audio: every readable file becomes mono float32 at the target rate; bad files
name it."""

import zipfile

import librosa
import numpy as np
import pytest
import soundfile as sf

from sejax.data import audio
from sejax.errors import DataError

SR = 16000


def _tone(sr: int, seconds: float = 0.5, freqs=(220.0, 1000.0, 3100.0)) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (0.2 * sum(np.sin(2 * np.pi * f * t) for f in freqs)).astype(np.float32)


def test_wav_mono_is_read_unchanged(tmp_path):
    wave = _tone(SR)
    path = tmp_path / "a.wav"
    sf.write(path, wave, SR, subtype="PCM_16")
    out = audio.load_audio(str(path), SR)
    expected, _ = sf.read(path, dtype="float32")
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_array_equal(out, expected)
    assert np.abs(out - wave).max() < 1e-4  # only 16-bit quantisation


def test_flac_and_float_wav(tmp_path):
    wave = _tone(SR)
    sf.write(tmp_path / "a.flac", wave, SR, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", wave, SR, subtype="FLOAT")
    np.testing.assert_allclose(audio.load_audio(str(tmp_path / "a.flac"), SR), wave, atol=1e-4)
    np.testing.assert_array_equal(audio.load_audio(str(tmp_path / "b.wav"), SR), wave)


def test_stereo_is_averaged(tmp_path):
    left, right = _tone(SR, freqs=(300.0,)), _tone(SR, freqs=(500.0,))
    sf.write(tmp_path / "s.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    out = audio.load_audio(str(tmp_path / "s.wav"), SR)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-7)


def test_other_rate_is_resampled_with_soxr(tmp_path):
    wave48 = _tone(48000)
    sf.write(tmp_path / "hi.wav", wave48, 48000, subtype="FLOAT")
    out = audio.load_audio(str(tmp_path / "hi.wav"), SR)
    assert out.dtype == np.float32 and out.shape == (SR // 2,)
    expected = librosa.resample(wave48, orig_sr=48000, target_sr=SR, res_type="soxr_hq")
    np.testing.assert_array_equal(out, expected)
    # And it is the same signal synthesised directly at 16 kHz (away from the edges).
    np.testing.assert_allclose(out[200:-200], _tone(SR)[200:-200], atol=2e-3)


def test_one_resampler_for_files_and_waveforms(tmp_path):
    """A waveform given at another rate (a model's input) is resampled as a file is."""
    from sejax.inference import predict

    wave48 = _tone(48000)
    sf.write(tmp_path / "hi.wav", wave48, 48000, subtype="FLOAT")
    from_file = audio.load_audio(str(tmp_path / "hi.wav"), SR)
    direct = audio.resample(wave48, 48000, SR)
    assert direct.dtype == np.float32 and direct.flags.c_contiguous
    np.testing.assert_array_equal(direct, from_file)
    np.testing.assert_array_equal(predict._resample(wave48, 48000, SR), from_file)
    same = audio.resample(wave48.astype(np.float64), 48000, 48000)
    assert same.dtype == np.float32
    np.testing.assert_array_equal(same, wave48)  # the same rate: no filter
    with pytest.raises(DataError, match="sample_rate must be a positive integer, got 0"):
        audio.resample(wave48, 0, SR)


def test_zip_member_source(tmp_path):
    wave = _tone(SR)
    sf.write(tmp_path / "a.wav", wave, SR, subtype="PCM_16")
    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(tmp_path / "a.wav", "Actor_01/a.wav")
    out = audio.load_audio(f"{archive}::Actor_01/a.wav", SR)
    np.testing.assert_array_equal(out, audio.load_audio(str(tmp_path / "a.wav"), SR))


def test_fallback_decoder_when_soundfile_fails(tmp_path, monkeypatch):
    wave = _tone(SR)
    sf.write(tmp_path / "a.wav", wave, SR, subtype="PCM_16")

    def refuse(data, on_header=None):
        raise RuntimeError("format not supported by libsndfile")

    monkeypatch.setattr(audio, "_decode_soundfile", refuse)
    out = audio.load_audio(str(tmp_path / "a.wav"), SR)
    expected, _ = sf.read(tmp_path / "a.wav", dtype="float32")
    np.testing.assert_array_equal(out, expected)


def test_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(DataError, match=r"not found.*nope\.wav"):
        audio.load_audio(str(missing), SR)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"this is a README, not audio\n" * 20, "cannot decode"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode"),  # truncated header
    ],
    ids=["empty", "text", "truncated"],
)
def test_unreadable_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "03-01-05-02-01-01-01.wav"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        audio.load_audio(str(path), SR)
    assert str(path) in str(info.value)


def test_zero_samples_is_an_error(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros(0, np.float32), SR, subtype="PCM_16")
    with pytest.raises(DataError, match=r"no samples.*silent\.wav"):
        audio.load_audio(str(path), SR)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples_are_an_error(tmp_path, bad):
    wave = _tone(SR)
    wave[100] = bad
    path = tmp_path / "nan.wav"
    sf.write(path, wave, SR, subtype="FLOAT")
    with pytest.raises(DataError, match=r"NaN or Inf.*nan\.wav"):
        audio.load_audio(str(path), SR)
