"""sejax.data.prepare: shard round trip, determinism across workers, reuse/refusal, bad files,
the atomic commit, and `ensure_shards` (the shards a run uses)."""

import errno
import hashlib
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sejax import io
from sejax.configs.default import get_features_config
from sejax.corpora.ravdess import EMOTIONS
from sejax.data import audio, features, prepare, shards
from sejax.errors import ConfigError, DataError

REAL_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess-speech-16k"


def tiny_cfg():
    """A cheap front end: 0.5 s at 16 kHz, 16 bands."""
    cfg = get_features_config()
    cfg.update({"duration_s": 0.5, "n_fft": 256, "win_length": 256, "hop_length": 128,
                "n_mels": 16})  # fmt: skip
    return cfg


def ravdess_name(emotion, intensity, statement, repetition, actor, ext=".wav"):
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}{ext}"


def make_corpus(root: Path) -> list[Path]:
    """14 short clips by 2 actors; odd ones out: 48 kHz stereo, longer and shorter than 0.5 s."""
    rng = np.random.default_rng(0)
    paths = []
    for actor in (1, 2):
        for emotion in range(1, 8):
            intensity = 1 if emotion == 1 else 2
            path = root / f"Actor_{actor:02d}" / ravdess_name(emotion, intensity, 1, 1, actor)
            path.parent.mkdir(parents=True, exist_ok=True)
            seconds = {3: 0.8, 4: 0.3}.get(emotion, 0.5)
            sr = 48000 if emotion == 5 else 16000
            t = np.arange(round(sr * seconds)) / sr
            wave = 0.3 * np.sin(2 * np.pi * (100 * emotion + 50 * actor) * t)
            wave = wave + 0.01 * rng.normal(size=t.shape)
            if emotion == 5:
                wave = np.stack([wave, 0.5 * wave], axis=1)
            sf.write(path, wave.astype(np.float32), sr, subtype="PCM_16")
            paths.append(path)
    (root / "README.md").write_text("not audio, ignored\n")
    return sorted(paths)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root)
    return root


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepared") / "shards"
    summary = prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, examples_per_shard=5,
                              progress=False)  # fmt: skip
    return out, summary


def read_shards(out_dir: Path) -> list[dict]:
    """Every record through tf.data + parse_example, plus the fields parse_example leaves out."""
    tf = io.tensorflow()
    metadata = shards.load_metadata(out_dir)
    files = [str(out_dir / s["file"]) for s in metadata["shards"]]
    t, f = metadata["num_frames"], metadata["num_mels"]
    parsed = tf.data.TFRecordDataset(files).map(lambda s: shards.parse_example(s, t, f))
    extra_spec = {k: tf.io.FixedLenFeature([], tf.int64)
                  for k in ("intensity", "statement", "repetition")}  # fmt: skip
    extra_spec["sha256"] = tf.io.FixedLenFeature([], tf.string)
    extra = tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, extra_spec))
    return [{**a, **b} for a, b in zip(parsed.as_numpy_iterator(), extra.as_numpy_iterator(),
                                       strict=True)]  # fmt: skip


