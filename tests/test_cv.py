"""Cross-validation: the `sejax cv` driver, aggregation, the end-to-end run (the folds
themselves: test_folds.py)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from sejax.cli import main as cli
from sejax.configs import loading as config_lib
from sejax.corpora.ravdess import EMOTIONS
from sejax.data import prepare, splits
from sejax.data import shards as shards_lib
from sejax.errors import DataError
from sejax.evaluation import cv, evaluate, metrics
from sejax.training.validation import classification_metrics
from tests.conftest import tiny_args

# ------------------------------------------------------------------------------------------
# The driver and aggregation, with a stand-in for training (real training: the slow test).


def synthetic_rows(actors=range(1, 9), per_actor=16):
    rows = []
    for a in actors:
        for j in range(per_actor):
            source = f"Actor_{a:02d}/clip_{j:02d}.wav"
            rows.append({"index": len(rows), "source": source, "actor": a, "label": j % 8,
                         "gender": "male" if a % 2 else "female",
                         "sha256": hashlib.sha256(source.encode()).hexdigest()})  # fmt: skip
    return rows


def fake_train(rows):
    """Writes what a finished fold leaves behind: config, split, metrics, test report."""
    calls = []

    def train_and_evaluate(config, workdir):
        calls.append(Path(workdir).name)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config_lib.to_json(config))
        split = splits.make_split(rows, config.data)
        (workdir / "eval").mkdir()
        for name, wrong in (("test", 3), ("validation", 2)):  # 2/3 and 1/2 right
            idx = split.indices[name]
            labels = np.array([rows[i]["label"] for i in idx])
            logits = np.eye(8)[np.where(idx % wrong == 0, (labels + 1) % 8, labels)]
            report = classification_metrics(labels, logits.argmax(-1), EMOTIONS)
            report.update(actors=list(split.actors[name]), leaking=split.leaking,
                          predictions=metrics.predictions_record(idx, labels, logits))  # fmt: skip
            (workdir / "eval" / f"{name}.json").write_text(json.dumps(report))
        lines = [{"step": s, "train_loss": 2.0 / s} for s in (1, 2, 3, 4)]
        lines += [{"step": 2 * e, "epoch": e, "val_uar": 0.2 * e} for e in (1, 2)]
        (workdir / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)))
        (workdir / "summary.json").write_text(json.dumps({"best_epoch": 2, "train_seconds": 1.5}))

    return train_and_evaluate, calls


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    rows = synthetic_rows()
    fake, calls = fake_train(rows)
    monkeypatch.setattr(prepare, "ensure_shards", lambda config, workdir: tmp_path / "sh")
    monkeypatch.setattr(shards_lib, "load_metadata", lambda d: {"examples": rows})
    monkeypatch.setattr(evaluate, "train_and_evaluate", fake)

    def sejax_cv(*overrides, workdir=tmp_path / "w"):
        args = ["cv", "--workdir", str(workdir), "--config.cv.num_folds=4", *overrides]
        return cli.main(args)

    return sejax_cv, calls, rows, tmp_path / "w"


def last_json(capsys):
    out = capsys.readouterr()
    return json.loads(out.out.strip().splitlines()[-1]), out


def test_cv_runs_selected_folds_resumes_and_pools(fake_run, capsys):
    sejax_cv, calls, rows, workdir = fake_run
    assert sejax_cv("--config.cv.only_folds=(1,)") == 0
    summary, out = last_json(capsys)
    assert calls == ["fold_1"] and summary["folds_done"] == [1] and not summary["complete"]
    assert "1 of 4 folds done" in out.out
    assert sejax_cv() == 0  # the rest; fold 1 is finished and kept
    summary, out = last_json(capsys)
    assert calls == ["fold_1", "fold_0", "fold_2", "fold_3"]
    assert "fold 2/4: test actors [3, 4], validation [5, 6]: recorded earlier, kept" in out.err
    assert summary["complete"] and summary["leaking"] is False
    record = json.loads((workdir / "cv.json").read_text())
    assert [f["test_actors"] for f in record["folds"]] == [[1, 2], [3, 4], [5, 6], [7, 8]]
    assert [f["validation_actors"] for f in record["folds"]] == [[3, 4], [5, 6], [7, 8], [1, 2]]
    for f in record["folds"]:
        assert set(f) >= {"accuracy", "uar", "macro_f1", "per_class_recall", "confusion_matrix"}
    accs = [f["accuracy"] for f in record["folds"]]
    assert record["mean"]["accuracy"] == pytest.approx(np.mean(accs))
    assert record["std"]["accuracy"] == pytest.approx(np.std(accs))
    pooled = record["pooled"]
    assert pooled["num_examples"] == len(rows) == np.sum(pooled["confusion_matrix"])
    assert pooled["accuracy"] == pytest.approx(np.mean([i % 3 != 0 for i in range(len(rows))]))
    assert summary["mean"] == record["mean"] and summary["pooled"]["uar"] == pooled["uar"]
    assert record["config"]["cv"]["num_folds"] == 4
    assert record["git"] is None or len(record["git"]["commit"]) == 40
    assert (workdir / "cv_confusion.png").stat().st_size > 1000
    assert (workdir / "cv_learning_curves.png").stat().st_size > 1000
    # Validation beside test: each fold's, and their mean and std over the folds.
    for f in record["folds"]:
        val = json.loads((workdir / f"fold_{f['fold']}/eval/validation.json").read_text())
        assert f["validation"] == {k: val[k] for k in ("accuracy", "uar", "macro_f1")}
    val_uars = [f["validation"]["uar"] for f in record["folds"]]
    assert record["validation"]["mean"]["uar"] == pytest.approx(np.mean(val_uars))
    assert record["validation"]["std"]["uar"] == pytest.approx(np.std(val_uars))
    assert summary["validation"] == record["validation"]
    assert "val UAR" in out.out and f"{np.mean(val_uars):.3f}" in out.out
    # One record per fold, clips named by their source.
    stored = {i: json.loads((workdir / "folds" / f"fold_{i}.json").read_text()) for i in range(4)}
    assert all(r["format"] == "sejax.cv_fold/1" for r in stored.values())
    test_clips = [c for r in stored.values() for c in r["test"]["clips"]]
    assert sorted(test_clips) == sorted(row["source"] for row in rows)


def test_blind_cv_prints_validation_only_and_records_test(fake_run, capsys):
    """A registered comparison's runs: test stays unseen until the verdict, but is recorded."""
    sejax_cv, _, _, workdir = fake_run
    assert sejax_cv("--config.cv.blind=True") == 0
    summary, out = last_json(capsys)
    record = json.loads((workdir / "cv.json").read_text())
    assert summary["blind"] is True and summary["validation"] == record["validation"]
    assert "mean" not in summary and "pooled" not in summary
    assert [f["validation"] for f in summary["folds"]] == [f["validation"] for f in record["folds"]]
    assert set(summary["folds"][0]) == {"fold", "validation"}
    header, *rows = out.out.splitlines()[:6]
    assert header.split() == ["fold", "validation", "val", "accuracy", "val", "UAR", "val",
                              "macro-F1"]  # fmt: skip
    assert rows[0].split()[:3] == ["0", "3", "4"]  # fold 0 validates on actors 3 and 4
    assert "test metrics hidden (cv.blind)" in out.out
    assert not any(line.startswith("pooled") for line in out.out.splitlines())
    for f in record["folds"]:  # recorded all the same, for `sejax compare --split test`
        assert f"{f['uar']:.3f}" not in out.out.replace(f"{f['validation']['uar']:.3f}", "")
        stored = json.loads((workdir / "folds" / f"fold_{f['fold']}.json").read_text())
        assert stored["test"]["uar"] == f["uar"]


