"""End to end: the CLI trains on the demo corpus, beats chance, writes reports, resumes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sejax.cli import main as cli
from tests.conftest import tiny_args

CHANCE = 1 / 8


def _sejax(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sejax", *args], cwd=cwd, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    result = _sejax("train", "--workdir", str(root / "run"), *tiny_args(), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


def test_demo_run_beats_chance_and_writes_reports(trained):
    root, result = trained
    summary = _last_json(result.stdout)
    assert summary["command"] == "train" and summary["workdir"] == str(root / "run")
    assert summary["test"]["num_examples"] == 2 * 30  # actors 23-24, one take each
    assert summary["test"]["accuracy"] > 2.5 * CHANCE, summary
    assert "how to train on real RAVDESS" in result.stdout or "real RAVDESS" in result.stdout
    report = json.loads((root / "run" / "eval" / "test.json").read_text())
    for key in ("accuracy", "uar", "macro_f1", "loss", "num_examples", "per_class",
                "confusion_matrix", "label_names"):  # fmt: skip
        assert key in report
    assert np.array(report["confusion_matrix"]).sum() == report["num_examples"]
    assert report["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert (root / "run" / "eval" / "test_confusion.png").stat().st_size > 1000
    lines = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("train_loss" in x for x in lines) and any("val_uar" in x for x in lines)
    assert list((root / "run" / "tensorboard").glob("events.out.tfevents.*"))
    split = json.loads((root / "run" / "split.json").read_text())
    assert split["test"]["actors"] == [23, 24] and split["train"]["actors"] == [17, 18, 19, 20]


def test_evaluate_command_reproduces_the_report(trained):
    root, result = trained
    out = _sejax("evaluate", "--workdir", str(root / "run"), "--split", "test", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = _last_json(out.stdout)
    assert summary["command"] == "evaluate" and summary["split"] == "test"
    assert summary["accuracy"] == pytest.approx(_last_json(result.stdout)["test"]["accuracy"])
    assert summary["num_examples"] == 60


def test_export_recomputes_the_batch_norm_statistics_training_computed(trained, capsys):
    """`sejax export --precise-bn-batches N` recomputes, from the run's own training data, the
    BatchNorm statistics that train.precise_bn_batches=N saved (16 by default): the same
    values; another N gives others; the weights are untouched."""
    import jax

    from sejax.cli import main as cli
    from sejax.inference import bundle

    def leaves(tree) -> list[np.ndarray]:
        return [np.asarray(x) for x in jax.tree.leaves(tree)]

    root, _ = trained
    run = root / "run"
    saved = bundle.load(workdir=run)
    for n in (16, 1):
        args = ["export", "--workdir", str(run), "--out", str(root / f"pbn{n}"), "--formats", ""]
        assert cli.main([*args, "--precise-bn-batches", str(n)]) == 0
        model = bundle.load(root / f"pbn{n}")
        assert model.meta["precise_bn_batches"] == n
        pairs = zip(leaves(saved.variables["batch_stats"]), leaves(model.variables["batch_stats"]),
                    strict=True)  # fmt: skip
        same = [np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in pairs]
        assert all(same) if n == 16 else not any(same)
        params = zip(leaves(saved.variables["params"]), leaves(model.variables["params"]),
                     strict=True)  # fmt: skip
        assert all(np.array_equal(a, b) for a, b in params)
    capsys.readouterr()
    args = ["export", "--model", str(root / "pbn1"), "--out", str(root / "x")]
    assert cli.main([*args, "--precise-bn-batches", "4"]) == 2
    assert "needs --workdir" in capsys.readouterr().err


def test_snapshot_ensemble_averages_the_last_checkpoints(trained, tmp_path, capsys):
    """eval.average_last_checkpoints=N (`sejax evaluate --average-last N`): the report's
    probabilities are the mean of the last N checkpoints' own, and its loss the cross-entropy
    of that mean; N=1 is the final checkpoint alone; a bad N names the key."""
    from sejax.cli import main as cli
    from sejax.evaluation import evaluate

    root, _ = trained
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)  # evaluate rewrites eval/: leave the fixture's alone
    steps = evaluate.last_checkpoints(run, 2)
    alone = [evaluate.evaluate(run, checkpoint=s, average_last=0)["test"] for s in steps]
    ensemble = evaluate.evaluate(run, average_last=2)["test"]
    assert ensemble["checkpoint_steps"] == steps and ensemble["step"] == steps[-1]

    def probs(report):
        return np.array(report["predictions"]["probs"])

    assert not np.allclose(probs(alone[0]), probs(alone[1]), atol=1e-3)  # distinct members
    mean = (probs(alone[0]) + probs(alone[1])) / 2
    np.testing.assert_allclose(probs(ensemble), mean, atol=2e-5)
    labels = np.array(ensemble["predictions"]["label"])
    nll = -np.log(mean[np.arange(len(labels)), labels]).mean()
    assert ensemble["loss"] == pytest.approx(nll, rel=1e-3)
    assert ensemble["accuracy"] == pytest.approx(np.mean(mean.argmax(-1) == labels))
    written = json.loads((run / "eval" / "test.json").read_text())
    assert written["checkpoint_steps"] == steps and written["uar"] == ensemble["uar"]

    final = evaluate.evaluate(run, average_last=1)["test"]
    assert final["predictions"] == alone[-1]["predictions"]
    assert cli.main(["evaluate", "--workdir", str(run), "--average-last", "2"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["checkpoint_steps"] == steps
    assert cli.main(["evaluate", "--workdir", str(run), "--average-last", "3"]) == 2
    assert "train.keep_checkpoints=2" in capsys.readouterr().err


def test_a_run_configured_to_average_reports_the_ensemble(tmp_path, capsys):
    """A run with eval.average_last_checkpoints=2 reports its last two checkpoints' mean
    (`sejax evaluate` reproduces it); the single-checkpoint model it serves says it is not."""
    from sejax.cli import main as cli
    from sejax.inference import bundle

    run = tmp_path / "run"
    args = tiny_args(train__num_epochs="2", eval__average_last_checkpoints="2")
    assert cli.main(["train", "--workdir", str(run), *args]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["average_last_checkpoints"] == 2
    report = json.loads((run / "eval" / "test.json").read_text())
    steps_per_epoch = summary["steps"] // 2
    assert report["checkpoint_steps"] == [steps_per_epoch, 2 * steps_per_epoch]
    assert report["uar"] == pytest.approx(summary["test"]["uar"])
    assert cli.main(["evaluate", "--workdir", str(run)]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["checkpoint_steps"] == report["checkpoint_steps"]
    assert again["uar"] == pytest.approx(summary["test"]["uar"])
    with pytest.warns(UserWarning, match="mean of its last 2 checkpoints"):
        bundle.load(workdir=run)


@pytest.mark.slow  # ~2 min; bitwise resume is covered fast in test_reliability.py
def test_resume_continues_where_it_stopped(trained, tmp_path):
    """Two epochs, then the same workdir asked for three: it trains only the third, and its
    losses match those of the uninterrupted run (constant learning rate, same seed)."""
    root, _ = trained
    shared = f"--config.data.path={root / 'run' / 'prepared'}"  # reuse its shards
    first = _sejax("train", "--workdir", str(tmp_path / "a"), *tiny_args(train__num_epochs="2"),
                   shared, cwd=tmp_path)  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    steps_2 = _last_json(first.stdout)["steps"]
    resumed = _sejax("train", "--workdir", str(tmp_path / "a"), *tiny_args(train__num_epochs="3"),
                     shared, cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming from step {steps_2}" in resumed.stderr
    steps_3 = _last_json(resumed.stdout)["steps"]
    assert steps_3 == steps_2 // 2 * 3

    def losses(workdir):
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return {(r["step"], k): v for r in map(json.loads, lines) for k, v in r.items()
                if k in ("train_loss", "val_loss") and r["step"] <= steps_3}  # fmt: skip

    resumed_losses, straight = losses(tmp_path / "a"), losses(root / "run")
    val_keys = {k for k in straight if k[1] == "val_loss"}
    assert len(val_keys) == 3 and val_keys <= resumed_losses.keys()
    common = resumed_losses.keys() & straight.keys()
    assert len(common) >= 6
    for key in common:
        assert resumed_losses[key] == pytest.approx(straight[key], rel=1e-4, abs=1e-5), key


def test_bad_config_key_and_bad_data_path_fail_clearly(tmp_path, capsys):
    # In process (cli.main is what `python -m sejax` runs): an uncaught exception fails the test
    # just as a traceback on stderr would, without three interpreter start-ups.
    def fails(*args: str) -> str:
        assert cli.main(list(args)) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    err = fails("train", "--workdir", str(tmp_path / "w"), "--config.train.batchsize=3")
    assert "unknown config key 'train.batchsize'" in err
    assert "/no/such/dir" in fails("train", "--workdir", str(tmp_path / "w"),
                                   "--config.data.path=/no/such/dir")  # fmt: skip
    assert "no checkpoints" in fails("evaluate", "--workdir", str(tmp_path / "nothing"))
