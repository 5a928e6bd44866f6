"""Evaluating a trained workdir from its checkpoints alone, and ``train_and_evaluate``.

`evaluate` restores the best checkpoint (or a named one, or the last few as a snapshot
ensemble, ``eval.average_last_checkpoints``) from the run config its meta holds, predicts each
eval split with the parallel eval step and writes ``eval/<split>.json`` and the confusion PNG.
`train_and_evaluate` is the training loop (`sejax.training.train.train`) followed by that
evaluation of the workdir the loop left, and the run's ``summary.json``: the final reports of
a run are what ``sejax evaluate`` gives for it later, by construction.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from scipy.special import log_softmax, logsumexp

from sejax import io
from sejax.configs import loading as config_lib
from sejax.configs.validation import check_average_last
from sejax.data import input_pipeline
from sejax.data.splits import make_split  # `splits` names evaluate's argument
from sejax.errors import CheckpointError, ConfigError
from sejax.evaluation import metrics
from sejax.training import checkpoints, distributed, parallel, train, train_state, validation

# ------------------------------------------------------------------------------------------
# A trained checkpoint, restored from its meta.


@dataclasses.dataclass(frozen=True)
class Trained:
    """A restored checkpoint ready to predict: its run config and meta, state and steps."""

    workdir: Path
    step: int
    meta: dict[str, Any]
    config: ml_collections.ConfigDict
    par: parallel.Parallel
    state: train_state.TrainState
    norm: input_pipeline.Normalization


def load_trained(workdir: str | Path, checkpoint: str | int = "best") -> Trained:
    """Restores a checkpoint of ``workdir`` ('best', 'latest' or a step) from its meta alone."""
    workdir = Path(workdir).absolute()
    made: dict[str, Any] = {}

    def target(meta: dict[str, Any]) -> train_state.TrainState:
        """The run's state, abstract, laid out for the parallel steps its config names."""
        config = config_lib.from_dict(meta["config"])
        par = parallel.make_parallel(config.train)
        par.check_batch_size(config.eval.batch_size, "eval.batch_size")
        made.update(config=config, par=par)
        abstract = jax.eval_shape(
            lambda: train_state.create_train_state(
                config, meta["steps_per_epoch"], seed=0, bn_axis_name=parallel.AXIS
            )
        )
        return par.abstract_state(abstract)

    restored = checkpoints.restore(workdir, checkpoint, target=target)
    norm = input_pipeline.Normalization.from_json(restored.meta["normalization"])
    return Trained(workdir, int(restored.step), restored.meta, made["config"], made["par"],
                   restored.state, norm)  # fmt: skip


def last_checkpoints(workdir: str | Path, n: int) -> list[int]:
    """The steps of the last ``n`` checkpoints of ``workdir``, ascending; all ``n`` must exist."""
    with checkpoints.open_for_reading(workdir) as ckpts:
        steps = ckpts.all_steps()
    if len(steps) < n:
        raise CheckpointError(
            f"{Path(workdir) / 'checkpoints'} holds {len(steps)} checkpoint(s), fewer than the "
            f"{n} to average (eval.average_last_checkpoints); train with "
            f"train.keep_checkpoints >= {n}"
        )
    return steps[-n:]


def _shards_of(trained: Trained) -> input_pipeline.Shards:
    """The shards ``trained`` was trained on, checked to still hold the same features."""
    meta = trained.meta
    shards = input_pipeline.Shards(meta["shards"])
    if shards.metadata["fingerprint"] != meta["features_fingerprint"]:
        raise CheckpointError(
            f"the shards in {meta['shards']} no longer match the features this model was "
            "trained on; re-run `sejax prepare`"
        )
    return shards