def test_cv_aggregates_committed_fold_records_without_data_or_training(fake_run, monkeypatch):
    """Folds run elsewhere: their records copied into one folder are aggregated as they are."""
    sejax_cv, calls, _, workdir = fake_run
    elsewhere = workdir.with_name("elsewhere")
    assert sejax_cv("--config.cv.only_folds=(0, 1)") == 0
    assert sejax_cv("--config.cv.only_folds=(2, 3)", workdir=elsewhere) == 0
    committed = workdir.with_name("committed") / "folds"
    committed.mkdir(parents=True)
    for i, source in ((0, workdir), (1, workdir), (2, elsewhere), (3, elsewhere)):
        record = (source / "folds" / f"fold_{i}.json").read_bytes()
        (committed / f"fold_{i}.json").write_bytes(record)

    def no_data(*args):
        raise AssertionError("aggregating records must not read data")

    monkeypatch.setattr(prepare, "ensure_shards", no_data)
    assert sejax_cv(workdir=committed.parent) == 0
    record = json.loads((committed.parent / "cv.json").read_text())
    assert record["complete"] and record["folds_done"] == [0, 1, 2, 3] and record["shards"] is None
    assert calls == ["fold_0", "fold_1", "fold_2", "fold_3"]  # nothing trained again
    labels, preds = [], []
    for i in range(4):
        test = json.loads((committed / f"fold_{i}.json").read_text())["test"]
        labels += test["label"]
        preds += test["pred"]
    assert record["pooled"]["uar"] == pytest.approx(balanced_accuracy_score(labels, preds))
    # Another recipe's record is refused, naming the file and the setting.
    other = json.loads((committed / "fold_3.json").read_text())
    other["config"]["train"]["learning_rate"] = 0.5
    (committed / "fold_3.json").write_text(json.dumps(other))
    assert sejax_cv(workdir=committed.parent) == 2


