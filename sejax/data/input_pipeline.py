"""The input pipeline: a split of prepared log-Mel shards -> tf.data batches.

Where the shards come from is `sejax.data.prepare.ensure_shards`, what they hold
`sejax.data.shards`, and which examples train, validate and test `sejax.data.splits`. Here
the examples of a split are read with tf.data, cached, normalised and batched. Normalisation
statistics are computed from the training actors only. Training batches have the global
batch size (the parallel layer splits them over devices); evaluation batches are padded and
carry a ``mask`` so every example counts once. In a multi-process run each process gets its
slice of the same global batches, and its share of each evaluation split
(``num_processes``/``process_index``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from sejax import io
from sejax.data import shards as shards_lib
from sejax.errors import ConfigError, DataError

# data.normalization: mean and std per Mel band, one pair for all bands, none, or per band
# with each speaker's own statistics (transductive: needs the test speakers' clips).
NORMALIZATIONS = ("per_band", "global", "none", "per_speaker")

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Feature statistics: ``(x - mean) / std`` per Mel band.

    ``mean`` and ``std`` come from the training actors. With ``per_speaker`` every clip is
    instead normalised with its own speaker's statistics, over all of that speaker's clips in
    the shards read (labels unused; for held-out speakers this is transductive: their
    unlabelled audio is seen). Those are computed by the ``Shards`` that read the clips, never
    stored, so a model evaluated on another corpus uses that corpus's speakers.
    """

    mean: np.ndarray  # [F]
    std: np.ndarray  # [F]
    per_speaker: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "per_speaker": self.per_speaker}  # fmt: skip

    @classmethod
    def from_json(cls, d: dict) -> Normalization:
        return cls(np.asarray(d["mean"], np.float32), np.asarray(d["std"], np.float32),
                   bool(d.get("per_speaker", False)))  # fmt: skip