def precise_batch_stats(trained: Trained, num_batches: int) -> train_state.TrainState:
    """``trained``'s state with its BatchNorm averages recomputed from ``num_batches``
    training batches of its run, in the order of the epoch that ended at its step: what
    ``train.precise_bn_batches`` computes at an epoch's end, after the fact (for runs trained
    with it off; for runs trained with it on and the same count it gives the saved values)."""
    config, meta = trained.config, trained.meta
    if num_batches < 1:
        raise ConfigError(f"precise BatchNorm needs >= 1 batch, got {num_batches}")
    shards = _shards_of(trained)
    split = make_split(shards.examples, config.data)
    epoch = max(trained.step // meta["steps_per_epoch"] - 1, 0)
    batches = shards.train_batches(
        split.indices["train"], trained.norm, batch_size=config.train.batch_size,
        seed=config.seed, epoch=epoch, shuffle_buffer=config.data.shuffle_buffer,
        drop_remainder=config.data.drop_remainder,
    )  # fmt: skip
    calibration = (trained.par.put_batch(b) for b in itertools.islice(batches, num_batches))
    return trained.par.precise_batch_stats(trained.state, calibration)


# ------------------------------------------------------------------------------------------
# Reports.


def split_report(
    out: dict[str, np.ndarray], indices: np.ndarray, label_names: list[str], predictions: bool
) -> dict[str, Any]:
    """The metrics of one split's predictions (`sejax.training.validation.predict_split`'s
    output); with ``predictions``, every example's probabilities too."""
    report = validation.split_metrics(out, indices, label_names)
    if predictions:  # per example, for pooling over folds (sejax.evaluation.cv) and later analysis
        report["predictions"] = metrics.predictions_record(
            out["index"], out["labels"], out["logits"]
        )
    return report


def mean_prediction(outs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several models' `predict_split` outputs on one split as one snapshot ensemble: the
    mean of their softmax probabilities, returned as log-probabilities in ``logits`` (their
    softmax is that mean), and the cross-entropy of that mean in ``losses``."""
    first = outs[0]
    if any(not np.array_equal(o["index"], first["index"]) for o in outs):
        raise AssertionError("the ensemble's members saw the split's examples in other orders")
    log_probs = log_softmax(np.stack([np.asarray(o["logits"], np.float64) for o in outs]), -1)
    mean = logsumexp(log_probs, axis=0) - np.log(len(outs))
    losses = -np.take_along_axis(mean, first["labels"][:, None].astype(int), axis=-1)[:, 0]
    return dict(first, logits=mean, losses=losses)


def evaluate(
    workdir: str | Path,
    splits: tuple[str, ...] = ("test",),
    checkpoint: str | int = "best",
    average_last: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluates a trained ``workdir`` on the given splits; writes eval/<split>.json.

    The model evaluated: the mean class probabilities of the last ``average_last``
    checkpoints when that is > 0 (None: the run's ``eval.average_last_checkpoints``), else
    the single ``checkpoint`` ('best' by validation UAR, 'latest', or a step).
    """
    trained = load_trained(workdir, checkpoint)
    config = trained.config
    if average_last is None:
        average_last = config.eval.average_last_checkpoints
    check_average_last(average_last, config.train.keep_checkpoints, "average_last")
    members = [trained]
    if average_last > 0:
        steps = last_checkpoints(workdir, average_last)
        members = [trained if step == trained.step else load_trained(workdir, step)
                   for step in steps]  # fmt: skip
    shards = _shards_of(trained)
    split = make_split(shards.examples, config.data)
    reports = {}
    for name in splits:
        if name not in split.indices:
            raise ConfigError(f"unknown split {name!r}; choose from {list(split.indices)}")
        indices = split.indices[name]
        if len(indices) == 0:
            continue
        outs = [validation.predict_split(m.par, m.state, shards, indices, m.norm,
                                         config.eval.batch_size) for m in members]  # fmt: skip
        out = outs[0] if len(outs) == 1 else mean_prediction(outs)
        report = split_report(out, indices, shards.label_names, predictions=True)
        report.update(split=name, step=members[-1].step, actors=list(split.actors[name]),
                      leaking=split.leaking)  # fmt: skip
        if average_last > 0:
            report["checkpoint_steps"] = [m.step for m in members]  # the snapshot ensemble
        json_path, png_path = metrics.write_split_report(report, trained.workdir / "eval", name)
        report["report_path"], report["confusion_png"] = str(json_path), str(png_path)
        reports[name] = report
    return reports


# ------------------------------------------------------------------------------------------
# A whole run.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` if it holds checkpoints), evaluates, returns a summary.

    The loop (`sejax.training.train.train`) validates, checkpoints and keeps the best
    checkpoint; then `evaluate` scores it (or the mean of the last few,
    ``eval.average_last_checkpoints``) on each of ``eval.splits``, and ``summary.json``
    records both halves. Multi-process runs (``config.distributed``) run this same function
    in every process, with ``workdir`` on storage they all share: process 0 prepares data
    and writes the files, all of them train, checkpoint and evaluate together.
    """
    result = train.train(config, workdir)
    summary = dict(result.summary)
    reports = evaluate(summary["workdir"], splits=tuple(config.eval.splits))
    # The epoch of the checkpoint evaluated (the best by validation; of equals, the earliest),
    # or of the last checkpoint of a snapshot ensemble (eval.average_last_checkpoints).
    summary["best_epoch"] = _epoch_of(reports, result.steps_per_epoch, summary["best_epoch"])
    for name, report in reports.items():
        summary[name] = {
            k: report[k] for k in ("accuracy", "uar", "macro_f1", "loss", "num_examples")
        }
    if distributed.is_main_process():
        io.write_json(Path(summary["workdir"]) / "summary.json", summary, indent=2)
    return summary


def _epoch_of(reports: dict[str, dict[str, Any]], steps_per_epoch: int, fallback: int) -> int:
    steps = [r["step"] for r in reports.values() if "step" in r]
    return -(-steps[0] // steps_per_epoch) if steps else fallback
