"""sejax.cli.views: what `sejax predict` and `sejax cv` print."""

from __future__ import annotations

from sejax.cli import views
from sejax.errors import DataError
from sejax.inference.predict import Prediction, WindowPrediction

LABELS = ("calm", "sad")


def _record(leaking=False, transductive=False) -> dict:
    folds = [
        {"fold": 0, "test_actors": [1, 2], "num_examples": 10, "accuracy": 0.5, "uar": 0.25,
         "macro_f1": 0.2, "test_parts": None,
         "validation": {"accuracy": 0.4, "uar": 0.3, "macro_f1": 0.2}},
        {"fold": 1, "test_actors": list(range(3, 14)), "num_examples": 12, "accuracy": 0.75,
         "uar": 0.5, "macro_f1": 0.4, "test_parts": None,
         "validation": {"accuracy": 0.6, "uar": 0.5, "macro_f1": 0.4}},
    ]  # fmt: skip
    return {
        "protocol": "actor-disjoint folds", "leaking": leaking, "transductive": transductive,
        "num_folds": 3, "folds_done": [0, 1], "complete": False, "folds": folds,
        "mean": {"accuracy": 0.625, "uar": 0.375, "macro_f1": 0.3},
        "std": {"accuracy": 0.125, "uar": 0.125, "macro_f1": 0.1},
        "pooled": {"num_examples": 22, "accuracy": 0.6364, "uar": 0.4, "macro_f1": 0.31,
                   "confusion_matrix": [[1]]},
        "validation": {"mean": {"accuracy": 0.5, "uar": 0.4, "macro_f1": 0.3},
                       "std": {"accuracy": 0.1, "uar": 0.1, "macro_f1": 0.1}},
    }  # fmt: skip


def test_cv_table_rows_and_warnings():
    lines = views.format_cv_table(_record()).splitlines()
    header = ["fold", "test", "examples", "accuracy", "UAR", "macro-F1", "val", "UAR"]
    assert lines[0].split() == header
    assert lines[1].split() == ["0", "1", "2", "10", "0.500", "0.250", "0.200", "0.300"]
    assert "3 4 5 6 7 8 9 10  ..." in lines[2] and lines[2].endswith("0.500")  # cut actors
    mean = ["mean±std", "0.625±0.125", "0.375±0.125", "0.300±0.100", "0.400±0.100"]
    assert lines[3].split() == mean
    assert lines[4].split() == ["pooled", "22", "0.636", "0.400", "0.310"]
    assert len(lines) == 5
    flagged = views.format_cv_table(_record(leaking=True, transductive=True))
    assert flagged.splitlines()[-2].startswith("LEAKING")
    assert flagged.splitlines()[-1].startswith("TRANSDUCTIVE")


def test_cv_summary_is_the_short_form_of_cv_json(tmp_path):
    summary = views.cv_summary(_record(), tmp_path)
    assert summary["command"] == "cv" and summary["cv_json"] == str(tmp_path / "cv.json")
    assert summary["folds"][1] == {"fold": 1, "test_actors": list(range(3, 14)),
                                   "accuracy": 0.75, "uar": 0.5, "macro_f1": 0.4}  # fmt: skip
    assert summary["pooled"] == {"num_examples": 22, "accuracy": 0.6364, "uar": 0.4,
                                 "macro_f1": 0.31}  # fmt: skip
    assert (summary["folds_done"], summary["complete"]) == ([0, 1], False)
    assert summary["validation"]["mean"]["uar"] == 0.4


def test_predictions_table_has_a_row_per_file_and_window():
    windows = (
        WindowPrediction(0.0, 1.0, "calm", {"calm": 0.9, "sad": 0.1}),
        WindowPrediction(0.5, 1.5, "sad", {"calm": 0.3, "sad": 0.7}),
    )
    clip = Prediction("a.wav", 1.5, "calm", {"calm": 0.6, "sad": 0.4}, windows)
    results = [("a.wav", clip), ("bad.wav", DataError("cannot decode"))]
    lines = views.format_predictions_table(results, LABELS, show_windows=True).splitlines()
    assert lines[0].split() == ["file", "dur_s", "win", "emotion", "prob", "calm", "sad"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == ["a.wav", "1.50", "2", "calm", "0.600", "0.600", "0.400"]
    assert lines[3].split() == ["0.00-1.00s", "calm", "0.900", "0.900", "0.100"]
    assert lines[4].split() == ["0.50-1.50s", "sad", "0.700", "0.300", "0.700"]
    assert lines[5].split() == ["bad.wav", "error:", "cannot", "decode"]
    assert len(views.format_predictions_table(results, LABELS).splitlines()) == 4
