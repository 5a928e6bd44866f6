"""One or several corpora -> one list of examples labelled with the target labels.

Training may mix corpora (``data.corpus``/``data.path`` plus ``data.extra_sources``), so
speaker ids must stay distinct across them: the first source keeps its actor ids (so
``data.val_actors`` reads naturally, e.g. RAVDESS 21, 22), source k (k = 1, 2, ...) has
``k * ACTOR_OFFSET`` added to its own (EmoDB speaker 03 as the second source is actor 10003).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from sejax import corpora
from sejax.corpora import labels as labels_lib
from sejax.corpora.base import Recording
from sejax.errors import ConfigError, DataError

ACTOR_OFFSET = 10000
UNMAPPED = ("error", "drop")


@dataclasses.dataclass(frozen=True)
class Example:
    """A recording with its target label and its actor id within the whole collection."""

    recording: Recording
    corpus: str
    actor: int
    label: int  # index into the target labels
    emotion: str  # the target label's name

    @property
    def source(self) -> str:
        return self.recording.source


@dataclasses.dataclass(frozen=True)
class Collection:
    examples: list[Example]
    skipped: list[tuple[str, str]]
    sources: list[dict]  # per source: corpus, path, offset, labels, map, counts, speakers
    label_names: list[str]
    # (source, reason) of each recording whose label data.label_map leaves out: not a
    # problem, but listed so that every file found is accounted for.
    left_out: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    @property
    def corpus(self) -> str:
        return "+".join(s["corpus"] for s in self.sources)


def parse_sources(entries: Iterable[str]) -> list[tuple[str, str]]:
    """``("emodb=/data/emodb",)`` -> ``[("emodb", "/data/emodb")]``; ConfigError if malformed."""
    parsed = []
    for entry in entries:
        name, sep, path = str(entry).partition("=")
        name, path = name.strip().lower(), path.strip()
        if not sep or not path:
            raise ConfigError(
                f"data.extra_sources entry {entry!r} is not 'corpus=path', e.g. 'emodb=/data/emodb'"
            )
        corpora.get(name, key=f"data.extra_sources entry {entry!r}: corpus")
        parsed.append((name, path))
    return parsed


def _read_source(
    index: int,
    name: str,
    path: str | os.PathLike[str],
    targets: Sequence[str],
    label_map: labels_lib.LabelMap,
    on_bad_name: str,
    unmapped: str,
) -> tuple[list[Example], list[tuple[str, str]], dict, list[tuple[str, str]]]:
    corpus = corpora.get(name)
    root = Path(path).expanduser().resolve()
    recordings, skipped = corpus.read(root, on_bad_name)
    declared = corpus.labels or tuple(sorted({r.emotion for r in recordings}))
    mapping = labels_lib.resolve(name, declared, targets, label_map)
    counts = labels_lib.count(r.emotion for r in recordings)
    missing = {label: n for label, n in counts.items() if mapping.get(label) is None}
    if missing and unmapped == "error":
        raise labels_lib.unmapped_error(corpus.title, missing, targets, str(root))
    offset = index * ACTOR_OFFSET
    examples = [
        Example(r, name, r.actor + offset, targets.index(target), target)
        for r in recordings
        if (target := mapping.get(r.emotion))
    ]
    dropped = {label: n for label, n in counts.items() if not mapping.get(label)}
    left_out = [
        (r.source, f"label {r.emotion!r} of {name} is left out (data.label_map)")
        for r in recordings
        if not mapping.get(r.emotion)
    ]
    speakers = {str(r.actor + offset): r.speaker for r in recordings}
    info = {
        "corpus": name,
        "path": str(root),
        "actor_offset": offset,
        "labels": list(declared),
        "label_map": {label: mapping[label] for label in declared},
        "counts": counts,
        "dropped": dropped,
        "num_examples": len(examples),
        "speakers": dict(sorted(speakers.items(), key=lambda kv: int(kv[0]))),
    }
    prefix = f"{name}:" if index else ""
    return examples, [(prefix + rel, reason) for rel, reason in skipped], info, left_out


def collect(
    sources: Sequence[tuple[str, str | os.PathLike[str]]],
    *,
    labels: Sequence[str],
    label_map: Iterable[str] = (),
    on_bad_name: str = "error",
    unmapped: str = "error",
) -> Collection:
    """Reads every (corpus, path) source and labels its recordings with ``labels``' indices.

    ``unmapped='error'`` (training): a corpus label without a target raises `DataError`
    naming it; ``'drop'`` (cross-corpus evaluation): its files are left out and counted in
    the source's ``dropped``. Examples keep each source's order (sorted by file).
    """
    if unmapped not in UNMAPPED:
        raise ValueError(f"unmapped must be one of {UNMAPPED}, got {unmapped!r}")
    targets = [str(t) for t in labels]
    parsed_map = labels_lib.parse_label_map(label_map, targets, corpora.NAMES)
    examples: list[Example] = []
    skipped: list[tuple[str, str]] = []
    infos: list[dict] = []
    left_out: list[tuple[str, str]] = []
    owner: dict[int, str] = {}
    for index, (name, path) in enumerate(sources):
        found, bad, info, out = _read_source(index, name, path, targets, parsed_map,
                                             on_bad_name, unmapped)  # fmt: skip
        for actor in {e.actor for e in found}:
            if actor in owner:
                raise DataError(
                    f"actor id {actor} occurs in both {owner[actor]} and {info['path']}: "
                    f"mixed corpora need speaker numbers below {ACTOR_OFFSET}"
                )
            owner[actor] = info["path"]
        examples += found
        skipped += bad
        left_out += out
        infos.append(info)
    sources_seen: dict[str, str] = {}
    for e in examples:
        if e.source in sources_seen:
            raise DataError(f"{e.source} is listed by two sources ({sources_seen[e.source]})")
        sources_seen[e.source] = e.corpus
    if not examples:
        dropped = "; ".join(f"{i['path']}: {i['dropped']}" for i in infos)
        raise DataError(
            f"no examples left after mapping labels onto data.labels={targets}: every label "
            f"was left out ({dropped})"
        )
    return Collection(examples, skipped, infos, targets, left_out)
