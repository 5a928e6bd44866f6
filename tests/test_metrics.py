"""sejax.evaluation.metrics: the report of one split, its JSON and its confusion-matrix PNG."""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from sklearn import metrics as skm

from sejax.evaluation import metrics
from sejax.training.validation import classification_metrics

NAMES = ["a", "b", "c"]


def test_write_split_report(tmp_path, monkeypatch):
    """The JSON holds the report's values, which are sklearn's (computed here on their own),
    and the PNG is the row-normalised confusion matrix: its cells are drawn in the colour
    of their recall and labelled with their counts."""
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    preds = np.array([0, 0, 1, 1, 0, 2, 2, 2, 1])
    r = classification_metrics(labels, preds, NAMES, losses=np.linspace(0.5, 1.5, 9))
    drawn = []
    subplots = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: drawn.append(subplots(*a, **k))
                        or drawn[-1])  # fmt: skip
    json_path, png_path = metrics.write_split_report(r, tmp_path / "eval", "test")
    assert (json_path, png_path) == (
        tmp_path / "eval/test.json",
        tmp_path / "eval/test_confusion.png",
    )
    loaded = json.loads(json_path.read_text())
    for key in ("accuracy", "uar", "macro_f1", "loss", "num_examples", "per_class",
                "confusion_matrix", "label_names"):  # fmt: skip
        assert key in loaded
    assert loaded == r
    assert loaded["accuracy"] == pytest.approx(skm.accuracy_score(labels, preds))
    assert loaded["uar"] == pytest.approx(skm.balanced_accuracy_score(labels, preds))
    assert loaded["macro_f1"] == pytest.approx(skm.f1_score(labels, preds, average="macro"))
    assert loaded["loss"] == pytest.approx(1.0) and loaded["num_examples"] == 9
    cm = skm.confusion_matrix(labels, preds)
    assert loaded["confusion_matrix"] == cm.tolist() and loaded["label_names"] == NAMES
    recall = skm.recall_score(labels, preds, average=None)
    assert [loaded["per_class"][n]["recall"] for n in NAMES] == pytest.approx(recall)

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "eval").glob(".*tmp*"))
    image = plt.imread(png_path)[..., :3]
    ((_, ax),) = drawn
    assert image.shape[:2] == (720, 840)  # 7 x 6 inches at 120 dpi
    assert ax.get_title() == "test: accuracy 0.778, UAR 0.806"
    assert [t.get_text() for t in ax.texts] == [str(n) for n in cm.ravel()]
    norm = cm / cm.sum(axis=1, keepdims=True)
    box = ax.get_position()  # where the matrix was drawn, in figure fractions
    height, width = image.shape[:2]
    for i in range(3):
        for j in range(3):
            x = (box.x0 + (j + 0.8) / 3 * box.width) * width  # beside the count's text
            y = (1 - box.y1 + (i + 0.5) / 3 * box.height) * height
            expected = plt.get_cmap("Blues")(norm[i, j])[:3]
            np.testing.assert_allclose(image[int(y), int(x)], expected, atol=0.02)


def test_predictions_record_is_in_metadata_order():
    logits = np.array([[0.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    record = metrics.predictions_record(np.array([7, 2, 5]), np.array([1, 0, 1]), logits)
    assert record["index"] == [2, 5, 7] and record["label"] == [0, 1, 1]
    assert record["pred"] == [0, 0, 1] and record["probs"][1] == [0.5, 0.5]
    # Softmax probabilities: logits 0 and ln 3 are 1/4 and 3/4.
    record = metrics.predictions_record(np.array([0]), np.array([1]), np.array([[0.0, np.log(3)]]))
    assert record["probs"] == [[0.25, 0.75]]
