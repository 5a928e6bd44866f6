"""sejax.evaluation.repeats: one recipe's runs (seeds) on the same folds, mean and spread."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from sejax.cli import main as cli
from sejax.errors import DataError
from sejax.evaluation import records
from sejax.evaluation.repeats import format_repeats, recipe_differences, summarize

CONFIG = {"seed": 0, "data": {"path": "/a/shards", "split_by": "actor"},
          "train": {"num_epochs": 40}, "model": {"conv_impl": "auto"}}  # fmt: skip


def _metrics(uar):
    return {"uar": uar, "accuracy": uar + 0.01, "macro_f1": uar - 0.01}


def _run(test_uars, val_uars, seed):
    config = copy.deepcopy(CONFIG) | {"seed": seed}
    return {
        i: {"format": records.FORMAT, "fold": i,
            "definition": {"fold": i, "test": [i + 1], "validation": [i + 2]},
            "test": _metrics(t), "validation": _metrics(v), "config": copy.deepcopy(config)}
        for i, (t, v) in enumerate(zip(test_uars, val_uars, strict=True))
    }  # fmt: skip


def test_mean_and_spreads_over_runs_and_folds():
    a = _run([0.50, 0.60, 0.40], [0.55, 0.45, 0.50], seed=0)
    b = _run([0.56, 0.52, 0.48], [0.45, 0.55, 0.60], seed=1)
    result = summarize([a, b], ["s0", "s1"])
    test = result["test"]["uar"]
    table = np.array([[0.50, 0.56], [0.60, 0.52], [0.40, 0.48]])
    np.testing.assert_allclose([f["runs"] for f in test["per_fold"]], table)
    assert [f["mean"] for f in test["per_fold"]] == pytest.approx(table.mean(1).tolist())
    assert test["per_fold"][0]["std"] == pytest.approx(np.std([0.50, 0.56], ddof=1))
    assert test["run_means"] == pytest.approx([0.50, 0.52])
    assert test["mean"] == pytest.approx(0.51)
    assert test["std_over_folds"] == pytest.approx(np.std(table.mean(1)))
    assert test["std_between_runs"] == pytest.approx(np.std([0.50, 0.52], ddof=1))
    assert test["mean_std_within_fold"] == pytest.approx(table.std(1, ddof=1).mean())
    assert result["validation"]["uar"]["mean"] == pytest.approx(0.51666, abs=1e-4)
    assert result["test"]["accuracy"]["mean"] == pytest.approx(0.52)
    text = format_repeats(result)
    assert "fold 1: 0.600 0.520  mean 0.560" in text and "runs' means 0.500 0.520" in text


def test_runs_on_other_cpu_kinds_are_named_in_the_summary():
    a = _run([0.5, 0.6], [0.5, 0.5], seed=0)
    b = _run([0.5, 0.6], [0.5, 0.5], seed=0)  # the same command on another CPU kind
    zen3 = {"cpu": "AMD EPYC", "cpu_family": "25", "cpu_model": "1", "avx512": False}
    for i in a:
        a[i]["machine"], b[i]["machine"] = zen3, zen3
    same = summarize([a, b], ["A", "B"])
    assert same["cpu_kinds"] == [["AMD EPYC (family 25 model 1, AVX2)"]] * 2
    assert "CPU kinds" not in format_repeats(same)
    b[1]["machine"] = zen3 | {"cpu_family": "26", "cpu_model": "2", "avx512": True}
    mixed = summarize([a, b], ["A", "B"])
    assert mixed["cpu_kinds"][1] == [
        "AMD EPYC (family 25 model 1, AVX2)",
        "AMD EPYC (family 26 model 2, AVX-512)",
    ]
    assert "note: the runs ran on other CPU kinds" in format_repeats(mixed)


def test_only_folds_every_run_finished_count():
    a = _run([0.5, 0.6, 0.4], [0.5] * 3, seed=0)
    b = _run([0.5, 0.6], [0.5] * 2, seed=1)
    assert summarize([a, b], ["A", "B"])["folds"] == [0, 1]
    with pytest.raises(DataError, match="no fold finished in every run"):
        summarize([a, {5: b[1] | {"fold": 5}}], ["A", "B"])
    with pytest.raises(DataError, match="two or more runs"):
        summarize([a], ["A"])


def test_paths_seeds_and_implementations_are_not_the_recipe_but_epochs_are():
    a = copy.deepcopy(CONFIG)
    b = copy.deepcopy(CONFIG) | {"seed": 3}
    b["data"]["path"], b["model"]["conv_impl"] = "/b", "xla"
    b["train"]["label_smoothing"] = 0.0  # added after a ran, at its default
    b["distributed"] = {"num_processes": 2}  # a section left out whole
    assert recipe_differences(a, b) == []
    b["train"]["num_epochs"] = 10
    assert recipe_differences(a, b) == ["train.num_epochs: 40 -> 10"]
    b["train"]["label_smoothing"] = 0.1  # a key a lacks counts away from its default
    assert recipe_differences(a, b) == ["train.label_smoothing: None -> 0.1",
                                        "train.num_epochs: 40 -> 10"]  # fmt: skip


@pytest.mark.parametrize(
    "spoil, message",
    [
        (lambda r: r["config"]["train"].update(num_epochs=10), "differs in train.num_epochs: 40"),
        (lambda r: r["definition"].update(test=[9]), "B: fold 0 holds other actors"),
        (lambda r: r.pop("test"), "without test predictions"),
    ],
)
def test_runs_that_are_not_one_recipe_on_the_same_folds_are_refused(spoil, message):
    a, b = _run([0.5], [0.5], seed=0), _run([0.6], [0.5], seed=1)
    spoil(b[0])
    with pytest.raises(DataError, match=message):
        summarize([a, b], ["A", "B"])


def test_cli_prints_the_table_and_writes_the_summary(tmp_path, capsys):
    folders = []
    for name, uars in (("s0", [0.5, 0.6]), ("s1", [0.7, 0.4])):
        folder = tmp_path / name / "folds"
        for record in _run(uars, [0.5, 0.5], seed=len(folders)).values():
            records.write(folder, record)
        folders.append(str(tmp_path / name))  # a `sejax cv` workdir: its folds/ is read
    out = tmp_path / "repeats.json"
    assert cli.main(["repeats", *folders, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fold 0: 0.500 0.700  mean 0.600" in printed
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["command"] == "repeats" and summary["test"]["uar"]["mean"] == 0.55
    assert json.loads(out.read_text())["test"]["uar"]["run_means"] == [0.55, 0.55]
