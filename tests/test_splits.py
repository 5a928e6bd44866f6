"""sejax.data.splits: splits by actor, by a manifest's column or random clips, and the leakage
guard: no speaker and no identical recording on two sides of a split, unless the config asks
for a leaking split, which is then marked everywhere. Splits need only the metadata rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sejax.configs import loading as config_lib
from sejax.configs.default import get_config
from sejax.configs.validation import validate
from sejax.data import splits
from sejax.errors import ConfigError, DataError


def rows(actors=range(1, 7), per_actor=16, duplicate=None):
    """Example rows as in metadata.json; ``duplicate=(i, j)`` gives row j row i's bytes."""
    out = []
    for a in actors:
        for j in range(per_actor):
            out.append({"index": len(out), "source": f"Actor_{a:02d}/{j:02d}.wav", "actor": a,
                        "label": j % 8, "sha256": f"{a:02d}{j:02d}".ljust(64, "0")})  # fmt: skip
    if duplicate:
        i, j = duplicate
        out[j]["sha256"] = out[i]["sha256"]
    return out


def data_cfg(**overrides):
    pairs = [(f"data.{k}", v) for k, v in overrides.items()]
    return config_lib.apply_overrides(get_config(), pairs).data


def test_actor_split_is_not_leaking():
    split = splits.make_split(rows(), data_cfg(val_actors="(5,)", test_actors="(6,)"))
    assert not split.leaking and split.to_json()["leaking"] is False
    assert split.leakage["shared_actors"] == {} and split.leakage["shared_audio"] == []
    assert split.leakage["examples_without_sha256"] == 0


def test_identical_audio_across_sides_is_refused_but_fine_within_a_side():
    cfg = data_cfg(val_actors="(5,)", test_actors="(6,)")
    # Actor_07-style: a byte-identical pair inside one actor (here both in training).
    inside = splits.make_split(rows(duplicate=(0, 1)), cfg)
    assert not inside.leaking
    # The same bytes under a training actor and a test actor.
    with pytest.raises(DataError, match=r"1 identical recording.*train:Actor_01/00\.wav = "
                                        r"test:Actor_06/00\.wav"):  # fmt: skip
        splits.make_split(rows(duplicate=(0, 80)), cfg)
    allowed = data_cfg(val_actors="(5,)", test_actors="(6,)", allow_leakage="True")
    split = splits.make_split(rows(duplicate=(0, 80)), allowed)
    assert split.leaking and split.to_json()["leaking"] is True
    [shared] = split.leakage["shared_audio"]
    assert shared["train"] == ["Actor_01/00.wav"] and shared["test"] == ["Actor_06/00.wav"]


def test_guard_names_speakers_on_two_sides():
    examples = rows()
    indices = {"train": np.arange(0, 40), "validation": np.arange(40, 60),
               "test": np.arange(60, 96)}  # fmt: skip
    with pytest.raises(ConfigError, match=r"train/validation: \[3\].*validation/test: \[4\]"):
        splits.check_leakage(examples, indices, allow=False)
    found = splits.check_leakage(examples, indices, allow=True)
    assert found["leaking"] and found["shared_actors"] == {"train/validation": [3],
                                                           "validation/test": [4]}  # fmt: skip


def test_random_split_needs_allow_leakage_and_is_stratified():
    config = config_lib.apply_overrides(get_config(), [("data.split_by", "random")])
    with pytest.raises(ConfigError, match=r"data\.allow_leakage=True"):
        validate(config)
    with pytest.raises(ConfigError, match="speaker leakage"):
        splits.make_split(rows(), config.data)
    cfg = data_cfg(split_by="random", allow_leakage="True")
    examples = rows(per_actor=40)  # 240 clips, 30 per label
    split = splits.make_split(examples, cfg)
    sizes = {n: len(i) for n, i in split.indices.items()}
    assert sizes == {"train": 168, "validation": 24, "test": 48}  # 70 / 10 / 20
    assert sorted(np.concatenate(list(split.indices.values())).tolist()) == list(range(240))
    for idx in split.indices.values():
        counts = np.bincount([examples[i]["label"] for i in idx], minlength=8)
        assert counts.max() - counts.min() <= 1  # stratified by label
    assert split.leaking and "train/test" in split.leakage["shared_actors"]
    again = splits.make_split(examples, cfg)
    assert all(np.array_equal(again.indices[n], split.indices[n]) for n in split.indices)
    reseeded = data_cfg(split_by="random", allow_leakage="True", split_seed="1")
    other = splits.make_split(examples, reseeded)
    assert not np.array_equal(other.indices["test"], split.indices["test"])


