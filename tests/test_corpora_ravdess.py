"""sejax.corpora.ravdess: RAVDESS name parsing and reading from folders and zips (tiny
generated files)."""

from __future__ import annotations

import collections
import os
import zipfile
from pathlib import Path

import pytest

from sejax.corpora import files, ravdess
from sejax.errors import ConfigError, DataError


def _touch(path: Path, data: bytes = b"RIFF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_parse_example_name():
    fields = ravdess.parse_ravdess_name("03-01-06-01-02-01-12.wav")
    assert fields == {
        "label": 5,
        "emotion": "fearful",
        "intensity": 1,
        "statement": 2,
        "repetition": 1,
        "actor": 12,
        "gender": "female",
        "modality": 3,
        "vocal_channel": 1,
    }


def test_parse_accepts_paths_case_and_flac_and_other_modalities():
    fields = ravdess.parse_ravdess_name("/data/Actor_01/01-02-08-02-01-02-01.FLAC")
    assert fields["emotion"] == "surprised"
    assert fields["label"] == 7
    assert fields["intensity"] == 2
    assert fields["gender"] == "male"
    assert (fields["modality"], fields["vocal_channel"]) == (1, 2)  # recorded, not filtered


def test_emotions_order_matches_config():
    from sejax.configs.default import get_config

    assert tuple(get_config().data.labels) == ravdess.EMOTIONS  # the default target labels
    assert ravdess.CORPUS.labels == ravdess.EMOTIONS
    for code, emotion in enumerate(ravdess.EMOTIONS, start=1):
        name = f"03-01-{code:02d}-01-01-01-01.wav"
        assert ravdess.parse_ravdess_name(name)["emotion"] == emotion


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("03-01-09-01-01-01-01.wav", "emotion code 09"),
        ("03-01-00-01-01-01-01.wav", "emotion code 00"),
        ("03-01-02-03-01-01-01.wav", "intensity code 03"),
        ("03-01-01-02-01-01-01.wav", "neutral (emotion 01) has only normal intensity"),
        ("03-01-02-01-03-01-01.wav", "statement code 03"),
        ("03-01-02-01-01-00-01.wav", "repetition code 00"),
        ("03-01-02-01-01-01-00.wav", "actor code 00"),
        ("04-01-02-01-01-01-01.wav", "modality code 04"),
        ("03-03-02-01-01-01-01.wav", "vocal channel code 03"),
        ("03-01-02-01-01-01.wav", "not a RAVDESS name"),
        ("3-1-2-1-1-1-1.wav", "not a RAVDESS name"),
        ("03_01_02_01_01_01_01.wav", "not a RAVDESS name"),
        ("happy_kid.wav", "not a RAVDESS name"),
    ],
)
def test_parse_rejects_bad_names_naming_file_and_field(name, fragment):
    with pytest.raises(DataError) as info:
        ravdess.parse_ravdess_name(name)
    assert name in str(info.value)
    assert fragment in str(info.value)


def test_gender_from_actor_parity_and_large_actor_ids():
    assert ravdess.parse_ravdess_name("03-01-02-01-01-01-23.wav")["gender"] == "male"
    assert ravdess.parse_ravdess_name("03-01-02-01-01-01-24.wav")["gender"] == "female"
    assert ravdess.parse_ravdess_name("03-01-02-01-01-01-101.wav")["actor"] == 101


def test_format_is_inverse_of_parse():
    name = ravdess.format_ravdess_name(label=4, intensity=2, statement=1, repetition=2, actor=7)
    assert name == "03-01-05-02-01-02-07.wav"
    assert ravdess.parse_ravdess_name(name)["emotion"] == "angry"
    with pytest.raises(DataError, match="neutral"):
        ravdess.format_ravdess_name(label=0, intensity=2, statement=1, repetition=1, actor=1)


def _ravdess_tree(root: Path) -> list[str]:
    names = []
    for actor in (1, 2):
        for emotion in (1, 3, 5):
            name = f"03-01-{emotion:02d}-01-01-01-{actor:02d}.wav"
            _touch(root / f"Actor_{actor:02d}" / name)
            names.append(name)
    return names


def test_discover_folder(tmp_path):
    names = _ravdess_tree(tmp_path)
    _touch(tmp_path / "README.md", b"text")
    _touch(tmp_path / "MANIFEST.tsv", b"a\tb")
    _touch(tmp_path / ".hidden" / "03-01-01-01-01-02-01.wav")
    _touch(tmp_path / "Actor_01" / "._03-01-01-01-01-01-01.wav")  # macOS resource fork
    _touch(tmp_path / "__MACOSX" / "03-01-02-01-01-02-01.wav")
    _touch(tmp_path / "Actor_02" / "03-01-08-02-02-02-02.FLAC")  # extension in any case
    utterances, skipped = ravdess.read(tmp_path)
    assert skipped == []
    assert len(utterances) == len(names) + 1
    sources = [u.source for u in utterances]
    assert sources == sorted(sources)
    assert all(os.path.isabs(s) and os.path.isfile(s) for s in sources)
    by_actor = collections.Counter(u.actor for u in utterances)
    assert by_actor == {1: 3, 2: 4}
    flac = next(u for u in utterances if u.source.endswith(".FLAC"))
    assert (flac.emotion, flac.intensity, flac.statement, flac.repetition) == (
        ravdess.EMOTIONS[7], 2, 2, 2,
    )  # fmt: skip
    assert flac.gender == "female"
    assert (flac.speaker, flac.text, flac.modality, flac.vocal_channel) == ("02", "02", 3, 1)