def test_records_of_overlapping_folds_are_refused():
    split = {"clips": ["a", "b"], "label": [0, 1], "pred": [0, 1]}
    with pytest.raises(DataError, match="two folds"):
        cv.pooled_metrics([split, dict(split, clips=["b", "c"])], EMOTIONS)


def test_cv_refuses_a_fold_folder_from_another_config(fake_run, capsys):
    sejax_cv, calls, _, workdir = fake_run
    assert sejax_cv("--config.cv.only_folds=(0,)") == 0
    assert sejax_cv("--config.cv.only_folds=(0,)", "--config.train.num_epochs=3") == 2
    err = capsys.readouterr().err
    assert "was made by another recipe (train.num_epochs: 10 -> 3)" in err
    # A fold folder without its record (a run stopped before it was written) is checked too.
    (workdir / "folds" / "fold_0.json").unlink()
    assert sejax_cv("--config.cv.only_folds=(0,)", "--config.train.num_epochs=3") == 2
    assert "was run with another config (train.num_epochs: 10 -> 3)" in capsys.readouterr().err
    assert calls == ["fold_0"]


def test_cv_accepts_a_fold_run_before_a_config_key_existed(fake_run, tmp_path):
    """A key sejax added later, left at its default, is no config change; set otherwise, it is."""
    sejax_cv, calls, _, workdir = fake_run
    assert sejax_cv("--config.cv.only_folds=(0,)") == 0
    saved = workdir / "folds" / "fold_0.json"
    old = json.loads(saved.read_text())
    del old["config"]["data"]["device_resident"]  # as written before the key existed
    saved.write_text(json.dumps(old))
    assert sejax_cv("--config.cv.only_folds=(0,)") == 0
    assert sejax_cv("--config.cv.only_folds=(0,)", "--config.data.device_resident=True") == 2
    assert calls == ["fold_0"]


def test_random_clip_folds_are_labelled_leaking(fake_run, capsys):
    sejax_cv, calls, rows, workdir = fake_run
    assert sejax_cv("--config.data.split_by=random") == 2
    assert "data.allow_leakage=True" in capsys.readouterr().err and not calls
    assert sejax_cv("--config.data.split_by=random", "--config.data.allow_leakage=True") == 0
    summary, out = last_json(capsys)
    assert summary["leaking"] and "LEAKING" in summary["protocol"] and "WARNING" in out.err
    record = json.loads((workdir / "cv.json").read_text())
    assert all(f["leaking"] for f in record["folds"])
    assert record["pooled"]["num_examples"] == len(rows)  # every clip tested once
    assert all(len(f["test_actors"]) >= 6 for f in record["folds"])  # speakers mixed


# ------------------------------------------------------------------------------------------
# End to end: real training on the demo corpus, in a subprocess.


