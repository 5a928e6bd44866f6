"""The training loop: ``train(config, workdir)`` reads top to bottom.

Input (shards, actor split, normalisation) -> model, optimizer and train state -> restore the
latest checkpoint if the workdir has one -> epochs of data-parallel train steps with periodic
validation (`sejax.training.validation`) and checkpoints. The final evaluation of the best
checkpoint on each eval split is a layer above: `sejax.evaluation.evaluate.train_and_evaluate`
runs this loop, then evaluates the workdir it leaves, as ``sejax evaluate`` would later.
"""

from __future__ import annotations

import dataclasses
import itertools
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

from sejax import io
from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.data import input_pipeline, prepare, splits
from sejax.errors import CheckpointError, SejaxError
from sejax.training import augment, distributed, parallel, train_state, validation
from sejax.training.checkpoints import Checkpoints, selection_metrics
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
# The loop.


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What the loop knows when it ends: the training half of ``summary.json`` (``best_epoch``
    is the best validation epoch; the final evaluation names the epoch it evaluated)."""

    summary: dict[str, Any]
    steps_per_epoch: int


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> TrainResult:
    """Trains, resuming from ``workdir`` if it holds checkpoints; validates and checkpoints.

    Multi-process runs (``config.distributed``) run this same function in every process, with
    ``workdir`` on storage they all share: process 0 prepares data and writes the files,
    all of them train and checkpoint together.
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
        text = config_lib.to_json(config)
        io.write_atomic(workdir / "config.json", lambda tmp: tmp.write_text(text))

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
            if tc.precise_bn_batches > 0:  # inference statistics of these weights
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
                val = validation.evaluate_split(
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

    summary = {
        "workdir": str(workdir),
        "steps": step,
        "epochs": step // steps_per_epoch,
        "stopped_early": stopped_early,
        "best_epoch": best_epoch,
        "average_last_checkpoints": config.eval.average_last_checkpoints,
        "train_seconds": round(train_seconds, 1),
        "num_devices": par.num_devices,
        "num_processes": jax.process_count(),
        "parallel": tc.parallel,
        "skipped_steps": _skipped(state),  # non-finite updates skipped (train.on_non_finite)
        "leaking": split.leaking,
    }
    return TrainResult(summary, steps_per_epoch)


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
