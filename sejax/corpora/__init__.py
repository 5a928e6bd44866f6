"""Corpus readers: every supported corpus yields the same `Recording`s and declares its labels.

``get(name)`` returns a `Corpus` (name, label set, naming convention, reader); `collect`
(in `sejax.corpora.sources`) reads one or several corpora and maps their labels onto the
target labels. Nothing here imports TensorFlow, JAX or librosa.
"""

from __future__ import annotations

from sejax.corpora import cremad, emodb, manifest, ravdess, savee, tess
from sejax.corpora.base import Corpus, Recording
from sejax.errors import ConfigError

__all__ = ["CORPORA", "NAMES", "Corpus", "Recording", "get"]

CORPORA: dict[str, Corpus] = {
    c.name: c
    for c in (ravdess.CORPUS, cremad.CORPUS, tess.CORPUS, emodb.CORPUS, savee.CORPUS,
              manifest.CORPUS)
}  # fmt: skip
NAMES: tuple[str, ...] = tuple(CORPORA)


def get(name: str, key: str = "data.corpus") -> Corpus:
    """The corpus called ``name``; ConfigError naming ``key`` and the choices otherwise."""
    if name not in CORPORA:
        raise ConfigError(f"{key}={name!r} is not supported; choose one of {list(NAMES)}")
    return CORPORA[name]
