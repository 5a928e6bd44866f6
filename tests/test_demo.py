"""The synthetic demo corpus: layout, determinism, idempotency, and emotions that are learnable."""

from __future__ import annotations

import collections
import itertools
import json
import os

import numpy as np
import pytest
import soundfile as sf

from sejax.corpora import ravdess
from sejax.data import demo
from sejax.errors import ConfigError, DataError

SMALL = {"actors": (3, 4), "statements": (1,), "repetitions": (1,), "duration_s": 1.5}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    return demo.generate_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", **SMALL)


def test_layout_names_and_audio_format(small_corpus):
    utterances, skipped = ravdess.read(small_corpus)
    assert skipped == []
    # 8 emotions x 2 intensities, less strong neutral = 15 clips per actor.
    assert len(utterances) == 30
    assert collections.Counter(u.actor for u in utterances) == {3: 15, 4: 15}
    assert {u.gender for u in utterances if u.actor == 3} == {"male"}
    assert collections.Counter(u.emotion for u in utterances)["neutral"] == 2
    assert all(u.intensity == 1 for u in utterances if u.emotion == "neutral")
    assert all((u.modality, u.vocal_channel) == (3, 1) for u in utterances)
    for u in utterances:
        assert os.path.basename(os.path.dirname(u.source)) == f"Actor_{u.actor:02d}"
        info = sf.info(u.source)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 24000)
        assert info.subtype == "PCM_16" and info.format == "WAV"
    expected = demo.demo_file_names(actors=(3, 4), statements=(1,), repetitions=(1,))
    assert sorted(expected) == sorted(
        os.path.relpath(u.source, small_corpus).replace(os.sep, "/") for u in utterances
    )
    meta = json.loads((small_corpus / "demo.json").read_text())
    assert meta["params"]["actors"] == [3, 4]
    assert meta["num_files"] == 30
    assert meta["label_names"] == list(ravdess.EMOTIONS)


def test_audio_is_sane(small_corpus):
    for path in sorted(small_corpus.glob("Actor_*/*.wav")):
        wave, _ = sf.read(path)
        assert np.isfinite(wave).all()
        peak = np.abs(wave).max()
        assert 0.01 < peak <= 0.99, path.name
        assert np.abs(wave[:800]).max() < 0.01  # the first 50 ms are silence (room noise)


def test_deterministic_and_independent_of_what_else_is_generated(small_corpus, tmp_path):
    again = demo.generate_demo_corpus(tmp_path / "again", **{**SMALL, "actors": (4,), "seed": 0})
    for path in sorted(again.glob("Actor_04/*.wav")):
        assert path.read_bytes() == (small_corpus / "Actor_04" / path.name).read_bytes()
    other = demo.generate_demo_corpus(tmp_path / "other", **{**SMALL, "actors": (4,), "seed": 1})
    name = "Actor_04/03-01-05-02-01-01-04.wav"
    assert (other / name).read_bytes() != (small_corpus / name).read_bytes()


