"""Any labelled audio: a CSV or TSV manifest with one row per clip.

For corpora without a naming convention (IEMOCAP's labels live in separate evaluation files,
MSP-Podcast's in a JSON, a lab's own recordings in a spreadsheet), the user writes a table::

    path,label,speaker,split
    Session1/Ses01F_impro01_F000.wav,neu,Ses01F,train
    /data/other/clip_0042.flac,ang,Ses05M,test

- ``path`` (or ``file``): an audio file, absolute or relative to the manifest's folder.
- ``label`` (or ``emotion``): any name; case, spaces and hyphens are normalised
  ('Pleasant Surprise' -> 'pleasant_surprise'). The manifest's label set is the set of
  labels it uses; `sejax.corpora.labels` maps them onto the target labels.
- ``speaker`` (or ``actor``): any name. Positive whole numbers are used as actor ids as they
  are; otherwise the speakers, sorted, become actors 1..N (listed in the prepared metadata).
- ``split`` (optional): train / validation / test (val, valid, dev accepted), used when
  ``data.split_by='manifest'``; ``gender`` (or ``sex``, optional): m/f/male/female.

Tab-separated for ``.tsv``/``.tab``, comma-separated otherwise; lines starting with ``#`` are
comments. Other columns are ignored.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from sejax.corpora.base import Corpus, Recording, Skipped, check_on_bad_name
from sejax.corpora.files import AUDIO_EXTENSIONS, format_bad
from sejax.errors import DataError

TITLE = "manifest"
COLUMNS = {  # canonical column -> accepted header names
    "path": ("path", "file"),
    "label": ("label", "emotion"),
    "speaker": ("speaker", "actor"),
    "split": ("split",),
    "gender": ("gender", "sex"),
}
REQUIRED = ("path", "label", "speaker")
SPLITS = {"train": "train", "validation": "validation", "val": "validation",
          "valid": "validation", "dev": "validation", "test": "test"}  # fmt: skip
GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female"}


def normalize_label(label: str) -> str:
    """'Pleasant Surprise' and 'pleasant-surprise' both become 'pleasant_surprise'."""
    return re.sub(r"[\s\-]+", "_", label.strip().lower())


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) without blank and comment lines."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the manifest as UTF-8 text ({e})") from e
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise DataError(f"{path}: the manifest is empty (expected a header: path, label, speaker)")
    parsed = csv.reader([line for _, line in lines], delimiter=delimiter)
    cells = [[c.strip() for c in row] for row in parsed]
    header = [c.lower() for c in cells[0]]
    return header, [(lines[i][0], row) for i, row in enumerate(cells[1:], start=1)]


def _columns(header: list[str], path: Path) -> dict[str, int]:
    """Index of each known column in the header; DataError naming a missing one."""
    found = {}
    for column, names in COLUMNS.items():
        for name in names:
            if name in header:
                found[column] = header.index(name)
                break
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise DataError(
            f"{path}: the manifest header {header} lacks column(s) {missing}; it needs path, "
            "label and speaker (optional: split, gender)"
        )
    return found


def _actor_ids(speakers: list[str]) -> dict[str, int]:
    """Speaker name -> actor id: numbers as they are, else 1..N in sorted order."""
    names = sorted(set(speakers))
    if all(s.isdigit() and int(s) > 0 for s in names):
        ids = {s: int(s) for s in names}
        if len(set(ids.values())) == len(ids):  # '7' and '07' would collide
            return ids
    return {s: i for i, s in enumerate(names, start=1)}


def read(path: Path, on_bad_name: str) -> tuple[list[Recording], Skipped]:
    """Recordings listed in the manifest at ``path``, sorted by source.

    Rows naming a missing or non-audio file, a file listed twice, an empty label or speaker,
    or an unknown split are listed all at once in a `DataError`, or with
    ``on_bad_name='skip'`` left out and returned.
    """
    check_on_bad_name(on_bad_name)
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(
            f"{path}: no such manifest file (data.corpus='manifest' expects a .csv or .tsv "
            "file with columns path, label, speaker)"
        )
    path = path.resolve()
    header, rows = _rows(path)
    col = _columns(header, path)
    good: list[tuple[str, dict[str, str]]] = []
    bad: Skipped = []
    seen: dict[str, int] = {}
    for number, row in rows:
        where = f"line {number}"
        values = {c: (row[i] if i < len(row) else "") for c, i in col.items()}
        file = values["path"]
        if not file:
            bad.append((where, "empty path"))
            continue
        source = str((path.parent / file).resolve())
        where = f"line {number} ({file})"
        problem = None
        if not values["label"] or not values["speaker"]:
            problem = "empty label or speaker"
        elif Path(source).suffix.lower() not in AUDIO_EXTENSIONS:
            problem = f"not an audio file (expected {', '.join(AUDIO_EXTENSIONS)})"
        elif not Path(source).is_file():
            problem = f"no such file: {source}"
        elif source in seen:
            problem = f"listed twice (also on line {seen[source]})"
        elif values.get("split") and values["split"].lower() not in SPLITS:
            problem = f"split {values['split']!r} is not one of train, validation, test"
        if problem is not None:
            bad.append((where, problem))
            continue
        seen[source] = number
        good.append((source, values))
    if bad and on_bad_name == "error":
        raise DataError(format_bad(bad, path, TITLE).replace("audio file(s)", "row(s)"))
    if not good:
        raise DataError(f"{path}: no usable rows; all {len(bad)} were skipped")
    actors = _actor_ids([v["speaker"] for _, v in good])
    recordings = [
        Recording(
            source=source,
            speaker=v["speaker"],
            actor=actors[v["speaker"]],
            emotion=normalize_label(v["label"]),
            gender=GENDERS.get(v.get("gender", "").lower(), "unknown"),
            split=SPLITS.get(v.get("split", "").lower(), ""),
        )
        for source, v in good
    ]
    return sorted(recordings, key=lambda r: r.source), bad


CORPUS = Corpus(
    name="manifest",
    title="manifest",
    labels=(),
    naming="a .csv/.tsv file with columns path, label, speaker (optional split, gender)",
    read=read,
)
