"""Cross-corpus evaluation: a trained model on another corpus, over the labels both share.

A model trained on RAVDESS predicts RAVDESS's eight labels; EmoDB has seven, one of them
(boredom) unknown to the model, and lacks calm and surprised. Scoring such a pair fairly
means scoring only the shared labels: files whose label has no model counterpart are left
out, and the model's choice is restricted to the shared labels (the argmax and the loss use
only those logits), so the confusion matrix is square over the shared labels and UAR means
what it means within one corpus. What was left out is listed in the report.

The corpus is prepared with the model's own features config (from the checkpoint's meta)
into a cache inside the workdir, keyed by the corpus, its path and the label mapping, so a
second evaluation reuses it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import log_softmax

from sejax.data import features, input_pipeline, prepare
from sejax.data import shards as shards_lib
from sejax.errors import ConfigError, DataError
from sejax.evaluation import metrics
from sejax.evaluation.evaluate import Trained, load_trained
from sejax.training.validation import classification_metrics, predict_split


def _cache_dir(
    workdir: Path, data: Path, corpus: str, labels: Sequence[str], label_map: Sequence[str],
    fingerprint: str,
) -> Path:  # fmt: skip
    key = json.dumps([str(data), corpus, list(labels), list(label_map), fingerprint])
    return workdir / "cross" / f"{corpus}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def _prepared(
    trained: Trained,
    data: Path,
    corpus: str,
    *,
    label_map: Sequence[str],
    prepared_dir: Path | None,
    on_bad_name: str,
) -> Path:
    """A shard folder of ``data`` with the model's features and labels (cached)."""
    config = trained.config
    labels = list(trained.meta["label_names"])
    if (data / shards_lib.METADATA_FILE).is_file():  # already prepared shards
        metadata = shards_lib.load_metadata(data)
        shards_lib.check_compatible(metadata, config.features, where=str(data))
        if list(metadata["label_names"]) != labels:
            raise DataError(
                f"the shards in {data} have labels {metadata['label_names']}, the model "
                f"predicts {labels}; pass the raw corpus instead so it is prepared for this model"
            )
        return data
    out = prepared_dir or _cache_dir(
        trained.workdir, data, corpus, labels, label_map, features.fingerprint(config.features)
    )
    prepare.prepare(
        data,
        out,
        config.features,
        corpus=corpus,
        on_bad_name=on_bad_name,
        num_workers=int(config.data.num_workers),
        examples_per_shard=int(config.data.examples_per_shard),
        labels=labels,
        label_map=label_map,
        unmapped="drop",
    )
    return out


def restricted_predictions(
    logits: np.ndarray, labels: np.ndarray, shared: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true, predicted, loss) over the ``shared`` model classes only.

    ``labels`` are model class indices, all in ``shared``; the results index ``shared``.
    The loss is the cross-entropy of the softmax over the shared logits.
    """
    position = {int(c): i for i, c in enumerate(shared)}
    y = np.array([position[int(label)] for label in labels], np.int64)
    sub = logits[:, shared].astype(np.float64)
    losses = -log_softmax(sub, axis=1)[np.arange(len(y)), y]
    return y, sub.argmax(axis=1), losses


def evaluate_corpus(
    workdir: str | Path,
    data: str | Path,
    corpus: str,
    *,
    checkpoint: str = "best",
    prepared_dir: str | Path | None = None,
    label_map: Sequence[str] = (),
    name: str | None = None,
    on_bad_name: str | None = None,
) -> dict[str, Any]:
    """Evaluates ``workdir``'s model on the ``corpus`` at ``data`` over the shared labels.

    ``label_map`` entries extend the training config's ``data.label_map`` (e.g. IEMOCAP's
    ``"exc=happy"``). Writes ``eval/<name>.json`` and ``<name>_confusion.png`` (``name``
    defaults to ``cross_<corpus>``) with the usual metrics plus ``shared_labels`` and
    ``dropped_labels``; returns the report.
    """
    name = name or f"cross_{corpus}"
    if not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' or '-' only")
    data = Path(data).expanduser()
    if not data.exists():
        raise DataError(f"--data {data}: no such file or folder")
    data = data.resolve()
    trained = load_trained(workdir, checkpoint)
    config = trained.config
    model_labels = list(trained.meta["label_names"])
    full_map = (*tuple(config.data.label_map), *label_map)
    shards_dir = _prepared(
        trained, data, corpus, label_map=full_map,
        prepared_dir=Path(prepared_dir).absolute() if prepared_dir else None,
        on_bad_name=on_bad_name or config.data.on_bad_name,
    )  # fmt: skip
    shards = input_pipeline.Shards(shards_dir)
    indices = np.arange(len(shards.examples))
    out = predict_split(trained.par, trained.state, shards, indices, trained.norm,
                        config.eval.batch_size)  # fmt: skip
    if sorted(out["index"].tolist()) != indices.tolist():
        raise AssertionError("evaluation did not see every example exactly once")

    present = set(out["labels"].tolist())
    shared = np.array([i for i in range(len(model_labels)) if i in present], np.int64)
    shared_names = [model_labels[i] for i in shared]
    y, pred, losses = restricted_predictions(out["logits"], out["labels"], shared)
    report = classification_metrics(y, pred, shared_names, losses)
    dropped_corpus = {
        f"{c['corpus']}:{label}" if len(shards.metadata.get("corpora", [])) > 1 else label: n
        for c in shards.metadata.get("corpora", [])
        for label, n in c["dropped"].items()
    }
    report.update(
        split=name,
        step=trained.step,
        actors=sorted({int(e["actor"]) for e in shards.examples}),
        corpus=corpus,
        data=str(data),
        prepared_dir=str(shards_dir),
        model_label_names=model_labels,
        shared_labels=shared_names,
        dropped_labels={
            "corpus_labels_without_model_label": dropped_corpus,
            "model_labels_absent_from_corpus": [x for x in model_labels if x not in shared_names],
        },
        accuracy_all_model_labels=float(np.mean(out["logits"].argmax(-1) == out["labels"])),
    )
    json_path, png_path = metrics.write_split_report(report, trained.workdir / "eval", name)
    report["report_path"], report["confusion_png"] = str(json_path), str(png_path)
    return report
