"""A tiny "trained" model for the inference tests, built without training.

Training even the tiny config takes a minute on a loaded 2-core machine; prediction, export
and streaming only need a checkpoint of the right form. So this builds the tiny network of
`tests.conftest.tiny_args`, gives it non-trivial BatchNorm statistics (so running averages
matter), and saves it exactly as `sejax.training.train` does: an Orbax checkpoint with the train
state
and the JSON meta. It is built once per test session (several modules share it) and a small
demo corpus of 3 s clips is generated next to it.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.corpora.ravdess import EMOTIONS
from sejax.data import features
from sejax.model import models
from sejax.training import parallel, train_state
from sejax.training.checkpoints import Checkpoints
from tests.conftest import tiny_args

STEPS_PER_EPOCH = 7
_CACHE: dict[str, Path] = {}


def tiny_config():
    config = config_lib.load_config(None)
    config_lib.apply_overrides(config, config_lib.parse_override_args(tiny_args()))
    return validate(config)


def _random_variables(model, shape: tuple[int, ...], seed: int) -> dict:
    """Parameters and BatchNorm statistics with Flax's shapes, filled with numpy noise.

    ``model.init`` would compile the network (15-20 s on a loaded 2-core machine); only the
    shapes are needed (``jax.eval_shape``). Kernels get a fan-in scaled normal, biases small
    noise, BatchNorm scales ~1, running means +-0.3 and variances in [0.5, 2], so the
    running averages matter.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)
    )

    def fill(path, leaf) -> jax.Array:
        name = str(path[-1].key)
        size = leaf.shape
        if name == "kernel":
            value = rng.standard_normal(size) / np.sqrt(np.prod(size[:-1]))
        elif name == "scale":
            value = rng.uniform(0.8, 1.2, size)
        elif name == "var":
            value = rng.uniform(0.5, 2.0, size)
        else:  # bias, BatchNorm mean
            value = rng.uniform(-0.3, 0.3, size)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def make_workdir(workdir: Path, seed: int = 0) -> Path:
    """Writes ``workdir/checkpoints/<step>`` (state + meta) like a finished tiny run."""
    config = tiny_config()
    model = models.build_model(config.model, bn_axis_name=parallel.AXIS)
    tx = train_state.make_optimizer(config.train, STEPS_PER_EPOCH)
    shape = (1, features.num_frames(config.features), config.features.n_mels)
    variables = _random_variables(models.build_model(config.model), shape, seed)
    state = train_state.TrainState(
        step=jnp.asarray(STEPS_PER_EPOCH, jnp.int32),
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        opt_state=tx.init(variables["params"]),
        batch_stats=variables["batch_stats"],
        rng=jnp.zeros((2,), jnp.uint32),
    )
    n_mels = config.features.n_mels
    meta = {
        "config": config.to_dict(),
        "label_names": list(EMOTIONS),
        "normalization": {
            "mean": np.linspace(-60, -30, n_mels).tolist(),
            "std": np.linspace(10, 20, n_mels).tolist(),
        },
        "split": {"train": {"actors": [17, 18, 19, 20], "num_examples": 120}},
        "shards": "",
        "features_fingerprint": features.fingerprint(config.features),
        "steps_per_epoch": STEPS_PER_EPOCH,
    }
    ckpts = Checkpoints(workdir / "checkpoints", keep=2)
    ckpts.save(STEPS_PER_EPOCH, state, dict(meta, epoch=1, best_val_uar=0.5, best_epoch=1),
               metrics={"val_uar": 0.5})  # fmt: skip
    ckpts.close()
    return workdir


def demo_clips(root: Path) -> Path:
    """A small demo corpus (one actor, one take: 30 clips of 3 s at 16 kHz)."""
    from sejax.data.demo import generate_demo_corpus

    return generate_demo_corpus(root, actors=(23,), repetitions=(1,))


def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """``(workdir, demo corpus)``, built on first use and shared by every test module."""
    if "workdir" not in _CACHE:
        root = tmp_path_factory.mktemp("tiny_model")
        _CACHE["workdir"] = make_workdir(root / "run")
        _CACHE["demo"] = demo_clips(root / "demo")
    return _CACHE["workdir"], _CACHE["demo"]
