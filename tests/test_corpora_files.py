"""sejax.corpora.files: opening a source, a file path or a zip member read in place."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from sejax.corpora import files
from sejax.errors import DataError


def _touch(path: Path, data: bytes = b"RIFF") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_open_source_errors(tmp_path):
    path = _touch(tmp_path / "a.wav", b"abc")
    with files.open_source(str(path)) as f:
        assert f.read() == b"abc"
    with pytest.raises(DataError, match="cannot open"):
        files.open_source(str(tmp_path / "missing.wav"))
    zip_path = tmp_path / "x.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("a.wav", b"abc")
    with pytest.raises(DataError, match=r"no member 'b\.wav'"):
        files.open_source(f"{zip_path}::b.wav")
    with pytest.raises(DataError, match="cannot read zip member"):
        files.open_source(f"{tmp_path / 'missing.zip'}::a.wav")


def test_open_source_sees_a_replaced_zip(tmp_path):
    zip_path = tmp_path / "x.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("a.wav", b"old")
    with files.open_source(f"{zip_path}::a.wav") as f:
        assert f.read() == b"old"
    with zipfile.ZipFile(zip_path, "w") as zf:  # the open zip is cached; a new file is seen
        zf.writestr("a.wav", b"newer")
    with files.open_source(f"{zip_path}::a.wav") as f:
        assert f.read() == b"newer"


def test_list_audio_names_the_corpus_and_lists_folders_and_zips(tmp_path):
    _touch(tmp_path / "c" / "b" / "x.WAV")
    _touch(tmp_path / "c" / "a.flac")
    _touch(tmp_path / "c" / "notes.txt", b"x")
    _touch(tmp_path / "c" / ".hidden.wav")
    root, members = files.list_audio(tmp_path / "c", "CREMA-D")
    assert root == (tmp_path / "c").resolve()
    assert members == [("a.flac", str(root / "a.flac")), ("b/x.WAV", str(root / "b" / "x.WAV"))]
    zip_path = tmp_path / "c.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("d/y.wav", b"RIFF")
    _, members = files.list_audio(zip_path, "CREMA-D")
    assert members == [("d/y.wav", f"{zip_path.resolve()}{files.ZIP_SEPARATOR}d/y.wav")]
    not_audio = _touch(tmp_path / "x.bin", b"nothing")
    with pytest.raises(DataError, match="neither a folder nor a zip archive of CREMA-D audio"):
        files.list_audio(not_audio, "CREMA-D")
    message = files.format_bad([("a.wav", "why")], tmp_path, "TESS")
    assert "1 audio file(s) are not valid TESS recordings" in message and "a.wav: why" in message
