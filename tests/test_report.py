"""sejax.evaluation.report and `sejax report`: a self-contained HTML page from a run's own files."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from sejax.cli import main as cli
from sejax.configs import loading as config_lib
from sejax.corpora.ravdess import EMOTIONS
from sejax.data import splits
from sejax.errors import DataError
from sejax.evaluation import metrics, report
from sejax.training.metric_writers import JsonlWriter
from sejax.training.validation import classification_metrics
from tests.inference_fixtures import tiny_config


@pytest.fixture
def run(tmp_path):
    """A finished run's files, written by the same functions `sejax train` uses."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = tiny_config()
    config.data.path = "/data/<ravdess>&co"  # must come out escaped
    (workdir / "config.json").write_text(config_lib.to_json(config))
    writer = JsonlWriter(workdir / "metrics.jsonl")
    for step in range(1, 13):
        writer.write_scalars(step, {"train_loss": 2.0 - 0.1 * step, "train_accuracy": 0.05 * step,
                                    "train_learning_rate": 3e-3})  # fmt: skip
        if step % 4 == 0:
            writer.write_scalars(step, {"epoch": step // 4, "val_loss": 2.1 - 0.05 * step,
                                        "val_accuracy": 0.3, "val_uar": 0.25 + 0.01 * step,
                                        "val_macro_f1": 0.2})  # fmt: skip
    writer.write_scalars(8, {"val_uar": 0.99})  # a resumed run logging step 8 again
    writer.close()
    with (workdir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 13, "train_lo')  # a crash mid-write
    split = splits.Split(
        actors={"train": (17, 18), "validation": (21,), "test": (23, 24)},
        indices={"train": np.arange(4), "validation": np.arange(4, 6), "test": np.arange(6, 9)},
    )
    splits.write_split(workdir / "split.json", split, [{"source": f"f{i}.wav"}
                                                                 for i in range(9)])  # fmt: skip
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 5)
    preds = np.where(rng.random(40) < 0.6, labels, rng.integers(0, 8, 40))
    result = classification_metrics(labels, preds, EMOTIONS, rng.random(40))
    result.update(split="test", step=12, actors=[23, 24])
    metrics.write_split_report(result, workdir / "eval", "test")
    summary = {"train_seconds": 12.5, "steps": 12, "epochs": 3, "num_devices": 1}
    (workdir / "summary.json").write_text(json.dumps(summary))
    (workdir / "checkpoints" / "8").mkdir(parents=True)
    (workdir / "checkpoints" / "12").mkdir()
    return workdir, result


def _text(page):
    """The page without its embedded images, for searching."""
    return re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', page)


def test_report_has_every_section_and_embeds_its_images(run):
    workdir, result = run
    page, sections = report.build_html(workdir)
    assert sections == ["results", "learning_curves", "eval:test", "split", "timing", "config"]
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2  # learning curves, test confusion matrix
    assert all(base64.b64decode(img)[:4] == b"\x89PNG" for img in images)
    text = _text(page)
    assert "http" not in text and "<link" not in text and "<script" not in text
    assert "/data/&lt;ravdess&gt;&amp;co" in text and "<ravdess>" not in text
    # Results and the per-class table carry the evaluation's own numbers.
    assert f"<td>test</td><td>40</td><td>{result['accuracy']:.4f}</td>" in text
    angry = result["per_class"]["angry"]
    assert (f"<td>angry</td><td>{angry['precision']:.4f}</td><td>{angry['recall']:.4f}</td>"
            in text)  # fmt: skip
    assert "<td>test</td><td>3</td><td>23, 24</td>" in text  # split table
    assert "<td>train_seconds</td><td>12.5000</td>" in text
    assert "<td>checkpoints kept (steps)</td><td>8, 12</td>" in text


def test_metrics_reader_merges_resumed_steps_and_skips_torn_lines(run):
    workdir, _ = run
    rows = report.read_metrics(workdir / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[7]["val_uar"] == 0.99 and "train_loss" in rows[7]


def test_report_command_and_missing_pieces(run, tmp_path, capsys):
    workdir, _ = run
    out = tmp_path / "out" / "r.html"
    assert cli.main(["report", "--workdir", str(workdir), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["command"] == "report" and summary["report"] == str(out)
    assert out.read_text().startswith("<!DOCTYPE html>")
    # A run that has not been evaluated yet still gets a report, saying what is missing.
    for path in (workdir / "eval").iterdir():
        path.unlink()
    (workdir / "summary.json").unlink()
    page, sections = report.build_html(workdir)
    assert "eval:test" not in sections and "sejax evaluate --workdir" in page
    assert (workdir / "report.html").exists() is False
    report.write_run_report(workdir)
    assert (workdir / "report.html").stat().st_size > 1000
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no training run"):
        report.build_html(tmp_path / "empty")
    assert cli.main(["report", "--workdir", str(tmp_path / "nowhere")]) == 2
    assert "workdir not found" in capsys.readouterr().err
