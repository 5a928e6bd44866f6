"""Mapping a corpus's own labels onto the target labels the model predicts.

Corpora name the same emotions differently (EmoDB 'anger', RAVDESS 'angry', IEMOCAP 'ang')
and not every corpus has every emotion (EmoDB's boredom, RAVDESS's calm). The target labels
are ``config.data.labels`` (default: RAVDESS's eight); a corpus label goes to, in order:

1. the target named by a ``config.data.label_map`` entry ``"corpus:label=target"``,
2. the target named by an entry ``"label=target"`` (any corpus),
3. the target of the same name,
4. the target that is a synonym of it (`SYNONYMS` names the same emotion in RAVDESS's words:
   anger, ang and angry all mean angry, so each maps to whichever of them is a target).

An empty target (``"boredom="``) leaves the label's files out. A label with no target is an
error for training (`unmapped`) naming the label, its corpus and the fix; cross-corpus
evaluation drops it instead and reports it.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from sejax.errors import ConfigError, DataError

# Corpus label -> RAVDESS label, for names that differ only in wording (step 4 above).
SYNONYMS: dict[str, str] = {
    "anger": "angry", "ang": "angry",
    "happiness": "happy", "hap": "happy", "joy": "happy",
    "sadness": "sad",
    "fear": "fearful", "fea": "fearful", "anxiety": "fearful",
    "disgusted": "disgust", "dis": "disgust",
    "neu": "neutral",
    "surprise": "surprised", "sur": "surprised", "pleasant_surprise": "surprised",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Parsed ``data.label_map``: {(corpus or '', label): target or ''}."""

    entries: Mapping[tuple[str, str], str]

    def target(self, corpus: str, label: str, targets: Sequence[str]) -> str | None:
        """The target for ``label`` of ``corpus``; '' to drop it, None when unmapped."""
        for key in ((corpus, label), ("", label)):
            if key in self.entries:
                return self.entries[key]
        if label in targets:
            return label
        same = [t for t in targets if canonical(t) == canonical(label)]
        return same[0] if len(same) == 1 else None


def canonical(label: str) -> str:
    """RAVDESS's word for the emotion a label names ('anger' -> 'angry'), else the label."""
    return SYNONYMS.get(label, label)


def parse_label_map(
    entries: Iterable[str], targets: Sequence[str], corpora: Sequence[str]
) -> LabelMap:
    """Parses ``("boredom=", "tess:pleasant_surprise=surprised")``; ConfigError on a bad one."""
    parsed: dict[tuple[str, str], str] = {}
    for entry in entries:
        text = str(entry)
        left, sep, target = text.partition("=")
        corpus, colon, label = left.rpartition(":")
        label, target, corpus = label.strip().lower(), target.strip(), corpus.strip().lower()
        if not sep or not label or (colon and not corpus):
            raise ConfigError(
                f"data.label_map entry {text!r} is not 'label=target', 'label=' (leave out) "
                "or 'corpus:label=target'"
            )
        if corpus and corpus not in corpora:
            raise ConfigError(
                f"data.label_map entry {text!r} names corpus {corpus!r}; known: {list(corpora)}"
            )
        if target and target not in targets:
            raise ConfigError(
                f"data.label_map entry {text!r} maps to {target!r}, which is not in "
                f"data.labels={list(targets)}"
            )
        if (corpus, label) in parsed and parsed[(corpus, label)] != target:
            raise ConfigError(f"data.label_map maps {left.strip()!r} twice")
        parsed[(corpus, label)] = target
    return LabelMap(parsed)


def resolve(
    corpus: str, labels: Iterable[str], targets: Sequence[str], label_map: LabelMap
) -> dict[str, str | None]:
    """{corpus label: target, '' (left out by the map) or None (no target)}."""
    return {label: label_map.target(corpus, label, targets) for label in labels}


def unmapped_error(
    corpus: str, counts: Mapping[str, int], targets: Sequence[str], where: str
) -> DataError:
    """The error for corpus labels with no target: each label, its file count, the fix."""
    listed = ", ".join(f"{label!r} ({n} files)" for label, n in sorted(counts.items()))
    first = sorted(counts)[0]
    return DataError(
        f"{where}: {corpus} label(s) {listed} have no counterpart in the target labels "
        f"data.labels={list(targets)}. Map each with data.label_map, e.g. "
        f"--config.data.label_map={first}={targets[0]} (several: comma-separated), or leave "
        f"its files out with --config.data.label_map={first}= ; or add it to data.labels "
        "(and model.num_classes)."
    )


def count(labels: Iterable[str]) -> dict[str, int]:
    return dict(sorted(collections.Counter(labels).items()))
