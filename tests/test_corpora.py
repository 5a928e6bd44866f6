"""sejax.corpora: readers for each naming convention, manifests, label mapping, mixing."""

from __future__ import annotations

import collections
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from sejax import corpora
from sejax.configs import default
from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.corpora import labels as labels_lib
from sejax.corpora import sources
from sejax.corpora.ravdess import EMOTIONS
from sejax.data import prepare, shards
from sejax.errors import ConfigError, DataError
from sejax.evaluation.cross_corpus import restricted_predictions
from tests import corpora_data
from tests.corpora_data import write_wav

MAKERS = {
    "cremad": corpora_data.make_cremad,
    "tess": corpora_data.make_tess,
    "emodb": corpora_data.make_emodb,
    "savee": corpora_data.make_savee,
}


def read(name: str, path: Path, on_bad_name: str = "error"):
    return corpora.get(name).read(path, on_bad_name)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_reader_finds_speakers_and_labels(name, tmp_path):
    expected = MAKERS[name](tmp_path)
    recordings, skipped = read(name, tmp_path)
    assert skipped == [] and len(recordings) == expected["count"]
    assert dict(collections.Counter(r.emotion for r in recordings)) == expected["labels"]
    assert {r.speaker: r.actor for r in recordings} == expected["speakers"]
    assert set(expected["labels"]) == set(corpora.get(name).labels)  # every declared label
    sources_ = [r.source for r in recordings]
    assert sources_ == sorted(sources_) and all(Path(s).is_file() for s in sources_)


def test_reader_fields_and_genders(tmp_path):
    corpora_data.make_cremad(tmp_path / "c")
    corpora_data.make_emodb(tmp_path / "e")
    corpora_data.make_tess(tmp_path / "t")
    cremad, _ = read("cremad", tmp_path / "c")
    anger = next(r for r in cremad if r.source.endswith("1001_DFA_ANG_LO.wav"))
    assert (anger.text, anger.statement, anger.intensity, anger.gender) == ("DFA", 9, 1, "unknown")
    emodb, _ = read("emodb", tmp_path / "e")
    clip = next(r for r in emodb if r.source.endswith("16b10Lb.wav"))
    assert (clip.speaker, clip.actor, clip.gender, clip.text, clip.repetition) == (
        "16", 16, "female", "b10", 2)  # fmt: skip
    assert {r.gender for r in emodb if r.speaker == "03"} == {"male"}
    tess, _ = read("tess", tmp_path / "t")
    typo = next(r for r in tess if r.source.endswith("OA_bite_neutral.wav"))
    assert (typo.speaker, typo.actor, typo.emotion) == ("OAF", 1, "neutral")
    assert {r.emotion for r in tess if r.source.endswith("_ps.wav")} == {"pleasant_surprise"}


@pytest.mark.parametrize(
    ("name", "bad", "reason"),
    [
        ("cremad", "1001_DFA_XYZ_XX.wav", "emotion 'XYZ' is not a CREMA-D emotion"),
        ("cremad", "0999_DFA_ANG_XX.wav", "actor 0999 is not a CREMA-D actor"),
        ("cremad", "1001_ABC_ANG_XX.wav", "sentence 'ABC'"),
        ("cremad", "1001-DFA-ANG-XX.wav", "not a CREMA-D name"),
        ("emodb", "wav/01a01Fa.wav", "speaker '01' is not a EmoDB speaker"),
        ("emodb", "wav/03a01Xa.wav", "emotion letter 'X'"),
        ("emodb", "wav/03c01Fa.wav", "not an EmoDB name"),
        ("tess", "OAF_angry/MAF_back_angry.wav", "speaker 'MAF'"),
        ("tess", "OAF_angry/OAF_back_bored.wav", "emotion 'bored'"),
        ("tess", "YAF_angry/OAF_bean_angry.wav", "in folder YAF_angry but the name says OAF"),
        ("savee", "AudioData/DC/a16.wav", "sentence 16 is out of range for anger (01..15)"),
        ("savee", "AudioData/DC/x01.wav", "emotion code 'x'"),
        ("savee", "a01.wav", "no speaker"),
        ("savee", "AudioData/JE/DC_a02.wav", "in folder JE but the name says speaker DC"),
        ("savee", "flat/DC_a01.wav", "same recording as AudioData/DC/a01.wav"),
    ],
)
def test_bad_names_are_listed_then_skippable(name, bad, reason, tmp_path):
    expected = MAKERS[name](tmp_path)
    write_wav(tmp_path / bad, 1)
    with pytest.raises(DataError) as info:
        read(name, tmp_path)
    message = str(info.value)
    assert f"{bad}: " in message and reason in message, message
    assert "1 audio file(s)" in message and "on_bad_name='skip'" in message
    recordings, skipped = read(name, tmp_path, "skip")
    assert len(recordings) == expected["count"] and [n for n, _ in skipped] == [bad]


