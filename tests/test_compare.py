"""sejax.evaluation.compare: paired, fold-by-fold and clip-by-clip comparison of two recipes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sejax.errors import DataError
from sejax.evaluation import records
from sejax.evaluation.compare import compare, format_comparison


def _split(clips, labels, preds):
    return {
        "clips": list(clips),
        "label": [int(x) for x in labels],
        "pred": [int(x) for x in preds],
    }


def _records(preds_by_fold, labels_by_fold, split="validation", order=None):
    records = {}
    for i, (preds, labels) in enumerate(zip(preds_by_fold, labels_by_fold, strict=True)):
        clips = [f"fold{i}/clip{j}" for j in range(len(labels))]
        idx = np.arange(len(labels)) if order is None else order
        records[i] = {split: _split(np.array(clips)[idx], labels[idx], preds[idx])}
    return records


def _noisy(labels, accuracy, rng, classes=4):
    wrong = rng.random(len(labels)) > accuracy
    return np.where(wrong, (labels + rng.integers(1, classes, len(labels))) % classes, labels)


def test_a_clearly_better_recipe_is_a_gain_outside_the_noise():
    rng = np.random.default_rng(0)
    labels = [rng.integers(0, 4, 200) for _ in range(3)]
    a = _records([_noisy(y, 0.4, rng) for y in labels], labels)
    b = _records([_noisy(y, 0.7, rng) for y in labels], labels)
    result = compare(a, b, resamples=500)
    for fold, y in zip(result["per_fold"], labels, strict=True):
        i = fold["fold"]
        assert fold["a"] == pytest.approx(balanced_accuracy_score(y, a[i]["validation"]["pred"]))
        assert fold["difference"] == pytest.approx(fold["b"] - fold["a"])
    assert result["folds_b_better"] == 3
    assert result["bootstrap"]["ci95"][0] > 0 and result["b_better"]
    pooled = np.concatenate(labels)
    pooled_b = np.concatenate([b[i]["validation"]["pred"] for i in range(3)])
    assert result["pooled_b"] == pytest.approx(balanced_accuracy_score(pooled, pooled_b))
    assert "a gain outside the noise" in format_comparison(result)


def test_the_same_recipe_is_no_gain_and_the_interval_holds_zero():
    rng = np.random.default_rng(1)
    labels = [rng.integers(0, 4, 150) for _ in range(2)]
    a = _records([_noisy(y, 0.5, rng) for y in labels], labels)
    b = _records([_noisy(y, 0.5, rng) for y in labels], labels)  # other draws, same skill
    result = compare(a, b, resamples=500)
    low, high = result["bootstrap"]["ci95"]
    assert low < 0 < high and not result["b_better"]
    same = compare(a, a, resamples=100)
    assert same["mean_difference"] == 0 and same["bootstrap"]["ci95"] == [0.0, 0.0]
    assert not same["b_better"] and "no gain" in format_comparison(same)


def test_clips_are_matched_by_name_not_by_position():
    rng = np.random.default_rng(2)
    labels = [rng.integers(0, 4, 50)]
    preds = [_noisy(labels[0], 0.6, rng)]
    shuffled = rng.permutation(50)
    a = _records(preds, labels)
    b = _records(preds, labels, order=shuffled)  # the same predictions in another order
    result = compare(a, b, resamples=50)
    assert result["per_fold"][0]["difference"] == 0.0


def test_folds_or_clips_that_differ_are_refused():
    labels = [np.array([0, 1, 2, 3])]
    a = _records([labels[0]], labels)
    b = {0: {"validation": _split(["x", "y", "z", "w"], labels[0], labels[0])}}
    with pytest.raises(DataError, match="other clips"):
        compare(a, b)
    relabelled = {0: {"validation": {**a[0]["validation"], "label": [1, 1, 2, 3]}}}
    with pytest.raises(DataError, match="B: fold 0's validation split labels a clip otherwise"):
        compare(a, relabelled)
    with pytest.raises(DataError, match="A, B: no fold finished in every run"):
        compare(a, {5: a[0]})
    moved = {0: {**a[0], "definition": {"test": [9]}}}
    with pytest.raises(DataError, match="B: fold 0 holds other actors than A's fold 0"):
        compare(a, moved)
    with pytest.raises(DataError, match="seed8: fold 0 holds other actors than seed6's"):
        compare(a, [a, moved], names=["seed6", "seed7", "seed8"])
    with pytest.raises(DataError, match="no test predictions"):
        compare(a, a, split="test")
    with pytest.raises(DataError, match="metric"):
        compare(a, a, metric="auc")


def test_a_side_whose_test_model_was_chosen_on_validation_is_flagged_as_optimistic():
    rng = np.random.default_rng(3)
    labels = [rng.integers(0, 4, 40)]
    a = _records([_noisy(labels[0], 0.5, rng)], labels)
    b = _records([_noisy(labels[0], 0.5, rng)], labels)
    a[0]["config"] = {"eval": {"average_last_checkpoints": 3}}  # fixed checkpoints: unbiased
    b[0]["member_configs"] = [a[0]["config"], {"eval": {"average_last_checkpoints": 0}}]
    result = compare(a, b, resamples=20)
    assert result["chosen_on_validation"] == {"a": False, "b": True}
    text = format_comparison(result, name_a="fixed", name_b="ensemble")
    assert "caution: ensemble's test model" in text and "caution: fixed" not in text
    b[0]["member_configs"][1]["eval"]["average_last_checkpoints"] = 1
    assert compare(a, b, resamples=20)["chosen_on_validation"] == {"a": False, "b": False}
    a[0]["test"], b[0]["test"] = a[0]["validation"], b[0]["validation"]
    b[0]["member_configs"][1]["eval"]["average_last_checkpoints"] = 0
    on_test = compare(a, b, split="test", resamples=20)  # test clips chose nothing
    assert on_test["chosen_on_validation"] == {"a": False, "b": False}


ZEN3 = {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model": "1", "avx512": False}
ZEN5 = {"cpu": "AMD EPYC", "cpu_family": "26", "cpu_model": "2", "avx512": True}


def test_sides_run_on_other_cpu_kinds_are_flagged_though_the_brand_is_the_same():
    rng = np.random.default_rng(4)
    labels = [rng.integers(0, 4, 40) for _ in range(2)]
    a = _records([_noisy(y, 0.5, rng) for y in labels], labels)
    b = _records([_noisy(y, 0.5, rng) for y in labels], labels)
    for i in a:
        a[i]["machine"], b[i]["machine"] = dict(ZEN3), dict(ZEN3)
    same = compare(a, b, resamples=20)
    assert same["same_cpu_kind"] is True
    zen3 = "AMD EPYC (family 25 model 1, AVX2)"
    assert same["cpu_kinds"] == {"a": [zen3], "b": [zen3]}
    assert "CPU kinds" not in format_comparison(same)
    b[1]["machine"] = dict(ZEN5)  # one fold of B on a Zen 5: the comparison mixes kinds
    mixed = compare(a, b, resamples=20)
    assert mixed["same_cpu_kind"] is False
    assert mixed["cpu_kinds"]["b"] == [
        "AMD EPYC (family 25 model 1, AVX2)",
        "AMD EPYC (family 26 model 2, AVX-512)",
    ]
    text = format_comparison(mixed, name_a="zen3", name_b="mixed")
    assert "caution: the two sides ran on other CPU kinds" in text and "AVX-512" in text
    del b[1]["machine"]  # a record that does not say: no claim either way
    assert compare(a, b, resamples=20)["same_cpu_kind"] is None


def test_an_ensemble_runs_on_the_cpu_kinds_of_its_members():
    member = {"machine": dict(ZEN3)}
    assert records.cpu_kinds({"members": [member, {"machine": dict(ZEN5)}]}) == {
        "AMD EPYC (family 25 model 1, AVX2)",
        "AMD EPYC (family 26 model 2, AVX-512)",
    }
    assert records.cpu_kinds({"machine": {"cpu": "cpu A"}}) == {"cpu A"}  # brand only
    assert records.cpu_kinds({}) == frozenset()
    assert records.cpu_kind(records.machine()) is not None  # this machine says what it is


def test_a_side_of_several_runs_scores_as_the_mean_of_its_runs():
    """An ensemble against its members: A is the members' mean, fold by fold and pooled."""
    rng = np.random.default_rng(5)
    labels = [rng.integers(0, 4, 120) for _ in range(3)]
    members = [_records([_noisy(y, acc, rng) for y in labels], labels) for acc in (0.3, 0.8)]
    b = _records([_noisy(y, 0.6, rng) for y in labels], labels)
    result = compare(members, b, resamples=300)
    assert result["runs"] == {"a": 2, "b": 1}
    for fold, y in zip(result["per_fold"], labels, strict=True):
        i = fold["fold"]
        each = [balanced_accuracy_score(y, m[i]["validation"]["pred"]) for m in members]
        assert fold["a"] == pytest.approx(np.mean(each))
    pooled = np.concatenate(labels)
    each = [
        balanced_accuracy_score(pooled, np.concatenate([m[i]["validation"]["pred"] for i in m]))
        for m in members
    ]
    assert result["pooled_a"] == pytest.approx(np.mean(each))
    # B (0.6) is worse than the strong run (0.8) but better than the runs' mean (0.55).
    against_best = compare(members[1], b, resamples=300)
    assert against_best["mean_difference"] < 0 < result["mean_difference"]
    low, high = result["bootstrap"]["ci95"]
    assert low < result["pooled_difference"] < high
    # One run per side is the two-run comparison, number for number.
    single = compare([members[1]], [b], resamples=300)
    assert single["per_fold"] == against_best["per_fold"]
    assert single["bootstrap"] == against_best["bootstrap"]
    text = format_comparison(result, name_a="members", name_b="ensemble")
    # Only the side of several runs is relabelled, and it is named as such wherever it appears.
    assert text.splitlines()[0] == (
        "validation uar: ensemble against members and 1 more (mean of 2 runs), fold by fold"
    )
    assert "ensemble and" not in text


