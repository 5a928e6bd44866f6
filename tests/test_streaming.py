"""sejax.inference.streaming: chunks cut from a file give the predictions of the file's windows."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import sejax
from sejax.errors import ConfigError, DataError
from sejax.inference.streaming import Stream
from tests.inference_fixtures import tiny_run

SCRIPT = Path(__file__).parents[1] / "experiments" / "stream_microphone.py"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir, demo = tiny_run(tmp_path_factory)
    predictor = sejax.load(workdir, hop_s=0.25)  # 1 s window, a prediction every 0.25 s
    clip = sorted(demo.rglob("*.wav"))[12]
    return predictor, predictor.waveform(clip)[0], clip


def _chunks(wave, seed):
    """Irregular chunk sizes, from 1 sample to more than a whole window."""
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(rng.choice([1, 37, 700, 1601, 4000, 17000], size=len(wave) // 1000))
    return np.split(wave, cuts[cuts < len(wave)])


def test_stream_of_chunks_equals_the_file_windows(setup):
    predictor, wave, _ = setup
    stream = Stream(predictor)
    emitted = [p for chunk in _chunks(wave, 0) for p in stream.push(chunk)]
    assert stream.samples_seen == len(wave) == 48000
    hop = 0.25
    assert [p.end_s for p in emitted] == pytest.approx(np.arange(1, 13) * hop)
    # Full windows: exactly the sliding windows `predict` scores (1 s window, 0.25 s hop).
    full = [p for p in emitted if p.end_s - p.start_s == pytest.approx(1.0)]
    offline = predictor.predict(wave).windows
    assert [p.start_s for p in full] == [w.start_s for w in offline]
    for live, ref in zip(full, offline, strict=True):
        assert live.label == ref.label
        assert live.probabilities == pytest.approx(ref.probabilities, abs=1e-6)
    # Before a full window: the audio so far, scored as a short clip (zero-padded).
    partial = [p for p in emitted if p not in full]
    assert [p.end_s for p in partial] == pytest.approx([0.25, 0.5, 0.75])
    for p in partial:
        ref = predictor.predict(wave[: round(p.end_s * 16000)])
        assert p.start_s == 0 and p.probabilities == pytest.approx(ref.probabilities, abs=1e-6)


def test_chunking_does_not_matter_and_reset_restarts(setup):
    predictor, wave, _ = setup
    stream = Stream(predictor, hop_s=0.5, emit_partial=False)
    first = [p for chunk in _chunks(wave, 1) for p in stream.push(chunk)]
    assert [p.start_s for p in first] == [0.0, 0.5, 1.0, 1.5, 2.0]
    stream.reset()
    assert stream.samples_seen == 0
    stereo = np.stack([wave, wave], axis=1)  # [samples, channels] chunks are averaged
    again = [p for chunk in np.array_split(stereo, 7) for p in stream.push(chunk)]
    assert [p.end_s for p in again] == [p.end_s for p in first]
    for a, b in zip(first, again, strict=True):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    assert stream.push(np.zeros(0, np.float32)) == []


def test_bad_chunks_and_hops_are_refused(setup):
    predictor, _, _ = setup
    with pytest.raises(DataError, match="NaN"):
        Stream(predictor).push(np.array([0.0, np.inf], np.float32))
    with pytest.raises(DataError, match="chunks must be"):
        Stream(predictor).push(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(ConfigError, match="hop_s"):
        Stream(predictor, hop_s=0.0)


def _load_script():
    spec = importlib.util.spec_from_file_location("stream_microphone", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_microphone_example_streams_a_file_and_explains_missing_sounddevice(
    setup, capsys, monkeypatch
):
    predictor, _, clip = setup
    script = _load_script()
    workdir = predictor.bundle.source
    assert script.main(["--model", workdir, "--file", str(clip), "--hop", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[-1].split()[0] == "2.00-" and lines[-1].split()[1] == "3.00s"
    assert lines[-1].split()[2] in predictor.label_names
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if not installed
    with pytest.raises(SystemExit, match="pip install sounddevice"):
        script.main(["--model", workdir])
