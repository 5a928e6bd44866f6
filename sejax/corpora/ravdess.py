"""RAVDESS (Livingstone & Russo 2018): file names, their labels, and the corpus reader.

A RAVDESS name carries every label, so the corpus needs no side table:
``MM-VV-EE-II-SS-RR-AA.wav`` is modality, vocal channel, emotion, intensity, statement,
repetition and actor (``03-01-06-01-02-01-12.wav``: audio-only speech, fearful, normal
intensity, "Dogs are sitting by the door", first repetition, actor 12, female). The actor
number is the speaker; odd actors are male.

Every field is checked against the RAVDESS design, so a typo or a file from another corpus is
caught here, with its name, and never becomes a silently wrong label. Modality (01 audio-video,
02 video-only, 03 audio-only) and vocal channel (01 speech, 02 song) are validated and recorded
on each `Recording` but not filtered: a folder that mixes speech and song yields both, and
selecting one is the caller's choice. Actors may be any positive number, so synthetic corpora
(``sejax.data.demo``) and corpora with more speakers use the same names.

`EMOTIONS` is RAVDESS's label set, in code order; it is also sejax's default target labels
(``config.data.labels``), which is why the default config imports it from here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from sejax.corpora.base import BadName, Corpus, Recording, Skipped, read_named, stem
from sejax.errors import DataError

__all__ = [
    "CORPUS",
    "EMOTIONS",
    "INTENSITIES",
    "MODALITIES",
    "VOCAL_CHANNELS",
    "format_ravdess_name",
    "parse_ravdess_name",
    "read",
]

TITLE = "RAVDESS"
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
INTENSITIES = {1: "normal", 2: "strong"}

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2,})$")
_ACTOR_DIR_RE = re.compile(r"^actor_(\d+)$", re.IGNORECASE)


def _check(value: int, allowed: range | dict, field: str) -> None:
    if value not in allowed:
        codes = sorted(allowed) if isinstance(allowed, dict) else list(allowed)
        raise BadName(
            f"{field} code {value:02d} is not a RAVDESS {field} "
            f"(expected {codes[0]:02d}..{codes[-1]:02d})"
        )


def _name_fields(rel: str) -> dict[str, Any]:
    """The labels of a file name (folders and extension ignored); `BadName` says why not."""
    match = _NAME_RE.match(stem(rel))
    if match is None:
        raise BadName(
            "not a RAVDESS name; expected seven dash-separated numbers "
            "modality-channel-emotion-intensity-statement-repetition-actor, "
            "e.g. 03-01-06-01-02-01-12.wav"
        )
    modality, channel, emotion, intensity, statement, repetition, actor = map(int, match.groups())
    _check(modality, MODALITIES, "modality")
    _check(channel, VOCAL_CHANNELS, "vocal channel")
    _check(emotion, range(1, len(EMOTIONS) + 1), "emotion")
    _check(intensity, INTENSITIES, "intensity")
    _check(statement, range(1, 3), "statement")
    _check(repetition, range(1, 3), "repetition")
    if actor < 1:
        raise BadName(f"actor code {actor:02d} is not a RAVDESS actor (expected >= 01)")
    if emotion == 1 and intensity != 1:
        raise BadName(
            "neutral (emotion 01) has only normal intensity (01) in RAVDESS, "
            f"got intensity {intensity:02d}"
        )
    return {
        "label": emotion - 1,
        "emotion": EMOTIONS[emotion - 1],
        "intensity": intensity,
        "statement": statement,
        "repetition": repetition,
        "actor": actor,
        "gender": "male" if actor % 2 else "female",
        "modality": modality,
        "vocal_channel": channel,
    }


def parse_ravdess_name(name: str) -> dict[str, Any]:
    """Labels encoded in a RAVDESS file name (a bare name or a path; the extension is ignored).

    Returns ``label`` (the emotion code - 1, an index into `EMOTIONS`), ``emotion``,
    ``intensity``, ``statement``, ``repetition``, ``actor``, ``gender``, ``modality`` and
    ``vocal_channel``. Raises `DataError` naming the file and the offending field for a name
    that is not a valid RAVDESS name.
    """
    try:
        return _name_fields(PurePosixPath(name.replace("\\", "/")).name)
    except BadName as e:
        raise DataError(f"{name}: {e}") from None


def format_ravdess_name(
    *,
    label: int,
    intensity: int,
    statement: int,
    repetition: int,
    actor: int,
    modality: int = 3,
    vocal_channel: int = 1,
    extension: str = ".wav",
) -> str:
    """The RAVDESS file name for these labels; the inverse of `parse_ravdess_name`."""
    name = (
        f"{modality:02d}-{vocal_channel:02d}-{label + 1:02d}-{intensity:02d}-"
        f"{statement:02d}-{repetition:02d}-{actor:02d}{extension}"
    )
    parse_ravdess_name(name)  # refuse to write a name discovery would reject
    return name


def parse(rel: str) -> dict[str, Any]:
    """`Recording` fields of the file at ``rel`` (relative to the corpus root); `BadName` for
    a bad name or a file in an ``Actor_NN`` folder of another actor."""
    fields = _name_fields(rel)
    parent = PurePosixPath(rel).parent.name
    match = _ACTOR_DIR_RE.match(parent)
    if match and int(match.group(1)) != fields["actor"]:
        raise BadName(f"in folder {parent} but the name says actor {fields['actor']:02d}")
    del fields["label"]  # the target label is assigned by `sejax.corpora.sources`
    return {**fields, "speaker": f"{fields['actor']:02d}", "text": f"{fields['statement']:02d}"}


def read(
    path: str | os.PathLike[str], on_bad_name: str = "error"
) -> tuple[list[Recording], Skipped]:
    """Every RAVDESS recording in a folder (recursive) or a zip (read in place, not extracted).

    Audio is ``.wav``/``.flac`` in any letter case; other files (README, MANIFEST.tsv), hidden
    files and ``__MACOSX/`` are ignored silently. A bad name, a file in another actor's
    ``Actor_NN`` folder, or a second file with the labels of one already found (say ``x.wav``
    beside ``x.flac``; speech and song, or two modalities, are different recordings) is an
    error listing all of them, or with ``on_bad_name='skip'`` is left out and reported.
    Returns (recordings sorted by source, skipped [(name, reason)]), names relative to `path`.
    """
    return read_named(Path(path), on_bad_name, title=TITLE, parse=parse)


CORPUS = Corpus(
    name="ravdess",
    title=TITLE,
    labels=EMOTIONS,
    naming="MM-VV-EE-II-SS-RR-AA.wav, e.g. 03-01-06-01-02-01-12.wav (emotion 06, actor 12)",
    read=read,
)
