"""sejax.evaluation.evaluate: a workdir's checkpoints restored from their meta, the snapshot
ensemble's arithmetic, and a split's report (evaluating whole runs: test_train.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.special import softmax

from sejax.errors import CheckpointError, ConfigError
from sejax.evaluation import evaluate

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"  # steps 3 (best) and 6
NAMES = ["a", "b", "c"]
NAMES_OF_RUN = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluate") / "run"
    shutil.copytree(FIXTURE, out)
    return out


def test_load_trained_restores_the_run_its_meta_describes(workdir):
    trained = evaluate.load_trained(workdir, 6)
    assert trained.step == 6 and int(trained.state.step) == 6
    assert trained.config.model.conv_channels == (4, 8, 8)  # the run's config, from the meta
    assert tuple(trained.meta["label_names"]) == trained.config.data.labels == NAMES_OF_RUN
    np.testing.assert_allclose(trained.norm.mean, trained.meta["normalization"]["mean"])
    with pytest.raises(CheckpointError, match=r"no checkpoint 4: choose .* \[3, 6\]"):
        evaluate.load_trained(workdir, 4)
    with pytest.raises(ConfigError, match="needs >= 1 batch"):
        evaluate.precise_batch_stats(trained, 0)


def test_last_checkpoints_are_the_kept_ones_or_an_error(workdir):
    assert evaluate.last_checkpoints(workdir, 2) == [3, 6]
    assert evaluate.last_checkpoints(workdir, 1) == [6]
    with pytest.raises(CheckpointError, match=r"fewer than the 3 .*keep_checkpoints >= 3"):
        evaluate.last_checkpoints(workdir, 3)


def _out(logits, labels, index):
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    losses = -np.log(softmax(logits, -1)[np.arange(len(labels)), labels])
    return {"logits": logits, "labels": labels, "losses": losses, "index": np.asarray(index)}


def test_mean_prediction_averages_the_members_probabilities():
    a = _out([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], [0, 2], [5, 3])
    b = _out([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], [0, 2], [5, 3])
    mean = evaluate.mean_prediction([a, b])
    probs = (softmax(a["logits"], -1) + softmax(b["logits"], -1)) / 2
    np.testing.assert_allclose(softmax(mean["logits"], -1), probs, rtol=1e-12)
    np.testing.assert_allclose(mean["losses"], -np.log(probs[[0, 1], [0, 2]]), rtol=1e-12)
    assert mean["index"].tolist() == [5, 3] and mean["labels"].tolist() == [0, 2]
    with pytest.raises(AssertionError, match="other orders"):
        evaluate.mean_prediction([a, dict(b, index=np.array([3, 5]))])


def test_split_report_adds_every_examples_probabilities_in_metadata_order():
    out = _out([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]], [2, 1], [9, 4])
    report = evaluate.split_report(out, np.array([4, 9]), NAMES, predictions=True)
    assert report["accuracy"] == 0.5 and report["num_examples"] == 2
    assert report["predictions"]["index"] == [4, 9] and report["predictions"]["pred"] == [0, 2]
    np.testing.assert_allclose(report["predictions"]["probs"][1], softmax([0.0, 0.0, 3.0]),
                               atol=1e-5)  # fmt: skip
    assert "predictions" not in evaluate.split_report(out, np.array([4, 9]), NAMES, False)
