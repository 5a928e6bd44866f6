"""The eval report of one split: per-example predictions, a JSON file and a confusion-matrix PNG.

The scores themselves (accuracy, UAR, macro-F1, per class) are
`sejax.training.validation.classification_metrics`, the ones the loop selects checkpoints by.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

from sejax import io
from sejax.training import distributed


def predictions_record(index: np.ndarray, labels: np.ndarray, logits: np.ndarray) -> dict:
    """Per-example predictions in metadata order: index, label, predicted class, softmax
    probabilities (5 decimals), as JSON lists."""
    order = np.argsort(index, kind="stable")
    logits = np.asarray(logits, np.float64)[order]
    return {
        "index": np.asarray(index)[order].astype(int).tolist(),
        "label": np.asarray(labels)[order].astype(int).tolist(),
        "pred": logits.argmax(-1).astype(int).tolist(),
        "probs": np.round(softmax(logits, axis=-1), 5).tolist(),
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
    io.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    return path


def write_split_report(report: dict[str, Any], eval_dir: Path, split: str) -> tuple[Path, Path]:
    """Writes ``<eval_dir>/<split>.json`` and ``<split>_confusion.png``; returns both paths.

    In a multi-process run every process computes the same report; only process 0 writes it.
    """
    json_path = eval_dir / f"{split}.json"
    png_path = eval_dir / f"{split}_confusion.png"
    if not distributed.is_main_process():
        return json_path, png_path
    eval_dir.mkdir(parents=True, exist_ok=True)
    io.write_json(json_path, report, indent=2)
    plot_confusion_matrix(
        report["confusion_matrix"], report["label_names"], png_path,
        title=f"{split}: accuracy {report['accuracy']:.3f}, UAR {report['uar']:.3f}",
    )  # fmt: skip
    return json_path, png_path
