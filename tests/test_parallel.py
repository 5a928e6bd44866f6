"""Both data-parallel paths: one device and four (simulated CPU) devices agree step by step.

JAX fixes its device count when it starts, so the multi-device runs happen in subprocesses
with ``JAX_NUM_CPU_DEVICES`` (and the older XLA flag) set before JAX is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from sejax.configs.default import get_config
from sejax.errors import ConfigError
from sejax.training.parallel import Parallel, make_parallel

REPO = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter; prints one JSON line with everything the tests compare.
SCRIPT = r"""
import functools, json
import jax, numpy as np, optax
from jax.sharding import NamedSharding, PartitionSpec as P
from sejax.training import steps
from sejax.configs.default import get_config, get_model_config
from sejax.errors import ConfigError
from sejax.model.models import build_model
from sejax.training.parallel import AXIS, make_parallel
from sejax.training.train_state import init_train_state

# XLA:CPU compiles the default (partitionable) threefry draws of 4-D conv kernels several
# times slower; this process only compares runs with each other, so take the other stream.
jax.config.update("jax_threefry_partitionable", False)

def model(lstm_layers=1):
    cfg = get_model_config()
    cfg.conv_channels, cfg.lstm_units, cfg.lstm_layers = (4, 8), 8, lstm_layers
    cfg.conv_dropout = cfg.head_dropout = 0.0  # dropout keys differ per device by design
    return build_model(cfg, bn_axis_name=AXIS)  # BatchNorm stays on, synced over devices

rng = np.random.default_rng(0)
batches = [{"features": rng.normal(size=(8, 32, 16)).astype(np.float32),
            "label": rng.integers(0, 8, size=8).astype(np.int32)} for _ in range(3)]
eval_batch = {**batches[0], "mask": np.array([1] * 6 + [0] * 2, np.float32)}

def fresh_state(m):
    # Plain SGD: unlike Adam, its update scales with the gradient, so a gradient summed
    # instead of averaged over devices would show.
    tx = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    return init_train_state(jax.random.PRNGKey(0), m, (1, 32, 16), tx)

out = {"num_devices": jax.device_count()}
for mode in ("pmap", "jit"):
    train_cfg = get_config().train
    train_cfg.parallel, train_cfg.batch_size = mode, 8
    par = make_parallel(train_cfg)
    state = par.put_state(fresh_state(model()))
    metrics = []
    for batch in batches:
        state, m = par.train_step(state, par.put_batch(batch))
        metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
    ev = par.eval_step(state, par.put_batch(eval_batch))
    # The device-resident input gathers the same batch, laid out the same way.
    resident = par.put_resident({k: np.concatenate([b[k] for b in batches]) for k in batches[0]})
    gathered, put = par.resident_batch(resident, np.arange(8, 16)), par.put_batch(batches[1])
    resident_equal = all(
        np.array_equal(np.asarray(gathered[k]), np.asarray(put[k]))
        and gathered[k].sharding == put[k].sharding for k in put)
    # Precise BatchNorm over two batches: global statistics, replicated, nothing else changed.
    precise = par.precise_batch_stats(state, (par.put_batch(b) for b in batches[:2]))
    saved = par.get_state(state)
    out[mode] = {
        "precise_bn": [np.asarray(x).ravel().tolist()
                       for x in jax.tree.leaves(precise.batch_stats)],
        "precise_keeps_params": all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(
            jax.tree.leaves(precise.params), jax.tree.leaves(saved.params))),
        "precise_replicated": all(x.sharding.spec == P() and len(x.sharding.device_set) ==
                                  jax.device_count() for x in jax.tree.leaves(precise.batch_stats)),
        "metrics": metrics,
        "params": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(saved.params)],
        "batch_stats": [np.asarray(x).ravel().tolist() for x in jax.tree.leaves(saved.batch_stats)],
        "step": int(saved.step),
        "eval": {k: np.asarray(v).tolist() for k, v in ev.items()},
        "state_replicated": all(
            isinstance(x.sharding, NamedSharding) and x.sharding.spec == P()
            for x in jax.tree.leaves(saved)),
        "state_devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(saved)}),
        "batch_shape": list(par.put_batch(batches[0])["features"].shape),
        "resident_equal": resident_equal,
    }
    train_cfg.batch_size = 6
    try:
        make_parallel(train_cfg)
        out[mode]["batch_size_error"] = None
    except ConfigError as e:
        out[mode]["batch_size_error"] = str(e)

# shard_map with its type checker on (a model without the LSTM scan, which it rejects):
# the step must still average, not sum, the gradient of the replicated parameters.
train_cfg = get_config().train
train_cfg.parallel, train_cfg.batch_size = "jit", 8
par = make_parallel(train_cfg)
checked = jax.jit(jax.shard_map(
    functools.partial(steps.train_step, axis_name=AXIS), mesh=par.mesh,
    in_specs=(P(), P(AXIS)), out_specs=(P(), P()), check_vma=True))