def tree_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_round_trip(corpus, prepared):
    out, summary = prepared
    cfg = tiny_cfg()
    metadata = shards.load_metadata(out)
    assert summary["reused"] is False and summary["num_examples"] == 14
    assert summary["num_shards"] == 3 and summary["num_workers"] == 1
    assert [s["file"] for s in metadata["shards"]] == [
        f"shard-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    assert [s["num_examples"] for s in metadata["shards"]] == [5, 5, 4]
    assert metadata["format"] == "sejax-shards" and metadata["version"] == 1
    assert metadata["fingerprint"] == features.fingerprint(cfg)
    assert metadata["features_config"] == features.recorded_config(cfg)
    assert metadata["num_frames"] == features.num_frames(cfg) == 63
    assert metadata["num_mels"] == 16 and metadata["label_names"] == list(EMOTIONS)
    assert metadata["corpus"] == "ravdess" and metadata["source"] == str(corpus.resolve())
    assert metadata["counts"]["by_actor"] == {"1": 7, "2": 7}
    assert metadata["counts"]["by_label"] == {**{e: 2 for e in EMOTIONS[:7]}, "surprised": 0}
    assert metadata["skipped"] == []

    records = read_shards(out)
    assert len(records) == 14
    for i, (record, row) in enumerate(zip(records, metadata["examples"], strict=True)):
        wave = audio.load_audio(row["source"], cfg.sample_rate)
        expected = features.extract(wave, cfg)
        assert record["features"].dtype == np.float32 and record["features"].shape == (63, 16)
        np.testing.assert_array_equal(record["features"], expected)  # bit for bit
        assert record["index"] == row["index"] == i
        assert record["label"] == row["label"] and record["actor"] == row["actor"]
        for key in ("label", "actor", "index"):
            assert record[key].dtype == np.int32
        for key in ("intensity", "statement", "repetition"):
            assert record[key] == row[key]
        source_bytes = Path(row["source"]).read_bytes()
        digest = hashlib.sha256(source_bytes).hexdigest()
        assert record["sha256"].decode() == row["sha256"] == digest
        assert row["num_samples_original"] == len(wave)
        assert row["shard"] == metadata["shards"][i // 5]["file"]
        assert row["emotion"] == EMOTIONS[row["label"]]
        assert row["gender"] == ("male" if row["actor"] % 2 else "female")
    lengths = {r["emotion"]: r["num_samples_original"] for r in metadata["examples"][:7]}
    assert lengths["happy"] == 12800 and lengths["sad"] == 4800 and lengths["angry"] == 8000


def test_one_and_two_workers_write_identical_bytes(corpus, prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "CHUNK_SIZE", 3)  # 5 tasks, so both workers get some
    summary = prepare.prepare(corpus, tmp_path / "two", tiny_cfg(), num_workers=2,
                              examples_per_shard=5, progress=False)  # fmt: skip
    assert summary["num_workers"] == 2
    assert tree_bytes(tmp_path / "two") == tree_bytes(prepared[0])


def test_workers_import_neither_tensorflow_nor_jax(corpus, tmp_path, monkeypatch):
    # Pretend the parent runs an unguarded script: spawn would re-run it in every worker.
    script = tmp_path / "train_script.py"
    script.write_text("import sys\nsys.modules['sejax_test_script_ran'] = sys\n")
    fake_main = types.ModuleType("__main__")
    fake_main.__file__ = str(script)
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    source = str(sorted(corpus.glob("Actor_01/*.wav"))[0])
    executor = prepare._make_executor(1)
    try:
        result = prepare._submit(executor, prepare._compute_chunk, [source], tiny_cfg().to_dict())
        assert len(result.result()) == 1
        probe = "sorted({m.split('.')[0] for m in __import__('sys').modules})"
        loaded = prepare._submit(executor, eval, probe).result()
        blas = (
            "[i['num_threads'] for i in __import__('threadpoolctl').threadpool_info() "
            "if i['user_api'] == 'blas']"
        )
        blas_threads = prepare._submit(executor, eval, blas).result()
    finally:
        executor.shutdown()
    assert blas_threads and set(blas_threads) == {1}  # set once per worker (_init_worker)
    assert "librosa" in loaded  # it did compute features
    assert not {"tensorflow", "jax", "flax", "pytest"} & set(loaded)
    assert "sejax_test_script_ran" not in loaded  # the parent's main script was not re-run


def test_importing_data_modules_is_light():
    code = (
        "import sys, sejax.data.prepare, sejax.data.audio, sejax.data.features;"
        "heavy = {'tensorflow', 'jax', 'librosa'} & set(sys.modules); assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reuse_keeps_the_folder_untouched(corpus, prepared):
    out, _ = prepared
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summary = prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, examples_per_shard=5,
                              progress=False)  # fmt: skip
    assert summary["reused"] is True and summary["num_examples"] == 14
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_other_features_config_is_refused_then_overwritten(corpus, tmp_path):
    out = tmp_path / "shards"
    prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, progress=False)
    before = tree_bytes(out)
    other = tiny_cfg()
    other.n_mels = 20
    with pytest.raises(DataError) as info:
        prepare.prepare(corpus, out, other, num_workers=1, progress=False)
    message = str(info.value)
    assert features.fingerprint(tiny_cfg()) in message and features.fingerprint(other) in message
    assert "features.n_mels: 16 in the shards, 20 in the config" in message
    assert tree_bytes(out) == before  # never mixed, never half-overwritten

    summary = prepare.prepare(corpus, out, other, num_workers=1, progress=False, overwrite=True)
    assert summary["reused"] is False and summary["num_mels"] == 20
    assert shards.load_metadata(out)["fingerprint"] == features.fingerprint(other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # no temp folders left


def test_ref_max_shards_record_it_and_are_refused_by_ref_one(corpus, tmp_path):
    out = tmp_path / "shards"
    peak = tiny_cfg()
    peak.ref = "max"
    prepare.prepare(corpus, out, peak, num_workers=1, progress=False)
    assert shards.load_metadata(out)["features_config"]["ref"] == "max"
    before = tree_bytes(out)
    with pytest.raises(DataError) as info:
        prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, progress=False)
    assert "features.ref: 'max' in the shards, 'one' in the config" in str(info.value)
    assert tree_bytes(out) == before


def test_changed_source_files_are_refused(corpus, tmp_path):
    data = tmp_path / "data"
    paths = make_corpus(data)
    out = tmp_path / "shards"
    prepare.prepare(data, out, tiny_cfg(), num_workers=1, progress=False)
    wave, sr = sf.read(paths[0], dtype="float32")
    sf.write(paths[0], wave * 0.5, sr, subtype="PCM_16")  # same name, other content
    with pytest.raises(DataError, match=r"(?s)other audio.*1 file\(s\) changed"):
        prepare.prepare(data, out, tiny_cfg(), num_workers=1, progress=False)
    paths[1].unlink()
    with pytest.raises(DataError, match=r"(?s)other audio.*1 file\(s\) no longer present"):
        prepare.prepare(data, out, tiny_cfg(), num_workers=1, progress=False)


@pytest.mark.parametrize("num_workers", [1, 2])
def test_bad_file_names_it_and_leaves_no_output(corpus, tmp_path, monkeypatch, num_workers):
    monkeypatch.setattr(prepare, "CHUNK_SIZE", 3)  # several tasks: the pool really runs
    data = tmp_path / "data"
    paths = make_corpus(data)
    bad = paths[9]
    bad.write_bytes(b"RIFF but not really a wav file")
    out = tmp_path / "shards"
    with pytest.raises(DataError, match="cannot decode") as info:
        prepare.prepare(data, out, tiny_cfg(), num_workers=num_workers, progress=False,
                        strict=True)  # fmt: skip
    assert str(bad) in str(info.value) and "data.strict" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_failed_overwrite_keeps_the_old_shards(corpus, tmp_path):
    data = tmp_path / "data"
    paths = make_corpus(data)
    out = tmp_path / "shards"
    prepare.prepare(data, out, tiny_cfg(), num_workers=1, progress=False)
    before = tree_bytes(out)
    paths[3].write_bytes(b"")
    with pytest.raises(DataError, match=r"empty.*" + paths[3].name):
        prepare.prepare(data, out, tiny_cfg(), num_workers=1, progress=False, overwrite=True,
                        strict=True)  # fmt: skip
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "shards"]


