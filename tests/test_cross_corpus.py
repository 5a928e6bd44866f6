"""End to end: a model trained on the (tiny demo) RAVDESS corpus evaluates, through the CLI,
on a generated corpus in each supported format, over the labels both share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sejax.cli import main as cli
from tests import corpora_data
from tests.conftest import tiny_args

# Four demo actors, one epoch, no LSTM (compiling it dominates on a small CPU): the model only
# has to exist and predict the eight RAVDESS labels, not to be good.
TINY = {
    "data__demo_actors": "(21, 22, 23, 24)", "data__val_actors": "(23,)",
    "data__test_actors": "(24,)", "train__num_epochs": "1", "data__num_workers": "1",
    "model__lstm_layers": "0", "model__conv_channels": "(4, 8)",
}  # fmt: skip
REPORT_KEYS = ("accuracy", "uar", "macro_f1", "loss", "num_examples", "per_class",
               "confusion_matrix", "label_names", "split", "step", "actors")  # fmt: skip


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cross")
    assert cli.main(["train", "--workdir", str(root / "run"), *tiny_args(**TINY)]) == 0
    return root / "run"


def _corpus(name: str, root: Path) -> tuple[Path, dict]:
    if name == "manifest":
        return corpora_data.make_manifest(root)
    maker = getattr(corpora_data, f"make_{name}")
    return root, maker(root)


# corpus -> (extra CLI arguments, corpus labels that must be dropped, shared model labels)
CASES = {
    "cremad": ((), {}, {"neutral", "happy", "sad", "angry", "fearful", "disgust"}),
    "tess": ((), {}, {"neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"}),
    "emodb": ((), {"boredom": 2}, {"neutral", "happy", "sad", "angry", "fearful", "disgust"}),
    "savee": ((), {}, {"neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"}),
    "manifest": (("--label-map", "exc=happy"), {"fru": 3}, {"neutral", "happy", "sad", "angry"}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_evaluates_on_each_corpus_format(name, workdir, tmp_path, capsys):
    extra, dropped, shared = CASES[name]
    data, expected = _corpus(name, tmp_path / name)
    code, out, err = _run(capsys, "evaluate", "--workdir", str(workdir), "--data", str(data),
                          "--corpus", name, *extra)  # fmt: skip
    assert code == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["command"] == "evaluate" and summary["split"] == f"cross_{name}"
    report = json.loads((workdir / "eval" / f"cross_{name}.json").read_text())
    assert all(key in report for key in REPORT_KEYS)
    assert set(report["shared_labels"]) == shared
    assert report["label_names"] == report["shared_labels"]  # metrics over shared labels only
    assert report["num_examples"] == expected["count"] - sum(dropped.values())
    matrix = np.array(report["confusion_matrix"])
    assert matrix.shape == (len(shared), len(shared)) and matrix.sum() == report["num_examples"]
    assert 0.0 <= report["uar"] <= 1.0 and np.isfinite(report["loss"])
    lost = report["dropped_labels"]
    assert lost["corpus_labels_without_model_label"] == dropped
    assert "calm" in lost["model_labels_absent_from_corpus"]
    assert summary["dropped_labels"] == lost
    for label in (*dropped, "calm"):
        assert label in out  # said on stdout too
    assert (workdir / "eval" / f"cross_{name}_confusion.png").stat().st_size > 1000
    if name == "emodb":  # a second run reuses the cached shards
        cached = sorted((workdir / "cross").glob("emodb-*"))
        assert len(cached) == 1 and report["prepared_dir"] == str(cached[0])
        before = (cached[0] / "metadata.json").stat().st_mtime_ns
        code, _, err = _run(capsys, "evaluate", "--workdir", str(workdir), "--data", str(data),
                            "--corpus", name)  # fmt: skip
        assert code == 0, err[-3000:]
        assert (cached[0] / "metadata.json").stat().st_mtime_ns == before


def test_cross_corpus_arguments_fail_clearly(workdir, tmp_path, capsys):
    code, _, err = _run(capsys, "evaluate", "--workdir", str(workdir), "--data", str(tmp_path))
    assert code == 2 and "needs both --data and --corpus" in err
    code, _, err = _run(capsys, "evaluate", "--workdir", str(workdir), "--data", str(tmp_path),
                        "--corpus", "iemocap")  # fmt: skip
    assert code == 2 and "--corpus='iemocap' is not supported" in err and "'manifest'" in err
    corpora_data.make_emodb(tmp_path / "emodb")
    code, _, err = _run(capsys, "evaluate", "--workdir", str(workdir), "--data",
                        str(tmp_path / "emodb"), "--corpus", "tess")  # fmt: skip
    assert code == 2 and "not valid TESS recordings" in err and "03a01Wa.wav" in err
