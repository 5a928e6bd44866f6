"""Bad data: `prepare` on a corpus of broken, odd and misnamed files reports each one with its
reason, prepares the rest (prepared + rejected = found), and with ``strict`` stops at the first.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sejax.data import prepare, screening, shards
from sejax.errors import ConfigError, DataError
from tests.test_prepare import ravdess_name, read_shards, tiny_cfg

LIMITS = {"min_duration_s": 0.1, "max_duration_s": 2.0}


def _tone(seconds: float, sr: int, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    wave = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([wave, 0.5 * wave], axis=1) if channels == 2 else wave


def _wav_bytes(wave: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sr, subtype=subtype, format=fmt)
    return buffer.getvalue()


def make_bad_corpus(root: Path) -> dict[str, str]:
    """A RAVDESS-named corpus of actors 1-2; returns {relative path: expected problem or
    'ok'}. The good files mix rates (8, 16, 44.1, 48 kHz), channels and WAV/FLAC."""
    files: dict[str, bytes] = {}
    expected: dict[str, str] = {}

    def add(emotion: int, actor: int, data: bytes, problem: str, rep: int = 1, ext=".wav"):
        intensity = 1 if emotion == 1 else 2  # neutral has normal intensity only
        rel = f"Actor_{actor:02d}/{ravdess_name(emotion, intensity, 1, rep, actor, ext)}"
        files[rel], expected[rel] = data, problem

    for actor in (1, 2):  # good: 8 clips per actor, every format mixed in
        for emotion, (sr, ch, fmt) in enumerate(
            [(16000, 1, "WAV"), (48000, 2, "WAV"), (8000, 1, "FLAC"), (44100, 2, "FLAC")] * 2, 2
        ):
            ext = ".flac" if fmt == "FLAC" else ".wav"
            wave = _tone(0.6, sr, ch, freq=100.0 * emotion + 30 * actor)
            add(emotion % 8 + 1, actor, _wav_bytes(wave, sr, fmt=fmt), "ok", ext=ext)
    good = _wav_bytes(_tone(0.6, 16000), 16000)
    add(3, 1, b"", "empty", rep=2)
    add(4, 1, b"Hello, I am a text file, not a recording.\n" * 20, "not_audio", rep=2)
    add(5, 1, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "not_audio", rep=2)
    add(6, 1, b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(400), "corrupt", rep=2)
    flac = _wav_bytes(_tone(1.0, 16000), 16000, fmt="FLAC")
    add(7, 1, flac[: len(flac) // 2], "corrupt", rep=2)  # cut FLAC: the decoder loses sync
    add(8, 1, good[: len(good) // 2], "truncated", rep=2)  # cut WAV: decodes, but short
    add(3, 2, _wav_bytes(np.zeros(16000, np.float32), 16000), "silent", rep=2)
    add(4, 2, _wav_bytes(_tone(0.02, 16000), 16000), "too_short", rep=2)
    add(5, 2, _wav_bytes(_tone(3.0, 8000), 8000), "too_long", rep=2)
    nan = _tone(0.6, 16000)
    nan[100:110] = np.nan
    add(6, 2, _wav_bytes(nan, 16000, subtype="FLOAT"), "non_finite", rep=2)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    for rel in ("Actor_01/hello.wav", "Actor_02/03-01-09-01-01-01-02.wav"):  # misnamed
        (root / rel).write_bytes(good)
        expected[rel] = "bad_name"
    (root / "notes.txt").write_text("not an audio extension: not a file of the corpus")
    return expected


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("bad_corpus")
    return root, make_bad_corpus(root)


def _prepare(data: Path, out: Path, **kwargs) -> dict:
    return prepare.prepare(data, out, tiny_cfg(), num_workers=1, progress=False,
                           **{**LIMITS, **kwargs})  # fmt: skip


def _problem_of(rejected: dict, root: Path) -> dict[str, str]:
    """{path relative to the corpus: problem} from metadata or report rows."""
    out = {}
    for source, problem in rejected:
        rel = Path(source).relative_to(root).as_posix() if source.startswith("/") else source
        out[rel] = problem
    return out


def test_each_bad_file_is_rejected_with_its_reason_and_counts_add_up(corpus, tmp_path):
    root, expected = corpus
    summary = _prepare(root, tmp_path / "shards", label_map=("calm=",))
    metadata = shards.load_metadata(tmp_path / "shards")
    report = metadata["report"]
    calm = [rel for rel, p in expected.items() if p == "ok" and "/03-01-02-" in rel]
    assert len(calm) == 2  # the label map leaves calm out: listed too, not silently dropped
    ok = sum(p == "ok" for p in expected.values()) - len(calm)
    assert report["found"] == len(expected) == report["prepared"] + report["rejected"]
    assert report["prepared"] == summary["num_examples"] == ok
    assert len(read_shards(tmp_path / "shards")) == ok
    assert summary["report"] == report

    rows = [(r["source"], r["problem"]) for r in metadata["rejected"]]
    want = {rel: p for rel, p in expected.items() if p != "ok"} | dict.fromkeys(calm, "left_out")
    assert _problem_of(rows, root) == want
    assert report["by_problem"] == {p: list(want.values()).count(p) for p in set(want.values())}
    for r in metadata["rejected"]:  # every reason names its file
        assert Path(r["source"]).name in r["reason"], r

    with open(tmp_path / "shards" / screening.REPORT_FILE, newline="") as f:
        table = list(csv.DictReader(f, delimiter="\t"))
    assert _problem_of([(r["path"], r["problem"]) for r in table], root) == want
    assert all(r["reason"] for r in table)
    # Mixed rates and channels were accepted: resampled and downmixed, as any other clip.
    prepared = {Path(e["source"]).name for e in metadata["examples"]}
    assert any(n.endswith(".flac") for n in prepared) and len(prepared) == ok


def test_strict_stops_at_the_first_bad_file_and_writes_nothing(corpus, tmp_path):
    root, expected = corpus
    with pytest.raises(DataError, match=r"hello\.wav") as info:  # names are checked first
        _prepare(root, tmp_path / "a", strict=True)
    assert "03-01-09-01-01-01-02.wav" in str(info.value)  # all bad names, in one error
    clean = tmp_path / "clean"
    for rel, problem in expected.items():
        if problem != "bad_name":
            (clean / rel).parent.mkdir(parents=True, exist_ok=True)
            (clean / rel).write_bytes((root / rel).read_bytes())
    first_bad = sorted(rel for rel, p in expected.items() if p not in ("ok", "bad_name"))[0]
    with pytest.raises(DataError, match=r"data\.strict") as info:
        _prepare(clean, tmp_path / "b", strict=True)
    assert Path(first_bad).name in str(info.value)
    assert f"[{expected[first_bad]}]" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean"]  # no output, no temp folder


def test_reuse_checks_rejected_files_too(corpus, tmp_path):
    root, expected = corpus
    data = tmp_path / "data"
    for rel in expected:
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes((root / rel).read_bytes())
    _prepare(data, tmp_path / "shards")
    assert _prepare(data, tmp_path / "shards")["reused"] is True
    with pytest.raises(DataError, match="screening limits"):
        _prepare(data, tmp_path / "shards", max_duration_s=5.0)
    empty = next(rel for rel, p in expected.items() if p == "empty")
    (data / empty).write_bytes((data / next(iter(expected))).read_bytes())  # fixed now
    with pytest.raises(DataError, match=r"1 file\(s\) changed content"):
        _prepare(data, tmp_path / "shards")
    summary = _prepare(data, tmp_path / "shards", overwrite=True)
    assert summary["report"]["by_problem"].get("empty") is None


def test_all_rejected_is_an_error_with_the_report(tmp_path):
    for emotion in (1, 2):
        path = tmp_path / "data" / "Actor_01" / ravdess_name(emotion, 1, 1, 1, 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    with pytest.raises(DataError, match=r"(?s)all 2 files were rejected.*2 empty"):
        _prepare(tmp_path / "data", tmp_path / "shards")
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize(
    "limits, key",
    [({"min_duration_s": -1.0}, "data.min_duration_s"),
     ({"max_duration_s": 0.05}, "data.max_duration_s")],
)  # fmt: skip
def test_impossible_limits_name_the_key(corpus, tmp_path, limits, key):
    with pytest.raises(ConfigError, match=key):
        _prepare(corpus[0], tmp_path / "out", **limits)


def test_prepare_command_prints_the_summary_and_strict_fails_naming_the_file(
    corpus, tmp_path, capsys
):
    from sejax.cli import main as cli

    root, expected = corpus
    tiny = ["--config.features.duration_s=0.5", "--config.features.n_fft=256",
            "--config.features.win_length=256", "--config.features.hop_length=128",
            "--config.features.n_mels=16", "--config.data.num_workers=1",
            "--config.data.max_duration_s=2.0"]  # fmt: skip
    args = ["prepare", "--data", str(root), "--out", str(tmp_path / "shards"), *tiny]
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    found, ok = len(expected), sum(p == "ok" for p in expected.values())
    assert f"Prepared {ok} of {found} files found; rejected {found - ok}" in err
    assert str(tmp_path / "shards" / screening.REPORT_FILE) in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["report"]["prepared"] + summary["report"]["rejected"] == found

    args = ["prepare", "--data", str(root), "--out", str(tmp_path / "strict"), "--strict", *tiny]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "hello.wav" in err and "Traceback" not in err
    assert not (tmp_path / "strict").exists()
