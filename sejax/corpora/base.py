"""What every corpus reader yields (`Recording`) and declares (`Corpus`), plus the shared loop
for corpora whose labels live in their file names.

Readers differ only in how a name encodes speaker and emotion; listing a folder or a zip,
collecting every bad name before failing, and catching one recording stored twice (say
``x.wav`` beside ``x.flac``) is the same for all of them, so it lives here once.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from sejax.corpora import files as corpus_files
from sejax.errors import ConfigError, DataError

Skipped = list[tuple[str, str]]  # [(name relative to the corpus root, reason)]


@dataclasses.dataclass(frozen=True)
class Recording:
    """One labelled clip in a corpus's own terms; `sejax.corpora.labels` maps `emotion` onto
    the target labels. The one record of a clip, whatever the corpus; fields a corpus has no
    notion of (RAVDESS's modality, a manifest's intensity) are 0 or empty."""

    source: str  # what `sejax.data.audio.read_source` reads: a path or "<zip>::<member>"
    speaker: str  # as the corpus names it: '03', 'OAF', 'DC', '1001'
    actor: int  # integer speaker id: what speaker-disjoint splits and data.*_actors use
    emotion: str  # one of the corpus's declared labels (`Corpus.labels`)
    gender: str = "unknown"  # 'male' | 'female' | 'unknown'
    intensity: int = 0  # RAVDESS 1 normal, 2 strong; CREMA-D 1 low, 2 medium, 3 high
    statement: int = 0  # 1-based index of the sentence or word in the corpus's list
    repetition: int = 0  # take: RAVDESS repetition, EmoDB version (a=1, b=2, ...)
    text: str = ""  # the sentence or word code as named by the corpus ('a01', 'DFA', 'back')
    split: str = ""  # manifest corpora only: 'train' | 'validation' | 'test' | ''
    modality: int = 0  # RAVDESS 1 audio-video, 2 video-only, 3 audio-only
    vocal_channel: int = 0  # RAVDESS 1 speech, 2 song


Reader = Callable[[Path, str], tuple[list[Recording], Skipped]]


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A supported corpus: its name in configs, its label set and how to read it."""

    name: str  # config value of data.corpus
    title: str
    labels: tuple[str, ...]  # the corpus's own label names; empty: declared by the data
    naming: str  # the file naming convention, for error messages and `sejax corpora`
    read: Reader  # (path, on_bad_name) -> (recordings sorted by source, skipped)


class BadName(ValueError):
    """Why a file name does not follow a corpus's convention (the caller adds the name)."""


ON_BAD_NAME = ("error", "skip")  # data.on_bad_name: stop at a misnamed file, or leave it out


def check_on_bad_name(on_bad_name: str) -> None:
    if on_bad_name not in ON_BAD_NAME:
        raise ConfigError(
            f"data.on_bad_name={on_bad_name!r} is not allowed; choose one of {list(ON_BAD_NAME)}"
        )


def stem(rel: str) -> str:
    """The file name without folders and extension (``wav/03a01Fa.wav`` -> ``03a01Fa``)."""
    return PurePosixPath(rel).name.split(".", 1)[0]


def read_named(
    path: str | os.PathLike[str],
    on_bad_name: str,
    *,
    title: str,
    parse: Callable[[str], dict[str, Any]],
) -> tuple[list[Recording], Skipped]:
    """Recordings of a corpus whose file names carry the labels, from a folder or a zip.

    ``parse(rel)`` gets the posix name relative to the root (folders included, for corpora
    that put the speaker in a folder) and returns `Recording` fields except ``source``, or
    raises `BadName`. Bad names and duplicates (same fields: ``x.wav`` beside ``x.flac``) are
    listed all at once in a `DataError`, or with ``on_bad_name='skip'`` left out and returned.
    """
    check_on_bad_name(on_bad_name)
    root, members = corpus_files.list_audio(path, title)
    recordings: list[Recording] = []
    bad: Skipped = []
    seen: dict[tuple, str] = {}
    for rel, source in members:
        try:
            fields = parse(rel)
        except BadName as e:
            bad.append((rel, str(e)))
            continue
        key = tuple(sorted(fields.items()))
        if key in seen:
            bad.append((rel, f"same recording as {seen[key]}"))
            continue
        seen[key] = rel
        recordings.append(Recording(source=source, **fields))
    if not recordings:  # nothing valid: say why, file by file
        raise DataError(
            f"no valid {title} recordings; " + corpus_files.format_bad(bad, root, title)
            if bad
            else f"{root}: no valid {title} recordings"
        )
    if bad and on_bad_name == "error":
        raise DataError(corpus_files.format_bad(bad, root, title))
    return recordings, bad


def code_of(value: str, codes: dict[str, Any], field: str, title: str) -> Any:
    """``codes[value]``, or `BadName` listing the codes the corpus defines for ``field``."""
    if value not in codes:
        raise BadName(f"{field} {value!r} is not a {title} {field} (expected one of {list(codes)})")
    return codes[value]
