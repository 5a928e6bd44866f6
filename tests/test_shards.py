"""sejax.data.shards: the shard format (records, metadata rows, metadata checks, features
compatibility). Shards written by an earlier sejax: tests/test_shards_compat.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sejax import io
from sejax.corpora.base import Recording
from sejax.corpora.sources import Example
from sejax.data import features, prepare, shards
from sejax.errors import DataError
from tests.test_prepare import make_corpus, read_shards, tiny_cfg, tree_bytes


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, dict]:
    """14 clips by 2 actors in 3 shards (`tests.test_prepare.make_corpus`)."""
    root = tmp_path_factory.mktemp("shards")
    make_corpus(root / "corpus")
    summary = prepare.prepare(root / "corpus", root / "shards", tiny_cfg(), num_workers=1,
                              examples_per_shard=5, progress=False)  # fmt: skip
    return root / "shards", summary


def test_a_record_round_trips_through_the_spec(tmp_path):
    tf = io.tensorflow()
    recording = Recording(source="/x/03-01-05-02-01-02-07.wav", speaker="07", actor=7,
                          emotion="angry", gender="male", intensity=2, statement=1,
                          repetition=2, text="01")  # fmt: skip
    row = shards.example_row(Example(recording, "ravdess", 7, 4, "angry"), 3, "s.tfrecord",
                             sha256="ab" * 32, num_samples=1234)  # fmt: skip
    assert row == {
        "index": 3, "source": "/x/03-01-05-02-01-02-07.wav", "corpus": "ravdess",
        "speaker": "07", "actor": 7, "gender": "male", "label": 4, "emotion": "angry",
        "corpus_label": "angry", "intensity": 2, "statement": 1, "repetition": 2, "text": "01",
        "split": "", "sha256": "ab" * 32, "num_samples_original": 1234, "shard": "s.tfrecord",
    }  # fmt: skip
    feats = np.arange(6 * 4, dtype="<f4").reshape(6, 4)
    record = shards.example_proto(tf, feats.tobytes(), row)
    assert record == shards.example_proto(tf, feats.tobytes(), row)  # deterministic bytes
    got = {k: v.numpy() for k, v in shards.parse_example(tf.constant(record), 6, 4).items()}
    np.testing.assert_array_equal(got["features"], feats)
    assert (got["label"], got["actor"], got["index"]) == (4, 7, 3)
    assert all(got[k].dtype == np.int32 for k in ("label", "actor", "index"))
    names = [shards.shard_name(i, 3) for i in range(3)]
    assert names[0] == "shard-00000-of-00003.tfrecord"
    assert all(shards.is_shard_file(n) for n in names)
    assert not any(shards.is_shard_file(n) for n in ("metadata.json", "shard-0.tfrecord",
                                                     "shard-00000.partial"))  # fmt: skip


def test_records_reads_every_example_in_shard_order(prepared):
    out = prepared[0]
    metadata = shards.load_metadata(out)
    got = list(shards.records(out, metadata).as_numpy_iterator())
    assert [int(r["index"]) for r in got] == [row["index"] for row in metadata["examples"]]
    for record, expected in zip(got, read_shards(out), strict=True):
        np.testing.assert_array_equal(record["features"], expected["features"])
        assert record["label"] == expected["label"] and record["actor"] == expected["actor"]
    assert features.num_frames(tiny_cfg()) == got[0]["features"].shape[0]


def test_load_metadata_errors(prepared, tmp_path):
    with pytest.raises(DataError, match=r"no metadata\.json"):
        shards.load_metadata(tmp_path)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, content in tree_bytes(prepared[0]).items():
        (copy / name).write_bytes(content)
    shard = copy / "shard-00001-of-00003.tfrecord"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(DataError, match="truncated"):
        shards.load_metadata(copy)
    shard.unlink()
    with pytest.raises(DataError, match="missing"):
        shards.load_metadata(copy)
    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "version": 99}))
    with pytest.raises(DataError, match="version 99"):
        shards.load_metadata(copy)


def test_check_compatible(prepared):
    metadata = shards.load_metadata(prepared[0])
    shards.check_compatible(metadata, tiny_cfg())  # same config: no error
    other = tiny_cfg()
    other.update({"hop_length": 64, "crop": "center"})
    with pytest.raises(DataError) as info:
        shards.check_compatible(metadata, other, where="somewhere")
    message = str(info.value)
    assert "somewhere" in message
    assert metadata["fingerprint"] in message and features.fingerprint(other) in message
    assert "features.hop_length: 128 in the shards, 64 in the config" in message
    assert "features.crop: 'start' in the shards, 'center' in the config" in message
    assert "n_mels" not in message