def test_zip_source_gives_the_same_features(corpus, prepared, tmp_path):
    archive = tmp_path / "corpus.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(corpus.rglob("*.wav")):
            zf.write(path, path.relative_to(corpus).as_posix())
    out = tmp_path / "from_zip"
    prepare.prepare(archive, out, tiny_cfg(), num_workers=1, examples_per_shard=5, progress=False)
    rows = shards.load_metadata(out)["examples"]
    assert rows[0]["source"].startswith(f"{archive.resolve()}::Actor_01/")
    folder_rows = shards.load_metadata(prepared[0])["examples"]
    assert [r["sha256"] for r in rows] == [r["sha256"] for r in folder_rows]
    for a, b in zip(read_shards(out), read_shards(prepared[0]), strict=True):
        np.testing.assert_array_equal(a["features"], b["features"])


def test_refuses_to_replace_a_folder_it_did_not_write(corpus, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(DataError, match="mine"):
            prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, progress=False,
                            overwrite=overwrite)  # fmt: skip
    assert (out / "notes.txt").read_text() == "precious"


@pytest.mark.skipif(not REAL_CORPUS.is_dir(), reason="real RAVDESS copy not present")
def test_real_ravdess_actor(tmp_path):
    """Optional: one actor of the real corpus (16 kHz FLAC) with the reference front end."""
    summary = prepare.prepare(REAL_CORPUS / "Actor_01", tmp_path / "shards", get_features_config(),
                              num_workers=1, progress=False)  # fmt: skip
    assert summary["num_examples"] == 60
    assert (summary["num_frames"], summary["num_mels"]) == (301, 64)
    assert summary["counts"]["by_label"] == {e: 4 if e == "neutral" else 8 for e in EMOTIONS}
    features_ = np.stack([r["features"] for r in read_shards(tmp_path / "shards")])
    assert np.isfinite(features_).all() and features_.max() > -20 and features_.min() >= -100 - 1e-4
    assert os.path.basename(shards.load_metadata(tmp_path / "shards")["source"]) == "Actor_01"