state = par.put_state(fresh_state(model(lstm_layers=0)))
out["checked"] = []
for batch in batches:
    state, m = checked(state, par.put_batch(batch))
    out["checked"].append({k: float(v) for k, v in jax.device_get(m).items()})

# The plain step without any mapping (one device only).
if jax.device_count() == 1:
    unmapped_model = model().clone(bn_axis_name=None)
    state = fresh_state(model()).replace(apply_fn=unmapped_model.apply)
    step = jax.jit(functools.partial(steps.train_step, axis_name=None))
    out["unmapped"] = []
    for batch in batches:
        state, m = step(state, batch)
        out["unmapped"].append({k: float(v) for k, v in jax.device_get(m).items()})
print(json.dumps(out))
"""


def _launch(num_devices: int) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_NUM_CPU_DEVICES=str(num_devices),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def runs() -> dict[int, dict]:
    """Both runs at once (separate processes), ~15 s."""
    procs = {n: _launch(n) for n in (1, 4)}
    results = {}
    for n, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{n}-device run failed:\n{stderr[-4000:]}"
        results[n] = json.loads(stdout.strip().splitlines()[-1])
    assert results[1]["num_devices"] == 1 and results[4]["num_devices"] == 4
    return results


def _close(a, b, rtol=1e-4, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_four_devices_match_one(runs, mode):
    one, four = runs[1][mode], runs[4][mode]
    for a, b in zip(one["metrics"], four["metrics"], strict=True):
        assert a.keys() == b.keys() == {"loss", "accuracy", "grad_norm", "learning_rate"}
        for key in a:
            _close(a[key], b[key])
    # Losses actually moved, so the comparison covers real updates.
    assert one["metrics"][-1]["loss"] != one["metrics"][0]["loss"]
    for a, b in zip(one["params"], four["params"], strict=True):
        _close(a, b)
    # Running statistics are those of the global batch on every device.
    for a, b in zip(one["batch_stats"], four["batch_stats"], strict=True):
        _close(a, b)
    assert one["step"] == four["step"] == 3
    for key in ("logits", "loss", "loss_sum", "correct", "count"):
        _close(one["eval"][key], four["eval"][key])


@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_precise_batch_stats_are_global_and_change_nothing_else(runs, mode):
    one, four = runs[1][mode], runs[4][mode]
    for a, b in zip(one["precise_bn"], four["precise_bn"], strict=True):
        _close(a, b)
    # Recomputed, not the running averages the steps left.
    pairs = zip(one["precise_bn"], one["batch_stats"], strict=True)
    assert any(not np.allclose(a, b) for a, b in pairs)
    assert one["precise_keeps_params"] and four["precise_keeps_params"]
    assert one["precise_replicated"] and four["precise_replicated"]


def test_paths_agree_with_each_other(runs):
    for n in (1, 4):
        for a, b in zip(runs[n]["pmap"]["metrics"], runs[n]["jit"]["metrics"], strict=True):
            _close(a["loss"], b["loss"])
            _close(a["grad_norm"], b["grad_norm"])


def test_checked_shard_map_averages_gradients(runs):
    for a, b in zip(runs[1]["checked"], runs[4]["checked"], strict=True):
        _close(a["loss"], b["loss"])
        _close(a["grad_norm"], b["grad_norm"])


@pytest.mark.parametrize("mode", ["pmap", "jit"])
def test_layouts_on_four_devices(runs, mode):
    four = runs[4][mode]
    # One global array per leaf, replicated on all devices: what Orbax saves.
    assert four["state_replicated"]
    assert four["state_devices"] == [4]
    assert four["batch_shape"] == ([4, 2, 32, 16] if mode == "pmap" else [8, 32, 16])
    assert four["resident_equal"] and runs[1][mode]["resident_equal"]
    # Eval outputs come back whole, in global order, with padding masked out.
    assert np.shape(four["eval"]["logits"]) == (8, 8)
    assert four["eval"]["count"] == 6.0
    assert four["eval"]["loss"][6:] == [0.0, 0.0]
    error = four["batch_size_error"]
    assert error is not None and "train.batch_size=6" in error and "4" in error
    assert runs[1][mode]["batch_size_error"] is None


def test_unknown_parallel_mode():
    cfg = get_config().train
    cfg.parallel = "pjit"
    with pytest.raises(ConfigError, match=r"train\.parallel.*'pmap', 'jit'"):
        make_parallel(cfg)


def test_mapped_steps_equal_the_unmapped_step(runs):
    for mode in ("pmap", "jit"):
        for a, b in zip(runs[1][mode]["metrics"], runs[1]["unmapped"], strict=True):
            _close(a["loss"], b["loss"], rtol=1e-5)
            _close(a["grad_norm"], b["grad_norm"], rtol=1e-5)


def test_put_batch_rejects_mismatched_arrays():
    par = Parallel("jit", devices=jax.devices()[:1])
    with pytest.raises(ValueError, match="disagree"):
        par.put_batch({"features": np.zeros((4, 2)), "label": np.zeros(3)})