def test_reader_reads_a_zip_in_place(tmp_path):
    corpora_data.make_emodb(tmp_path / "emodb")
    zip_path = tmp_path / "download.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for path in sorted((tmp_path / "emodb").rglob("*")):
            zf.write(path, path.relative_to(tmp_path / "emodb").as_posix())
    recordings, _ = read("emodb", zip_path)
    assert len(recordings) == 14 and all("::wav/" in r.source for r in recordings)


def test_manifest_csv_and_tsv(tmp_path):
    for tsv in (False, True):
        root = tmp_path / ("tsv" if tsv else "csv")
        manifest, expected = corpora_data.make_manifest(root, tsv=tsv)
        recordings, skipped = read("manifest", manifest)
        assert skipped == [] and len(recordings) == expected["count"]
        assert dict(collections.Counter(r.emotion for r in recordings)) == expected["labels"]
        assert {r.speaker: r.actor for r in recordings} == expected["speakers"]
        assert {r.split for r in recordings} == {"train", "validation", "test"}  # 'val' alias
        assert all(Path(r.source).is_absolute() and Path(r.source).is_file() for r in recordings)


def test_manifest_numbers_labels_and_absolute_paths(tmp_path):
    clip = write_wav(tmp_path / "a.wav", 1)
    write_wav(tmp_path / "sub" / "b.flac", 2)
    (tmp_path / "m.csv").write_text(
        "file,emotion,actor,sex,notes\n"
        f"{clip},Pleasant Surprise,12,F,anything\n"
        "sub/b.flac,pleasant-surprise,7,m,\n"
    )
    recordings, _ = read("manifest", tmp_path / "m.csv")
    assert [(r.actor, r.emotion, r.gender) for r in recordings] == [
        (12, "pleasant_surprise", "female"), (7, "pleasant_surprise", "male")]  # fmt: skip


def test_manifest_errors_name_the_file_row_and_column(tmp_path):
    write_wav(tmp_path / "a.wav", 1)
    (tmp_path / "no_speaker.csv").write_text("path,label\na.wav,ang\n")
    with pytest.raises(DataError, match=r"no_speaker\.csv.*lacks column\(s\) \['speaker'\]"):
        read("manifest", tmp_path / "no_speaker.csv")
    with pytest.raises(DataError, match="no such manifest file"):
        read("manifest", tmp_path / "missing.csv")
    (tmp_path / "m.csv").write_text(
        "path,label,speaker,split\n"
        "a.wav,ang,s1,train\n"
        "gone.wav,ang,s1,train\n"
        "a.wav,hap,s2,test\n"
        "notes.txt,ang,s1,train\n"
        "a.wav,,s1,train\n"
    )
    with pytest.raises(DataError) as info:
        read("manifest", tmp_path / "m.csv")
    message = str(info.value)
    assert "4 row(s)" in message
    assert "line 3 (gone.wav): no such file" in message
    assert "line 4 (a.wav): listed twice (also on line 2)" in message
    assert "line 5 (notes.txt): not an audio file" in message
    assert "line 6 (a.wav): empty label or speaker" in message
    recordings, skipped = read("manifest", tmp_path / "m.csv", "skip")
    assert len(recordings) == 1 and len(skipped) == 4
    (tmp_path / "s.csv").write_text("path,label,speaker,split\na.wav,ang,s1,holdout\n")
    with pytest.raises(DataError, match="split 'holdout' is not one of train, validation, test"):
        read("manifest", tmp_path / "s.csv")


# ------------------------------------------------------------------------------------------
# Label mapping.


def _map(entries=(), targets=EMOTIONS):
    return labels_lib.parse_label_map(entries, targets, corpora.NAMES)


