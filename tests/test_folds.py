"""sejax.evaluation.folds: actor-disjoint, gender-balanced folds; EmoBox's; explicit ones;
random parts of the clips (the leaking protocol); a fold's run config."""

from __future__ import annotations

import pytest

from sejax.configs import loading as config_lib
from sejax.configs.default import get_config
from sejax.configs.validation import validate
from sejax.errors import ConfigError
from sejax.evaluation import folds as folds_lib


def ravdess_genders(actors=range(1, 25)) -> dict[int, str]:
    return {a: "male" if a % 2 else "female" for a in actors}


def check_folds(folds, genders):
    """Disjoint and complete test sets; validation from the fold's own training actors."""
    actors = set(genders)
    tested = [a for f in folds for a in f.test]
    assert sorted(tested) == sorted(actors)  # each actor tested exactly once
    for f in folds:
        assert set(f.test) | set(f.validation) | set(f.train) == actors
        assert not set(f.test) & set(f.validation)
        assert not set(f.train) & (set(f.test) | set(f.validation))
        assert f.validation and f.train
    sizes = [len(f.test) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for gender in ("male", "female", "unknown"):
        counts = [sum(genders[a] == gender for a in f.test) for f in folds]
        assert max(counts) - min(counts) <= 1, (gender, counts)


def test_ravdess_default_folds_are_documented_and_balanced():
    genders = ravdess_genders()
    folds = folds_lib.make_folds(genders, num_folds=6)
    check_folds(folds, genders)
    assert [f.test for f in folds] == [tuple(range(4 * i + 1, 4 * i + 5)) for i in range(6)]
    assert [f.validation for f in folds] == [(5, 6), (9, 10), (13, 14), (17, 18), (21, 22),
                                             (1, 2)]  # fmt: skip
    for f in folds:  # 2 men + 2 women tested, 1 + 1 validating, 18 training
        assert sorted(a % 2 for a in f.test) == [0, 0, 1, 1]
        assert sorted(a % 2 for a in f.validation) == [0, 1] and len(f.train) == 18


@pytest.mark.parametrize(
    ("actors", "k", "val"),
    [(range(15, 25), 5, 2), (range(15, 25), 3, 2), (range(17, 25), 4, 2), (range(1, 25), 5, 3),
     (range(1, 25), 8, 2), (range(1, 25), 12, 2), ((1, 2, 3, 5, 7, 8, 10), 3, 1)],
)  # fmt: skip
def test_folds_are_disjoint_complete_and_gender_balanced(actors, k, val):
    genders = ravdess_genders(actors)
    folds = folds_lib.make_folds(genders, num_folds=k, val_per_fold=val)
    assert len(folds) == k
    check_folds(folds, genders)
    for f in folds:
        assert len(f.validation) == val
        if val >= 2:
            assert {genders[a] for a in f.validation} == {"male", "female"}


def test_unknown_genders_and_explicit_folds():
    genders = {a: "unknown" for a in range(101, 108)}  # a manifest without a gender column
    folds = folds_lib.make_folds(genders, num_folds=3)
    check_folds(folds, genders)
    explicit = ((101, 104), (102, 105, 107), (103, 106))
    folds = folds_lib.make_folds(genders, num_folds=0, test_groups=explicit)
    assert [f.test for f in folds] == [tuple(sorted(g)) for g in explicit]
    check_folds(folds, {**genders})


def test_emobox_fold_set():
    config = get_config()
    config.cv.fold_set = "emobox"
    rows = [{"actor": a, "gender": g} for a, g in ravdess_genders().items()]
    folds = folds_lib.folds_for(config, rows)
    assert [f.test for f in folds] == [tuple(sorted(g)) for g in folds_lib.EMOBOX_RAVDESS_FOLDS]
    assert folds[0].validation == (4, 9)  # next fold is all women: a man from the one after
    for f in folds:
        assert {a % 2 for a in f.validation} == {0, 1} and not set(f.validation) & set(f.test)


def test_mixed_in_corpora_train_in_every_fold_and_are_never_held_out():
    config = get_config()
    ravdess = [{"actor": a, "gender": g} for a, g in ravdess_genders().items()]
    emodb = [{"actor": 10000 + a, "gender": "male" if a % 2 else "female"} for a in (3, 8, 9)]
    alone = folds_lib.folds_for(config, ravdess)
    mixed = folds_lib.folds_for(config, ravdess + emodb)
    for a, b in zip(alone, mixed, strict=True):  # the same folds over RAVDESS's actors
        assert (b.test, b.validation) == (a.test, a.validation)
        assert b.train == (*a.train, 10003, 10008, 10009)
    config.cv.fold_set = "emobox"  # explicit groups name only the first corpus's actors
    emobox = folds_lib.folds_for(config, ravdess + emodb)
    assert [f.test for f in emobox] == [tuple(sorted(g)) for g in folds_lib.EMOBOX_RAVDESS_FOLDS]
    assert all(set(f.train) >= {10003, 10008, 10009} for f in emobox)


def test_impossible_folds_fail_clearly():
    genders = ravdess_genders(range(1, 7))
    with pytest.raises(ConfigError, match=r"cv\.num_folds=7 but the corpus has only 6 actors"):
        folds_lib.make_folds(genders, num_folds=7)
    with pytest.raises(ConfigError, match="leaves no training actor"):
        folds_lib.make_folds(genders, num_folds=3, val_per_fold=4)
    with pytest.raises(ConfigError, match=r"in two folds: \[2\].*in no fold: \[6\]"):
        folds_lib.make_folds(genders, 2, test_groups=((1, 2), (2, 3, 4, 5)))
    with pytest.raises(ConfigError, match=r"not in the corpus: \[9\]"):
        folds_lib.make_folds(genders, 2, test_groups=((1, 2, 3), (4, 5, 6, 9)))
    for key, value, message in [
        ("cv.num_folds", "1", "must be an integer >= 2"),
        ("cv.only_folds", "(0, 6)", r"names folds \[6\]; folds are numbered 0..5"),
        ("cv.fold_set", "loso", "choose one of"),
        ("cv.folds", "((1, 2), (2, 3))", "actor 2 is in fold 0 and fold 1"),
        ("cv.val_actors_per_fold", "0", "must be an integer >= 1"),
    ]:
        config = config_lib.apply_overrides(get_config(), [(key, value)])
        validate(config)  # the cv keys are checked where the folds are planned
        with pytest.raises(ConfigError, match=message):
            folds_lib.check_config(config)
    emobox = config_lib.apply_overrides(get_config(), [("cv.fold_set", "emobox"),
                                                       ("cv.num_folds", "5")])  # fmt: skip
    with pytest.raises(ConfigError, match="'emobox' has 6 folds"):
        folds_lib.check_config(emobox)
    manifest = config_lib.apply_overrides(get_config(), [("data.split_by", "manifest")])
    with pytest.raises(ConfigError, match="builds its own actor-disjoint folds"):
        folds_lib.folds_for(manifest, [{"actor": 1}])


def test_fold_config_sets_the_split_and_keeps_the_rest():
    config = get_config()
    fold = folds_lib.make_folds(ravdess_genders(), 6)[2]
    out = folds_lib.fold_config(config, fold, "/shards")
    assert out.data.test_actors == (9, 10, 11, 12) and out.data.val_actors == (13, 14)
    assert out.data.path == "/shards" and tuple(out.eval.splits) == ("validation", "test")
    assert out.model.to_dict() == config.model.to_dict() and config.data.path == ""
    leaking = config_lib.apply_overrides(
        get_config(), [("data.split_by", "random"), ("data.allow_leakage", "True")]
    )
    out = folds_lib.fold_config(leaking, folds_lib.random_folds(6)[5], "/shards")
    assert out.data.random_parts == 12
    assert out.data.random_test_parts == (10, 11) and out.data.random_val_parts == (0,)
