"""A workdir written by an earlier sejax (`tests/fixtures/checkpoint_v1`, see its make.py)
still restores, and its model still gives the predictions it gave then.

The fixture's checkpoints name shards in a temporary folder that is long gone, so the
evaluation half is driven with the fixture's own copy of those shards.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import sejax
from sejax.data import input_pipeline, splits
from sejax.evaluation import evaluate
from sejax.training import validation

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the fixture: reading a workdir must not need to write it, but if it did,
    the committed files stay as they are."""
    out = tmp_path_factory.mktemp("compat") / "run"
    shutil.copytree(FIXTURE, out)
    return out


def _stored(workdir: Path, name: str):
    return json.loads((workdir / name).read_text())


def test_load_serves_the_best_and_the_latest_checkpoint_as_before(workdir):
    expected = _stored(workdir, "expected.json")
    predictor = sejax.load(workdir=workdir)
    assert predictor.bundle.step == expected["step"] == 3  # equal UARs: the earlier wins
    assert sejax.load(workdir=workdir, checkpoint="latest").bundle.step == expected["latest_step"]
    for clip, probs in expected["probabilities"].items():
        got = predictor.predict(str(workdir / "clips" / clip)).probabilities
        assert list(got) == list(probs)
        np.testing.assert_allclose(list(got.values()), list(probs.values()), atol=1e-5)


def test_evaluation_restores_it_and_reproduces_the_stored_test_report(workdir):
    stored = _stored(workdir, "eval/test.json")
    trained = evaluate.load_trained(workdir)
    assert trained.step == stored["step"] == 3
    assert evaluate.load_trained(workdir, "latest").step == 6
    assert evaluate.load_trained(workdir, 6).step == 6
    shards = input_pipeline.Shards(workdir / "shards")
    split = splits.make_split(shards.examples, trained.config.data)
    indices = split.indices["test"]
    assert list(split.actors["test"]) == stored["actors"] == [23]
    out = validation.predict_split(
        trained.par, trained.state, shards, indices, trained.norm, trained.config.eval.batch_size
    )
    report = evaluate.split_report(out, indices, shards.label_names, predictions=True)
    got, want = report["predictions"], stored["predictions"]
    assert got["index"] == want["index"] and got["label"] == want["label"]
    assert got["pred"] == want["pred"]
    np.testing.assert_allclose(got["probs"], want["probs"], atol=2e-5)
    for key in ("accuracy", "uar", "macro_f1", "confusion_matrix", "num_examples"):
        assert report[key] == stored[key], key
    assert report["loss"] == pytest.approx(stored["loss"], abs=1e-5)
