"""Which examples train, validate and test: by actor (default), by a manifest's split column,
or random clips (leaking), each checked by the leakage guard.

A split is a property of the examples' metadata rows (``metadata.json``), not of the shards'
contents, so it needs neither TensorFlow nor the features. Splits are by actor unless the
config asks otherwise, so no speaker is heard in two splits, and `check_leakage` refuses any
split with a speaker or an identical recording on two sides unless the config allows a leaking
one, which is then marked as such in every report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sejax import io
from sejax.errors import ConfigError, DataError

if TYPE_CHECKING:
    import ml_collections

SPLIT_NAMES = ("train", "validation", "test")
# data.split_by: by actor (`data.val_actors`, `data.test_actors`), by the manifest's column,
# or clips dealt at random (leaking speakers; `data.allow_leakage`).
SPLIT_MODES = ("actor", "manifest", "random")
RANDOM_SPLIT_NEEDS_LEAKAGE = (
    "data.split_by='random' deals clips at random, so every speaker is heard in training and "
    "in test (speaker leakage: published comparisons show 10-30 points of inflated accuracy). "
    "Set data.allow_leakage=True to run it anyway; every report of the run is then marked "
    '"leaking": true.'
)


@dataclasses.dataclass(frozen=True)
class Split:
    """Which actors and which example indices (rows of metadata.json) each split holds.

    ``leakage`` is what the leakage guard found (``check_leakage``); ``leaking`` is True when
    a speaker or an identical recording is on two sides, which only a config that sets
    ``data.allow_leakage=True`` gets past.
    """

    actors: dict[str, tuple[int, ...]]
    indices: dict[str, np.ndarray]
    leakage: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def leaking(self) -> bool:
        return bool(self.leakage.get("leaking", False))

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            name: {"actors": list(self.actors[name]), "num_examples": len(idx)}
            for name, idx in self.indices.items()
        }
        record["leaking"] = self.leaking
        if self.leaking:
            record["leakage"] = self.leakage
        return record


def make_split(examples: Sequence[dict], data_cfg: ml_collections.ConfigDict) -> Split:
    """The run's split (``data.split_by``), checked by the leakage guard.

    ``data.split_by``: 'actor' (the default) takes ``data.val_actors`` and
    ``data.test_actors`` and trains on every other actor; 'manifest' follows each example's
    manifest ``split``; 'random' deals clips at random (`random_parts`), which puts every
    speaker on every side and so needs ``data.allow_leakage=True``. Whatever the mode, a
    speaker or an identical recording (sha256 of the file) on two sides is refused unless
    ``data.allow_leakage`` is set, and then recorded in ``Split.leakage``.
    """
    mode = data_cfg.split_by
    allow = bool(data_cfg.allow_leakage)
    if mode == "manifest":
        split = _split_by_manifest(examples, allow_leakage=allow)
    elif mode == "random":
        if not allow:
            raise ConfigError(RANDOM_SPLIT_NEEDS_LEAKAGE)
        split = _split_random(examples, data_cfg)
    else:
        split = _split_by_actors(examples, data_cfg)
    leakage = check_leakage(examples, split.indices, allow=allow)
    return dataclasses.replace(split, leakage=leakage)


def _split_by_actors(examples: Sequence[dict], data_cfg: ml_collections.ConfigDict) -> Split:
    """Validation and test actors from the config; every other actor trains."""
    present = sorted({int(e["actor"]) for e in examples})
    val = tuple(sorted(int(a) for a in data_cfg.val_actors))
    test = tuple(sorted(int(a) for a in data_cfg.test_actors))
    for key, chosen in (("data.val_actors", val), ("data.test_actors", test)):
        missing = sorted(set(chosen) - set(present))
        if missing:
            raise ConfigError(
                f"{key} names actors {missing} that are not in the corpus; actors present: "
                f"{present}"
            )
    if set(val) & set(test):
        raise ConfigError(
            f"data.val_actors and data.test_actors share actors {set(val) & set(test)}"
        )
    train = tuple(a for a in present if a not in val and a not in test)
    actors = {"train": train, "validation": val, "test": test}
    actor_of = np.array([int(e["actor"]) for e in examples])
    indices = {name: np.flatnonzero(np.isin(actor_of, a)) for name, a in actors.items()}
    # Only training needs examples: with no validation and test actors a run trains on every
    # actor (a final model to ship) and evaluates nothing.
    if len(indices["train"]) == 0:
        raise ConfigError(
            f"the train split is empty (data.val_actors={list(val)}, "
            f"data.test_actors={list(test)}, actors present: {present})"
        )
    return Split(actors=actors, indices=indices)


def _split_by_manifest(examples: Sequence[dict], *, allow_leakage: bool = False) -> Split:
    """The manifest's split column, checked to be complete and speaker-disjoint."""
    split_of = [e.get("split", "") for e in examples]
    unset = [e["source"] for e, s in zip(examples, split_of, strict=True) if s not in SPLIT_NAMES]
    if unset:
        raise ConfigError(
            f"data.split_by='manifest' but {len(unset)} example(s) have no split (a manifest "
            f"'split' column of train/validation/test), e.g. {unset[0]}"
        )
    actors = {n: {int(e["actor"]) for e, s in zip(examples, split_of, strict=True) if s == n}
              for n in SPLIT_NAMES}  # fmt: skip
    speaker = {int(e["actor"]): e.get("speaker", e["actor"]) for e in examples}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if actors[a] & actors[b] and not allow_leakage:
            both = [speaker[x] for x in sorted(actors[a] & actors[b])]
            raise ConfigError(
                f"data.split_by='manifest': speaker(s) {both} are in both the {a} and the {b} "
                "split; a speaker must be in one split only (or set data.allow_leakage=True "
                "to run this leaking split, marked as such)"
            )
    indices = {n: np.flatnonzero(np.array(split_of) == n) for n in SPLIT_NAMES}
    for name in ("train", "test"):
        if len(indices[name]) == 0:
            raise ConfigError(f"data.split_by='manifest' but the manifest has no {name} rows")
    return Split(actors={n: tuple(sorted(a)) for n, a in actors.items()}, indices=indices)


