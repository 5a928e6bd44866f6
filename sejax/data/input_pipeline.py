"""The input pipeline: prepared log-Mel shards -> actor-disjoint splits -> tf.data batches.

Where the shards come from (``resolve_shards``): prepared shards given directly, raw audio
(zip or folder) prepared once into a cache, or the built-in demo corpus. Splits are by actor,
so no speaker is heard in two splits, and a leakage guard refuses any split with a speaker or
an identical recording on two sides unless the config asks for a leaking one. Normalisation
statistics are computed from the training actors only. Training batches have the global
batch size (the parallel layer splits them over devices); evaluation batches are padded and
carry a ``mask`` so every example counts once. In a multi-process run each process gets its
slice of the same global batches, and its share of each evaluation split
(``num_processes``/``process_index``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from sejax.errors import ConfigError, DataError

Batch = dict[str, np.ndarray]


def _tf():
    """TensorFlow, imported on first use and kept off the accelerators (JAX owns them)."""
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    return tf


# ------------------------------------------------------------------------------------------
# Where the shards come from.


def resolve_shards(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
    """Returns a folder of prepared shards matching ``config.features``, preparing if needed."""
    from sejax.data import prepare

    workdir = Path(workdir)
    data_path = str(config.data.path)
    cache = Path(config.data.prepared_dir) if config.data.prepared_dir else workdir / "prepared"
    if not data_path:
        from sejax.data import demo

        if config.data.corpus != "ravdess":
            raise ConfigError(
                f"data.corpus={config.data.corpus!r} needs data.path; an empty data.path means "
                "the built-in demo corpus, which is RAVDESS-named"
            )
        source = demo.generate_demo_corpus(
            workdir / "demo_corpus",
            actors=tuple(config.data.demo_actors),
            repetitions=tuple(config.data.demo_repetitions),
            sample_rate=config.features.sample_rate,
            duration_s=config.features.duration_s,
        )
    else:
        source = Path(data_path).expanduser()
        if not source.exists():
            raise DataError(f"data.path does not exist: {source}")
        if (source / "metadata.json").is_file():
            metadata = prepare.load_metadata(source)
            prepare.check_compatible(metadata, config.features)
            if list(metadata["label_names"]) != list(config.data.labels):
                raise ConfigError(
                    f"the shards in {source} have labels {metadata['label_names']}, but "
                    f"data.labels={list(config.data.labels)}; prepare them again"
                )
            return source
    prepare.prepare(source, cache, config.features, **prepare.data_options(config.data))
    return cache


# ------------------------------------------------------------------------------------------
# Splits: by actor (default), by a manifest's split column, or random clips (leaking), each
# checked by the leakage guard.

SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Split:
    """Which actors and which example indices (rows of metadata.json) each split holds.

    ``leakage`` is what the leakage guard found (``check_leakage``); ``leaking`` is True when
    a speaker or an identical recording is on two sides, which only a config that sets
    ``data.allow_leakage=True`` gets past.
    """

    actors: dict[str, tuple[int, ...]]
    indices: dict[str, np.ndarray]
    leakage: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def leaking(self) -> bool:
        return bool(self.leakage.get("leaking", False))

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            name: {"actors": list(self.actors[name]), "num_examples": len(idx)}
            for name, idx in self.indices.items()
        }
        record["leaking"] = self.leaking
        if self.leaking:
            record["leakage"] = self.leakage
        return record


def split_by_actor(examples: Sequence[dict], data_cfg: ml_collections.ConfigDict) -> Split:
    """The run's split, checked by the leakage guard.

    ``data.split_by``: 'actor' (the default) takes ``data.val_actors`` and
    ``data.test_actors`` and trains on every other actor; 'manifest' follows each example's
    manifest ``split``; 'random' deals clips at random (``random_split``), which puts every
    speaker on every side and so needs ``data.allow_leakage=True``. Whatever the mode, a
    speaker or an identical recording (sha256 of the file) on two sides is refused unless
    ``data.allow_leakage`` is set, and then recorded in ``Split.leakage``.
    """
    mode = data_cfg.get("split_by", "actor")
    allow = bool(data_cfg.get("allow_leakage", False))
    if mode == "manifest":
        split = _split_by_manifest(examples, allow_leakage=allow)
    elif mode == "random":
        if not allow:
            raise ConfigError(RANDOM_SPLIT_NEEDS_LEAKAGE)
        split = _split_random(examples, data_cfg)
    else:
        split = _split_by_actors(examples, data_cfg)
    leakage = check_leakage(examples, split.indices, allow=allow)
    return dataclasses.replace(split, leakage=leakage)


RANDOM_SPLIT_NEEDS_LEAKAGE = (
    "data.split_by='random' deals clips at random, so every speaker is heard in training and "
    "in test (speaker leakage: published comparisons show 10-30 points of inflated accuracy). "
    "Set data.allow_leakage=True to run it anyway; every report of the run is then marked "
    '"leaking": true.'
)


def _split_by_actors(examples: Sequence[dict], data_cfg: ml_collections.ConfigDict) -> Split:
    """Validation and test actors from the config; every other actor trains."""
    present = sorted({int(e["actor"]) for e in examples})
    val = tuple(sorted(int(a) for a in data_cfg.val_actors))
    test = tuple(sorted(int(a) for a in data_cfg.test_actors))
    for key, chosen in (("data.val_actors", val), ("data.test_actors", test)):
        missing = sorted(set(chosen) - set(present))
        if missing:
            raise ConfigError(
                f"{key} names actors {missing} that are not in the corpus; actors present: "
                f"{present}"
            )
    if set(val) & set(test):
        raise ConfigError(
            f"data.val_actors and data.test_actors share actors {set(val) & set(test)}"
        )
    train = tuple(a for a in present if a not in val and a not in test)
    actors = {"train": train, "validation": val, "test": test}
    actor_of = np.array([int(e["actor"]) for e in examples])
    indices = {name: np.flatnonzero(np.isin(actor_of, a)) for name, a in actors.items()}
    # Only training needs examples: with no validation and test actors a run trains on every
    # actor (a final model to ship) and evaluates nothing.
    if len(indices["train"]) == 0:
        raise ConfigError(
            f"the train split is empty (data.val_actors={list(val)}, "
            f"data.test_actors={list(test)}, actors present: {present})"
        )
    return Split(actors=actors, indices=indices)


def _split_by_manifest(examples: Sequence[dict], *, allow_leakage: bool = False) -> Split:
    """The manifest's split column, checked to be complete and speaker-disjoint."""
    split_of = [e.get("split", "") for e in examples]
    unset = [e["source"] for e, s in zip(examples, split_of, strict=True) if s not in SPLIT_NAMES]
    if unset:
        raise ConfigError(
            f"data.split_by='manifest' but {len(unset)} example(s) have no split (a manifest "
            f"'split' column of train/validation/test), e.g. {unset[0]}"
        )
    actors = {n: {int(e["actor"]) for e, s in zip(examples, split_of, strict=True) if s == n}
              for n in SPLIT_NAMES}  # fmt: skip
    speaker = {int(e["actor"]): e.get("speaker", e["actor"]) for e in examples}
    for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
        if actors[a] & actors[b] and not allow_leakage:
            both = [speaker[x] for x in sorted(actors[a] & actors[b])]
            raise ConfigError(
                f"data.split_by='manifest': speaker(s) {both} are in both the {a} and the {b} "
                "split; a speaker must be in one split only (or set data.allow_leakage=True "
                "to run this leaking split, marked as such)"
            )
    indices = {n: np.flatnonzero(np.array(split_of) == n) for n in SPLIT_NAMES}
    for name in ("train", "test"):
        if len(indices[name]) == 0:
            raise ConfigError(f"data.split_by='manifest' but the manifest has no {name} rows")
    return Split(actors={n: tuple(sorted(a)) for n, a in actors.items()}, indices=indices)


