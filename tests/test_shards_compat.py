"""Shards prepared by an earlier sejax (`tests/fixtures/shards_v1`, see its make.py) still load:
the same metadata, fingerprint and features, and a training epoch over them still runs; and
preparing the same corpus today writes the same shards (the same bytes on the CPU kind that
wrote them; elsewhere the same records, log-Mel values to float32 rounding)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from sejax.configs.default import get_config, get_features_config
from sejax.data import features, input_pipeline, shards, splits

FIXTURE = Path(__file__).parent / "fixtures" / "shards_v1"


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory) -> Path:
    """A copy: reading shards must not write them, but if it did the fixture stays as is."""
    out = tmp_path_factory.mktemp("compat") / "shards"
    shutil.copytree(FIXTURE, out)
    return out


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((FIXTURE / "expected.json").read_text())


def _features_cfg(expected: dict) -> ml_collections.ConfigDict:
    cfg = get_features_config()
    cfg.update(expected["features"])
    return cfg


def test_metadata_and_fingerprint_are_as_stored(shards_dir, expected):
    stored = json.loads((FIXTURE / "metadata.json").read_text())
    metadata = shards.load_metadata(shards_dir)
    assert metadata == stored
    cfg = _features_cfg(expected)
    assert metadata["fingerprint"] == expected["fingerprint"] == features.fingerprint(cfg)
    shards.check_compatible(metadata, cfg)  # the same config still matches
    assert metadata["num_frames"] == features.num_frames(cfg) == 31
    assert metadata["num_examples"] == 45 and len(metadata["shards"]) == 3
    assert metadata["skipped"][0][0] == "Actor_01/not-a-ravdess-name.wav"
    assert metadata["report"]["rejected"] == 1


def test_every_example_reads_back_as_stored(shards_dir, expected):
    shards = input_pipeline.Shards(shards_dir)
    assert (shards.num_frames, shards.num_mels) == (31, 16)
    assert shards.examples == json.loads((FIXTURE / "metadata.json").read_text())["examples"]
    read = list(shards._select(np.arange(len(shards.examples))).as_numpy_iterator())
    got = [
        {
            "index": int(r["index"]),
            "label": int(r["label"]),
            "actor": int(r["actor"]),
            "features_sha256": hashlib.sha256(r["features"].tobytes()).hexdigest(),
        }
        for r in read
    ]
    assert got == expected["examples"]
    for row, example in zip(shards.examples, got, strict=True):
        assert (row["index"], row["label"], row["actor"]) == (
            example["index"], example["label"], example["actor"],
        )  # fmt: skip


def test_a_training_epoch_runs_over_them(shards_dir):
    shards = input_pipeline.Shards(shards_dir)
    data_cfg = get_config().data
    data_cfg.val_actors, data_cfg.test_actors = (2,), (3,)
    split = splits.make_split(shards.examples, data_cfg)
    train = split.indices["train"]
    assert split.actors["train"] == (1,) and len(train) == 15
    norm = shards.normalization(train, "per_band")
    batches = list(shards.train_batches(train, norm, batch_size=4, seed=0, epoch=0,
                                        shuffle_buffer=64))  # fmt: skip
    assert len(batches) == input_pipeline.steps_per_epoch(len(train), 4) == 3
    seen = np.concatenate([b["index"] for b in batches])
    assert len(set(seen.tolist())) == 12 and set(seen.tolist()) <= set(train.tolist())
    raw = {int(r["index"]): r["features"]
           for r in shards._select(train).as_numpy_iterator()}  # fmt: skip
    for batch in batches:
        assert batch["features"].shape == (4, 31, 16) and batch["features"].dtype == np.float32
        for i, x in zip(batch["index"], batch["features"], strict=True):
            np.testing.assert_allclose(x, (raw[int(i)] - norm.mean) / norm.std, rtol=1e-6,
                                       atol=1e-6)  # fmt: skip
            assert batch["label"][list(batch["index"]).index(i)] == shards.examples[i]["label"]


def _read_all(folder: Path):
    data = input_pipeline.Shards(folder)
    return data._select(np.arange(len(data.examples))).as_numpy_iterator()


def test_preparing_the_same_corpus_again_writes_the_same_shards(tmp_path):
    spec = importlib.util.spec_from_file_location("make_shards_v1", FIXTURE / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    out = make.build(tmp_path)
    stored = json.loads((FIXTURE / "metadata.json").read_text())
    metadata = json.loads((out / "metadata.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in FIXTURE.iterdir() if p.name not in ("make.py", "expected.json")
    )
    for shard in stored["shards"]:  # the same records, of the same sizes
        assert (out / shard["file"]).stat().st_size == (FIXTURE / shard["file"]).stat().st_size
    # The same examples: ids exactly, log-Mel values to float32 rounding (the fixture was
    # written on an AVX-512 CPU; librosa's FFT rounds differently on AVX2, in the last bits).
    new, old = (list(_read_all(d)) for d in (out, FIXTURE))
    assert [r["index"] for r in new] == [r["index"] for r in old]
    for a, b in zip(new, old, strict=True):
        assert (a["label"], a["actor"]) == (b["label"], b["actor"])
        np.testing.assert_allclose(a["features"], b["features"], rtol=1e-5, atol=1e-4)
    assert (out / "rejected.tsv").read_bytes() == (FIXTURE / "rejected.tsv").read_bytes()
    # The metadata too, but for where the corpus was generated.
    old_root, new_root = stored["source"], metadata["source"]
    text = (FIXTURE / "metadata.json").read_text().replace(old_root, new_root)
    assert metadata == json.loads(text)
