"""The prepared shard format: TFRecord shards of log-Mel features plus ``metadata.json``.

One place says what a shard set is, for the writer (`sejax.data.prepare`) and every reader
(`sejax.data.input_pipeline.Shards`, evaluation): the record of one clip (`example_proto`,
`parse_example`), its row in the metadata (`example_row`), the file names, the checks that a
folder holds a complete set (`load_metadata`) and that its features are the config's
(`check_compatible`, by `sejax.data.features.fingerprint`).

Layout of a shard folder::

    shard-00000-of-00006.tfrecord ...   tf.train.Example per clip (see `parse_example`)
    metadata.json                       format, features config and fingerprint, shard list,
                                        label/actor counts, skipped files, one row per example,
                                        and per source corpus its label map, dropped labels
                                        and speaker names (`sejax.corpora.sources`); the
                                        screening ``report`` (found = prepared + rejected)
                                        and every ``rejected`` file with its problem
    rejected.tsv                        path, problem and reason of each rejected file
                                        (`sejax.data.screening`)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from sejax import io
from sejax.corpora import sources as sources_lib
from sejax.data import features
from sejax.errors import DataError

FORMAT = "sejax-shards"
VERSION = 1
METADATA_FILE = "metadata.json"
_SHARD_RE = re.compile(r"^shard-\d{5}-of-\d{5}\.tfrecord$")
_REQUIRED_KEYS = (
    "format", "version", "features_config", "fingerprint", "num_frames", "num_mels",
    "label_names", "corpus", "source", "shards", "num_examples", "counts", "skipped",
    "examples",
)  # fmt: skip
# The integer fields of a record besides the features; with ``sha256`` (bytes) its whole spec.
_INT_FIELDS = ("label", "actor", "intensity", "statement", "repetition", "index")


def shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}.tfrecord"


def is_shard_file(name: str) -> bool:
    """Whether a file name is one `shard_name` gives."""
    return _SHARD_RE.match(name) is not None


# ------------------------------------------------------------------------------------------
# One clip: its TFRecord and its metadata row.


def example_proto(tf: Any, feats: bytes, row: dict) -> bytes:
    """The serialized ``tf.train.Example`` of one clip: its float32 little-endian features
    and the integer fields and sha256 of its `example_row`."""

    def ints(v: int):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))

    def raw(v: bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    feature = {"features": raw(feats)}
    feature.update({key: ints(row[key]) for key in _INT_FIELDS})
    feature["sha256"] = raw(row["sha256"].encode("ascii"))
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def parse_example(serialized, num_frames: int, num_mels: int) -> dict:
    """Decodes one serialized shard record; usable in ``tf.data.Dataset.map``.

    Returns ``{'features': float32 [num_frames, num_mels], 'label', 'actor', 'index': int32}``.
    """
    tf = io.tensorflow()
    spec = {
        "features": tf.io.FixedLenFeature([], tf.string),
        "label": tf.io.FixedLenFeature([], tf.int64),
        "actor": tf.io.FixedLenFeature([], tf.int64),
        "index": tf.io.FixedLenFeature([], tf.int64),
    }
    ex = tf.io.parse_single_example(serialized, spec)
    feats = tf.io.decode_raw(ex["features"], tf.float32, little_endian=True)
    return {
        "features": tf.reshape(feats, [num_frames, num_mels]),
        "label": tf.cast(ex["label"], tf.int32),
        "actor": tf.cast(ex["actor"], tf.int32),
        "index": tf.cast(ex["index"], tf.int32),
    }


def example_row(
    e: sources_lib.Example, index: int, shard: str, *, sha256: str, num_samples: int
) -> dict:
    """One ``metadata.json`` example; ``num_samples`` is the clip length before crop/pad.

    ``label``/``emotion`` are the target label; ``corpus_label`` is the corpus's own name
    for it and ``speaker`` the corpus's own speaker name (``actor`` is its id here).
    """
    r = e.recording
    return {
        "index": index,
        "source": r.source,
        "corpus": e.corpus,
        "speaker": r.speaker,
        "actor": e.actor,
        "gender": r.gender,
        "label": e.label,
        "emotion": e.emotion,
        "corpus_label": r.emotion,
        "intensity": r.intensity,
        "statement": r.statement,
        "repetition": r.repetition,
        "text": r.text,
        "split": r.split,
        "sha256": sha256,
        "num_samples_original": num_samples,
        "shard": shard,
    }


# ------------------------------------------------------------------------------------------
# A shard folder: its metadata, its records, and whether its features are the config's.


def load_metadata(out_dir: str | os.PathLike[str]) -> dict:
    """Reads and checks ``out_dir/metadata.json`` (format, version, shard files present)."""
    out_dir = Path(out_dir)
    path = out_dir / METADATA_FILE
    if not path.is_file():
        raise DataError(
            f"{out_dir}: no {METADATA_FILE}, so not a folder of prepared shards "
            "(prepare raw audio with `sejax prepare`)"
        )
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable or not JSON ({e})") from e
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise DataError(f'{path}: not sejax shard metadata (expected "format": "{FORMAT}")')
    if metadata.get("version") != VERSION:
        raise DataError(
            f"{path}: shard format version {metadata.get('version')!r}; this sejax reads "
            f"version {VERSION}. Prepare the corpus again."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in metadata]
    if missing:
        raise DataError(f"{path}: incomplete metadata, missing {missing}")
    total = sum(int(s["num_examples"]) for s in metadata["shards"])
    if not total == metadata["num_examples"] == len(metadata["examples"]):
        raise DataError(
            f"{path}: inconsistent metadata: num_examples={metadata['num_examples']}, "
            f"{len(metadata['examples'])} example rows, {total} examples in the shard list"
        )
    for shard in metadata["shards"]:
        file = out_dir / shard["file"]
        if not file.is_file():
            raise DataError(f"shard listed in {path} is missing: {file}")
        if "bytes" in shard and file.stat().st_size != shard["bytes"]:
            raise DataError(
                f"shard {file} has {file.stat().st_size} bytes, {path} says {shard['bytes']}: "
                "truncated or modified; prepare again"
            )
    return metadata


def records(directory: str | os.PathLike[str], metadata: dict) -> Any:
    """Every record of the shard folder, decoded (`parse_example`), in shard order: a
    ``tf.data.Dataset`` over the shard files ``metadata`` (`load_metadata`) lists."""
    tf = io.tensorflow()
    files = [str(Path(directory) / s["file"]) for s in metadata["shards"]]
    num_frames, num_mels = int(metadata["num_frames"]), int(metadata["num_mels"])
    return tf.data.TFRecordDataset(files).map(lambda s: parse_example(s, num_frames, num_mels))


def _config_differences(stored: dict, wanted: dict) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [
        f"features.{k}: {stored.get(k, '<absent>')!r} in the shards, "
        f"{wanted.get(k, '<absent>')!r} in the config"
        for k in keys
        if stored.get(k) != wanted.get(k)
    ]


def check_compatible(metadata: dict, features_cfg: Any, *, where: str | None = None) -> None:
    """Raises DataError unless the shards were computed with exactly ``features_cfg``.

    The message shows both fingerprints and every differing key, so mixing features from two
    front ends is impossible and the fix (prepare again) is obvious.
    """
    wanted_fp = features.fingerprint(features_cfg)
    stored_fp = metadata.get("fingerprint")
    if stored_fp == wanted_fp:
        return
    wanted = features.canonical_config(features_cfg)
    stored = {**features.ADDED_KEYS, **dict(metadata.get("features_config") or {})}
    diffs = _config_differences(stored, wanted)
    if not diffs:
        diffs = [
            f"no key differs: the shards use feature format version "
            f"{metadata.get('features_version')!r}, this sejax computes version "
            f"{features.FEATURES_VERSION}"
        ]
    place = f" in {where}" if where else ""
    raise DataError(
        f"prepared shards{place} were computed with a different features config "
        f"(shards fingerprint {stored_fp}, config fingerprint {wanted_fp}). Differing keys:\n  "
        + "\n  ".join(diffs)
        + "\nPrepare the corpus again into another folder, or pass overwrite=True to replace "
        "these shards."
    )
