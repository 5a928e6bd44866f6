"""TESS, the Toronto emotional speech set (Dupuis & Pichora-Fuller 2010): 2800 clips.

``OAF_back_angry.wav`` = speaker ``OAF`` (the older talker, 64) or ``YAF`` (the younger, 26),
target word ``back`` ("Say the word back"), emotion ``angry``; ``ps`` is pleasant surprise.
Both talkers are female; OAF is actor 1, YAF actor 2. The distributed corpus names one file
``OA_bite_neutral.wav`` (in ``OAF_neutral/``); it is read as OAF's.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from sejax.corpora.base import BadName, Corpus, Recording, Skipped, code_of, read_named, stem

TITLE = "TESS"
EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
            "neutral": "neutral", "ps": "pleasant_surprise", "sad": "sad"}  # fmt: skip
SPEAKERS = {"OAF": 1, "YAF": 2}
_TYPOS = {"OA": "OAF"}  # the one misnamed file of the distribution
_NAME_RE = re.compile(r"^([A-Za-z]+)_([^_]+)_([A-Za-z]+)$")


def parse(rel: str) -> dict:
    match = _NAME_RE.match(stem(rel))
    if match is None:
        raise BadName("not a TESS name; expected SPEAKER_WORD_EMOTION, e.g. OAF_back_angry.wav")
    speaker, word, emotion = match.groups()
    speaker = _TYPOS.get(speaker.upper(), speaker.upper())
    actor = code_of(speaker, SPEAKERS, "speaker", TITLE)
    folder = PurePosixPath(rel).parent.name.upper()
    folder_speaker = folder.split("_", 1)[0]
    if folder_speaker in SPEAKERS and folder_speaker != speaker:
        raise BadName(f"in folder {PurePosixPath(rel).parent.name} but the name says {speaker}")
    return {
        "speaker": speaker,
        "actor": actor,
        "gender": "female",
        "text": word.lower(),
        "emotion": code_of(emotion.lower(), EMOTIONS, "emotion", TITLE),
    }


def read(path: Path, on_bad_name: str) -> tuple[list[Recording], Skipped]:
    return read_named(path, on_bad_name, title=TITLE, parse=parse)


CORPUS = Corpus(
    name="tess",
    title=TITLE,
    labels=tuple(EMOTIONS.values()),
    naming="SPEAKER_WORD_EMOTION.wav, e.g. OAF_back_angry.wav (speakers OAF=1, YAF=2; ps = "
    "pleasant surprise)",
    read=read,
)