def test_discover_lists_all_bad_names(tmp_path):
    _ravdess_tree(tmp_path)
    _touch(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav")
    _touch(tmp_path / "Actor_01" / "notes.wav")
    _touch(tmp_path / "Actor_02" / "03-01-02-01-01-01-05.wav")  # wrong actor folder
    with pytest.raises(DataError) as info:
        ravdess.read(tmp_path)
    message = str(info.value)
    assert "3 audio file(s)" in message
    assert "Actor_01/03-01-09-01-01-01-01.wav: emotion code 09" in message
    assert "Actor_01/notes.wav: not a RAVDESS name" in message
    assert "Actor_02/03-01-02-01-01-01-05.wav: in folder Actor_02" in message
    assert "on_bad_name='skip'" in message


def test_discover_skip_reports_bad_names(tmp_path):
    _ravdess_tree(tmp_path)
    _touch(tmp_path / "Actor_01" / "03-01-09-01-01-01-01.wav")
    utterances, skipped = ravdess.read(tmp_path, on_bad_name="skip")
    assert len(utterances) == 6
    assert len(skipped) == 1
    name, reason = skipped[0]
    assert name == "Actor_01/03-01-09-01-01-01-01.wav"
    assert "emotion code 09" in reason


def test_discover_error_message_is_capped(tmp_path):
    _ravdess_tree(tmp_path)
    for i in range(25):
        _touch(tmp_path / "junk" / f"bad{i:02d}.wav")
    with pytest.raises(DataError) as info:
        ravdess.read(tmp_path)
    assert "25 audio file(s)" in str(info.value)
    assert "... and 5 more" in str(info.value)


def test_discover_duplicates_are_bad(tmp_path):
    _ravdess_tree(tmp_path)
    _touch(tmp_path / "Actor_01" / "03-01-01-01-01-01-01.flac")  # same recording as the .wav
    with pytest.raises(DataError, match="same recording as Actor_01/03-01-01-01-01-01-01"):
        ravdess.read(tmp_path)
    utterances, skipped = ravdess.read(tmp_path, on_bad_name="skip")
    assert len(utterances) == 6
    assert skipped[0][0] == "Actor_01/03-01-01-01-01-01-01.wav"


def test_speech_song_and_modalities_are_different_recordings(tmp_path):
    _ravdess_tree(tmp_path)
    for name in ("03-02-01-01-01-01-01.wav", "01-01-01-01-01-01-01.wav"):  # song; audio-video
        _touch(tmp_path / "Actor_01" / name)
    recordings, skipped = ravdess.read(tmp_path)
    assert skipped == [] and len(recordings) == 8
    kinds = {(r.modality, r.vocal_channel) for r in recordings if r.emotion == "neutral"}
    assert kinds == {(3, 1), (3, 2), (1, 1)}
    _touch(tmp_path / "Actor_01" / "03-02-01-01-01-01-01.flac")  # the song again
    with pytest.raises(DataError, match="same recording as Actor_01/03-02-01-01-01-01-01"):
        ravdess.read(tmp_path)


def test_discover_zip_in_place(tmp_path):
    zip_path = tmp_path / "Audio_Speech_Actors_01-24.zip"
    payloads = {}
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("Actor_01/", b"")
        for actor, emotion in [(1, 2), (1, 4), (2, 6)]:
            name = f"Actor_{actor:02d}/03-01-{emotion:02d}-02-01-01-{actor:02d}.wav"
            payloads[name] = f"audio {name}".encode()
            zf.writestr(name, payloads[name])
        zf.writestr("__MACOSX/Actor_01/._03-01-02-02-01-01-01.wav", b"junk")
        zf.writestr("README.txt", b"hello")
    utterances, skipped = ravdess.read(zip_path)
    assert skipped == []
    assert [u.emotion for u in utterances] == ["calm", "sad", "fearful"]
    assert not (tmp_path / "Actor_01").exists()  # nothing extracted
    for u in utterances:
        zip_part, member = u.source.split("::")
        assert Path(zip_part) == zip_path.resolve()
        with files.open_source(u.source) as f:
            assert f.read() == payloads[member]
            f.seek(0)  # decoders seek
            assert f.read(5) == b"audio"


def test_discover_missing_empty_and_not_audio(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        ravdess.read(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    _touch(tmp_path / "empty" / "README.md", b"x")
    with pytest.raises(DataError, match="no audio files found"):
        ravdess.read(tmp_path / "empty")
    not_zip = _touch(tmp_path / "data.zip", b"not a zip at all")
    with pytest.raises(DataError, match="neither a folder nor a zip"):
        ravdess.read(not_zip)
    _touch(tmp_path / "allbad" / "x.wav")
    with pytest.raises(DataError, match="no valid RAVDESS recordings"):
        ravdess.read(tmp_path / "allbad", on_bad_name="skip")
    with pytest.raises(ConfigError, match="on_bad_name"):
        ravdess.read(tmp_path, on_bad_name="ignore")
