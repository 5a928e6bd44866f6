"""Data parallelism around the per-device steps of ``sejax.training.steps``.

Two interchangeable paths, picked by ``config.train.parallel``:

- ``'pmap'``: ``jax.pmap`` over the local devices. The state is *not* stacked: it goes in
  with ``in_axes=None`` and comes out with ``out_axes=None``, so it stays one global
  array per leaf, replicated on every device (``NamedSharding(mesh, P())``), which Orbax
  saves directly. Batches are laid out ``[D, B/D, ...]``.
- ``'jit'``: ``jax.jit`` of ``jax.shard_map`` over ``Mesh(devices, ('data',))``; batches are
  ``[B, ...]`` arrays sharded ``P('data')`` and the state is replicated ``P()`` and donated.
  This is also the multi-process path (``sejax.training.distributed``): the mesh holds every
  process's devices, process by process, so each process feeds one contiguous slice of the
  global batch; ``'pmap'`` runs on one process only.

Both run the same step code, average gradients and metrics over the ``'data'`` axis and give
the same numbers as one device with the same global batch (tests/test_parallel.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sejax.errors import ConfigError
from sejax.training import augment, distributed, steps
from sejax.training.train_state import TrainState

AXIS = "data"
MODES = ("pmap", "jit")


def _shard_map() -> Callable[..., Any]:
    """``jax.shard_map`` without varying-manual-axes type checking (pmap's semantics).

    Flax's ``nn.RNN`` starts its scan from a replicated zero carry that the first step makes
    per-device, which the checker rejects; the steps handle replicated vs per-device values
    explicitly (``steps._as_varying`` and ``lax.pmean``), so nothing relies on the checker.
    """
    if hasattr(jax, "shard_map"):
        return functools.partial(jax.shard_map, check_vma=False)
    from jax.experimental.shard_map import shard_map  # pragma: no cover - JAX < 0.7

    return functools.partial(shard_map, check_rep=False)  # pragma: no cover


class Parallel:
    """Places batches and state on the devices and runs the mapped steps.

    ``train_step`` returns device-resident, replicated scalar metrics (fetch them with
    ``jax.device_get`` only when logging, so steps stay asynchronous). ``eval_step``
    returns host numpy arrays in global batch order.
    """

    def __init__(
        self,
        mode: str,
        devices: Sequence[jax.Device] | None = None,
        recipe: augment.Recipe | None = None,
    ):
        if mode not in MODES:
            raise ConfigError(f"train.parallel={mode!r} is not one of {list(MODES)}")
        if mode == "pmap" and jax.process_count() > 1:
            raise ConfigError(distributed.PMAP_SINGLE_PROCESS)
        self.mode = mode
        if devices is None:
            devices = jax.local_devices() if mode == "pmap" else jax.devices()
        # Process by process (a stable sort: one process keeps JAX's order), so each process's
        # rows of a global batch are one contiguous slice, in process order.
        self.devices = sorted(devices, key=lambda d: d.process_index)
        # This process's share of the devices: it feeds them its part of the global batch.
        self.local_devices = [d for d in self.devices if d.process_index == jax.process_index()]
        processes = {d.process_index for d in self.devices}
        if len(self.local_devices) * len(processes) != len(self.devices):
            raise ConfigError(
                f"every process must drive the same number of devices; this one has "
                f"{len(self.local_devices)} of {len(self.devices)} over {len(processes)} processes"
            )
        self.mesh = Mesh(np.array(self.devices), (AXIS,))
        self.replicated = NamedSharding(self.mesh, P())
        self.sharded = NamedSharding(self.mesh, P(AXIS))

        train = functools.partial(steps.train_step, axis_name=AXIS, recipe=recipe)
        evaluate = functools.partial(steps.eval_step, axis_name=AXIS)
        batch_stats = functools.partial(steps.batch_stats_step, axis_name=AXIS)
        if mode == "pmap":
            pmap = functools.partial(
                jax.pmap, axis_name=AXIS, in_axes=(None, 0), devices=self.devices
            )
            self._train = pmap(train, out_axes=(None, None), donate_argnums=(0,))
            self._eval = pmap(evaluate, out_axes=(0, None))
            self._batch_stats = pmap(batch_stats, out_axes=None)
        else:
            shard_map = functools.partial(_shard_map(), mesh=self.mesh, in_specs=(P(), P(AXIS)))
            self._train = jax.jit(shard_map(train, out_specs=(P(), P())), donate_argnums=(0,))
            self._eval = jax.jit(shard_map(evaluate, out_specs=(P(AXIS), P())))
            self._batch_stats = jax.jit(shard_map(batch_stats, out_specs=P()))

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def check_batch_size(self, batch_size: int, key: str = "train.batch_size") -> None:
        """Each device takes an equal slice of the global batch."""
        if batch_size < 1 or batch_size % self.num_devices:
            raise ConfigError(
                f"{key}={batch_size} must be a positive multiple of the number of devices "
                f"({self.num_devices}, parallel={self.mode!r})"
            )

    def put_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Host batch ``{name: [B, ...]}`` -> device arrays laid out for this path.

        ``B`` is this process's part of the global batch (all of it with one process).
        """
        sizes = {name: np.shape(x)[0] for name, x in batch.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"batch arrays disagree on the batch size: {sizes}")
        size, local = next(iter(sizes.values())), len(self.local_devices)
        if size % local:
            raise ConfigError(
                f"a batch of {size} examples does not split over {local} devices: "
                "make train.batch_size and eval.batch_size multiples of the device count"
            )

        def put(x: np.ndarray) -> jax.Array:
            x = np.asarray(x)
            if self.mode == "pmap":
                x = x.reshape(local, -1, *x.shape[1:])
            return jax.make_array_from_process_local_data(self.sharded, x)

        return {name: put(x) for name, x in batch.items()}

    def put_resident(self, arrays: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A whole split ``{name: [N, ...]}`` replicated on every device, once.

        Every process passes the same arrays. Batches are then gathered on the devices
        (``resident_batch``): no host pipeline and no host-to-device copy per step, so an
        epoch costs its steps. For corpora that fit in device memory (RAVDESS: ~110 MB).
        """

        def put(x: np.ndarray) -> jax.Array:
            x = np.asarray(x)
            return jax.make_array_from_callback(x.shape, self.replicated, lambda index: x[index])

        return {name: put(x) for name, x in arrays.items()}

    def resident_batch(
        self, resident: Mapping[str, jax.Array], rows: np.ndarray
    ) -> dict[str, jax.Array]:
        """The global batch of ``rows`` (indices into ``put_resident``'s split), laid out as
        ``put_batch`` lays out a host batch."""
        return self._gather_rows(dict(resident), np.asarray(rows, np.int32))

    @functools.cached_property
    def _gather_rows(self) -> Any:
        local = len(self.local_devices)

        def gather(resident: dict[str, jax.Array], rows: jax.Array) -> dict[str, jax.Array]:
            batch = {name: jnp.take(x, rows, axis=0) for name, x in resident.items()}
            if self.mode == "pmap":
                batch = {k: x.reshape(local, -1, *x.shape[1:]) for k, x in batch.items()}
            return batch

        return jax.jit(gather, out_shardings=self.sharded)

    def put_state(self, state: TrainState) -> TrainState:
        """Replicate a state (fresh or restored) on every device, as global arrays.

        With several processes each one holds the same host value (same seed, or the same
        checkpoint) and places it on its own devices; leaves already replicated stay put.
        """
        if self.replicated.is_fully_addressable:
            return jax.device_put(state, self.replicated)

        def place(x: Any) -> Any:
            if isinstance(x, jax.Array) and x.sharding == self.replicated:
                return x
            return jax.make_array_from_process_local_data(self.replicated, np.asarray(x))

        return jax.tree.map(place, state)

    def get_state(self, state: TrainState) -> TrainState:
        """The state as Orbax should save it: global arrays, replicated (both paths keep the
        state that way, so this only re-places leaves that are not)."""

        def place(x: Any) -> Any:
            if getattr(x, "sharding", None) == self.replicated:
                return x
            return jax.device_put(x, self.replicated)

        return jax.tree.map(place, state)

    def abstract_state(self, state: TrainState) -> TrainState:
        """``ShapeDtypeStruct``s with the replicated sharding: the restore target for Orbax."""
        return jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.replicated),
            state,
        )

    def train_step(
        self, state: TrainState, batch: Mapping[str, jax.Array]
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One update on a ``put_batch`` batch; the input state is donated (do not reuse it)."""
        return self._train(state, batch)

    def precise_batch_stats(
        self, state: TrainState, batches: Iterable[Mapping[str, jax.Array]]
    ) -> TrainState:
        """The state with its BatchNorm running averages replaced by the mean statistics of
        ``batches`` (``put_batch`` batches of training data; ``steps.batch_stats_step``)."""
        total, count = None, 0
        for batch in batches:
            stats = self._batch_stats(state, batch)
            total = stats if total is None else self._add(total, stats)
            count += 1
        if count == 0:
            raise ValueError("precise BatchNorm statistics need at least one batch")
        return state.replace(batch_stats=self._scale(total, 1.0 / count))

    @functools.cached_property
    def _add(self) -> Any:
        return jax.jit(lambda a, b: jax.tree.map(jnp.add, a, b), out_shardings=self.replicated)

    @functools.cached_property
    def _scale(self) -> Any:
        return jax.jit(lambda a, s: jax.tree.map(lambda x: x * s, a),
                       out_shardings=self.replicated)  # fmt: skip

    def eval_step(self, state: TrainState, batch: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
        """Per-example ``logits`` [B, C] and ``loss`` [B] plus ``loss_sum``, ``correct`` and
        ``count`` over the unmasked rows, as host numpy in global batch order."""
        per_example, totals = self._eval(state, batch)
        out = {name: _gather(x) for name, x in per_example.items()}
        if self.mode == "pmap":
            out = {name: x.reshape(-1, *x.shape[2:]) for name, x in out.items()}
        out.update({name: np.asarray(x.addressable_data(0)) for name, x in totals.items()})
        return out


def _gather(x: jax.Array) -> np.ndarray:
    """A sharded global array on the host, whole (all processes' shards)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils  # pragma: no cover - multi-process only

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))  # pragma: no cover


def make_parallel(
    train_cfg: ml_collections.ConfigDict,
    *,
    devices: Sequence[jax.Device] | None = None,
    recipe: augment.Recipe | None = None,
) -> Parallel:
    """The path named by ``train.parallel``, checked against ``train.batch_size``; the train
    step augments with ``recipe`` (`sejax.training.augment`) when given."""
    parallel = Parallel(train_cfg.parallel, devices, recipe)
    parallel.check_batch_size(train_cfg.batch_size)
    return parallel
