"""RAVDESS file names and corpus discovery, from a folder or from the Zenodo zip read in place.

A RAVDESS name carries every label, so the corpus needs no side table:
``MM-VV-EE-II-SS-RR-AA.wav`` is modality, vocal channel, emotion, intensity, statement,
repetition and actor (``03-01-06-01-02-01-12.wav``: audio-only speech, fearful, normal
intensity, "Dogs are sitting by the door", first repetition, actor 12, female).

Every field is checked against the RAVDESS design, so a typo or a file from another corpus is
caught here, with its name, and never becomes a silently wrong label. Modality (01 audio-video,
02 video-only, 03 audio-only) and vocal channel (01 speech, 02 song) are validated and recorded
on each :class:`Utterance` but not filtered: a folder that mixes speech and song yields both,
and selecting one is the caller's choice. Actors may be any positive number, so synthetic
corpora (``sejax.data.demo``) and corpora with more speakers use the same names.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import re
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from sejax.configs.default import EMOTIONS
from sejax.errors import ConfigError, DataError

__all__ = [
    "AUDIO_EXTENSIONS",
    "EMOTIONS",
    "INTENSITIES",
    "MODALITIES",
    "VOCAL_CHANNELS",
    "Utterance",
    "discover",
    "format_bad",
    "format_ravdess_name",
    "list_audio",
    "open_source",
    "parse_ravdess_name",
]

AUDIO_EXTENSIONS = (".wav", ".flac")
MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
INTENSITIES = {1: "normal", 2: "strong"}
ZIP_SEPARATOR = "::"  # "<zip path>::<member name>", see `Utterance.source`

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2,})$")
_ACTOR_DIR_RE = re.compile(r"^actor_(\d+)$", re.IGNORECASE)
_MAX_LISTED = 20  # bad names shown in full in one error message; the rest are counted


@dataclasses.dataclass(frozen=True)
class Utterance:
    """One labelled recording; `source` is what `open_source` and `sejax.data.audio` read."""

    source: str  # folder case: absolute path; zip case: "<zip path>::<member name>"
    label: int  # 0..7 = emotion code - 1, an index into EMOTIONS
    emotion: str
    intensity: int  # 1 normal, 2 strong
    statement: int  # 1 "Kids are talking by the door", 2 "Dogs are sitting by the door"
    repetition: int  # 1, 2
    actor: int  # 1..24 in RAVDESS; any positive int for synthetic corpora
    gender: str  # 'male' (odd actor) | 'female' (even actor)
    modality: int  # 1 audio-video, 2 video-only, 3 audio-only
    vocal_channel: int  # 1 speech, 2 song


class _BadName(ValueError):
    """Why a name is not a RAVDESS name; `parse_ravdess_name` adds the file name."""


def _check(value: int, allowed: range | dict, field: str) -> None:
    if value not in allowed:
        codes = sorted(allowed) if isinstance(allowed, dict) else list(allowed)
        raise _BadName(
            f"{field} code {value:02d} is not a RAVDESS {field} "
            f"(expected {codes[0]:02d}..{codes[-1]:02d})"
        )


def _parse_fields(base: str) -> dict[str, Any]:
    stem = base.split(".", 1)[0]
    match = _NAME_RE.match(stem)
    if match is None:
        raise _BadName(
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
        raise _BadName(f"actor code {actor:02d} is not a RAVDESS actor (expected >= 01)")
    if emotion == 1 and intensity != 1:
        raise _BadName(
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

    Returns the fields of `Utterance` except `source`. Raises `DataError` naming the file and
    the offending field for a name that is not a valid RAVDESS name.
    """
    try:
        return _parse_fields(PurePosixPath(name.replace("\\", "/")).name)
    except _BadName as e:
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


def _is_audio(rel: PurePosixPath) -> bool:
    """Audio files only; hidden files and macOS resource forks are skipped silently."""
    if any(part.startswith(".") or part == "__MACOSX" for part in rel.parts):
        return False
    return rel.suffix.lower() in AUDIO_EXTENSIONS


def _folder_members(root: Path) -> list[tuple[str, str]]:
    """(relative posix name, absolute path) of every audio file under `root`, recursively."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        for filename in filenames:
            path = Path(dirpath, filename)
            rel = PurePosixPath(path.relative_to(root).as_posix())
            if _is_audio(rel):
                found.append((rel.as_posix(), str(path)))
    return found


def _zip_members(zip_path: Path) -> list[tuple[str, str]]:
    """(member name, source) of every audio member of the zip, without extracting it."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{zip_path}: cannot read as a zip archive ({e})") from e
    found = []
    for info in infos:
        if info.is_dir():
            continue
        if _is_audio(PurePosixPath(info.filename)):
            found.append((info.filename, f"{zip_path}{ZIP_SEPARATOR}{info.filename}"))
    return found


def _actor_dir_mismatch(rel: str, actor: int) -> str | None:
    """A reason when the file sits in an ``Actor_NN`` folder of another actor."""
    parent = PurePosixPath(rel).parent.name
    match = _ACTOR_DIR_RE.match(parent)
    if match and int(match.group(1)) != actor:
        return f"in folder {parent} but the name says actor {actor:02d}"
    return None