def test_every_run_of_a_side_must_hold_the_folds_and_clips():
    rng = np.random.default_rng(6)
    labels = [rng.integers(0, 4, 30) for _ in range(2)]
    a = _records([_noisy(y, 0.5, rng) for y in labels], labels)
    partial = {0: a[0]}  # a second seed with one fold finished
    assert compare([a, partial], a, resamples=20)["folds"] == [0]
    other = {0: {"validation": _split([f"x{j}" for j in range(30)], labels[0], labels[0])}}
    with pytest.raises(DataError, match="other clips"):
        compare([a, other], a)
    with pytest.raises(DataError, match="no run"):
        compare([], a)


def test_a_side_whose_runs_ran_on_two_cpu_kinds_is_not_the_same_kind():
    rng = np.random.default_rng(7)
    labels = [rng.integers(0, 4, 40)]
    runs = [_records([_noisy(labels[0], 0.5, rng)], labels) for _ in range(3)]
    for run, machine in zip(runs, (ZEN3, ZEN3, ZEN5), strict=True):
        run[0]["machine"] = dict(machine)
    assert compare(runs[:2], runs[0], resamples=20)["same_cpu_kind"] is True
    mixed = compare(runs[:2], runs[2], resamples=20)
    assert mixed["same_cpu_kind"] is False and len(mixed["cpu_kinds"]["b"]) == 1
    assert compare(runs, runs[0], resamples=20)["same_cpu_kind"] is False
