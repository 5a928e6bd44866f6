"""Actor-disjoint k-fold cross-validation: ``sejax cv``.

Folds: `sejax.evaluation.folds` (every actor tested in exactly one fold, balanced by gender,
EmoBox's or explicit ones, or random parts of the clips for the leaking protocol).

Running (``run``): the shards are prepared once and shared; each fold is an ordinary
`sejax.evaluation.evaluate.train_and_evaluate` in ``W/fold_<i>`` with the fold's validation
and test actors, so a fold resumes from its checkpoints and a fold whose ``eval/test.json``
exists is finished and skipped. Aggregation (``aggregate``) reads the folds' test reports:
per-fold metrics, their mean and std, and metrics pooled over every fold's test predictions,
written to ``W/cv.json`` with a pooled confusion-matrix PNG and the folds' learning curves.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from sejax import io
from sejax.configs import default
from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.data import prepare
from sejax.data import shards as shards_lib
from sejax.errors import ConfigError, DataError
from sejax.evaluation import evaluate, metrics
from sejax.evaluation.folds import Fold, fold_config, folds_for
from sejax.evaluation.report import read_metrics
from sejax.training.validation import classification_metrics

METRICS = ("accuracy", "uar", "macro_f1")


# ------------------------------------------------------------------------------------------
# Running the folds.


def fold_dir(workdir: Path, index: int) -> Path:
    return workdir / f"fold_{index}"


def is_finished(directory: Path) -> bool:
    """A fold is finished once its test report is written (the last step of training)."""
    return (directory / "eval" / "test.json").is_file()


def _comparable(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A config as JSON values, without the ``cv`` section (which folds run may change)."""
    return {k: v for k, v in json.loads(json.dumps(config_dict, default=list)).items()
            if k != "cv"}  # fmt: skip


def check_same_config(directory: Path, config: ml_collections.ConfigDict) -> None:
    """A fold folder written by another config must not be resumed or counted silently."""
    path = directory / "config.json"
    if not path.is_file():
        return
    old, new = _comparable(json.loads(path.read_text())), _comparable(config.to_dict())
    if old == new:
        return
    flat_old, flat_new = config_lib.flatten(old), config_lib.flatten(new)
    # A key added to sejax after the fold ran, and left at its default, changes nothing.
    defaults = config_lib.flatten(_comparable(default.get_config().to_dict()))
    keys = sorted(
        k for k in flat_old.keys() | flat_new.keys()
        if flat_old.get(k) != flat_new.get(k)
        and not (k not in flat_old and k in defaults and flat_new.get(k) == defaults[k])
    )  # fmt: skip
    if not keys:
        return
    shown = ", ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys[:5])
    raise ConfigError(
        f"{directory} was run with another config ({shown}); use a new --workdir, or the "
        "config it was run with"
    )


