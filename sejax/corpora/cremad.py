"""CREMA-D (Cao et al. 2014): 7442 clips by 91 actors, six emotions, four intensity levels.

``1001_DFA_ANG_XX.wav`` = actor ``1001`` (1001-1091), sentence ``DFA`` (one of 12), emotion
``ANG``, level ``XX`` (LO, MD, HI, or XX unspecified). The actor number is the speaker id.
Gender is not in the name (it is in the corpus's VideoDemographics.csv), so it is 'unknown'.
"""

from __future__ import annotations

import re
from pathlib import Path

from sejax.corpora.base import BadName, Corpus, Recording, Skipped, code_of, read_named, stem

TITLE = "CREMA-D"
EMOTIONS = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
            "NEU": "neutral", "SAD": "sad"}  # fmt: skip
LEVELS = {"LO": 1, "MD": 2, "HI": 3, "XX": 0}
# "It's eleven o'clock", "That is exactly what happened", "I'm on my way to the meeting",
# "I wonder what this is about", "The airplane is almost full", "Maybe tomorrow it will be
# cold", "I would like a new alarm clock", "I think I have a doctor's appointment", "Don't
# forget a jacket", "I think I've seen this before", "The surface is slick", "We'll stop in a
# couple of minutes".
SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
ACTORS = range(1001, 1092)
_NAME_RE = re.compile(r"^(\d{4})_([A-Za-z]{3})_([A-Za-z]{3})_([A-Za-z]{2})$")


def parse(rel: str) -> dict:
    match = _NAME_RE.match(stem(rel))
    if match is None:
        raise BadName("not a CREMA-D name; expected ACTOR_SENTENCE_EMOTION_LEVEL, "
                      "e.g. 1001_DFA_ANG_XX.wav")  # fmt: skip
    actor_code, sentence, emotion, level = match.groups()
    actor = int(actor_code)
    if actor not in ACTORS:
        raise BadName(f"actor {actor_code} is not a CREMA-D actor (expected 1001..1091)")
    sentences = {s: i + 1 for i, s in enumerate(SENTENCES)}
    return {
        "speaker": actor_code,
        "actor": actor,
        "statement": code_of(sentence.upper(), sentences, "sentence", TITLE),
        "text": sentence.upper(),
        "emotion": code_of(emotion.upper(), EMOTIONS, "emotion", TITLE),
        "intensity": code_of(level.upper(), LEVELS, "level", TITLE),
    }


def read(path: Path, on_bad_name: str) -> tuple[list[Recording], Skipped]:
    return read_named(path, on_bad_name, title=TITLE, parse=parse)


CORPUS = Corpus(
    name="cremad",
    title=TITLE,
    labels=tuple(EMOTIONS.values()),
    naming="ACTOR_SENTENCE_EMOTION_LEVEL.wav, e.g. 1001_DFA_ANG_XX.wav",
    read=read,
)