def random_parts(labels: Sequence[int], num_parts: int, seed: int) -> np.ndarray:
    """Deals examples into ``num_parts`` parts at random, stratified by label: each label's
    examples are spread evenly over the parts, and the parts' sizes differ by at most one.

    Deterministic in ``(labels, num_parts, seed)``. Actors are ignored on purpose: this is the
    speaker-mixing split that leaks.
    """
    labels = np.asarray(labels)
    parts = np.empty(len(labels), np.int64)
    rng = np.random.default_rng(seed)
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        parts[members] = (np.arange(len(members)) + offset) % num_parts
        offset += len(members)  # the next label's remainder starts where this one's ended
    return parts


def _split_random(examples: Sequence[dict], data_cfg: ml_collections.ConfigDict) -> Split:
    """``data.random_parts`` random parts; ``random_val_parts``/``random_test_parts`` hold out."""
    num_parts = int(data_cfg.random_parts)
    parts = random_parts([int(e["label"]) for e in examples], num_parts, int(data_cfg.split_seed))
    val = {int(p) for p in data_cfg.random_val_parts}
    test = {int(p) for p in data_cfg.random_test_parts}
    chosen = {"validation": val, "test": test, "train": set(range(num_parts)) - val - test}
    indices = {n: np.flatnonzero(np.isin(parts, sorted(chosen[n]))) for n in SPLIT_NAMES}
    for name in ("train", "test"):
        if len(indices[name]) == 0:
            raise ConfigError(
                f"data.split_by='random': the {name} split is empty (data.random_parts="
                f"{num_parts}, data.random_val_parts={sorted(val)}, "
                f"data.random_test_parts={sorted(test)}, {len(examples)} examples)"
            )
    actor_of = np.array([int(e["actor"]) for e in examples])
    actors = {n: tuple(sorted({int(a) for a in actor_of[idx]})) for n, idx in indices.items()}
    return Split(actors=actors, indices=indices)