def test_skipped_names_are_recorded(tmp_path):
    data = tmp_path / "data"
    make_corpus(data)
    sf.write(data / "Actor_01" / "hello.wav", np.zeros(800, np.float32), 16000)
    with pytest.raises(DataError, match=r"hello\.wav"):
        prepare.prepare(data, tmp_path / "a", tiny_cfg(), num_workers=1, progress=False,
                        on_bad_name="error")  # fmt: skip
    # Skipping and recording them is the default.
    summary = prepare.prepare(data, tmp_path / "b", tiny_cfg(), num_workers=1, progress=False)
    assert summary["num_examples"] == 14
    skipped = shards.load_metadata(tmp_path / "b")["skipped"]
    assert [name for name, _ in skipped] == ["Actor_01/hello.wav"]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"num_workers": -1}, "data.num_workers"),
        ({"examples_per_shard": 0}, "data.examples_per_shard"),
        ({"corpus": "iemocap"}, "data.corpus"),
    ],
)
def test_bad_arguments_name_the_config_key(corpus, tmp_path, kwargs, key):
    with pytest.raises(ConfigError, match=key):
        prepare.prepare(corpus, tmp_path / "out", tiny_cfg(), progress=False, **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_appears_meanwhile_is_kept(corpus, tmp_path, monkeypatch):
    """Another process filling ``out_dir`` while this one prepares: theirs is never replaced."""
    out = tmp_path / "shards"
    write_report = prepare.screening.write_report

    def and_someone_else_writes(path, rejected):
        write_report(path, rejected)
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")

    monkeypatch.setattr(prepare.screening, "write_report", and_someone_else_writes)
    with pytest.raises(DataError, match="appeared while it was being written"):
        prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, progress=False)
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # no temp folder


def test_a_failed_rename_puts_the_old_shards_back(corpus, prepared, tmp_path, monkeypatch):
    out = tmp_path / "shards"
    prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, progress=False)
    before = tree_bytes(out)
    rename = os.replace

    def fail_the_new_folder(src, dst):
        if Path(src).name.endswith(".partial"):  # the staged shards, not the old ones aside
            raise OSError(errno.EIO, "Input/output error")
        rename(src, dst)

    monkeypatch.setattr(os, "replace", fail_the_new_folder)
    with pytest.raises(DataError, match=r"could not write the shards.*Input/output error"):
        prepare.prepare(corpus, out, tiny_cfg(), num_workers=1, progress=False, overwrite=True)
    monkeypatch.undo()
    assert tree_bytes(out) == before  # the old shards, back in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # nothing left beside


def test_ensure_shards_uses_prepared_shards_or_prepares_them(prepared, corpus, tmp_path):
    from sejax.configs.default import get_config

    config = get_config()
    config.features = tiny_cfg()
    config.data.path = str(prepared[0])
    assert prepare.ensure_shards(config, tmp_path / "run") == prepared[0]  # used as they are
    assert not (tmp_path / "run").exists()
    config.data.labels = EMOTIONS[:7]
    with pytest.raises(ConfigError, match=r"have labels \[.*'surprised'\], but data\.labels"):
        prepare.ensure_shards(config, tmp_path / "run")
    config.data.labels = EMOTIONS
    config.data.path = str(corpus)  # raw audio: prepared once into the run's cache
    out = prepare.ensure_shards(config, tmp_path / "run")
    assert out == tmp_path / "run" / "prepared"
    metadata = shards.load_metadata(out)
    assert metadata["fingerprint"] == features.fingerprint(tiny_cfg())
    rows = shards.load_metadata(prepared[0])["examples"]
    assert [r["sha256"] for r in metadata["examples"]] == [r["sha256"] for r in rows]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert prepare.ensure_shards(config, tmp_path / "run") == out  # the second time: reused
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    config.data.path = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"data\.path does not exist"):
        prepare.ensure_shards(config, tmp_path / "run")
    config.data.path, config.data.corpus = "", "emodb"
    with pytest.raises(ConfigError, match=r"needs data\.path"):
        prepare.ensure_shards(config, tmp_path / "run")


def test_prepared_shards_with_other_features_are_refused(prepared, tmp_path):
    from sejax.configs.default import get_config

    config = get_config()
    config.data.path = str(prepared[0])  # prepared with tiny_cfg: n_mels=16, duration 0.5
    with pytest.raises(Exception, match="fingerprint"):
        prepare.ensure_shards(config, tmp_path)
