"""sejax.inference.predict, sejax.inference.bundle and `sejax predict`: the library API and
the command."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import jax
import numpy as np
import pytest
import soundfile as sf

import sejax
from sejax import io
from sejax.cli import main as cli
from sejax.configs import loading as config_lib
from sejax.data import features, input_pipeline, prepare
from sejax.errors import CheckpointError, ConfigError, DataError
from sejax.inference import bundle as bundle_lib
from sejax.inference import predict
from sejax.training import steps
from tests.inference_fixtures import tiny_run

RATE = 16000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run):
    return sejax.load(run[0])


def _clips(demo, count):
    return sorted(str(p) for p in demo.rglob("*.wav"))[:count]


def test_features_and_logits_match_the_training_path(run, tmp_path):
    """Shards made by `prepare`, read and normalised by the input pipeline and scored by the
    eval step, against the predictor on the same files: the librosa front end runs the very
    code `prepare` ran (equal up to BLAS summation order, ~1 ulp), the JAX front end agrees to
    float tolerance, and logits and labels agree."""
    workdir, demo = run
    bundle = bundle_lib.load(workdir)
    cfg = bundle.config.features  # 1 s windows of 3 s clips: training crops the start
    corpus = tmp_path / "corpus" / "Actor_23"
    corpus.mkdir(parents=True)
    for clip in _clips(demo, 30)[::5]:  # six clips, six emotions
        (corpus / Path(clip).name).write_bytes(Path(clip).read_bytes())
    prepare.prepare(corpus.parent, tmp_path / "shards", cfg, num_workers=1, progress=False)
    shards = input_pipeline.Shards(tmp_path / "shards")
    indices = np.arange(len(shards.examples))
    identity = input_pipeline.Normalization(np.zeros_like(bundle.mean), np.ones_like(bundle.std))
    raw = [(b, b["mask"] > 0) for b in shards.eval_batches(indices, identity, batch_size=8)]
    sources = [shards.examples[i]["source"] for b, keep in raw for i in b["index"][keep]]
    shard_feats = np.concatenate([b["features"][keep] for b, keep in raw])
    # What eval_step reads of a TrainState: apply_fn, inference_params, batch_stats.
    state = types.SimpleNamespace(apply_fn=bundle.model().apply,
                                  inference_params=bundle.variables["params"],
                                  batch_stats=bundle.variables["batch_stats"])  # fmt: skip
    eval_step = jax.jit(lambda batch: steps.eval_step(state, batch, axis_name=None)[0])
    norm = input_pipeline.Normalization(bundle.mean, bundle.std)
    train_logits = np.concatenate([
        np.asarray(eval_step(b)["logits"])[b["mask"] > 0]
        for b in shards.eval_batches(indices, norm, batch_size=8)
    ])  # fmt: skip
    assert len(sources) == len(train_logits) == 6

    for frontend, feat_tol in (("librosa", 1e-4), ("jax", 1e-3)):
        p = predict.Predictor(bundle, frontend=frontend, windowing="crop")
        windows = np.stack([p.windows(p.waveform(s)[0])[1](0) for s in sources])
        np.testing.assert_allclose(p.log_mel(windows), shard_feats, atol=feat_tol, rtol=0)
        logits, probs = p.logits_and_probabilities(windows)
        np.testing.assert_allclose(logits, train_logits, atol=2e-5, rtol=0)
        np.testing.assert_allclose(probs, jax.nn.softmax(train_logits), atol=1e-5)
        results = p.predict(sources)
        expected = [bundle.label_names[i] for i in train_logits.argmax(-1)]
        assert [r.label for r in results] == expected
        assert all(len(r.windows) == 1 for r in results)


def test_window_starts_cover_the_clip():
    assert predict.window_starts(500, 1000, 250) == [0]
    assert predict.window_starts(1000, 1000, 250) == [0]
    assert predict.window_starts(1600, 1000, 250) == [0, 250, 500, 600]
    assert predict.window_starts(2000, 1000, 500) == [0, 500, 1000]


def test_sliding_windows_of_a_long_clip_and_their_mean(predictor, run):
    _, demo = run
    wave = np.concatenate([predictor.waveform(f)[0] for f in _clips(demo, 2)])  # 6 s
    result = predictor.predict(wave)
    assert result.source is None and result.duration_s == pytest.approx(6.0)
    hop = predictor.hop_samples / RATE
    assert hop == pytest.approx(0.5)  # default: half the 1 s window
    assert [w.start_s for w in result.windows] == pytest.approx(np.arange(0, 5.01, hop))
    assert result.windows[-1].end_s == pytest.approx(6.0)
    window_probs = np.array([list(w.probabilities.values()) for w in result.windows])
    np.testing.assert_allclose(list(result.probabilities.values()), window_probs.mean(0),
                               rtol=1e-6)  # fmt: skip
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert result.label == max(result.probabilities, key=result.probabilities.get)
    # Each window is scored as that stretch of audio alone would be.
    second = predictor.predict(wave[RATE // 2 : RATE // 2 + RATE])
    assert second.probabilities == pytest.approx(result.windows[1].probabilities, abs=1e-6)
    custom = predict.Predictor(predictor.bundle, hop_s=2.0)
    assert [w.start_s for w in custom.predict(wave).windows] == [0.0, 2.0, 4.0, 5.0]


def test_batched_jit_compiles_once_per_bucket(run):
    _, demo = run
    p = sejax.load(run[0], batch_size=8)
    files = _clips(demo, 3)  # 3 s each -> 5 windows each, 15 windows: batches of 8 and 7
    batched = p.predict(files)
    compiled = p.num_compilations
    assert compiled == 1  # 7 rows pad to the same bucket of 8
    single = [p.predict(f) for f in files]  # 5 windows -> the same bucket of 8
    assert p.num_compilations == compiled
    for a, b in zip(batched, single, strict=True):
        assert a.source == b.source and a.label == b.label
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    p.predict(np.zeros(RATE // 2, np.float32))  # one window: bucket of 1, one more trace
    p.predict(np.ones(RATE // 3, np.float32) * 0.1)
    assert p.num_compilations == compiled + 1


def test_any_rate_and_channel_count(predictor, run, tmp_path):
    import librosa

    _, demo = run
    wave = predictor.waveform(_clips(demo, 1)[0])[0]
    ref = predictor.predict(wave)
    up = librosa.resample(wave, orig_sr=RATE, target_sr=48000)
    stereo = np.stack([up, 0.5 * up], axis=1)
    sf.write(tmp_path / "stereo48k.wav", stereo, 48000, subtype="FLOAT")
    from_file = predictor.predict(tmp_path / "stereo48k.wav")
    from_array = predictor.predict(stereo, sample_rate=48000)
    assert from_file.source.endswith("stereo48k.wav") and from_array.source is None
    assert from_array.probabilities == pytest.approx(from_file.probabilities, abs=1e-6)
    assert from_file.duration_s == pytest.approx(ref.duration_s, abs=1e-3)
    # Resampled there and back, at 3/4 of the level: close to the original, not identical.
    assert from_file.probabilities == pytest.approx(ref.probabilities, abs=0.05)


def test_settings_come_from_the_model_config_unless_given(predictor):
    bundle = predictor.bundle
    assert (predictor.frontend, predictor.batch_size) == ("jax", 32)  # config.predict defaults
    config = bundle.config.copy_and_resolve_references()
    config.predict.update(frontend="librosa", hop_s=0.25, batch_size=4)
    custom = dataclasses.replace(bundle, config=config)
    p = predict.Predictor(custom)
    assert (p.frontend, p.hop_samples, p.batch_size) == ("librosa", 4000, 4)
    p = predict.Predictor(custom, frontend="jax", hop_s=0.1, batch_size=2)
    assert (p.frontend, p.hop_samples, p.batch_size) == ("jax", 1600, 2)
    saved = config.to_dict()
    del saved["predict"]  # a model saved before config.predict existed, loaded as a model is
    old = config_lib.from_dict(saved)
    p = predict.Predictor(dataclasses.replace(bundle, config=old))
    assert (p.frontend, p.hop_samples, p.batch_size) == ("jax", 8000, 32)


def test_bad_input_names_the_problem(predictor, tmp_path):
    with pytest.raises(DataError, match=r"no\.such"):
        predictor.predict(str(tmp_path / "no.such.wav"))
    (tmp_path / "notes.wav").write_text("not audio")
    with pytest.raises(DataError, match=r"notes\.wav"):
        predictor.predict(tmp_path / "notes.wav")
    with pytest.raises(DataError, match="NaN"):
        predictor.predict(np.array([0.1, np.nan, 0.2], np.float32))
    with pytest.raises(DataError, match="empty"):
        predictor.predict(np.zeros(0, np.float32))
    with pytest.raises(DataError, match="as a list"):
        predictor.predict(np.zeros((4, RATE), np.float32))  # a batch, not 16000 channels
    with pytest.raises(ConfigError, match=r"predict\.frontend"):
        predict.Predictor(predictor.bundle, frontend="torch")
    with pytest.raises(ConfigError, match="hop_s"):
        predict.Predictor(predictor.bundle, hop_s=1e-6)


def test_predict_files_goes_on_past_bad_files(predictor, run, tmp_path):
    _, demo = run
    (tmp_path / "a").mkdir()
    for name in _clips(demo, 2):
        (tmp_path / "a" / name.split("/")[-1]).write_bytes(Path(name).read_bytes())
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF0000WAVE")
    (tmp_path / "a" / "readme.txt").write_text("ignored: not an audio suffix")
    results = list(predictor.predict_files([tmp_path / "a"], group_windows=3))
    assert [r[0].split("/")[-1] for r in results] == sorted(
        ["broken.wav", *(n.split("/")[-1] for n in _clips(demo, 2))]
    )
    kinds = {name.split("/")[-1]: type(r).__name__ for name, r in results}
    assert isinstance(dict(results)[str(tmp_path / "a" / "broken.wav")], DataError)
    assert list(kinds.values()).count("Prediction") == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        predict.expand_paths([tmp_path / "empty"])


def test_model_resolution_errors(run, tmp_path, monkeypatch):
    monkeypatch.setenv(bundle_lib.MODEL_PATH_ENV, str(tmp_path))
    with pytest.raises(CheckpointError, match=r"no model named 'nosuch'.*available models"):
        sejax.load("nosuch")
    (tmp_path / "plain").mkdir()
    with pytest.raises(CheckpointError, match="neither a sejax model folder"):
        sejax.load(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="no checkpoints"):
        sejax.load(workdir=tmp_path / "plain")
    with pytest.raises(CheckpointError, match="exactly one"):
        sejax.load(run[0], workdir=run[0])


def _sejax(capsys, *args):
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_predict_command_table_json_and_plot(run, tmp_path, capsys):
    workdir, demo = run
    files = _clips(demo, 2)
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([sf.read(f, dtype="float32")[0] for f in files]), RATE)
    plot = tmp_path / "p.png"
    code, out, err = _sejax(capsys, "predict", "--workdir", str(workdir), files[0], str(long),
                            "--windows", "--plot", str(plot), "--hop", "1")  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["file", "dur_s", "win", "emotion", "prob"]
    assert any(line.startswith(files[0][-30:]) or files[0][-20:] in line for line in lines)
    summary = json.loads(lines[-1])
    assert summary["command"] == "predict" and summary["num_files"] == 2
    assert summary["hop_s"] == 1.0 and summary["window_s"] == 1.0
    long_result = summary["results"][1]
    assert long_result["duration_s"] == pytest.approx(6.0) and len(long_result["windows"]) == 6
    assert sum(" 5.00-6.00s" in line for line in lines) == 1  # per-window rows
    assert plot.read_bytes()[:4] == b"\x89PNG"

    code, out, _ = _sejax(capsys, "predict", "--model", str(workdir), files[0], "--json",
                          "--single-window", "--frontend", "librosa")  # fmt: skip
    assert code == 0 and len(out.strip().splitlines()) == 1
    only = json.loads(out)["results"][0]
    assert len(only["windows"]) == 1 and only["windows"][0]["end_s"] == 1.0


def test_predict_command_reports_bad_files_with_status_2(run, tmp_path, capsys):
    workdir, demo = run
    (tmp_path / "bad.wav").write_bytes(b"\x00" * 100)
    code, out, err = _sejax(capsys, "predict", "--workdir", str(workdir), _clips(demo, 1)[0],
                            str(tmp_path / "bad.wav"))  # fmt: skip
    assert code == 2 and "bad.wav" in err and "1 of 2 files" in err and "Traceback" not in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["num_failed"] == 1 and "error" in summary["results"][1]
    code, _, err = _sejax(capsys, "predict", "--workdir", str(tmp_path / "none"), "x.wav")
    assert code == 2 and "no checkpoints" in err


def test_bundle_checks_meta_against_the_model(run, tmp_path):
    bundle = bundle_lib.load(run[0])
    config = bundle.config
    norm = {"mean": bundle.mean.tolist(), "std": bundle.std.tolist()}
    meta = {"config": config.to_dict(), "label_names": ["a", "b"], "normalization": norm}
    with pytest.raises(CheckpointError, match="label_names"):
        bundle_lib._check_meta(config, meta, "here")
    meta["label_names"] = list(bundle.label_names)
    meta["normalization"]["std"] = [1.0] * 3
    with pytest.raises(CheckpointError, match="normalization"):
        bundle_lib._check_meta(config, meta, "here")
    meta["normalization"]["std"] = bundle.std.tolist()
    meta["features_fingerprint"] = "0" * 64
    with pytest.raises(CheckpointError, match="fingerprint"):
        bundle_lib._check_meta(config, meta, "here")
    assert features.fingerprint(config.features) == bundle.meta["features_fingerprint"]


def test_shipped_ravdess_model_predicts_right_after_install():
    """`sejax.load("ravdess")` finds the packaged model, the best recipe's four networks as
    one ensemble: 8 emotions, probabilities that sum to one, on audio at another rate than
    the model's."""
    from sejax.corpora.ravdess import EMOTIONS

    model = sejax.load("ravdess")
    assert list(model.label_names) == list(EMOTIONS)
    assert model.bundle.members == 4
    t = np.arange(int(1.7 * 22050)) / 22050
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    result = model.predict(voice, sample_rate=22050)
    assert result.label in model.label_names
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)


