"""Actor-disjoint folds for cross-validation (pure: no training, no files).

Every actor is tested in exactly one fold. The default fold set is balanced by gender: the
male and the female actors, each in id order, are cut into ``num_folds`` contiguous runs and
fold i takes the i-th run of each; for RAVDESS's 24 actors (odd ids male) and 6 folds, fold i
tests actors 4i+1..4i+4, two men and two women. Each fold validates (model selection, early
stopping) on ``cv.val_actors_per_fold`` of its training actors, alternating male and female,
taken from the next folds' test actors, never from its own. ``cv.fold_set='emobox'`` uses
EmoBox's six RAVDESS folds instead and ``cv.folds`` any explicit ones. With
``data.split_by='random'`` the folds are random parts of the clips (stratified by label, every
speaker on every side): the leaking protocol, labelled as such. With corpora mixed in
(``data.extra_sources``) the folds are over the first corpus's speakers: the other corpora's
speakers train in every fold, so validation and test stay speakers of the corpus the
protocol names. `fold_config` turns a fold into the run config that `sejax.evaluation.cv`
trains.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from sejax.configs import loading as config_lib
from sejax.configs.validation import ints, validate
from sejax.corpora.sources import ACTOR_OFFSET
from sejax.errors import ConfigError

# EmoBox (Ma et al., Interspeech 2024): its six RAVDESS speech folds' test actors.
EMOBOX_RAVDESS_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20, 21), (4, 10, 12, 14), (8, 9, 19, 23), (3, 5, 7, 24), (2, 15, 16, 18),
    (6, 13, 17, 22),
)  # fmt: skip
GENDER_ORDER = ("male", "female", "unknown")
FOLD_SETS = ("balanced", "emobox")  # cv.fold_set: gender-balanced runs of actors, or EmoBox's


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold's test, validation and training groups: actor ids, or random parts of the
    clips when ``unit == 'part'`` (the leaking protocol)."""

    index: int
    test: tuple[int, ...]
    validation: tuple[int, ...]
    train: tuple[int, ...]
    unit: str = "actor"

    def to_json(self) -> dict[str, Any]:
        return {"fold": self.index, "unit": self.unit, "test": list(self.test),
                "validation": list(self.validation), "train": list(self.train)}  # fmt: skip


def check_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.cv``: fold count, named or explicit folds, validation actors per fold, folds to
    run; raises ConfigError naming the key. Returns ``config``."""
    cv = config.cv
    k = cv.num_folds
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"cv.num_folds={k!r} must be an integer >= 2")
    if cv.fold_set not in FOLD_SETS:
        raise ConfigError(
            f"cv.fold_set={cv.fold_set!r} is not allowed; choose one of {list(FOLD_SETS)}"
        )
    if cv.folds:
        if not isinstance(cv.folds, tuple | list) or len(cv.folds) < 2:
            raise ConfigError(
                f"cv.folds={cv.folds!r} must list the test actors of at least 2 folds"
            )
        seen: dict[int, int] = {}
        for i, fold in enumerate(cv.folds):
            if not ints(f"cv.folds[{i}]", fold):
                raise ConfigError(f"cv.folds[{i}] is empty: every fold needs test actors")
            for actor in fold:
                if actor in seen:
                    raise ConfigError(
                        f"cv.folds: actor {actor} is in fold {seen[actor]} and fold {i}"
                    )
                seen[actor] = i
        k = len(cv.folds)
    elif cv.fold_set == "emobox" and k != len(EMOBOX_RAVDESS_FOLDS):
        raise ConfigError(
            f"cv.fold_set='emobox' has {len(EMOBOX_RAVDESS_FOLDS)} folds, but cv.num_folds={k}"
        )
    per_fold = cv.val_actors_per_fold
    if isinstance(per_fold, bool) or not isinstance(per_fold, int) or per_fold < 1:
        raise ConfigError(f"cv.val_actors_per_fold={per_fold!r} must be an integer >= 1")
    bad = sorted(i for i in ints("cv.only_folds", cv.only_folds) if not 0 <= i < k)
    if bad:
        raise ConfigError(f"cv.only_folds names folds {bad}; folds are numbered 0..{k - 1}")
    return config


# ------------------------------------------------------------------------------------------
# Fold construction.


def actor_genders(examples: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Each actor's gender ('male', 'female' or 'unknown') from the shards' example rows."""
    genders: dict[int, str] = {}
    for e in examples:
        actor, gender = int(e["actor"]), str(e.get("gender") or "unknown")
        if genders.get(actor, "unknown") == "unknown":
            genders[actor] = gender if gender in GENDER_ORDER else "unknown"
    return dict(sorted(genders.items()))


def balanced_test_groups(genders: Mapping[int, str], num_folds: int) -> list[tuple[int, ...]]:
    """Test actors per fold: each gender, in id order, cut into ``num_folds`` contiguous runs.

    Runs differ in length by at most one; a gender's longer runs go to the folds after those
    that took the previous gender's longer runs, so fold sizes differ by at most one too.
    """
    if num_folds > len(genders):
        raise ConfigError(
            f"cv.num_folds={num_folds} but the corpus has only {len(genders)} actors: every fold "
            "needs at least one test actor"
        )
    folds: list[list[int]] = [[] for _ in range(num_folds)]
    offset = 0
    for gender in GENDER_ORDER:
        members = sorted(a for a, g in genders.items() if g == gender)
        base, extra = divmod(len(members), num_folds)
        start = 0
        for i in range(num_folds):
            size = base + (1 if (i - offset) % num_folds < extra else 0)
            folds[i] += members[start : start + size]
            start += size
        offset += extra
    return [tuple(sorted(f)) for f in folds]


