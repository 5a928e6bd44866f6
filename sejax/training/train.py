"""Training and evaluation loop: ``train_and_evaluate(config, workdir)`` reads top to bottom.

Input (shards, actor split, normalisation) -> model, optimizer and train state -> restore the
latest checkpoint if the workdir has one -> epochs of data-parallel train steps with periodic
validation and checkpoints -> final evaluation of the best checkpoint (or the mean of the last
few, ``eval.average_last_checkpoints``) on each eval split.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sejax.configs import loading as config_lib
from sejax.configs.validation import check_average_last, validate
from sejax.data import input_pipeline, prepare, splits
from sejax.errors import CheckpointError, ConfigError, SejaxError
from sejax.evaluation import metrics as evaluation
from sejax.training import augment, distributed, parallel, train_state
from sejax.training.checkpoints import Checkpoints, open_for_reading, selection_metrics
from sejax.training.metric_writers import create_writer
from sejax.training.preemption import Preempted, StopSignals

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------
# Evaluation of one split with the parallel eval step.


def predict_split(
    par: parallel.Parallel,
    state: train_state.TrainState,
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


def evaluate_split(
    par, state, shards, indices, norm, batch_size, predictions: bool = False
) -> dict[str, Any]:
    out = predict_split(par, state, shards, indices, norm, batch_size)
    return split_report(out, indices, shards.label_names, predictions)


def split_report(
    out: dict[str, np.ndarray], indices: np.ndarray, label_names: list[str], predictions: bool
) -> dict[str, Any]:
    """The metrics of one split's predictions (`predict_split`'s output); with
    ``predictions``, every example's probabilities too."""
    if len(out["index"]) != len(indices) or set(out["index"]) != set(indices.tolist()):
        raise AssertionError("evaluation did not see every example of the split exactly once")
    report = evaluation.classification_metrics(
        out["labels"], out["logits"].argmax(-1), label_names, out["losses"]
    )
    if predictions:  # per example, for pooling over folds (sejax.evaluation.cv) and later analysis
        report["predictions"] = evaluation.predictions_record(
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
    from scipy.special import log_softmax, logsumexp  # scipy comes with scikit-learn

    log_probs = log_softmax(np.stack([np.asarray(o["logits"], np.float64) for o in outs]), -1)
    mean = logsumexp(log_probs, axis=0) - np.log(len(outs))
    losses = -np.take_along_axis(mean, first["labels"][:, None].astype(int), axis=-1)[:, 0]
    return dict(first, logits=mean, losses=losses)


# ------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains (resuming from ``workdir`` if it holds checkpoints), evaluates, returns a summary.

    Multi-process runs (``config.distributed``) run this same function in every process, with
    ``workdir`` on storage they all share: process 0 prepares data and writes the files,
    all of them train, checkpoint and evaluate together.
    """
    validate(config)
    distributed.initialize(config)  # before anything touches a device
    main = distributed.is_main_process()
    if not main:
        console.quiet = True  # process 0 reports for everyone
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    tc = config.train
    procs = {"num_processes": jax.process_count(), "process_index": jax.process_index()}
    # The checks that need the devices but no data fail before any data is prepared.
    parallel.make_parallel(tc).check_batch_size(config.eval.batch_size, "eval.batch_size")

    # Input: shards, actor-disjoint split, normalisation from the training actors.
    shards_dir = distributed.main_process_first(
        lambda: prepare.ensure_shards(config, workdir), "prepare the shards"
    )
    shards = input_pipeline.Shards(shards_dir)
    split = splits.make_split(shards.examples, config.data)
    if main:
        splits.write_split(workdir / "split.json", split, shards.examples)
    if split.leaking:
        console.print(f"[bold red]WARNING: leaking split[/] {LEAKING_NOTE}")
    norm = shards.normalization(split.indices["train"], config.data.normalization)
    steps_per_epoch = input_pipeline.steps_per_epoch(
        len(split.indices["train"]), tc.batch_size, config.data.drop_remainder
    )
    total_steps = steps_per_epoch * tc.num_epochs

    # Model, optimizer, parallel steps, train state.
    train_labels = [int(shards.examples[i]["label"]) for i in split.indices["train"]]
    counts = np.bincount(train_labels, minlength=len(shards.label_names))
    # Augmentation and loss options; None (the reference step) unless the config asks.
    recipe = augment.from_config(config, band_std=norm.std, class_counts=counts)
    par = parallel.make_parallel(tc, recipe=recipe)
    par.check_batch_size(config.eval.batch_size, "eval.batch_size")
    state = train_state.create_train_state(
        config, steps_per_epoch, seed=config.seed, bn_axis_name=parallel.AXIS
    )
    meta = {
        "config": config.to_dict(),
        "label_names": shards.label_names,
        "normalization": norm.to_json(),
        "split": split.to_json(),
        "shards": str(shards_dir),
        "features_fingerprint": shards.metadata["fingerprint"],
        "steps_per_epoch": steps_per_epoch,
    }

    # Restore: re-running with the same workdir continues from the latest complete checkpoint,
    # with the step, optimizer state, dropout key and data position of that checkpoint.
    ckpts = Checkpoints(workdir / "checkpoints", keep=tc.keep_checkpoints)
    # The best validation score so far (train.selection_metric) and its epoch.
    best_score, best_epoch, finished = float("-inf"), -1, False
    latest = ckpts.latest_step()
    if latest is not None:
        state, saved = ckpts.restore(latest, par.abstract_state(state))
        if saved.get("features_fingerprint") != meta["features_fingerprint"]:
            raise CheckpointError(
                f"{workdir} was trained on features {saved.get('features_fingerprint')}, "
                f"this run's are {meta['features_fingerprint']}: use a new --workdir"
            )
        # Runs saved before train.selection_metric existed selected on UAR.
        best_score = saved.get("best_val_score", saved.get("best_val_uar", best_score))
        best_epoch = saved.get("best_epoch", -1)
        finished = bool(saved.get("stopped_early", False))  # an early stop stays stopped
        state = train_state.with_non_finite_policy(state, tc.on_non_finite)
        console.print(f"Resuming from step {latest} in {ckpts.directory}")
    state = par.put_state(state)
    start_step = int(jax.device_get(par.get_state(state).step))
    writer = create_writer(workdir, enabled=main)
    if start_step == 0:
        writer.write_hparams({k: str(v) for k, v in config_lib.flatten(config.to_dict()).items()})
    if main:
        (workdir / "config.json").write_text(config_lib.to_json(config))

    def save(step: int, state: train_state.TrainState, epoch: int, **extra: Any) -> None:
        """Checkpoints a finite state only: the latest checkpoint is always a good one."""
        state = par.get_state(state)
        if not train_state.is_finite(state):
            raise _non_finite(f"the state after step {step} holds NaN or Inf", ckpts)
        metrics = extra.pop("metrics", None)
        meta_now = dict(meta, epoch=epoch, best_val_score=best_score, best_epoch=best_epoch,
                        **extra)  # fmt: skip
        ckpts.save(step, state, meta_now, metrics=metrics)

    # Input: the tf.data pipeline over the shards, or (data.device_resident) the whole
    # normalised training split copied to the devices once, each batch gathered there.
    resident = None
    if config.data.device_resident:
        resident = par.put_resident(shards.arrays(split.indices["train"], norm))

    def train_batches(epoch: int, skip_batches: int) -> Iterator[dict[str, jax.Array]]:
        if resident is not None:
            rows = input_pipeline.epoch_order(
                len(split.indices["train"]), tc.batch_size, seed=config.seed, epoch=epoch,
                drop_remainder=config.data.drop_remainder,
            )  # fmt: skip
            for batch_rows in rows[skip_batches:]:
                yield par.resident_batch(resident, batch_rows)
            return
        batches = shards.train_batches(
            split.indices["train"], norm, batch_size=tc.batch_size, seed=config.seed,
            epoch=epoch, shuffle_buffer=config.data.shuffle_buffer,
            prefetch=config.data.prefetch, skip_batches=skip_batches,
            drop_remainder=config.data.drop_remainder, **procs,
        )  # fmt: skip
        for batch in batches:
            yield par.put_batch(batch)

    step = start_step
    stopped_early = finished
    skip = tc.on_non_finite == "skip"
    first_epoch = tc.num_epochs if finished else start_step // steps_per_epoch
    with _progress() as progress, StopSignals() as stop:
        task = progress.add_task("train", total=total_steps, completed=start_step, status="")
        for epoch in range(first_epoch, tc.num_epochs):
            pending = []  # device-side metrics of the steps not yet logged
            epoch_start, skipped_before = step, _skipped(state)
            for batch in train_batches(epoch, skip_batches=step - epoch * steps_per_epoch):
                state, metrics = par.train_step(state, batch)
                step += 1
                pending.append(metrics)
                if step % tc.log_every_steps == 0 or step == total_steps:
                    scalars = _mean(_check_finite(pending, step, ckpts, skip=skip))
                    writer.write_scalars(step, {f"train_{k}": v for k, v in scalars.items()})
                    pending = []
                    progress.update(task, status=f"loss {scalars['loss']:.3f}")
                progress.update(task, completed=step)
                if stop.signum is not None:
                    break
            _check_finite(pending, step, ckpts, skip=skip)
            epoch_done = epoch + 1
            if stop.signum is not None and step < epoch_done * steps_per_epoch:
                # Preempted mid-epoch: checkpoint this step, then stop. (At an epoch's end
                # the epoch is finished first, below, so its validation is not lost.)
                save(step, state, epoch)
                ckpts.close()
                writer.close()
                raise Preempted(stop.signum, step, workdir)
            last = epoch_done == tc.num_epochs
            if tc.get("precise_bn_batches", 0) > 0:  # inference statistics of these weights
                calibration = itertools.islice(train_batches(epoch, 0), tc.precise_bn_batches)
                state = par.precise_batch_stats(state, calibration)
            scalars = {"epoch": epoch_done}
            if skip:
                skipped = _skipped(state) - skipped_before
                scalars["train_skipped_steps"] = _skipped(state)
                if skipped:
                    console.print(f"epoch {epoch_done}: skipped {skipped} non-finite update(s)")
                if skipped and skipped == step - epoch_start:
                    raise _non_finite(f"every update of epoch {epoch_done} was non-finite", ckpts)
            has_val = len(split.indices["validation"]) > 0
            if has_val and (epoch_done % tc.eval_every_epochs == 0 or last):
                val = evaluate_split(
                    par, state, shards, split.indices["validation"], norm, config.eval.batch_size
                )
                scalars.update(
                    {f"val_{k}": val[k] for k in ("loss", "accuracy", "uar", "macro_f1")}
                )
                if val[tc.selection_metric] > best_score:  # strictly: the earliest of equals
                    best_score, best_epoch = val[tc.selection_metric], epoch_done
                console.print(
                    f"epoch {epoch_done}/{tc.num_epochs}  step {step}  val loss {val['loss']:.3f}  "
                    f"acc {val['accuracy']:.3f}  UAR {val['uar']:.3f}"
                )
            writer.write_scalars(step, scalars)
            patience = tc.early_stopping_patience
            stopped_early = patience > 0 and best_epoch >= 0 and epoch_done - best_epoch >= patience
            preempted = stop.signum is not None
            if epoch_done % tc.checkpoint_every_epochs == 0 or last or stopped_early or preempted:
                ckpt_metrics = selection_metrics(val, tc.selection_metric, epoch_done) if (
                    "val_uar" in scalars) else None  # fmt: skip
                save(step, state, epoch_done, stopped_early=stopped_early, metrics=ckpt_metrics)
            if preempted:
                ckpts.close()
                writer.close()
                raise Preempted(stop.signum, step, workdir)
            if stopped_early:
                console.print(
                    f"early stop: no validation {tc.selection_metric} gain for {patience} epochs"
                )
                break
    ckpts.close()
    writer.close()
    train_seconds = time.time() - started

    reports = evaluate(workdir, splits=tuple(config.eval.splits))
    summary = {
        "workdir": str(workdir),
        "steps": step,
        "epochs": step // steps_per_epoch,
        "stopped_early": stopped_early,
        # The epoch of the checkpoint evaluated (the best by validation UAR; on a tie, the
        # later), or of the last checkpoint of a snapshot ensemble (eval.average_last_checkpoints).
        "best_epoch": _epoch_of(reports, steps_per_epoch, best_epoch),
        "average_last_checkpoints": config.eval.get("average_last_checkpoints", 0),
        "train_seconds": round(train_seconds, 1),
        "num_devices": par.num_devices,
        "num_processes": jax.process_count(),
        "parallel": tc.parallel,
        "skipped_steps": _skipped(state),  # non-finite updates skipped (train.on_non_finite)
        "leaking": split.leaking,
    }
    for name, report in reports.items():
        summary[name] = {
            k: report[k] for k in ("accuracy", "uar", "macro_f1", "loss", "num_examples")
        }
    if main:
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


# ------------------------------------------------------------------------------------------
# Evaluation of a trained workdir, without the training config.


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
    ckpts = open_for_reading(workdir)
    try:
        step = _checkpoint_step(ckpts, checkpoint)
        meta = ckpts.restore_meta(step)
        config = config_lib.from_dict(meta["config"])
        par = parallel.make_parallel(config.train)
        par.check_batch_size(config.eval.batch_size, "eval.batch_size")
        abstract = jax.eval_shape(
            lambda: train_state.create_train_state(
                config, meta["steps_per_epoch"], seed=0, bn_axis_name=parallel.AXIS
            )
        )
        state, _ = ckpts.restore(step, par.abstract_state(abstract))
    finally:
        ckpts.close()
    norm = input_pipeline.Normalization.from_json(meta["normalization"])
    return Trained(workdir, int(step), meta, config, par, state, norm)


def _checkpoint_step(ckpts: Checkpoints, checkpoint: str | int) -> int:
    if checkpoint == "best":
        return ckpts.best_step()
    if checkpoint == "latest":
        return ckpts.latest_step()
    if isinstance(checkpoint, int) and checkpoint in ckpts.all_steps():
        return checkpoint
    raise CheckpointError(
        f"{ckpts.directory} has no checkpoint {checkpoint!r}: choose 'best', 'latest' or one of "
        f"the steps {ckpts.all_steps()}"
    )


def last_checkpoints(workdir: str | Path, n: int) -> list[int]:
    """The steps of the last ``n`` checkpoints of ``workdir``, ascending; all ``n`` must exist."""
    ckpts = open_for_reading(workdir)
    try:
        steps = ckpts.all_steps()
    finally:
        ckpts.close()
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
    split = splits.make_split(shards.examples, config.data)
    epoch = max(trained.step // meta["steps_per_epoch"] - 1, 0)
    batches = shards.train_batches(
        split.indices["train"], trained.norm, batch_size=config.train.batch_size,
        seed=config.seed, epoch=epoch, shuffle_buffer=config.data.shuffle_buffer,
        drop_remainder=config.data.get("drop_remainder", True),
    )  # fmt: skip
    calibration = (trained.par.put_batch(b) for b in itertools.islice(batches, num_batches))
    return trained.par.precise_batch_stats(trained.state, calibration)


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
        average_last = config.eval.get("average_last_checkpoints", 0)
    check_average_last(average_last, config.train.keep_checkpoints, "average_last")
    members = [trained]
    if average_last > 0:
        steps = last_checkpoints(workdir, average_last)
        members = [trained if step == trained.step else load_trained(workdir, step)
                   for step in steps]  # fmt: skip
    shards = _shards_of(trained)
    split = splits.make_split(shards.examples, config.data)
    reports = {}
    for name in splits:
        if name not in split.indices:
            raise ConfigError(f"unknown split {name!r}; choose from {list(split.indices)}")
        indices = split.indices[name]
        if len(indices) == 0:
            continue
        outs = [predict_split(m.par, m.state, shards, indices, m.norm, config.eval.batch_size)
                for m in members]  # fmt: skip
        out = outs[0] if len(outs) == 1 else mean_prediction(outs)
        report = split_report(out, indices, shards.label_names, predictions=True)
        report.update(split=name, step=members[-1].step, actors=list(split.actors[name]),
                      leaking=split.leaking)  # fmt: skip
        if average_last > 0:
            report["checkpoint_steps"] = [m.step for m in members]  # the snapshot ensemble
        json_path, png_path = evaluation.write_report(report, trained.workdir / "eval", name)
        report["report_path"], report["confusion_png"] = str(json_path), str(png_path)
        reports[name] = report
    return reports


def _check_finite(
    pending: list[dict[str, Any]], step: int, ckpts: Checkpoints, *, skip: bool = False
) -> list:
    """Fetches the pending metrics; raises (naming the first bad step) if a loss or gradient
    norm is NaN or Inf, unless non-finite updates are skipped (``train.on_non_finite``).

    Called before every log and every checkpoint, so a diverged state is never saved: the
    latest checkpoint stays the last good one.
    """
    host = jax.device_get(pending)
    if skip:
        return host
    for offset, metrics in enumerate(host):
        if not all(np.isfinite(metrics[k]) for k in ("loss", "grad_norm") if k in metrics):
            bad = step - len(host) + offset + 1
            raise _non_finite(
                f"non-finite training loss or gradient at step {bad} (loss {metrics['loss']}, "
                f"grad_norm {metrics.get('grad_norm')})",
                ckpts,
            )
    return host


def _non_finite(what: str, ckpts: Checkpoints) -> NonFiniteError:
    """The error that stops a diverged run, saying which checkpoint is left to resume from."""
    ckpts.close()  # lets pending async saves (of good states) finish
    latest = ckpts.latest_step()
    kept = f"checkpoint step {latest}" if latest is not None else "no checkpoint yet"
    return NonFiniteError(
        f"{what}; nothing from it was saved (latest: {kept}). Lower train.learning_rate, set "
        "train.grad_clip_norm, or set train.on_non_finite=skip to skip such updates."
    )


def _skipped(state: train_state.TrainState) -> int:
    """Updates skipped so far under ``train.on_non_finite='skip'`` (0 otherwise)."""
    if state.skipped_steps is None:
        return 0
    return int(np.asarray(state.skipped_steps.addressable_data(0)))  # replicated


def _epoch_of(reports: dict[str, dict[str, Any]], steps_per_epoch: int, fallback: int) -> int:
    steps = [r["step"] for r in reports.values() if "step" in r]
    return -(-steps[0] // steps_per_epoch) if steps else fallback


LEAKING_NOTE = (
    "(data.allow_leakage=True): a speaker or an identical recording is on both sides, so the "
    "scores overstate accuracy on unseen speakers; every report of this run says so."
)


class NonFiniteError(SejaxError):
    """Training diverged: a loss or gradient norm became NaN or Inf."""


def _mean(host_metrics: list[dict[str, Any]]) -> dict[str, float]:
    """Means over the steps; skipped (non-finite) values are left out, NaN if all are."""

    def mean(values: list[float]) -> float:
        finite = [v for v in values if np.isfinite(v)]
        return float(np.mean(finite)) if finite else float("nan")

    return {k: mean([float(m[k]) for m in host_metrics]) for k in host_metrics[0]}


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `sejax train` command")
