"""RAVDESS through the common reader interface; the parsing itself is `sejax.corpora.files`.

``03-01-06-01-02-01-12.wav``: modality, vocal channel, emotion, intensity, statement,
repetition, actor. The actor number is the speaker; odd actors are male.
"""

from __future__ import annotations

from pathlib import Path

from sejax.corpora import files as corpus
from sejax.corpora.base import Corpus, Recording, Skipped


def read(path: Path, on_bad_name: str) -> tuple[list[Recording], Skipped]:
    utterances, skipped = corpus.discover(path, on_bad_name=on_bad_name)
    recordings = [
        Recording(
            source=u.source,
            speaker=f"{u.actor:02d}",
            actor=u.actor,
            emotion=u.emotion,
            gender=u.gender,
            intensity=u.intensity,
            statement=u.statement,
            repetition=u.repetition,
            text=f"{u.statement:02d}",
        )
        for u in utterances
    ]
    return recordings, skipped


CORPUS = Corpus(
    name="ravdess",
    title="RAVDESS",
    labels=corpus.EMOTIONS,
    naming="MM-VV-EE-II-SS-RR-AA.wav, e.g. 03-01-06-01-02-01-12.wav (emotion 06, actor 12)",
    read=read,
)
