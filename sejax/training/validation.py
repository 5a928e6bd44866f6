"""Scoring a model on a split with the parallel eval step: what the loop selects checkpoints by.

`predict_split` runs the eval step over every example of a split once; `classification_metrics`
turns predictions into the scores every report of sejax shows (validation in the loop, the
test reports of `sejax.evaluation`, cross-validation, cross-corpus). SER papers report WA
(accuracy), UAR (mean per-class recall, sklearn's balanced accuracy) and macro-F1; RAVDESS's
neutral class is half the size of the others, so UAR != WA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from sklearn import metrics as skm

from sejax.data import input_pipeline
from sejax.training import distributed, parallel
from sejax.training.train_state import TrainState


def predict_split(
    par: parallel.Parallel,
    state: TrainState,
    shards: input_pipeline.Shards,
    indices: np.ndarray,
    norm: input_pipeline.Normalization,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """Logits, labels, losses and metadata indices of every example of a split, once each.

    With several processes each feeds its share of the split and all get every prediction
    back (the eval step gathers them; labels, indices and masks are gathered alongside).
    """
    logits, labels, losses, index = [], [], [], []
    for batch in shards.eval_batches(
        indices, norm, batch_size=batch_size,
        num_processes=jax.process_count(), process_index=jax.process_index(),
    ):  # fmt: skip
        out = par.eval_step(state, par.put_batch(batch))
        batch = distributed.allgather({k: batch[k] for k in ("mask", "label", "index")})
        keep = batch["mask"] > 0
        logits.append(np.asarray(out["logits"])[keep])
        losses.append(np.asarray(out["loss"])[keep])
        labels.append(batch["label"][keep])
        index.append(batch["index"][keep])
    return {
        "logits": np.concatenate(logits),
        "labels": np.concatenate(labels),
        "losses": np.concatenate(losses),
        "index": np.concatenate(index),
    }


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


def split_metrics(
    out: dict[str, np.ndarray], indices: np.ndarray, label_names: Sequence[str]
) -> dict[str, Any]:
    """The `classification_metrics` of one split's predictions (`predict_split`'s output),
    checked to cover every example of the split exactly once."""
    if len(out["index"]) != len(indices) or set(out["index"]) != set(indices.tolist()):
        raise AssertionError("evaluation did not see every example of the split exactly once")
    return classification_metrics(
        out["labels"], out["logits"].argmax(-1), label_names, out["losses"]
    )


def evaluate_split(
    par: parallel.Parallel,
    state: TrainState,
    shards: input_pipeline.Shards,
    indices: np.ndarray,
    norm: input_pipeline.Normalization,
    batch_size: int,
) -> dict[str, Any]:
    """The metrics of ``state`` on the examples ``indices`` of ``shards``."""
    out = predict_split(par, state, shards, indices, norm, batch_size)
    return split_metrics(out, indices, shards.label_names)
