"""Tiny generated corpora in each supported naming convention (a few 0.25 s WAVs each).

Each ``make_*`` writes a corpus under ``root`` and returns what a reader must find:
``{"count": files, "labels": {corpus label: files}, "speakers": {speaker: actor id}}``.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def write_wav(path: Path, seed: int, seconds: float = 0.25) -> Path:
    """A short tone plus noise; different seeds give different bytes."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(SAMPLE_RATE * seconds)) / SAMPLE_RATE
    wave = 0.3 * np.sin(2 * np.pi * (120 + 10 * (seed % 30)) * t) + 0.02 * rng.normal(size=t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    return path


def _expect(rows: list[tuple[str, str]], speakers: dict[str, int]) -> dict:
    """rows: (speaker, label) per file."""
    return {
        "count": len(rows),
        "labels": dict(collections.Counter(label for _, label in rows)),
        "speakers": speakers,
    }


def make_cremad(root: Path) -> dict:
    rows = []
    codes = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral",
             "SAD": "sad"}  # fmt: skip
    for i, actor in enumerate((1001, 1091)):
        for j, (code, label) in enumerate(codes.items()):
            level = "XX" if code == "NEU" else ("LO", "MD", "HI")[j % 3]
            write_wav(root / "AudioWAV" / f"{actor}_DFA_{code}_{level}.wav", 100 * i + j)
            rows.append((str(actor), label))
    return _expect(rows, {"1001": 1001, "1091": 1091})


def make_tess(root: Path) -> dict:
    rows = []
    codes = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
             "neutral": "neutral", "ps": "pleasant_surprise", "sad": "sad"}  # fmt: skip
    folders = {"ps": "Pleasant_surprise"}
    for i, speaker in enumerate(("OAF", "YAF")):
        for j, (code, label) in enumerate(codes.items()):
            folder = root / f"{speaker}_{folders.get(code, code)}"
            word = "back" if j % 2 else "bite"
            name = f"{speaker}_{word}_{code}.wav"
            if speaker == "OAF" and code == "neutral":
                name = "OA_bite_neutral.wav"  # the distribution's one misnamed file
            write_wav(folder / name, 200 + 100 * i + j)
            rows.append((speaker, label))
    return _expect(rows, {"OAF": 1, "YAF": 2})


def make_emodb(root: Path) -> dict:
    rows = []
    letters = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
               "T": "sadness", "N": "neutral"}  # fmt: skip
    for i, speaker in enumerate(("03", "16")):
        for j, (letter, label) in enumerate(letters.items()):
            text = ("a01", "b10")[j % 2]
            write_wav(root / "wav" / f"{speaker}{text}{letter}{'ab'[j % 2]}.wav", 400 + 100 * i + j)
            rows.append((speaker, label))
    (root / "README.md").write_text("ignored\n")
    return _expect(rows, {"03": 3, "16": 16})


def make_savee(root: Path) -> dict:
    """DC and JE in per-speaker folders (AudioData/DC/a01.wav), JK flattened (JK_a01.wav)."""
    rows = []
    codes = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral",
             "sa": "sadness", "su": "surprise"}  # fmt: skip
    for i, speaker in enumerate(("DC", "JE", "JK")):
        for j, (code, label) in enumerate(codes.items()):
            number = 30 if code == "n" else j + 1
            if speaker == "JK":
                path = root / "ALL" / f"JK_{code}{number:02d}.wav"
            else:
                path = root / "AudioData" / speaker / f"{code}{number:02d}.wav"
            write_wav(path, 700 + 100 * i + j)
            rows.append((speaker, label))
    return _expect(rows, {"DC": 1, "JE": 2, "JK": 3})


IEMOCAP_LABELS = ("ang", "hap", "exc", "neu", "sad", "fru")


def make_manifest(root: Path, *, tsv: bool = False, split: bool = True) -> tuple[Path, dict]:
    """An IEMOCAP-style manifest: session speakers, IEMOCAP's short labels, relative paths."""
    rows = []
    lines = ["# converted from IEMOCAP-style evaluation files", "path,label,speaker,split"]
    for i, speaker in enumerate(("Ses01F", "Ses01M", "Ses05F")):
        part = ("train", "val", "test")[i]
        for j, label in enumerate(IEMOCAP_LABELS):
            rel = f"{speaker}/{speaker}_impro0{j}_F000.wav"
            write_wav(root / "audio" / rel, 1000 + 100 * i + j)
            lines.append(f"audio/{rel},{label.upper() if j == 0 else label},{speaker},{part}")
            rows.append((speaker, label))
    if not split:
        lines = [line.rsplit(",", 1)[0] for line in lines]
    if tsv:
        lines = [line.replace(",", "\t") for line in lines]
    manifest = root / ("manifest.tsv" if tsv else "manifest.csv")
    manifest.write_text("\n".join(lines) + "\n")
    return manifest, _expect(rows, {"Ses01F": 1, "Ses01M": 2, "Ses05F": 3})