def test_default_mapping_onto_ravdess_labels():
    mapping = labels_lib.resolve("emodb", corpora.get("emodb").labels, EMOTIONS, _map())
    assert mapping == {"anger": "angry", "boredom": None, "disgust": "disgust",
                       "fear": "fearful", "happiness": "happy", "sadness": "sad",
                       "neutral": "neutral"}  # fmt: skip
    iemocap = labels_lib.resolve("manifest", corpora_data.IEMOCAP_LABELS, EMOTIONS, _map())
    assert iemocap == {"ang": "angry", "hap": "happy", "exc": None, "neu": "neutral",
                       "sad": "sad", "fru": None}  # fmt: skip
    tess = labels_lib.resolve("tess", ("pleasant_surprise",), EMOTIONS, _map())
    assert tess == {"pleasant_surprise": "surprised"}


def test_explicit_mapping_drop_and_per_corpus_precedence():
    label_map = _map(("exc=happy", "fru=", "tess:pleasant_surprise=", "fear=neutral"))
    assert labels_lib.resolve("manifest", ("exc", "fru"), EMOTIONS, label_map) == {
        "exc": "happy", "fru": ""}  # fmt: skip
    assert label_map.target("tess", "pleasant_surprise", EMOTIONS) == ""
    assert label_map.target("savee", "surprise", EMOTIONS) == "surprised"
    assert label_map.target("emodb", "fear", EMOTIONS) == "neutral"  # the map beats synonyms


def test_custom_target_labels_use_synonyms_both_ways():
    targets = ("anger", "happiness", "sadness", "neutral")
    label_map = _map(targets=targets)
    got = labels_lib.resolve("ravdess", EMOTIONS, targets, label_map)
    assert got["angry"] == "anger" and got["happy"] == "happiness" and got["calm"] is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("boredom", "is not 'label=target'"),
        ("=angry", "is not 'label=target'"),
        ("iemocap:exc=happy", "names corpus 'iemocap'"),
        ("boredom=bored", "maps to 'bored', which is not in data.labels"),
    ],
)
def test_bad_label_map_entries_name_the_key(entry, message):
    with pytest.raises(ConfigError, match=message) as info:
        _map((entry,))
    assert "data.label_map" in str(info.value)


def test_unmapped_label_is_an_error_with_the_fix(tmp_path):
    corpora_data.make_emodb(tmp_path)
    with pytest.raises(DataError) as info:
        sources.collect([("emodb", tmp_path)], labels=EMOTIONS)
    message = str(info.value)
    assert "EmoDB label(s) 'boredom' (2 files)" in message and "data.label_map" in message
    assert "--config.data.label_map=boredom= " in message
    collection = sources.collect([("emodb", tmp_path)], labels=EMOTIONS, label_map=["boredom="])
    assert len(collection.examples) == 12
    assert collection.sources[0]["dropped"] == {"boredom": 2}
    assert collection.sources[0]["label_map"]["boredom"] == ""
    dropped = sources.collect([("emodb", tmp_path)], labels=EMOTIONS, unmapped="drop")
    assert dropped.sources[0]["label_map"]["boredom"] is None
    assert {e.emotion for e in dropped.examples} == set(EMOTIONS) - {"calm", "surprised"}
    assert all(EMOTIONS[e.label] == e.emotion for e in dropped.examples)


def test_mixing_sources_keeps_speakers_apart(tmp_path):
    corpora_data.make_savee(tmp_path / "savee")
    corpora_data.make_emodb(tmp_path / "emodb")
    write_wav(tmp_path / "emodb" / "wav" / "junk.wav", 3)
    extra = sources.parse_sources([f"emodb={tmp_path / 'emodb'}"])
    collection = sources.collect(
        [("savee", tmp_path / "savee"), *extra],
        labels=EMOTIONS, label_map=["boredom="], on_bad_name="skip",
    )  # fmt: skip
    assert collection.corpus == "savee+emodb"
    actors = collections.Counter((e.corpus, e.actor) for e in collection.examples)
    assert {a for c, a in actors if c == "savee"} == {1, 2, 3}
    assert {a for c, a in actors if c == "emodb"} == {10003, 10016}
    assert collection.sources[1]["speakers"] == {"10003": "03", "10016": "16"}
    assert collection.skipped[0][0] == "emodb:wav/junk.wav"
    with pytest.raises(ConfigError, match="is not 'corpus=path'"):
        sources.parse_sources(["emodb"])
    with pytest.raises(ConfigError, match=r"data\.extra_sources entry 'iemocap=/x'"):
        sources.parse_sources(["iemocap=/x"])


# ------------------------------------------------------------------------------------------
# Config, splits and prepared shards.