def _utterance_key(u: Utterance) -> tuple[int, ...]:
    return (u.modality, u.vocal_channel, u.label, u.intensity, u.statement, u.repetition, u.actor)


def format_bad(bad: list[tuple[str, str]], root: Path, corpus: str = "RAVDESS") -> str:
    """The error for bad files: every one (up to a cap) with its reason, and the way out."""
    lines = [f"  {name}: {reason}" for name, reason in bad[:_MAX_LISTED]]
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more")
    return (
        f"{root}: {len(bad)} audio file(s) are not valid {corpus} recordings:\n"
        + "\n".join(lines)
        + "\nRename or remove them, or pass on_bad_name='skip' (config data.on_bad_name) "
        "to leave them out and list them in the prepared metadata."
    )


def list_audio(
    path: str | os.PathLike[str], corpus: str = "RAVDESS"
) -> tuple[Path, list[tuple[str, str]]]:
    """(resolved root, [(name relative to root, source)]) of every audio file in a folder
    (recursive) or a zip (read in place); `DataError` for a missing path or no audio."""
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    root = root.resolve()
    if root.is_dir():
        members = _folder_members(root)
    elif zipfile.is_zipfile(root):
        members = _zip_members(root)
    else:
        raise DataError(f"{root}: neither a folder nor a zip archive of {corpus} audio")
    if not members:
        raise DataError(
            f"{root}: no audio files found (looked for {', '.join(AUDIO_EXTENSIONS)}, any case)"
        )
    return root, sorted(members, key=lambda m: m[1])


def discover(
    path: str | os.PathLike[str], on_bad_name: str = "error"
) -> tuple[list[Utterance], list[tuple[str, str]]]:
    """Every RAVDESS utterance in a folder (recursive) or a zip (read in place, not extracted).

    Audio is ``.wav``/``.flac`` in any letter case; other files (README, MANIFEST.tsv), hidden
    files and ``__MACOSX/`` are ignored silently. A bad name, a file in another actor's
    ``Actor_NN`` folder, or a second file with the labels of one already found (say ``x.wav``
    beside ``x.flac``) is an error listing all of them, or with ``on_bad_name='skip'`` is left
    out and reported. Returns (utterances sorted by source, skipped [(name, reason)]), names
    relative to `path`.
    """
    if on_bad_name not in ("error", "skip"):
        raise ConfigError(f"data.on_bad_name must be 'error' or 'skip', got {on_bad_name!r}")
    root, members = list_audio(path)
    bad: list[tuple[str, str]] = []
    seen: dict[tuple[int, ...], str] = {}
    utterances = []
    for rel, source in members:
        try:
            fields = _parse_fields(PurePosixPath(rel).name)
        except _BadName as e:
            bad.append((rel, str(e)))
            continue
        reason = _actor_dir_mismatch(rel, fields["actor"])
        if reason is not None:
            bad.append((rel, reason))
            continue
        utterance = Utterance(source=source, **fields)
        key = _utterance_key(utterance)
        if key in seen:
            bad.append((rel, f"same recording as {seen[key]}"))
            continue
        seen[key] = rel
        utterances.append(utterance)

    if not utterances:  # nothing valid: say why, file by file
        raise DataError(
            "no valid RAVDESS recordings; " + format_bad(bad, root)
            if bad
            else f"{root}: no valid RAVDESS recordings"
        )
    if bad and on_bad_name == "error":
        raise DataError(format_bad(bad, root))
    return utterances, bad


@functools.lru_cache(maxsize=4)
def _open_zip(path: str, mtime_ns: int, size: int, pid: int) -> zipfile.ZipFile:
    """An open zip, reused: reading the central directory of 1440 members takes ~10 ms.

    Keyed by modification time and size (a replaced file is reopened) and by process id (a
    forked child must not share the parent's file offset).
    """
    return zipfile.ZipFile(path)


def open_source(source: str) -> BinaryIO:
    """A seekable binary file for an `Utterance.source`: a file path or ``<zip>::<member>``.

    A zip member is read into memory (clips are small) so decoders can seek freely; the open
    zip is cached per process for the next member. Close the result when done.
    """
    if ZIP_SEPARATOR not in source or os.path.exists(source):
        try:
            return open(source, "rb")  # the caller closes it
        except OSError as e:
            raise DataError(f"{source}: cannot open ({e.strerror or e})") from e
    zip_path, _, member = source.partition(ZIP_SEPARATOR)
    try:
        st = os.stat(zip_path)
        zf = _open_zip(zip_path, st.st_mtime_ns, st.st_size, os.getpid())
        data = zf.read(member)
    except KeyError as e:
        raise DataError(f"{source}: no member {member!r} in {zip_path}") from e
    except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as e:
        # RuntimeError: encrypted member; BadZipFile also covers a CRC mismatch.
        raise DataError(f"{source}: cannot read zip member ({e})") from e
    return io.BytesIO(data)
