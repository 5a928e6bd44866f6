"""Metrics against hand-computed values, and the written report."""

import json

import numpy as np
import pytest

from sejax.evaluation import metrics as evaluation

NAMES = ["a", "b", "c"]


def test_metrics_match_hand_computation():
    labels = np.array([0, 0, 1, 1, 1, 1, 2, 2])
    preds = np.array([0, 1, 1, 1, 1, 0, 2, 0])
    r = evaluation.classification_metrics(labels, preds, NAMES, losses=np.arange(8.0))
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
    r = evaluation.classification_metrics(labels, preds, NAMES)
    assert r["uar"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["per_class"]["c"]["support"] == 0
    assert np.array(r["confusion_matrix"]).shape == (3, 3)


def test_write_report(tmp_path):
    r = evaluation.classification_metrics(np.array([0, 1, 2]), np.array([0, 1, 1]), NAMES)
    json_path, png_path = evaluation.write_report(r, tmp_path / "eval", "test")
    loaded = json.loads(json_path.read_text())
    for key in ("accuracy", "uar", "macro_f1", "loss", "num_examples", "per_class",
                "confusion_matrix", "label_names"):  # fmt: skip
        assert key in loaded
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "eval").glob(".*tmp*"))