def _per_speaker_model(workdir, out: Path) -> Path:
    """The tiny run's model re-labelled as trained on per-speaker normalised features."""
    bundle = bundle_lib.load(workdir)
    config = bundle.config.copy_and_resolve_references()
    config.data.normalization = "per_speaker"
    bundle = dataclasses.replace(bundle, config=config)
    tmp = bundle_lib.new_folder(out, overwrite=False)
    bundle_lib.save_variables(bundle, tmp)
    (tmp / bundle_lib.MODEL_FILE).write_text(json.dumps(bundle_lib.model_meta(bundle)))
    io.replace_folder(tmp, out)
    return out


def test_per_speaker_model_takes_its_speakers_statistics(run, tmp_path, capsys):
    """A per-speaker model normalises a speaker's clips with statistics computed from them
    exactly as the input pipeline computed that speaker's for training; `sejax predict
    --same-speaker` does it for the files given, and refuses models not trained that way."""
    workdir, demo = run
    folder = _per_speaker_model(workdir, tmp_path / "model")
    p = predict.load(folder, frontend="librosa", windowing="crop")
    assert p.bundle.per_speaker and json.loads((folder / "sejax_model.json").read_text())[
        "normalization"]["per_speaker"]  # fmt: skip
    corpus = tmp_path / "corpus" / "Actor_23"
    corpus.mkdir(parents=True)
    clips = [c for c in _clips(demo, 40) if "-23.wav" in c][:6]
    for clip in clips:
        (corpus / Path(clip).name).write_bytes(Path(clip).read_bytes())
    clips = sorted(str(c) for c in corpus.iterdir())
    prepare.prepare(corpus.parent, tmp_path / "shards", p.bundle.config.features,
                    num_workers=1, progress=False)  # fmt: skip
    shards = input_pipeline.Shards(tmp_path / "shards")
    mean, std = p.speaker_statistics(clips)
    np.testing.assert_allclose(mean, shards.speaker_statistics()[0][0], atol=1e-3)
    np.testing.assert_allclose(std, shards.speaker_statistics()[1][0], atol=1e-3)
    assert not np.allclose(mean, p.bundle.mean, atol=0.1)  # not the training statistics

    state = types.SimpleNamespace(apply_fn=p.bundle.model().apply,
                                  inference_params=p.bundle.variables["params"],
                                  batch_stats=p.bundle.variables["batch_stats"])  # fmt: skip
    eval_step = jax.jit(lambda batch: steps.eval_step(state, batch, axis_name=None)[0])
    norm = input_pipeline.Normalization(p.bundle.mean, p.bundle.std, per_speaker=True)
    indices = np.arange(len(shards.examples))
    batches = list(shards.eval_batches(indices, norm, batch_size=8))
    by_source = {
        shards.examples[i]["source"]: logits
        for b in batches
        for i, logits in zip(b["index"][b["mask"] > 0],
                             np.asarray(eval_step(b)["logits"])[b["mask"] > 0], strict=True)
    }  # fmt: skip
    windows = np.stack([p.windows(p.waveform(c)[0])[1](0) for c in clips])
    logits, _ = p.logits_and_probabilities(windows, speaker=(mean, std))
    expected = np.stack(
        [next(v for k, v in by_source.items() if k.endswith(Path(c).name)) for c in clips]
    )
    np.testing.assert_allclose(logits, expected, atol=1e-3)
    assert not np.allclose(logits, p.logits_and_probabilities(windows)[0], atol=1e-3)

    code, out, err = _sejax(capsys, "predict", "--model", str(folder), *clips, "--json",
                            "--single-window", "--frontend=librosa", "--same-speaker")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out)
    assert summary["normalization"] == "speaker"
    got = [r["probabilities"] for r in summary["results"]]
    want = p.predict(clips, speaker=(mean, std))
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w.probabilities, abs=1e-5)
    code, out, err = _sejax(capsys, "predict", "--model", str(folder), clips[0], "--json")
    assert code == 0 and "per-speaker" in err and json.loads(out)["normalization"] == "training"
    code, _, err = _sejax(capsys, "predict", "--workdir", str(workdir), clips[0], "--same-speaker")
    assert code == 2 and "--same-speaker is for models trained with" in err
    with pytest.raises(DataError, match="speaker statistics must be"):
        p.predict(clips[0], speaker=(mean[:3], std[:3]))
