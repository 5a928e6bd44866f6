"""sejax.evaluation.ensemble: several cross-validated runs as one, from their fold records."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sejax.cli import main as cli
from sejax.errors import DataError
from sejax.evaluation import records
from sejax.evaluation.ensemble import ensemble_records
from tests.test_cv import fake_run, last_json  # noqa: F401  (the fixture)

LABELS = ["a", "b", "c"]
CONFIG = {"data": {"split_by": "actor", "normalization": "train"}, "cv": {"fold_set": "balanced"}}


def _split(clips, labels, probs):
    probs = np.asarray(probs, np.float64)
    return {"actors": [1], "clips": list(clips), "label": list(labels),
            "pred": probs.argmax(-1).tolist(), "probs": probs.tolist()}  # fmt: skip


def _record(fold, validation, test, definition=None, config=CONFIG):
    return {"format": records.FORMAT, "fold": fold, "label_names": LABELS,
            "definition": definition or {"fold": fold, "test": [1], "validation": [2]},
            "validation": validation, "test": test, "config": copy.deepcopy(config),
            "machine": {"cpu": "cpu A"}, "train_seconds": 2.0}  # fmt: skip


def _two_members():
    """Clip x: A says b, B says c, their mean says a (its label); y: both say b (right); z: A
    right (c), B wrong and surer (a): the mean follows B. Member B lists the clips reversed."""
    clips, labels = ["x", "y", "z"], [0, 1, 2]
    pa = [[0.4, 0.6, 0.0], [0.1, 0.8, 0.1], [0.3, 0.0, 0.7]]
    pb = [[0.4, 0.0, 0.6], [0.2, 0.7, 0.1], [0.9, 0.0, 0.1]]
    a = {0: _record(0, _split(clips, labels, pa), _split(clips, labels, pa))}
    rev = slice(None, None, -1)
    b = {0: _record(0, _split(clips[rev], labels[rev], pb[rev]), _split(clips, labels, pb))}
    return a, b, np.mean([pa, pb], axis=0)


def test_each_clip_gets_the_members_mean_probabilities_and_is_scored_on_them():
    a, b, mean = _two_members()
    made = ensemble_records([a, b], ["A", "B"])[0]
    for split in ("validation", "test"):
        got = made[split]
        assert got["clips"] == ["x", "y", "z"] and got["label"] == [0, 1, 2]
        np.testing.assert_allclose(got["probs"], mean, atol=1e-5)
        assert got["pred"] == [0, 1, 0]  # neither member alone predicts clip x right
        assert got["uar"] == pytest.approx(balanced_accuracy_score([0, 1, 2], [0, 1, 0]))
        assert got["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
        expected_loss = -np.mean(np.log(mean[[0, 1, 2], [0, 1, 2]]))
        assert got["loss"] == pytest.approx(expected_loss)
    assert [m["name"] for m in made["members"]] == ["A", "B"]
    assert made["train_seconds"] == 4.0 and made["format"] == records.FORMAT


def test_the_ensemble_names_its_members_cpu_kinds_not_just_their_brand():
    a, b, _ = _two_members()
    zen3 = {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model": "1", "avx512": False}
    a[0]["machine"], b[0]["machine"] = zen3, zen3 | {"cpu_family": "26", "cpu_model": "2",
                                                       "avx512": True}  # fmt: skip
    made = ensemble_records([a, b], ["A", "B"])[0]
    kinds = ["AMD EPYC (family 25 model 1, AVX2)", "AMD EPYC (family 26 model 2, AVX-512)"]
    assert made["machine"]["cpu"] == "; ".join(kinds)
    assert sorted(records.cpu_kinds(made)) == kinds


def test_only_folds_every_member_finished_are_ensembled():
    a, b, _ = _two_members()
    a[3] = copy.deepcopy(a[0]) | {"fold": 3}
    assert list(ensemble_records([a, b], ["A", "B"])) == [0]
    with pytest.raises(DataError, match="no fold finished in every run"):
        ensemble_records([{3: a[3]}, b], ["A", "B"])


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: r["definition"].update(test=[9]), "B: fold 0 holds other actors"),
        (lambda r: r["test"]["clips"].__setitem__(0, "w"), "B: fold 0's test split holds other"),
        (lambda r: r["test"]["label"].__setitem__(0, 2), "B: fold 0's test split labels a clip"),
        (lambda r: r["config"]["data"].update(normalization="per_speaker"), "another protocol"),
        (lambda r: r.update(label_names=["x", "y", "z"]), "other labels"),
    ],
)
def test_members_that_are_not_the_same_folds_and_clips_are_refused(spoil, message):
    a, b, _ = _two_members()
    spoil(b[0])
    with pytest.raises(DataError, match=message):
        ensemble_records([a, b], ["A", "B"])


def test_one_run_is_no_ensemble():
    a, _, _ = _two_members()
    with pytest.raises(DataError, match="two or more runs"):
        ensemble_records([a], ["A"])


def test_sejax_ensemble_writes_records_that_cv_and_compare_read(fake_run, capsys):  # noqa: F811
    sejax_cv, _, _, workdir = fake_run
    other, out = workdir.with_name("other"), workdir.with_name("ens")
    assert sejax_cv() == 0
    assert sejax_cv("--config.train.learning_rate=0.002", workdir=other) == 0
    capsys.readouterr()
    assert cli.main(["ensemble", str(workdir), str(other / "folds"), "--out", str(out)]) == 0
    summary, printed = last_json(capsys)
    assert summary["command"] == "ensemble" and summary["complete"]
    assert "val UAR" in printed.out
    cv_record = json.loads((out / "cv.json").read_text())
    assert cv_record["members"] == [str(workdir), str(other / "folds")]
    assert "mean probabilities of 2 runs" in cv_record["test_model"]
    alone = json.loads((workdir / "cv.json").read_text())
    # The stand-in trains both members alike: their ensemble predicts what each does.
    assert cv_record["mean"] == pytest.approx(alone["mean"])
    assert cv_record["validation"]["mean"] == pytest.approx(alone["validation"]["mean"])
    stored = records.read_all(out / "folds")
    assert sorted(stored) == [0, 1, 2, 3] and all(len(r["members"]) == 2 for r in stored.values())
    assert cli.main(["compare", str(workdir), str(out), "--resamples", "20"]) == 0
    result, _ = last_json(capsys)
    assert result["folds"] == [0, 1, 2, 3] and result["mean_difference"] == 0.0
    # The ensemble against the mean of its members (`--also-a`): both members' runs are read.
    assert cli.main(["compare", str(workdir), str(out), "--also-a", str(other / "folds"),
                     "--resamples", "20"]) == 0  # fmt: skip
    result, printed = last_json(capsys)
    assert result["runs"] == {"a": 2, "b": 1} and result["also_a"] == [str(other / "folds")]
    assert result["mean_difference"] == 0.0 and "(mean of 2 runs)" in printed.out


def test_sejax_ensemble_never_overwrites_a_trained_fold_record(fake_run, capsys):  # noqa: F811
    sejax_cv, _, _, workdir = fake_run
    other = workdir.with_name("other")
    assert sejax_cv() == 0 and sejax_cv(workdir=other) == 0
    before = (other / "folds" / "fold_0.json").read_bytes()
    capsys.readouterr()
    assert cli.main(["ensemble", str(workdir), str(workdir), "--out", str(other)]) == 2
    assert "holds a trained fold's record" in capsys.readouterr().err
    assert cli.main(["ensemble", str(workdir), str(other), "--out", str(workdir)]) == 2
    assert "one of its members' folders" in capsys.readouterr().err
    assert (other / "folds" / "fold_0.json").read_bytes() == before
