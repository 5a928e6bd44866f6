"""Berlin EmoDB (Burkhardt et al. 2005): 535 German utterances by 10 actors, 7 emotions.

``03a01Fa.wav`` = speaker ``03``, text ``a01``, emotion letter ``F`` (German initial),
version ``a``. The speaker number is the actor id; sex comes from the corpus's speaker list.
"""

from __future__ import annotations

import re
from pathlib import Path

from sejax.corpora.base import BadName, Corpus, Recording, Skipped, code_of, read_named, stem

TITLE = "EmoDB"
# W Wut, L Langeweile, E Ekel, A Angst, F Freude, T Trauer, N neutral.
EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
            "T": "sadness", "N": "neutral"}  # fmt: skip
SPEAKERS = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
            "12": "male", "13": "female", "14": "female", "15": "male", "16": "female"}  # fmt: skip
TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
_NAME_RE = re.compile(r"^(\d{2})([ab]\d{2})([A-Z])([a-z])$")


def parse(rel: str) -> dict:
    match = _NAME_RE.match(stem(rel))
    if match is None:
        raise BadName("not an EmoDB name; expected speaker, text, emotion letter and version, "
                      "e.g. 03a01Fa.wav")  # fmt: skip
    speaker, text, letter, version = match.groups()
    texts = {t: i + 1 for i, t in enumerate(TEXTS)}
    return {
        "speaker": speaker,
        "actor": int(speaker),
        "gender": code_of(speaker, SPEAKERS, "speaker", TITLE),
        "statement": code_of(text, texts, "text", TITLE),
        "text": text,
        "emotion": code_of(letter, EMOTIONS, "emotion letter", TITLE),
        "repetition": ord(version) - ord("a") + 1,
    }


def read(path: Path, on_bad_name: str) -> tuple[list[Recording], Skipped]:
    return read_named(path, on_bad_name, title=TITLE, parse=parse)


CORPUS = Corpus(
    name="emodb",
    title=TITLE,
    labels=tuple(EMOTIONS.values()),
    naming="SPEAKER TEXT EMOTION VERSION.wav, e.g. 03a01Fa.wav (emotion letter W L E A F T N)",
    read=read,
)