def test_idempotent_regenerates_when_params_change_or_files_missing(tmp_path):
    out = tmp_path / "c"
    kwargs = {**SMALL, "actors": (1,), "duration_s": 0.5}
    demo.generate_demo_corpus(out, **kwargs)
    clip = out / "Actor_01" / "03-01-02-01-01-01-01.wav"
    stamp = clip.stat().st_mtime_ns, clip.stat().st_ino
    assert demo.generate_demo_corpus(out, **kwargs) == out
    assert (clip.stat().st_mtime_ns, clip.stat().st_ino) == stamp  # reused, not rewritten

    clip.unlink()  # incomplete: regenerated
    demo.generate_demo_corpus(out, **kwargs)
    assert clip.is_file()

    demo.generate_demo_corpus(out, **{**kwargs, "actors": (2,)})  # other params: replaced
    assert sorted(p.name for p in out.iterdir()) == ["Actor_02", "demo.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp folders left


def test_refuses_to_overwrite_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="not a sejax demo corpus"):
        demo.generate_demo_corpus(tmp_path / "mine", **SMALL)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"actors": ()}, "actors"),
        ({"actors": (0,)}, "actors"),
        ({"actors": (1, 1)}, "actors"),
        ({"statements": (3,)}, "statements"),
        ({"repetitions": (0,)}, "repetitions"),
        ({"intensities": (1, 3)}, "intensities"),
        ({"sample_rate": 4000}, "sample_rate"),
        ({"duration_s": 0.0}, "duration_s"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        demo.generate_demo_corpus(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def _frames(wave: np.ndarray, n_fft: int = 512, hop: int = 160) -> np.ndarray:
    """Power spectra of Hann-windowed frames, [T, n_fft // 2 + 1]."""
    count = 1 + (len(wave) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]
    return np.abs(np.fft.rfft(wave[index] * np.hanning(n_fft), axis=1)) ** 2


def _describe(wave: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Loudness, share of speech time and median f0 (autocorrelation) of one clip."""
    power = _frames(wave)
    frame_db = 10 * np.log10(power.sum(axis=1) + 1e-12)
    active = frame_db > frame_db.max() - 20
    autocorr = np.fft.irfft(power[active], axis=1)  # Wiener-Khinchin
    lags = np.arange(sample_rate // 450, sample_rate // 60)
    f0 = sample_rate / lags[np.argmax(autocorr[:, lags], axis=1)]
    return {"db": frame_db[active].mean(), "active": active.mean(), "pitch": np.median(f0)}


def test_emotions_and_speakers_differ_as_designed(tmp_path):
    out = demo.generate_demo_corpus(tmp_path / "c", actors=(5, 6), intensities=(2,))
    stats = collections.defaultdict(list)
    for u in ravdess.read(out)[0]:
        wave, sr = sf.read(u.source)
        for key, value in _describe(wave, sr).items():
            stats[(u.emotion, key)].append(value)
            stats[(u.gender, key)].append(value)
    mean = {k: float(np.mean(v)) for k, v in stats.items()}
    assert mean[("angry", "db")] > mean[("sad", "db")] + 6
    assert mean[("angry", "db")] > mean[("calm", "db")] + 4
    assert mean[("sad", "active")] > mean[("fearful", "active")]  # slower speech
    assert mean[("fearful", "pitch")] > mean[("sad", "pitch")] * 1.2
    assert mean[("female", "pitch")] > mean[("male", "pitch")] * 1.4


def test_learnable_on_held_out_speakers_but_not_trivial(tmp_path):
    """Linear model on clip summaries, trained on 4 speakers, tested on 2 others."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = demo.generate_demo_corpus(tmp_path / "c", actors=(1, 2, 3, 4, 5, 6))
    bands = np.geomspace(60, 7800, 25)
    features, labels, actors = [], [], []
    for u in ravdess.read(out)[0]:
        wave, sr = sf.read(u.source)
        power = _frames(wave)
        freqs = np.fft.rfftfreq(512, 1 / sr)
        band_db = np.stack(
            [
                10 * np.log10(power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1) + 1e-10)
                for lo, hi in itertools.pairwise(bands)
            ],
            axis=1,
        )
        active = band_db.max(axis=1) > band_db.max() - 30
        features.append(
            np.concatenate(
                [
                    band_db[active].mean(0),
                    band_db[active].std(0),
                    np.abs(np.diff(band_db, axis=0)).mean(0),
                    [active.mean()],
                ]
            )
        )
        labels.append(ravdess.EMOTIONS.index(u.emotion))
        actors.append(u.actor)
    x, y, actors = np.array(features), np.array(labels), np.array(actors)
    test = np.isin(actors, (5, 6))
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    model.fit(x[~test], y[~test])
    uar = balanced_accuracy_score(y[test], model.predict(x[test]))
    assert 0.3 < uar < 0.95, uar  # chance is 0.125
