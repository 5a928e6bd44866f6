"""The tf.data pipeline: train-only statistics, per-speaker normalisation, shuffled training
batches that resume, exact-once evaluation. (Splits: test_splits.py.)"""

import numpy as np
import pytest

from sejax.configs import default
from sejax.data import demo, input_pipeline, prepare, splits
from sejax.errors import ConfigError

ACTORS = (1, 2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    features = default.get_features_config()
    features.duration_s, features.n_mels, features.fmax = 0.5, 16, 8000.0
    corpus = demo.generate_demo_corpus(
        root / "audio", actors=ACTORS, repetitions=(1,), duration_s=0.5
    )
    prepare.prepare(corpus, root / "shards", features, num_workers=1, examples_per_shard=20,
                    progress=False)  # fmt: skip
    return root / "shards"


def _data_cfg(val=(5,), test=(6,)):
    c = default.get_config().data
    c.val_actors, c.test_actors = val, test
    return c


def _all_features(shards, indices):
    rows = {}
    for b in shards._select(indices).batch(64).as_numpy_iterator():
        rows.update(zip(b["index"].tolist(), b["features"], strict=True))
    return rows


def test_normalisation_uses_training_actors_only(shards_dir):
    shards = input_pipeline.Shards(shards_dir)
    split = splits.make_split(shards.examples, _data_cfg())
    norm = shards.normalization(split.indices["train"], "per_band")
    train = np.stack(list(_all_features(shards, split.indices["train"]).values()))
    np.testing.assert_allclose(norm.mean, train.mean(axis=(0, 1)), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(norm.std, train.std(axis=(0, 1)), rtol=1e-4, atol=1e-4)
    everything = np.stack(list(_all_features(shards, np.arange(len(shards.examples))).values()))
    assert not np.allclose(norm.mean, everything.mean(axis=(0, 1)), atol=1e-3)
    batch = next(shards.eval_batches(split.indices["train"], norm, batch_size=8))
    raw = _all_features(shards, split.indices["train"])
    first = raw[int(batch["index"][0])]
    np.testing.assert_allclose(batch["features"][0], (first - norm.mean) / norm.std, atol=1e-5)


def test_per_speaker_normalisation_uses_each_speakers_own_clips(shards_dir):
    shards = input_pipeline.Shards(shards_dir)
    split = splits.make_split(shards.examples, _data_cfg())
    norm = shards.normalization(split.indices["train"], "per_speaker")
    assert norm.per_speaker
    pooled = shards.normalization(split.indices["train"], "per_band")
    np.testing.assert_array_equal(norm.mean, pooled.mean)  # the training actors' (bundles)
    assert input_pipeline.Normalization.from_json(norm.to_json()).per_speaker
    everything = np.arange(len(shards.examples))
    out = {}
    for b in shards.eval_batches(everything, norm, batch_size=8):
        out.update(zip(b["index"][b["mask"] > 0].tolist(), b["features"][b["mask"] > 0],
                       strict=True))  # fmt: skip
    raw = _all_features(shards, everything)
    for actor in ACTORS:  # test actor 6 included: its own unlabelled clips, no one else's
        rows = [i for i in everything if shards.examples[i]["actor"] == actor]
        own = np.stack([raw[i] for i in rows])
        mean, std = own.mean(axis=(0, 1)), own.std(axis=(0, 1))
        got = np.stack([out[i] for i in rows])
        np.testing.assert_allclose(got, (own - mean) / std, atol=2e-4)
        np.testing.assert_allclose(got.mean(axis=(0, 1)), 0.0, atol=1e-4)
    train_batch = next(shards.train_batches(split.indices["train"], norm, batch_size=4, seed=0,
                                            epoch=0, shuffle_buffer=100))  # fmt: skip
    for i, row in zip(train_batch["index"], train_batch["features"], strict=True):
        np.testing.assert_allclose(row, out[int(i)], atol=1e-6)


def test_evaluation_sees_every_example_exactly_once(shards_dir):
    shards = input_pipeline.Shards(shards_dir)
    split = splits.make_split(shards.examples, _data_cfg())
    norm = shards.normalization(split.indices["train"], "none")
    idx = split.indices["test"]
    batches = list(shards.eval_batches(idx, norm, batch_size=7))
    assert all(len(b["label"]) == 7 for b in batches)  # padded to full batches
    real = np.concatenate([b["index"][b["mask"] > 0] for b in batches])
    assert sorted(real.tolist()) == sorted(idx.tolist())
    assert int(sum(b["mask"].sum() for b in batches)) == len(idx)
    assert (batches[-1]["index"][batches[-1]["mask"] == 0] == -1).all()
    labels = np.concatenate([b["label"][b["mask"] > 0] for b in batches])
    assert labels.tolist() == [shards.examples[i]["label"] for i in real]


def test_train_order_depends_on_seed_and_epoch_and_resumes(shards_dir):
    shards = input_pipeline.Shards(shards_dir)
    split = splits.make_split(shards.examples, _data_cfg())
    norm = shards.normalization(split.indices["train"], "none")
    kw = dict(batch_size=4, shuffle_buffer=1000)

    def order(seed, epoch, skip=0):
        batches = shards.train_batches(
            split.indices["train"], norm, seed=seed, epoch=epoch, skip_batches=skip, **kw
        )
        return [b["index"].tolist() for b in batches]

    a = order(0, 0)
    assert a == order(0, 0)
    assert a != order(0, 1) and a != order(1, 0)
    assert len(a) == len(split.indices["train"]) // 4  # full batches only
    assert order(0, 0, skip=3) == a[3:]
    flat = [i for batch in a for i in batch]
    assert len(set(flat)) == len(flat) and set(flat) <= set(split.indices["train"].tolist())


def test_epoch_order_is_a_fixed_shuffle_of_full_batches():
    from sejax.data.input_pipeline import epoch_order

    rows = epoch_order(50, 8, seed=3, epoch=1)
    assert rows.shape == (6, 8) and rows.dtype == np.int32
    assert len(set(rows.ravel().tolist())) == 48 and rows.max() < 50  # no repeats
    np.testing.assert_array_equal(rows, epoch_order(50, 8, seed=3, epoch=1))
    assert not np.array_equal(rows, epoch_order(50, 8, seed=3, epoch=2))
    assert not np.array_equal(rows, epoch_order(50, 8, seed=4, epoch=1))
    with pytest.raises(ConfigError, match=r"train\.batch_size=8"):
        epoch_order(5, 8, seed=0, epoch=0)