@pytest.mark.slow
def test_cv_command_end_to_end_on_the_demo_corpus(tmp_path):
    """6 demo actors, 3 folds, 1 epoch each: fold 0 alone, then folds 0-1 (0 kept)."""
    args = tiny_args(data__demo_actors="(17, 18, 19, 20, 21, 22)", train__num_epochs="1",
                     cv__num_folds="3")  # fmt: skip

    def run(*extra):
        out = subprocess.run(
            [sys.executable, "-m", "sejax", "cv", "--workdir", str(tmp_path / "w"), *args, *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1]), out

    first, _ = run("--config.cv.only_folds=(0,)")
    assert first["folds_done"] == [0] and first["folds"][0]["test_actors"] == [17, 18]
    second, out = run("--config.cv.only_folds=(0, 1)")
    assert "fold 1/3" in out.stderr and "finished earlier" in out.stderr
    assert second["folds_done"] == [0, 1] and not second["complete"]
    assert second["folds"][0] == first["folds"][0]
    record = json.loads((tmp_path / "w" / "cv.json").read_text())
    assert record["pooled"]["num_examples"] == 4 * 30
    test = json.loads((tmp_path / "w" / "fold_1" / "eval" / "test.json").read_text())
    assert test["actors"] == [19, 20] and test["leaking"] is False
    assert len(test["predictions"]["probs"]) == 60
    split = json.loads((tmp_path / "w" / "fold_1" / "split.json").read_text())
    assert split["validation"]["actors"] == [21, 22] and split["train"]["actors"] == [17, 18]
    assert (tmp_path / "w" / "cv_learning_curves.png").is_file()
    assert not (tmp_path / "w" / "fold_1" / "prepared").exists()  # one shared shard set


def test_the_test_model_is_named_in_cv_json(fake_run, capsys):
    sejax_cv, _, _, workdir = fake_run
    assert sejax_cv() == 0
    record = json.loads((workdir / "cv.json").read_text())
    assert record["test_model"] == "the checkpoint with the best validation uar"
    # Its validation scores are of checkpoints the validation actors chose: said so.
    assert record["validation_optimistic"] and "optimistic" in capsys.readouterr().out
    assert sejax_cv("--config.eval.average_last_checkpoints=2", workdir=workdir.with_name("a")) == 0
    record = json.loads((workdir.with_name("a") / "cv.json").read_text())
    assert record["test_model"] == "mean probabilities of the last 2 checkpoint(s)"
    assert not record["validation_optimistic"] and "optimistic" not in capsys.readouterr().out


def test_per_speaker_normalisation_is_labelled_transductive(fake_run, capsys):
    sejax_cv, calls, _, workdir = fake_run
    assert sejax_cv("--config.data.normalization=per_speaker") == 0
    summary, out = last_json(capsys)
    assert summary["transductive"] and "transductive" in summary["protocol"]
    assert not summary["leaking"] and "TRANSDUCTIVE" in out.err + out.out
    assert json.loads((workdir / "cv.json").read_text())["transductive"]
    for fold in calls:  # each fold trained with the setting
        config = json.loads((workdir / fold / "config.json").read_text())
        assert config["data"]["normalization"] == "per_speaker"


def test_sejax_compare_two_recipes_on_the_same_folds(fake_run, capsys):
    """`sejax compare A B` reads both recipes' fold records and compares them on validation."""
    sejax_cv, _, _, workdir = fake_run
    other = workdir.with_name("other")
    assert sejax_cv() == 0
    assert sejax_cv("--config.train.learning_rate=0.002", workdir=other) == 0
    capsys.readouterr()
    assert cli.main(["compare", str(workdir), str(other / "folds"), "--resamples", "50"]) == 0
    result, out = last_json(capsys)
    assert result["split"] == "validation" and result["folds"] == [0, 1, 2, 3]
    assert result["mean_difference"] == 0.0  # the stand-in trains both alike
    assert not result["b_better"] and "no gain outside the noise" in out.out
    assert cli.main(["compare", str(workdir), str(workdir.with_name("none"))]) == 2
    assert "no fold records" in capsys.readouterr().err
