"""Orbax checkpoints: the train state plus everything needed to use the model without its config.

Each checkpoint holds two items: ``state`` (the TrainState pytree) and ``meta`` (JSON: the full
run config, the label names, the normalisation statistics, the split and the epoch). Saving is
asynchronous; Orbax writes into a temporary folder and renames it when complete, so a
half-written checkpoint (a killed process, a full disk) is never listed, never restored, and
its leftovers are removed when the folder is next opened for writing. A save that fails
raises `CheckpointError` saying so, and leaves the earlier checkpoints as they were. The latest
``keep`` checkpoints are kept, and the best by validation (``train.selection_metric``) besides.

`restore` is the one way a checkpoint is read back, by the resumed loop, evaluation,
`sejax.load` and export alike: 'best', 'latest' or a step; the whole state, or only the
fields inference needs; and checkpoints written before the state gained a field restore too.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from sejax.errors import CheckpointError

BEST_METRIC = "val_uar"  # what checkpoints written before train.selection_metric ranked by
SELECTION_METRICS = ("uar", "accuracy")  # train.selection_metric: validation metrics to rank by


def selection_metrics(val_report: dict[str, Any], metric: str, epoch: int) -> dict[str, float]:
    """The metrics a checkpoint is saved with: its validation UAR and accuracy, the score
    that ranks it (``val_<metric>``) and its epoch, which breaks ties in favour of the earlier
    checkpoint, as the loop's early stopping and Keras's ``restore_best_weights`` do."""
    return {
        "val_uar": float(val_report["uar"]),
        "val_accuracy": float(val_report["accuracy"]),
        "selection": float(val_report[metric]),
        "epoch": float(epoch),
    }


def _rank(metrics: dict[str, float]) -> tuple[float, float]:
    """Sort key of a checkpoint's metrics, best last. Checkpoints saved before the selection
    score existed rank by validation UAR and, among equals, the later wins (as then)."""
    return metrics.get("selection", metrics[BEST_METRIC]), -metrics.get("epoch", float("-inf"))


@dataclasses.dataclass(frozen=True)
class Restored:
    """A checkpoint read back: its step, the state (or the fields asked for) and its meta."""

    step: int
    state: Any
    meta: dict[str, Any]


# What a checkpoint is restored onto: the abstract state (arrays or ``jax.ShapeDtypeStruct``s),
# or a function of the checkpoint's meta that builds it (from the run config it holds).
Target = Any | Callable[[dict[str, Any]], Any]


class Checkpoints:
    """A thin, explicit wrapper of ``ocp.CheckpointManager`` for sejax's two-item checkpoints."""

    def __init__(self, directory: str | Path, *, keep: int = 2, read_only: bool = False):
        self.directory = Path(directory).absolute()
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(
                get_metric_fn=_rank, n=1, keep_checkpoints_without_metrics=False
            ),
        ])  # fmt: skip
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            # Setting best_fn makes Orbax persist each step's metrics, so best_step() survives
            # a restart; which checkpoints are kept is decided by the policy above.
            best_fn=_rank,
            best_mode="max",
            keep_checkpoints_without_metrics=True,
            enable_async_checkpointing=not read_only,
            read_only=read_only,
            create=not read_only,
            cleanup_tmp_directories=not read_only,  # what a killed save left behind
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Every complete checkpoint's step, ascending."""
        return sorted(self._manager.all_steps())

    def best_step(self) -> int | None:
        """The step with the best validation score (``train.selection_metric``; the earliest
        of equals), or the latest when none recorded one."""
        return self._manager.best_step() or self.latest_step()

    def step(self, checkpoint: str | int) -> int:
        """The step of ``checkpoint``: 'best' (`best_step`), 'latest' or a saved step."""
        steps = self.all_steps()
        if checkpoint == "best":
            step = self.best_step()
        elif checkpoint == "latest":
            step = self.latest_step()
        elif isinstance(checkpoint, int) and checkpoint in steps:
            return checkpoint
        else:
            raise CheckpointError(
                f"{self.directory} has no checkpoint {checkpoint!r}: choose 'best', 'latest' or "
                f"one of the steps {steps}"
            )
        if step is None:
            raise CheckpointError(f"{self.directory} holds no complete checkpoint")
        return step

    def save(
        self, step: int, state: Any, meta: dict[str, Any], metrics: dict[str, float] | None = None
    ) -> None:
        """Starts writing ``step`` (asynchronously); `wait` or `close` report its failure."""
        with self._write_errors(f"checkpoint {step}"):
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
                ),
                metrics=metrics,
            )

    @contextlib.contextmanager
    def _write_errors(self, what: str) -> Iterator[None]:
        """A failed write (disk full, read-only folder, I/O error) as a `CheckpointError`."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as e:
            complete = sorted(int(p.name) for p in self.directory.glob("*") if p.name.isdigit())
            kept = f"step {complete[-1]}" if complete else "none yet"
            raise CheckpointError(
                f"could not write {what} in {self.directory}: {type(e).__name__}: {e}. "
                f"Disk full or read-only? Earlier checkpoints are untouched (latest complete: "
                f"{kept}); free space or fix permissions, then run the same command to resume."
            ) from e

    def restore(
        self, step: int, target: Target, *, partial: bool = False
    ) -> tuple[Any, dict[str, Any]]:
        """Restores ``step`` onto the shapes, dtypes and shardings of ``target`` (see `Target`;
        a function of the meta is called before any array is read, so a bad meta fails first).

        ``partial``: ``target`` is a dict of some of the state's fields (inference's
        ``params``, or ``ema_params``, and ``batch_stats``): only those are read, so the
        optimizer state never matters. Otherwise the whole state is restored; a checkpoint
        that lacks fields this state leaves empty (written before they existed) restores too.
        """
        if callable(target):
            target = target(self.restore_meta(step))
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        if partial:
            item = ocp.args.PyTreeRestore(
                item=abstract,
                restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                partial_restore=True,
            )
        else:
            item = ocp.args.StandardRestore(abstract)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(state=item, meta=ocp.args.JsonRestore())
            )
        except (ValueError, KeyError, TypeError) as e:
            if partial:
                raise self._mismatch(step, e) from e
            return self._restore_without_new_fields(step, abstract, e)
        state = dict(restored.state) if partial else restored.state
        return state, dict(restored.meta)

    def _mismatch(self, step: int, error: Exception) -> CheckpointError:
        return CheckpointError(
            f"checkpoint {self.directory / str(step)} does not match this run's model: {error}"
        )

    def _restore_without_new_fields(
        self, step: int, abstract: Any, error: Exception
    ) -> tuple[Any, dict[str, Any]]:
        """A checkpoint written before the state gained a field that is empty in this run
        (``ema_params`` of a run without ``train.ema_decay``): restored when the only
        difference is such fields missing on disk."""
        fields = flax.serialization.to_state_dict(abstract)
        raw, _ = self.restore_raw(step)
        missing = [k for k in fields if k not in raw] if isinstance(raw, dict) else []
        if not missing or any(fields[k] is not None for k in missing):
            raise self._mismatch(step, error) from error
        target = {k: getattr(abstract, k) for k in fields if k not in missing}
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise self._mismatch(step, e) from e
        state = abstract.replace(**dict(restored.state), **dict.fromkeys(missing))
        return state, dict(restored.meta)

    def restore_meta(self, step: int) -> dict[str, Any]:
        restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored.meta)

    def restore_raw(self, step: int) -> tuple[Any, dict[str, Any]]:
        """Restores ``step`` without a target (plain arrays): for inference without a config."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
        return restored.state, dict(restored.meta)

    def wait(self) -> None:
        with self._write_errors("a checkpoint"):
            self._manager.wait_until_finished()

    def close(self) -> None:
        try:
            self.wait()
        except CheckpointError:
            with contextlib.suppress(Exception):  # the same failure again: report it once
                self._manager.close()
            raise
        self._manager.close()