def run(config: ml_collections.ConfigDict, workdir: str | Path, log: Any = print) -> dict[str, Any]:
    """Trains and evaluates the selected folds (skipping finished ones), then aggregates.

    Returns the cv.json record; ``log`` receives one progress line per fold.
    """
    validate(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    shards_dir = prepare.ensure_shards(config, workdir)
    examples = shards_lib.load_metadata(shards_dir)["examples"]
    folds = folds_for(config, examples)
    selected = set(config.cv.only_folds) or {f.index for f in folds}
    for fold in folds:
        if fold.index not in selected:
            continue
        directory = fold_dir(workdir, fold.index)
        cfg = fold_config(config, fold, shards_dir)
        check_same_config(directory, cfg)
        what = f"fold {fold.index + 1}/{len(folds)}: test {fold.unit}s {list(fold.test)}, " \
               f"validation {list(fold.validation)}"  # fmt: skip
        if is_finished(directory):
            log(f"{what}: finished earlier, kept ({directory})")
            continue
        log(f"{what}: training in {directory}")
        evaluate.train_and_evaluate(cfg, directory)
    record = aggregate(workdir, folds, config)
    record.update(shards=str(shards_dir), wall_seconds=round(time.time() - started, 1))
    io.write_json(workdir / "cv.json", record, indent=1)
    return record


# ------------------------------------------------------------------------------------------
# Aggregation.


def fold_result(workdir: Path, fold: Fold) -> dict[str, Any] | None:
    """One finished fold's test metrics (None if it has not finished)."""
    directory = fold_dir(workdir, fold.index)
    report = io.read_json(directory / "eval" / "test.json") if is_finished(directory) else None
    if report is None:
        return None
    summary = io.read_json(directory / "summary.json") or {}
    result = {
        "fold": fold.index,
        "test_actors": list(report.get("actors", fold.test)),
        "validation_actors": list(fold.validation) if fold.unit == "actor" else None,
        "num_examples": report["num_examples"],
        **{k: report[k] for k in METRICS},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
        "best_epoch": summary.get("best_epoch"),
        "train_seconds": summary.get("train_seconds"),
        "leaking": bool(report.get("leaking", False)),
        "workdir": str(directory),
    }
    if fold.unit == "part":
        result["test_parts"] = list(fold.test)
    return result


def pooled_metrics(reports: Sequence[Mapping[str, Any]], label_names: Sequence[str]) -> dict:
    """Metrics over every fold's test examples together (one confusion matrix).

    From the saved per-example predictions when every report has them (an example tested in
    two folds is an error), else from the summed confusion matrices (the same numbers).
    """
    if all("predictions" in r for r in reports):
        index = np.concatenate([r["predictions"]["index"] for r in reports]).astype(np.int64)
        if len(np.unique(index)) != len(index):
            raise DataError("an example is in the test set of two folds: the folds overlap")
        labels = np.concatenate([r["predictions"]["label"] for r in reports])
        preds = np.concatenate([r["predictions"]["pred"] for r in reports])
    else:
        cm = np.sum([np.asarray(r["confusion_matrix"]) for r in reports], axis=0)
        pairs = [(t, p) for t in range(len(cm)) for p in range(len(cm)) for _ in range(cm[t, p])]
        labels, preds = (np.array(x) for x in zip(*pairs, strict=True))
    report = classification_metrics(labels, preds, label_names)
    return {
        "num_examples": report["num_examples"],
        **{k: report[k] for k in METRICS},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
    }


def aggregate(
    workdir: str | Path, folds: Sequence[Fold], config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """The cross-validation record over the finished folds (``complete`` when all are)."""
    workdir = Path(workdir)
    results, reports = [], []
    for fold in folds:
        result = fold_result(workdir, fold)
        if result is not None:
            results.append(result)
            reports.append(io.read_json(fold_dir(workdir, fold.index) / "eval" / "test.json"))
    split_by = config.data.split_by
    leaking = split_by == "random" or any(r["leaking"] for r in results)
    # Per-speaker normalisation sees the test speakers' unlabelled audio: not leaking (no
    # labels, no speaker in training), but transductive, and every report says so.
    transductive = config.data.normalization == "per_speaker"
    protocol = ("random clips, speakers in train and test (LEAKING)" if split_by == "random"
                else "actor-disjoint folds")  # fmt: skip
    if transductive:
        protocol += ", per-speaker normalisation (transductive)"
    average_last = config.eval.average_last_checkpoints
    record: dict[str, Any] = {
        "protocol": protocol,
        # The model each fold's test report evaluates.
        "test_model": f"mean probabilities of the last {average_last} checkpoint(s)"
        if average_last else "the checkpoint with the best validation UAR",
        "leaking": leaking,
        "transductive": transductive,
        "split_by": split_by,
        "fold_set": None if split_by == "random" else
        ("explicit" if config.cv.folds else config.cv.fold_set),
        "num_folds": len(folds),
        "folds_done": [r["fold"] for r in results],
        "complete": len(results) == len(folds),
        "fold_definitions": [f.to_json() for f in folds],
        "folds": results,
        "mean": None, "std": None, "std_ddof": 0, "pooled": None,
    }  # fmt: skip
    if results:
        label_names = reports[0]["label_names"]
        values = {k: np.array([r[k] for r in results]) for k in METRICS}
        record["mean"] = {k: float(v.mean()) for k, v in values.items()}
        record["std"] = {k: float(v.std()) for k, v in values.items()}
        record["pooled"] = pooled_metrics(reports, label_names)
        record["label_names"] = label_names
        title = (
            f"pooled over {len(results)} fold(s): accuracy {record['pooled']['accuracy']:.3f}"
            f", UAR {record['pooled']['uar']:.3f}" + (" (LEAKING)" if leaking else "")
        )
        record["confusion_png"] = str(metrics.plot_confusion_matrix(
            record["pooled"]["confusion_matrix"], label_names, workdir / "cv_confusion.png", title
        ))  # fmt: skip
        curves = plot_learning_curves(workdir, [r["fold"] for r in results],
                                      workdir / "cv_learning_curves.png")  # fmt: skip
        record["learning_curves_png"] = str(curves) if curves else None
    record["train_seconds_total"] = round(sum(r["train_seconds"] or 0 for r in results), 1)
    record["git"] = git_state()
    record["config"] = json.loads(config_lib.to_json(config))
    return record


def plot_learning_curves(workdir: Path, indices: Sequence[int], path: Path) -> Path | None:
    """Training loss and validation UAR per epoch, one line per fold, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, uar_ax) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for i in indices:
        rows = read_metrics(fold_dir(workdir, i) / "metrics.jsonl")
        epochs = [r for r in rows if "epoch" in r]
        if not epochs:
            continue
        steps_per_epoch = epochs[0]["step"] / epochs[0]["epoch"]
        train = [r for r in rows if "train_loss" in r]
        loss_ax.plot([r["step"] / steps_per_epoch for r in train],
                     [r["train_loss"] for r in train], label=f"fold {i}")  # fmt: skip
        val = [r for r in epochs if "val_uar" in r]
        uar_ax.plot([r["epoch"] for r in val], [r["val_uar"] for r in val], label=f"fold {i}")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    uar_ax.set(xlabel="epoch", ylabel="validation UAR", title="validation UAR (model selection)")
    for ax in (loss_ax, uar_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    io.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def git_state() -> dict[str, Any] | None:
    """The sejax checkout's commit and whether it had uncommitted changes (None outside git)."""
    root = Path(__file__).resolve().parents[2]  # the checkout holding the sejax package

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                 text=True, timeout=20)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}