def _check_groups(groups: Sequence[Sequence[int]], actors: Sequence[int], key: str) -> None:
    """Explicit folds must name only present actors, each once, and leave none out."""
    named = [int(a) for g in groups for a in g]
    unknown = sorted(set(named) - set(actors))
    twice = sorted({a for a in named if named.count(a) > 1})
    missing = sorted(set(actors) - set(named))
    problems = [f"{what} {xs}" for what, xs in (("not in the corpus:", unknown),
                ("in two folds:", twice), ("in no fold:", missing)) if xs]  # fmt: skip
    if problems:
        raise ConfigError(
            f"{key} must test every actor exactly once: {'; '.join(problems)} "
            f"(actors present: {list(actors)})"
        )


def _validation_actors(
    groups: Sequence[tuple[int, ...]], index: int, genders: Mapping[int, str], count: int
) -> tuple[int, ...]:
    """``count`` training actors of fold ``index``, from the next folds' test actors on,
    alternating genders (male, female, unknown) so each gender is represented."""
    k = len(groups)
    candidates = [a for step in range(1, k) for a in groups[(index + step) % k]]
    by_gender = [[a for a in candidates if genders.get(a, "unknown") == g] for g in GENDER_ORDER]
    order = [a for row in itertools.zip_longest(*by_gender) for a in row if a is not None]
    if len(candidates) - count < 1:
        raise ConfigError(
            f"cv.val_actors_per_fold={count} leaves no training actor in fold {index} "
            f"({len(candidates)} actors outside its test set)"
        )
    return tuple(sorted(order[:count]))


def make_folds(
    genders: Mapping[int, str],
    num_folds: int,
    val_per_fold: int = 2,
    test_groups: Sequence[Sequence[int]] | None = None,
) -> list[Fold]:
    """Actor-disjoint folds over the actors of ``genders`` ({actor: 'male'|'female'|...}).

    ``test_groups`` (explicit test actors per fold) replaces the gender-balanced default
    (``balanced_test_groups``). Every actor is tested exactly once; each fold validates on
    ``val_per_fold`` of its own training actors.
    """
    actors = sorted(int(a) for a in genders)
    if test_groups:
        _check_groups(test_groups, actors, "cv.folds")
        groups = [tuple(sorted(int(a) for a in g)) for g in test_groups]
    else:
        if num_folds < 2:
            raise ConfigError(f"cv.num_folds={num_folds} must be >= 2")
        groups = balanced_test_groups(genders, num_folds)
    folds = []
    for i, test in enumerate(groups):
        val = _validation_actors(groups, i, genders, val_per_fold)
        train = tuple(a for a in actors if a not in test and a not in val)
        folds.append(Fold(index=i, test=test, validation=val, train=train))
    return folds


def random_folds(num_folds: int) -> list[Fold]:
    """The leaking protocol: the clips dealt into ``2 * num_folds`` random parts (stratified
    by label); fold i tests parts 2i and 2i+1 and validates on part 2(i+1), the first part
    of the next fold's test set (test 1/k of the clips, validation 1/(2k))."""
    parts = 2 * num_folds
    folds = []
    for i in range(num_folds):
        test, val = (2 * i, 2 * i + 1), (2 * ((i + 1) % num_folds),)
        train = tuple(p for p in range(parts) if p not in test and p not in val)
        folds.append(Fold(index=i, test=test, validation=val, train=train, unit="part"))
    return folds


def folds_for(
    config: ml_collections.ConfigDict, examples: Sequence[Mapping[str, Any]]
) -> list[Fold]:
    """The folds ``config.cv`` asks for over the actors of ``examples``."""
    cv = config.cv
    split_by = config.data.split_by
    if split_by == "random":
        return random_folds(int(cv.num_folds))
    if split_by != "actor":
        raise ConfigError(
            f"sejax cv builds its own actor-disjoint folds; data.split_by={split_by!r} is not "
            "used with it (set data.split_by='actor', or 'random' for the leaking protocol)"
        )
    genders = actor_genders(examples)
    # Mixed-in corpora (actor ids from ACTOR_OFFSET on) are training data, never held out.
    extra = tuple(a for a in genders if a >= ACTOR_OFFSET)
    primary = {a: g for a, g in genders.items() if a < ACTOR_OFFSET}
    groups: Sequence[Sequence[int]] | None = tuple(cv.folds) or None
    if groups is None and cv.fold_set == "emobox":
        groups = EMOBOX_RAVDESS_FOLDS
    folds = make_folds(primary, int(cv.num_folds), int(cv.val_actors_per_fold), groups)
    return [dataclasses.replace(f, train=f.train + extra) for f in folds]


def fold_config(
    config: ml_collections.ConfigDict, fold: Fold, shards_dir: str | Path
) -> ml_collections.ConfigDict:
    """The run config of one fold: the shared shards, the fold's split, test evaluated."""
    out = config_lib.from_dict(config.to_dict())
    with out.unlocked():
        out.data.path = str(shards_dir)
        if fold.unit == "part":
            out.data.random_parts = len(fold.train) + len(fold.test) + len(fold.validation)
            out.data.random_test_parts = fold.test
            out.data.random_val_parts = fold.validation
        else:
            out.data.split_by = "actor"
            out.data.val_actors = fold.validation
            out.data.test_actors = fold.test
        out.eval.splits = ("validation", "test")
    return validate(out)
