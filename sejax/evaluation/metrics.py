"""Classification metrics (scikit-learn) and the eval report: JSON plus a confusion-matrix PNG.

SER papers report WA (accuracy), UAR (mean per-class recall, sklearn's balanced accuracy) and
macro-F1; RAVDESS's neutral class is half the size of the others, so UAR != WA.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import metrics as skm


def classification_metrics(
    labels: np.ndarray,
    predictions: np.ndarray,
    label_names: Sequence[str],
    losses: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, UAR, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Classes absent from ``labels`` are left out of UAR and macro-F1 (they have no recall);
    they still appear in ``per_class`` (support 0) and in the confusion matrix.
    """
    labels = np.asarray(labels, np.int64)
    predictions = np.asarray(predictions, np.int64)
    all_classes = np.arange(len(label_names))
    present = np.unique(labels)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        labels, predictions, labels=all_classes, zero_division=0
    )
    report: dict[str, Any] = {
        "num_examples": len(labels),
        "accuracy": float(skm.accuracy_score(labels, predictions)),
        "uar": float(skm.recall_score(labels, predictions, labels=present, average="macro",
                                      zero_division=0)),
        "macro_f1": float(skm.f1_score(labels, predictions, labels=present, average="macro",
                                       zero_division=0)),
        "loss": float(np.mean(losses)) if losses is not None and len(losses) else None,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": skm.confusion_matrix(labels, predictions, labels=all_classes).tolist(),
        "label_names": list(label_names),
    }  # fmt: skip
    return report


def predictions_record(index: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> dict:
    """Per-example predictions in metadata order: index, label, predicted class, softmax
    probabilities (5 decimals), as JSON lists."""
    order = np.argsort(index, kind="stable")
    logits = np.asarray(logits, np.float64)[order]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return {
        "index": np.asarray(index)[order].astype(int).tolist(),
        "label": np.asarray(labels)[order].astype(int).tolist(),
        "pred": logits.argmax(-1).astype(int).tolist(),
        "probs": np.round(probs, 5).tolist(),
    }


def plot_confusion_matrix(
    confusion: Sequence[Sequence[int]], label_names: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Row-normalised confusion matrix (recall per true class) with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=8)  # fmt: skip
    fig.colorbar(image, ax=ax, label="fraction of true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def write_report(report: dict[str, Any], eval_dir: Path, split: str) -> tuple[Path, Path]:
    """Writes ``<eval_dir>/<split>.json`` and ``<split>_confusion.png``; returns both paths.

    In a multi-process run every process computes the same report; only process 0 writes it.
    """
    json_path = eval_dir / f"{split}.json"
    from sejax.training import distributed

    if not distributed.is_main_process():
        return json_path, eval_dir / f"{split}_confusion.png"
    eval_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(json_path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
    png_path = plot_confusion_matrix(
        report["confusion_matrix"], report["label_names"], eval_dir / f"{split}_confusion.png",
        title=f"{split}: accuracy {report['accuracy']:.3f}, UAR {report['uar']:.3f}",
    )  # fmt: skip
    return json_path, png_path


def write_atomic(path: Path, write) -> None:
    """Writes through a temporary file and renames, so a crash never leaves a torn file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