def check_leakage(
    examples: Sequence[dict], indices: dict[str, np.ndarray], *, allow: bool
) -> dict[str, Any]:
    """The leakage guard: no speaker and no identical recording on two sides of a split.

    Identical recordings are found by the sha256 of the audio file that `prepare` stores per
    example (RAVDESS's Actor_07 holds a byte-identical pair: harmless inside one side, a leak
    across two). Raises ConfigError (speakers) or DataError (recordings) naming them, unless
    ``allow``; returns what was found, ``leaking`` True when anything was.
    """
    names = [n for n in SPLIT_NAMES if n in indices]
    actors = {n: {int(examples[i]["actor"]) for i in indices[n]} for n in names}
    by_hash: dict[str, dict[str, list[str]]] = {}
    for n in names:
        for i in indices[n]:
            digest = examples[i].get("sha256")
            if digest:
                by_hash.setdefault(digest, {}).setdefault(n, []).append(examples[i]["source"])
    shared_actors, shared_audio = {}, []
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            if actors[a] & actors[b]:
                shared_actors[f"{a}/{b}"] = sorted(actors[a] & actors[b])
    for digest, sides in sorted(by_hash.items()):
        if len(sides) > 1:
            shared_audio.append({"sha256": digest, **{n: sorted(s) for n, s in sides.items()}})
    unhashed = sum(1 for n in names for i in indices[n] if not examples[i].get("sha256"))
    if not allow and shared_actors:
        speaker = {int(e["actor"]): e.get("speaker", e["actor"]) for e in examples}
        listed = "; ".join(f"{pair}: {[speaker[x] for x in xs]}" for pair, xs in
                           shared_actors.items())  # fmt: skip
        raise ConfigError(
            f"leaking split: speakers on two sides ({listed}). Splits must be speaker-"
            "disjoint; set data.allow_leakage=True to run it anyway, marked as leaking."
        )
    if not allow and shared_audio:
        shown = "; ".join(
            " = ".join(f"{n}:{s}" for n in names for s in d.get(n, [])) for d in shared_audio[:5]
        )
        raise DataError(
            f"leaking split: {len(shared_audio)} identical recording(s) (same sha256) on two "
            f"sides: {shown}. Move the copies to one side or remove them; "
            "data.allow_leakage=True runs it anyway, marked as leaking."
        )
    return {
        "leaking": bool(shared_actors or shared_audio),
        "shared_actors": shared_actors,
        "shared_audio": shared_audio,
        "examples_without_sha256": unhashed,
    }


# ------------------------------------------------------------------------------------------
# tf.data over the shards.


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
    """A prepared shard folder read with tf.data; decoded examples are cached in memory."""

    def __init__(self, directory: str | Path):
        from sejax.data import prepare

        self.directory = Path(directory)
        self.metadata = prepare.load_metadata(self.directory)
        self.examples: list[dict] = self.metadata["examples"]
        self.num_frames = int(self.metadata["num_frames"])
        self.num_mels = int(self.metadata["num_mels"])
        self.label_names: list[str] = list(self.metadata["label_names"])
        files = [str(self.directory / s["file"]) for s in self.metadata["shards"]]
        for f in files:
            if not Path(f).is_file():
                raise DataError(
                    f"shard listed in {self.directory / 'metadata.json'} is missing: {f}"
                )
        tf = _tf()
        num_frames, num_mels = self.num_frames, self.num_mels
        self._all = tf.data.TFRecordDataset(files).map(
            lambda s: prepare.parse_example(s, num_frames, num_mels)
        )

    def _select(self, indices: np.ndarray):
        """The examples whose metadata index is in ``indices``, in shard order, cached."""
        tf = _tf()
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
        tf = _tf()
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
        tf = _tf()
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
        tf = _tf()
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


def write_split(path: Path, split: Split, examples: Sequence[dict]) -> None:
    """Records the split (actors, counts and each example's source) in the run."""
    record = split.to_json()
    for name, idx in split.indices.items():
        record[name]["sources"] = [examples[i]["source"] for i in idx]
    path.write_text(json.dumps(record, indent=1))