def random_parts(labels: Sequence[int], num_parts: int, seed: int) -> np.ndarray:
    """Deals examples into ``num_parts`` parts at random, stratified by label: each label's
    examples are spread evenly over the parts, and the parts' sizes differ by at most one.

    Deterministic in ``(labels, num_parts, seed)``. Actors are ignored on purpose: this is the
    speaker-mixing split that leaks.
    """
    labels = np.asarray(labels)
    parts = np.empty(len(labels), np.int64)
    rng = np.random.default_rng(seed)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        parts[members] = (np.arange(len(members)) + offset) % num_parts
        offset += len(members)  # the next label's remainder starts where this one's ended
    return parts


def _split_random(examples: Sequence[dict], data_cfg: ml_collections.ConfigDict) -> Split:
    """``data.random_parts`` random parts; ``random_val_parts``/``random_test_parts`` hold out."""
    num_parts = int(data_cfg.random_parts)
    parts = random_parts([int(e["label"]) for e in examples], num_parts, int(data_cfg.split_seed))
    val = {int(p) for p in data_cfg.random_val_parts}
    test = {int(p) for p in data_cfg.random_test_parts}
    chosen = {"validation": val, "test": test, "train": set(range(num_parts)) - val - test}
    indices = {n: np.flatnonzero(np.isin(parts, sorted(chosen[n]))) for n in SPLIT_NAMES}
    for name in ("train", "test"):
        if len(indices[name]) == 0:
            raise ConfigError(
                f"data.split_by='random': the {name} split is empty (data.random_parts="
                f"{num_parts}, data.random_val_parts={sorted(val)}, "
                f"data.random_test_parts={sorted(test)}, {len(examples)} examples)"
            )
    actor_of = np.array([int(e["actor"]) for e in examples])
    actors = {n: tuple(sorted({int(a) for a in actor_of[idx]})) for n, idx in indices.items()}
    return Split(actors=actors, indices=indices)


def check_leakage(
    examples: Sequence[dict], indices: dict[str, np.ndarray], *, allow: bool
) -> dict[str, Any]:
    """The leakage guard: no speaker and no identical recording on two sides of a split.

    Identical recordings are found by the sha256 of the audio file that `prepare` stores per
    example (RAVDESS's Actor_07 holds a byte-identical pair: harmless inside one side, a leak
    across two). Raises ConfigError (speakers) or DataError (recordings) naming them, unless
    ``allow``; returns what was found, ``leaking`` True when anything was.
    """
    names = [n for n in SPLIT_NAMES if n in indices]
    actors = {n: {int(examples[i]["actor"]) for i in indices[n]} for n in names}
    by_hash: dict[str, dict[str, list[str]]] = {}
    for n in names:
        for i in indices[n]:
            digest = examples[i].get("sha256")
            if digest:
                by_hash.setdefault(digest, {}).setdefault(n, []).append(examples[i]["source"])
    shared_actors, shared_audio = {}, []
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            if actors[a] & actors[b]:
                shared_actors[f"{a}/{b}"] = sorted(actors[a] & actors[b])
    for digest, sides in sorted(by_hash.items()):
        if len(sides) > 1:
            shared_audio.append({"sha256": digest, **{n: sorted(s) for n, s in sides.items()}})
    unhashed = sum(1 for n in names for i in indices[n] if not examples[i].get("sha256"))
    if not allow and shared_actors:
        speaker = {int(e["actor"]): e.get("speaker", e["actor"]) for e in examples}
        listed = "; ".join(f"{pair}: {[speaker[x] for x in xs]}" for pair, xs in
                           shared_actors.items())  # fmt: skip
        raise ConfigError(
            f"leaking split: speakers on two sides ({listed}). Splits must be speaker-"
            "disjoint; set data.allow_leakage=True to run it anyway, marked as leaking."
        )
    if not allow and shared_audio:
        shown = "; ".join(
            " = ".join(f"{n}:{s}" for n in names for s in d.get(n, [])) for d in shared_audio[:5]
        )
        raise DataError(
            f"leaking split: {len(shared_audio)} identical recording(s) (same sha256) on two "
            f"sides: {shown}. Move the copies to one side or remove them; "
            "data.allow_leakage=True runs it anyway, marked as leaking."
        )
    return {
        "leaking": bool(shared_actors or shared_audio),
        "shared_actors": shared_actors,
        "shared_audio": shared_audio,
        "examples_without_sha256": unhashed,
    }


def write_split(path: Path, split: Split, examples: Sequence[dict]) -> None:
    """Records the split (actors, counts and each example's source) in the run."""
    record = split.to_json()
    for name, idx in split.indices.items():
        record[name]["sources"] = [examples[i]["source"] for i in idx]
    io.write_json(path, record)