def test_config_labels_and_label_map_validation():
    c = config_lib.apply_overrides(default.get_config(), [
        ("data.labels", "neutral,happy,sad,angry"), ("data.label_map", "calm=neutral,surprised=")
    ])  # fmt: skip
    assert c.data.labels == ("neutral", "happy", "sad", "angry")
    assert c.data.label_map == ("calm=neutral", "surprised=")
    with pytest.raises(ConfigError, match=r"data.labels has 4 labels but model.num_classes=8"):
        validate(c)
    validate(config_lib.apply_overrides(c, [("model.num_classes", "4")]))
    bad = config_lib.apply_overrides(default.get_config(), [("data.label_map", "calm=relaxed")])
    with pytest.raises(ConfigError, match=r"'relaxed', which is not in data\.labels"):
        validate(bad)
    bad = config_lib.apply_overrides(default.get_config(), [("data.corpus", "iemocap")])
    with pytest.raises(ConfigError, match=r"data.corpus='iemocap'.*'emodb'.*'manifest'"):
        validate(bad)


def tiny_cfg():
    cfg = default.get_features_config()
    cfg.update({"duration_s": 0.25, "n_fft": 256, "win_length": 256, "hop_length": 128,
                "n_mels": 16})  # fmt: skip
    return cfg


def test_prepare_records_mapping_and_refuses_stale_labels(tmp_path):
    manifest, _ = corpora_data.make_manifest(tmp_path / "iemocap")
    out = tmp_path / "shards"
    kwargs = {"corpus": "manifest", "num_workers": 1, "progress": False}
    with pytest.raises(DataError, match=r"'exc' \(3 files\), 'fru' \(3 files\)"):
        prepare.prepare(manifest, out, tiny_cfg(), **kwargs)
    summary = prepare.prepare(manifest, out, tiny_cfg(), label_map=["exc=happy", "fru="],
                              **kwargs)  # fmt: skip
    assert summary["num_examples"] == 15 and summary["dropped"] == {"manifest:fru": 3}
    assert summary["counts"]["by_label"]["happy"] == 6
    metadata = shards.load_metadata(out)
    assert metadata["corpora"][0]["label_map"]["exc"] == "happy"
    row = next(r for r in metadata["examples"] if r["corpus_label"] == "exc")
    assert (row["emotion"], row["label"], row["corpus"]) == ("happy", 2, "manifest")
    assert row["speaker"] in ("Ses01F", "Ses01M", "Ses05F") and row["split"] in (
        "train",
        "test",
        "validation",
    )
    again = prepare.prepare(manifest, out, tiny_cfg(), label_map=["exc=happy", "fru="], **kwargs)
    assert again["reused"] is True
    with pytest.raises(DataError, match="have another label, speaker or split now"):
        prepare.prepare(manifest, out, tiny_cfg(), label_map=["exc=neutral", "fru="], **kwargs)


def test_restricted_predictions_use_only_shared_logits():
    logits = np.array([[5.0, 1.0, 0.0], [0.0, 2.0, 3.0]])
    shared = np.array([0, 2])  # model class 1 is not in the corpus
    y, pred, losses = restricted_predictions(logits, np.array([2, 2]), shared)
    assert y.tolist() == [1, 1] and pred.tolist() == [0, 1]
    expected = -np.log(np.exp(3.0) / (np.exp(0.0) + np.exp(3.0)))
    assert losses[1] == pytest.approx(expected)


def test_cli_lists_corpora_and_prepares_a_mix(tmp_path, capsys):
    from sejax.cli import main as cli

    assert cli.main(["corpora"]) == 0
    listing = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["corpora"]
    assert set(listing) == set(corpora.NAMES)
    assert listing["emodb"]["labels"]["boredom"] is None
    assert listing["tess"]["labels"]["pleasant_surprise"] == "surprised"
    corpora_data.make_savee(tmp_path / "savee")
    corpora_data.make_emodb(tmp_path / "emodb")
    code = cli.main([
        "prepare", "--data", str(tmp_path / "savee"), "--corpus", "savee",
        "--out", str(tmp_path / "shards"),
        f"--config.data.extra_sources=emodb={tmp_path / 'emodb'}",
        "--config.data.label_map=boredom=", "--config.data.num_workers=1",
        "--config.features.duration_s=0.25",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["corpus"] == "savee+emodb" and summary["num_examples"] == 21 + 12
    assert summary["dropped"] == {"emodb:boredom": 2}
    assert set(summary["counts"]["by_actor"]) == {"1", "2", "3", "10003", "10016"}
    assert summary["counts"]["by_label"]["calm"] == 0 and summary["counts"]["by_label"]["sad"] == 5
