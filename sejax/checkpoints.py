"""Orbax checkpoints: the train state plus everything needed to use the model without its config.

Each checkpoint holds two items: ``state`` (the TrainState pytree) and ``meta`` (JSON: the full
run config, the label names, the normalisation statistics, the split and the epoch). Saving is
asynchronous; Orbax writes into a temporary folder and renames it when complete, so a
half-written checkpoint is never listed, never restored. The latest ``keep`` checkpoints are
kept, and the best by validation UAR besides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from sejax.errors import CheckpointError

BEST_METRIC = "val_uar"


class Checkpoints:
    """A thin, explicit wrapper of ``ocp.CheckpointManager`` for sejax's two-item checkpoints."""

    def __init__(self, directory: str | Path, *, keep: int = 2, read_only: bool = False):
        self.directory = Path(directory).absolute()
        policy = checkpoint_managers.AnyPreservationPolicy([
            checkpoint_managers.LatestN(n=keep),
            checkpoint_managers.BestN(
                get_metric_fn=lambda m: m[BEST_METRIC], n=1, keep_checkpoints_without_metrics=False
            ),
        ])  # fmt: skip
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy,
            # Setting best_fn makes Orbax persist each step's metrics, so best_step() survives
            # a restart; which checkpoints are kept is decided by the policy above.
            best_fn=lambda m: m[BEST_METRIC],
            best_mode="max",
            keep_checkpoints_without_metrics=True,
            enable_async_checkpointing=not read_only,
            read_only=read_only,
            create=not read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step with the highest validation UAR (the latest when none recorded one)."""
        return self._manager.best_step() or self.latest_step()

    def save(
        self, step: int, state: Any, meta: dict[str, Any], metrics: dict[str, float] | None = None
    ) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
            metrics=metrics,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict[str, Any]]:
        """Restores ``step`` onto the shapes, dtypes and shardings of ``abstract_state``
        (arrays or ``jax.ShapeDtypeStruct``s)."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                ),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} does not match this run's model: {e}"
            ) from e
        return restored.state, dict(restored.meta)

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
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def open_for_reading(workdir: str | Path) -> Checkpoints:
    directory = Path(workdir) / "checkpoints"
    if not directory.is_dir():
        raise CheckpointError(
            f"no checkpoints in {directory}: train with --workdir {workdir} first"
        )
    ckpts = Checkpoints(directory, read_only=True)
    if ckpts.latest_step() is None:
        raise CheckpointError(f"{directory} holds no complete checkpoint")
    return ckpts