class Shards:
    """A prepared shard folder (`sejax.data.shards`) read with tf.data: the examples of a
    split, cached in memory once decoded, normalised and batched for training or evaluation."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.metadata = shards_lib.load_metadata(self.directory)  # checks every shard is there
        self.examples: list[dict] = self.metadata["examples"]
        self.num_frames = int(self.metadata["num_frames"])
        self.num_mels = int(self.metadata["num_mels"])
        self.label_names: list[str] = list(self.metadata["label_names"])
        self._all = shards_lib.records(self.directory, self.metadata)

    def _select(self, indices: np.ndarray):
        """The examples whose metadata index is in ``indices``, in shard order, cached."""
        tf = io.tensorflow()
        member = np.zeros(len(self.examples), bool)
        member[indices] = True
        member_t = tf.constant(member)
        return self._all.filter(lambda ex: tf.gather(member_t, ex["index"]))

    def _band_moments(self, indices: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-group, per-band frame sums, sums of squares and counts over ``indices``
        (``groups[i]`` is example i's group), in float64."""
        num_groups = int(groups.max()) + 1 if len(groups) else 1
        total = np.zeros((num_groups, self.num_mels), np.float64)
        total_sq = np.zeros((num_groups, self.num_mels), np.float64)
        count = np.zeros(num_groups, np.int64)
        for batch in self._select(indices).batch(256).as_numpy_iterator():
            x = batch["features"].astype(np.float64)
            g = groups[batch["index"]]
            np.add.at(total, g, x.sum(axis=1))
            np.add.at(total_sq, g, (x * x).sum(axis=1))
            np.add.at(count, g, x.shape[1])
        return total, total_sq, count

    def normalization(self, indices: np.ndarray, mode: str) -> Normalization:
        """Per-band (or global) mean and std over every frame of the given examples;
        ``per_speaker`` adds each speaker's own statistics (see ``Normalization``)."""
        ones = np.ones(self.num_mels, np.float32)
        if mode == "none":
            return Normalization(np.zeros_like(ones), ones)
        total, total_sq, count = (
            a[0] for a in self._band_moments(indices, np.zeros(len(self.examples), np.int64))
        )
        if count == 0:
            raise DataError("cannot compute normalisation statistics: the training split is empty")
        if mode == "global":
            count = count * self.num_mels
            total, total_sq = (np.full(self.num_mels, t.sum()) for t in (total, total_sq))
        mean, std = band_mean_std(total, total_sq, count)
        return Normalization(mean, std, per_speaker=mode == "per_speaker")

    def speaker_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """``[examples, F]`` means and stds: row i holds the per-band statistics of example
        i's speaker over all of that speaker's clips in these shards (cached)."""
        if not hasattr(self, "_speaker_stats"):
            actors = np.array([int(e["actor"]) for e in self.examples], np.int64)
            groups = np.unique(actors, return_inverse=True)[1]
            total, total_sq, count = self._band_moments(np.arange(len(actors)), groups)
            mean, std = band_mean_std(total, total_sq, count[:, None])
            self._speaker_stats = (mean[groups], std[groups])
        return self._speaker_stats

    def _prepare_batch(self, norm: Normalization):
        tf = io.tensorflow()
        if norm.per_speaker:
            means, stds = (tf.constant(a) for a in self.speaker_statistics())

            def stats(ex):
                return tf.gather(means, ex["index"]), tf.gather(stds, ex["index"])
        else:
            mean, std = tf.constant(norm.mean), tf.constant(norm.std)

            def stats(ex):
                return mean, std

        def fn(ex):
            mean, std = stats(ex)
            return {
                "features": (ex["features"] - mean[..., None, :]) / std[..., None, :],
                "label": ex["label"],
                "index": ex["index"],
            }

        return fn

    def train_batches(
        self,
        indices: np.ndarray,
        norm: Normalization,
        *,
        batch_size: int,
        seed: int,
        epoch: int,
        shuffle_buffer: int,
        prefetch: int = 2,
        skip_batches: int = 0,
        num_processes: int = 1,
        process_index: int = 0,
        drop_remainder: bool = True,
    ) -> Iterator[Batch]:
        """One epoch of shuffled full batches: the last partial batch is dropped, or with
        ``drop_remainder=False`` completed with the epoch's first examples, so that every
        example is seen every epoch and every step keeps the one compiled batch shape.

        The order depends only on ``(seed, epoch)``, so a resumed run that skips the batches
        already seen continues with exactly the batches an uninterrupted run would see.

        With several processes every one shuffles the same way (same seed, same input
        order), so all agree on the global batches; each yields only its contiguous slice of
        each (``batch_size / num_processes`` rows: sub-batch ``process_index`` of every
        ``num_processes`` consecutive ones, tf.data's ``shard``) and normalises only that.
        The global batches are those of a one-process run, whatever the number of processes,
        so runs and resumed runs agree across process counts.
        """
        tf = io.tensorflow()
        num_steps = steps_per_epoch(len(indices), batch_size, drop_remainder)
        local = _per_process(batch_size, num_processes, process_index, "train.batch_size")
        shuffled = self._cached(indices).shuffle(
            min(shuffle_buffer, len(indices)), seed=_epoch_seed(seed, epoch),
            reshuffle_each_iteration=False,
        )  # fmt: skip
        # The same order again (not reshuffled) tops up the last batch.
        topped_up = shuffled.concatenate(shuffled.take(num_steps * batch_size - len(indices)))
        ds = (
            (shuffled if drop_remainder else topped_up)
            .batch(local, drop_remainder=True)
            .take(num_steps * num_processes)  # whole global batches only
            .skip(skip_batches * num_processes)
            .shard(num_processes, process_index)
            .map(self._prepare_batch(norm), num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .prefetch(prefetch)
        )  # fmt: skip
        yield from ds.as_numpy_iterator()

    def arrays(self, indices: np.ndarray, norm: Normalization) -> dict[str, np.ndarray]:
        """The examples ``indices`` normalised, whole, as host arrays (shard order): the
        input of ``Parallel.put_resident``."""
        parts = [
            {k: v[batch["mask"] > 0] for k, v in batch.items() if k != "mask"}
            for batch in self.eval_batches(indices, norm, batch_size=256)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in ("features", "label")}

    def eval_batches(
        self,
        indices: np.ndarray,
        norm: Normalization,
        *,
        batch_size: int,
        prefetch: int = 2,
        num_processes: int = 1,
        process_index: int = 0,
    ) -> Iterator[Batch]:
        """Every example exactly once; the last batch is zero-padded with ``mask`` 0.

        With several processes each reads only its share of the split (every
        ``num_processes``-th example of the sorted indices) in batches of
        ``batch_size / num_processes`` rows, and all yield the same number of batches (the
        eval step is collective), padding with fully masked batches where a share runs out.
        """
        tf = io.tensorflow()
        local = _per_process(batch_size, num_processes, process_index, "eval.batch_size")
        share = indices if num_processes == 1 else np.sort(indices)[process_index::num_processes]
        ds = (
            self._cached(share)
            .batch(local)
            .map(self._prepare_batch(norm), num_parallel_calls=tf.data.AUTOTUNE,
                 deterministic=True)
            .prefetch(prefetch)
        )  # fmt: skip
        largest_share = -(-len(indices) // num_processes)
        num_batches, seen = -(-largest_share // local), 0
        for batch in ds.as_numpy_iterator():
            seen += 1
            yield pad_batch(batch, local)
        for _ in range(num_batches - seen):
            empty = {k: np.zeros((0, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
                     for k, spec in ds.element_spec.items()}  # fmt: skip
            yield pad_batch(empty, local)

    def _cached(self, indices: np.ndarray):
        key = hashlib.sha256(np.sort(indices).tobytes()).hexdigest()
        if not hasattr(self, "_cache"):
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = self._select(indices).cache()
        return self._cache[key]


def band_mean_std(total: np.ndarray, total_sq: np.ndarray, count) -> tuple[np.ndarray, np.ndarray]:
    """float32 mean and std from float64 sums (std floored at 1e-4)."""
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 1e-8))
    return mean.astype(np.float32), std.astype(np.float32)


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """Train steps in one epoch over ``num_examples``: whole batches only, or with
    ``drop_remainder=False`` one more for the remainder (topped up to a whole batch)."""
    if num_examples < batch_size:
        raise ConfigError(
            f"train.batch_size={batch_size} is larger than the training split "
            f"({num_examples} examples)"
        )
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def epoch_order(
    num_examples: int, batch_size: int, *, seed: int, epoch: int, drop_remainder: bool = True
) -> np.ndarray:
    """Rows ``[steps, batch_size]`` of one shuffled epoch over a resident split, the last
    partial batch dropped or topped up as in ``Shards.train_batches``. Like it the order
    depends only on ``(seed, epoch)``, so a resumed run continues with the rows an
    uninterrupted run would see."""
    steps = steps_per_epoch(num_examples, batch_size, drop_remainder)
    order = np.random.default_rng(_epoch_seed(seed, epoch)).permutation(num_examples)
    order = np.concatenate([order, order[: steps * batch_size - num_examples]])
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:4], "little")


def _per_process(batch_size: int, num_processes: int, process_index: int, key: str) -> int:
    """Each process's rows of a global batch."""
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index={process_index} is not in [0, {num_processes})")
    if batch_size % num_processes:
        raise ConfigError(
            f"{key}={batch_size} must be a multiple of the number of processes ({num_processes})"
        )
    return batch_size // num_processes


def pad_batch(batch: Batch, batch_size: int) -> Batch:
    """Pads a (last, short) batch to ``batch_size`` rows and adds a ``mask`` of real rows."""
    n = len(batch["label"])
    out = {}
    for key, value in batch.items():
        pad = [(0, batch_size - n)] + [(0, 0)] * (value.ndim - 1)
        out[key] = np.pad(value, pad)
    out["mask"] = np.pad(np.ones(n, np.float32), (0, batch_size - n))
    if "index" in out:
        out["index"][n:] = -1
    return out