def open_for_reading(workdir: str | Path) -> Checkpoints:
    """The checkpoints of a training workdir, read-only (a `CheckpointError` if none)."""
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise CheckpointError(
            f"no checkpoints in {directory}: train with --workdir {workdir} first"
        )
    ckpts = Checkpoints(directory, read_only=True)
    if ckpts.latest_step() is None:
        raise CheckpointError(f"{directory} holds no complete checkpoint")
    return ckpts


def restore(
    workdir: str | Path, checkpoint: str | int = "best", *, target: Target, partial: bool = False
) -> Restored:
    """Restores checkpoint ``checkpoint`` ('best', 'latest' or a step) of a training workdir
    onto ``target`` (see `Checkpoints.restore`)."""
    with open_for_reading(workdir) as ckpts:
        step = ckpts.step(checkpoint)
        state, meta = ckpts.restore(step, target, partial=partial)
    return Restored(step, state, meta)


def state_leaves(workdir: str | Path, step: int | None = None) -> tuple[int, list[tuple[str, Any]]]:
    """A checkpoint of ``workdir`` (the latest by default): its step and every state leaf as
    ``(path, numpy array)``, in tree order: what bitwise comparisons of runs compare."""
    with open_for_reading(workdir) as ckpts:
        step = ckpts.latest_step() if step is None else step
        state, _ = ckpts.restore_raw(step)
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return step, [(jax.tree_util.keystr(path), np.asarray(x)) for path, x in leaves]
