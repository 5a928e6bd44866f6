"""SAVEE (Jackson & Haq 2014): 480 British English utterances by 4 male speakers, 7 emotions.

The distribution keeps each speaker in a folder, ``AudioData/DC/a01.wav``; flattened copies
name the speaker in the file, ``DC_a01.wav``. Either way the letters before the number are the
emotion (a, d, f, h, n, sa, su) and the number is the sentence: 30 neutral, 15 of each other
emotion per speaker. Speakers DC, JE, JK, KL are actors 1-4.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from sejax.corpora.base import BadName, Corpus, Recording, Skipped, code_of, read_named, stem

TITLE = "SAVEE"
EMOTIONS = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral",
            "sa": "sadness", "su": "surprise"}  # fmt: skip
SPEAKERS = {"DC": 1, "JE": 2, "JK": 3, "KL": 4}
_NAME_RE = re.compile(r"^(?:([A-Za-z]{2})_)?([A-Za-z]{1,2})(\d{2})$")


def parse(rel: str) -> dict:
    match = _NAME_RE.match(stem(rel))
    if match is None:
        raise BadName("not a SAVEE name; expected [SPEAKER_]EMOTION+NUMBER, e.g. DC_a01.wav "
                      "or DC/a01.wav")  # fmt: skip
    named, code, number = match.groups()
    folder = PurePosixPath(rel).parent.name.upper()
    if named is None and folder not in SPEAKERS:
        raise BadName(f"no speaker: the name has none and folder {folder or '(root)'!r} is not "
                      f"one of {list(SPEAKERS)}")  # fmt: skip
    speaker = (named or folder).upper()
    actor = code_of(speaker, SPEAKERS, "speaker", TITLE)
    if named is not None and folder in SPEAKERS and folder != speaker:
        raise BadName(f"in folder {folder} but the name says speaker {speaker}")
    emotion = code_of(code.lower(), EMOTIONS, "emotion code", TITLE)
    sentence = int(number)
    most = 30 if emotion == "neutral" else 15
    if not 1 <= sentence <= most:
        raise BadName(f"sentence {number} is out of range for {emotion} (01..{most:02d})")
    return {
        "speaker": speaker,
        "actor": actor,
        "gender": "male",
        "statement": sentence,
        "text": f"{code.lower()}{number}",
        "emotion": emotion,
    }


def read(path: Path, on_bad_name: str) -> tuple[list[Recording], Skipped]:
    return read_named(path, on_bad_name, title=TITLE, parse=parse)


CORPUS = Corpus(
    name="savee",
    title=TITLE,
    labels=tuple(EMOTIONS.values()),
    naming="SPEAKER/EMOTIONNN.wav or SPEAKER_EMOTIONNN.wav, e.g. DC/a01.wav, DC_sa03.wav "
    "(speakers DC=1, JE=2, JK=3, KL=4)",
    read=read,
)