def test_random_parts_are_even():
    parts = splits.random_parts(np.arange(50) % 3, num_parts=12, seed=0)
    assert np.bincount(parts, minlength=12).max() - np.bincount(parts).min() <= 1
    for label in range(3):
        counts = np.bincount(parts[np.arange(50) % 3 == label], minlength=12)
        assert counts.max() - counts.min() <= 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"random_parts": "1"}, "must be an integer >= 2"),
     ({"random_test_parts": "(0,)"}, r"share \[0\]"),
     ({"random_test_parts": "(12,)"}, r"name parts \[12\]"),
     ({"random_parts": "3", "random_test_parts": "(1, 2)"}, "at least one of the 3 parts")],
)  # fmt: skip
def test_random_split_config_errors(overrides, message):
    pairs = [("data.split_by", "random"), ("data.allow_leakage", "True")]
    pairs += [(f"data.{k}", v) for k, v in overrides.items()]
    with pytest.raises(ConfigError, match=message):
        validate(config_lib.apply_overrides(get_config(), pairs))


def test_manifest_split_with_a_shared_speaker_only_when_allowed():
    examples = [{"source": f"f{i}", "actor": a, "speaker": f"s{a}", "split": s, "label": 0}
                for i, (s, a) in enumerate([("train", 1), ("train", 2), ("test", 2)])]  # fmt: skip
    with pytest.raises(ConfigError, match="allow_leakage"):
        splits.make_split(examples, data_cfg(split_by="manifest"))
    split = splits.make_split(examples, data_cfg(split_by="manifest", allow_leakage="True"))
    assert split.leaking and split.leakage["shared_actors"] == {"train/test": [2]}
    assert split.leakage["examples_without_sha256"] == 3


def test_write_split_records_the_leak(tmp_path):
    cfg = data_cfg(val_actors="(5,)", test_actors="(6,)", allow_leakage="True")
    examples = rows(duplicate=(0, 80))
    split = splits.make_split(examples, cfg)
    splits.write_split(tmp_path / "split.json", split, examples)
    record = json.loads((tmp_path / "split.json").read_text())
    assert record["leaking"] is True and len(record["leakage"]["shared_audio"]) == 1
    assert record["test"]["actors"] == [6] and len(record["test"]["sources"]) == 16


def _data_cfg(val=(5,), test=(6,)):
    c = get_config().data
    c.val_actors, c.test_actors = val, test
    return c


def test_split_is_actor_disjoint_and_complete():
    examples = rows()
    split = splits.make_split(examples, _data_cfg())
    assert split.actors == {"train": (1, 2, 3, 4), "validation": (5,), "test": (6,)}
    seen = np.concatenate(list(split.indices.values()))
    assert sorted(seen.tolist()) == list(range(len(examples)))  # complete, no overlap
    for name, idx in split.indices.items():
        assert {examples[i]["actor"] for i in idx} == set(split.actors[name])


def test_split_errors_name_the_key():
    examples = rows()
    with pytest.raises(ConfigError, match=r"data\.test_actors names actors \[9\]"):
        splits.make_split(examples, _data_cfg(test=(9,)))
    with pytest.raises(ConfigError, match="the train split is empty"):
        splits.make_split(examples, _data_cfg(val=(1, 2, 3), test=(4, 5, 6)))


def test_every_actor_can_train():
    """No validation or test actors: a final model trained on everything (nothing evaluated)."""
    examples = rows()
    split = splits.make_split(examples, _data_cfg(val=(), test=()))
    assert len(split.indices["train"]) == len(examples)
    assert len(split.indices["validation"]) == len(split.indices["test"]) == 0


def _manifest_rows(splits_and_speakers):
    return [{"source": f"f{i}", "actor": actor, "speaker": f"s{actor}", "split": split}
            for i, (split, actor) in enumerate(splits_and_speakers)]  # fmt: skip


def test_manifest_split_is_used_and_must_be_speaker_disjoint():
    cfg = get_config().data
    cfg.split_by = "manifest"
    split = splits.make_split(
        _manifest_rows([("train", 1), ("train", 2), ("validation", 3), ("test", 4), ("test", 4)]),
        cfg,
    )
    assert split.actors == {"train": (1, 2), "validation": (3,), "test": (4,)}
    assert split.indices["test"].tolist() == [3, 4]
    with pytest.raises(
        ConfigError, match=r"speaker\(s\) \['s2'\] are in both the train and the test"
    ):
        splits.make_split(_manifest_rows([("train", 2), ("test", 2)]), cfg)
    with pytest.raises(ConfigError, match="1 example\\(s\\) have no split"):
        splits.make_split(_manifest_rows([("train", 1), ("", 2), ("test", 3)]), cfg)
