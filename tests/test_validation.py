"""sejax.training.validation: the metrics against hand-computed values; a split scored once."""

import numpy as np
import pytest

from sejax.training import validation

NAMES = ["a", "b", "c"]


def test_metrics_match_hand_computation():
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 1, 0, 2, 0])
    r = validation.classification_metrics(labels, preds, NAMES, losses=np.arange(8.0))
    assert r["num_examples"] == 8
    assert r["accuracy"] == pytest.approx(5 / 8)
    # recalls: a 1/2, b 3/4, c 1/2 -> UAR differs from accuracy
    assert r["uar"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert r["per_class"]["b"]["recall"] == pytest.approx(0.75)
    assert r["per_class"]["a"]["precision"] == pytest.approx(1 / 3)
    assert r["per_class"]["c"]["support"] == 2
    assert r["confusion_matrix"] == [[1, 1, 0], [1, 3, 0], [1, 0, 1]]
    assert r["loss"] == pytest.approx(3.5)
    f1 = [r["per_class"][n]["f1"] for n in NAMES]
    assert r["macro_f1"] == pytest.approx(np.mean(f1))


def test_absent_class_is_left_out_of_uar_but_reported():
    labels = np.array([0, 0, 1, 1])
    preds = np.array([0, 0, 1, 2])
    r = validation.classification_metrics(labels, preds, NAMES)
    assert r["uar"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["per_class"]["c"]["support"] == 0
    assert np.array(r["confusion_matrix"]).shape == (3, 3)


def test_split_metrics_score_every_example_of_the_split_once():
    out = {
        "index": np.array([4, 1, 7]),
        "labels": np.array([0, 1, 2]),
        "logits": np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 0.0]]),
        "losses": np.array([0.2, 0.4, 0.6]),
    }
    r = validation.split_metrics(out, np.array([1, 4, 7]), NAMES)
    assert r["accuracy"] == pytest.approx(2 / 3) and r["loss"] == pytest.approx(0.4)
    assert r["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    with pytest.raises(AssertionError, match="exactly once"):
        validation.split_metrics(out, np.array([1, 4, 8]), NAMES)
    twice = dict(out, index=np.array([4, 4, 7]))
    with pytest.raises(AssertionError, match="exactly once"):
        validation.split_metrics(twice, np.array([1, 4, 7]), NAMES)
