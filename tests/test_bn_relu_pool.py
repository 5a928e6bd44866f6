"""The fused BatchNorm -> ReLU -> max-pool (sejax.model.onednn.bn_relu_pool, model.block_impl):
values, gradients and running averages against Flax's ops, the network and its train step
unchanged, pmap/shard_map with global batch statistics, and the fallback."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sejax.model import models, onednn
from sejax.model.onednn import bn_relu_pool, ops
from tests.devices import run_on_cpu_devices

ROOT = Path(__file__).resolve().parents[1]
RTOL = 2e-5  # relative to the largest |value| of the reference tensor
_REASON = "" if onednn.available() else (onednn._unavailable() or "")
needs_library = pytest.mark.skipif(bool(_REASON), reason=f"C++ library unavailable: {_REASON}")
EPS = 1e-3


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol} * {scale:.3g}"


def flax_block(x, scale, bias, axis_name=None):
    """What the fused op replaces: Flax's BatchNorm (batch statistics), ReLU, 2x2 pool."""
    bn = nn.BatchNorm(use_running_average=False, epsilon=EPS, axis_name=axis_name)
    stats = {"mean": jnp.zeros_like(scale), "var": jnp.ones_like(scale)}
    variables = {"params": {"scale": scale, "bias": bias}, "batch_stats": stats}
    y, _ = bn.apply(variables, x, mutable=["batch_stats"])
    return nn.max_pool(jax.nn.relu(y), (2, 2), strides=(2, 2), padding="VALID")


def fused_block(x, scale, bias, axis_name=None):
    return bn_relu_pool.training(x, scale, bias, epsilon=EPS, axis_name=axis_name)[0]


def make_inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    # Offset and scaled per channel like conv outputs; scales of both signs, away from 0.
    x = rng.normal(size=shape) * rng.uniform(0.5, 3, channels) + rng.normal(size=channels)
    scale = (np.abs(rng.normal(size=channels)) + 0.5) * np.sign(rng.normal(size=channels))
    bias = rng.normal(size=channels)
    pooled = (shape[0], shape[1] // 2, shape[2] // 2, channels)
    g = rng.normal(size=pooled)
    return tuple(jnp.asarray(a, jnp.float32) for a in (x, scale, bias, g))


# The reference network's four block inputs at batch 2, then odd and small ones.
SHAPES = [(2, 301, 64, 32), (2, 150, 32, 64), (2, 75, 16, 128), (2, 37, 8, 128),
          (1, 5, 7, 3), (3, 2, 2, 1), (2, 9, 4, 17)]  # fmt: skip


@needs_library
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_values_and_gradients_match_flax(shape):
    x, scale, bias, g = make_inputs(shape)
    got = jax.jit(fused_block)(x, scale, bias)
    want = jax.jit(flax_block)(x, scale, bias)
    assert_close(got, want, "pooled")
    assert float(jnp.mean(want > 0)) > 0.3  # the windows are mostly active: a real check

    def loss(block):
        return lambda x, s, b: jnp.sum(block(x, s, b) * g)

    grads = jax.jit(jax.grad(loss(fused_block), argnums=(0, 1, 2)))(x, scale, bias)
    wants = jax.jit(jax.grad(loss(flax_block), argnums=(0, 1, 2)))(x, scale, bias)
    for name, a, e in zip(("dx", "dscale", "dbias"), grads, wants, strict=True):
        assert_close(a, e, name, rtol=1e-4)


@needs_library
def test_batch_statistics_and_inference_match_flax():
    x, scale, bias, _ = make_inputs((4, 12, 10, 6), seed=1)
    _, mean, var = jax.jit(
        lambda x, s, b: bn_relu_pool.training(x, s, b, epsilon=EPS, axis_name=None)
    )(x, scale, bias)
    np.testing.assert_allclose(mean, np.mean(np.asarray(x), axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, np.var(np.asarray(x), axis=(0, 1, 2)), rtol=1e-4)

    ra_mean, ra_var = jnp.linspace(-1, 1, 6), jnp.linspace(0.5, 2, 6)
    bn = nn.BatchNorm(use_running_average=True, epsilon=EPS)
    variables = {"params": {"scale": scale, "bias": bias},
                 "batch_stats": {"mean": ra_mean, "var": ra_var}}  # fmt: skip
    want = nn.max_pool(jax.nn.relu(bn.apply(variables, x)), (2, 2), strides=(2, 2))
    got = bn_relu_pool.inference(x, scale, bias, ra_mean, ra_var, epsilon=EPS)
    assert_close(got, want, "inference")

    # The affine op's own gradient (inference under jax.grad, e.g. saliency maps).
    g = jnp.asarray(np.random.default_rng(2).normal(size=want.shape), jnp.float32)
    a, b = scale * jax.lax.rsqrt(ra_var + EPS), bias - ra_mean * scale * jax.lax.rsqrt(ra_var + EPS)

    def ref(x, a, b):
        return nn.max_pool(jax.nn.relu(a * x + b), (2, 2), strides=(2, 2))

    got = jax.grad(lambda *v: jnp.sum(bn_relu_pool.affine_relu_pool(*v) * g), (0, 1, 2))(x, a, b)
    exp = jax.grad(lambda *v: jnp.sum(ref(*v) * g), (0, 1, 2))(x, a, b)
    for name, u, e in zip(("dx", "da", "db"), got, exp, strict=True):
        assert_close(u, e, name, rtol=1e-4)


@needs_library
def test_ties_and_inactive_windows_route_like_xla():
    # Constant windows (ties) and windows ReLU zeroes: the gradient goes where XLA's does.
    x = jnp.asarray(np.repeat(np.arange(-3.0, 5.0), 8).reshape(2, 4, 4, 2), jnp.float32)
    x = x.at[0, :2, :2, 0].set(1.0)
    scale, bias = jnp.ones(2), jnp.zeros(2)
    g = jnp.ones((2, 2, 2, 2), jnp.float32)
    got = jax.grad(lambda v: jnp.sum(fused_block(v, scale, bias) * g))(x)
    want = jax.grad(lambda v: jnp.sum(flax_block(v, scale, bias) * g))(x)
    assert_close(got, want, "dx")


@needs_library
def test_non_finite_inputs_reach_the_output_and_gradients():
    # A NaN in the batch must show in the loss (train.on_non_finite), as with Flax's ops.
    x, scale, bias, g = make_inputs((2, 6, 4, 3))
    x = x.at[1, 3, 2, 1].set(jnp.nan)
    for block in (fused_block, flax_block):
        out = block(x, scale, bias)
        assert bool(jnp.isnan(out).any()), block.__name__
        dx = jax.grad(lambda v, b=block: jnp.sum(b(v, scale, bias) * g))(x)
        assert bool(jnp.isnan(dx).any()), block.__name__
    x, scale, bias, _ = make_inputs((1, 2, 2, 1))
    x = x.at[0, 1, 1, 0].set(jnp.nan)  # the window's last value: not skipped by the max
    assert bool(jnp.isnan(fused_block(x, scale, bias)).all())


def _tiny_config(block_impl: str):
    from sejax.configs import loading

    config = loading.load_config(None)
    config.features.duration_s = 0.5
    config.features.n_mels = 16
    config.model.conv_channels = (4, 8)
    config.model.lstm_units = 8
    config.model.block_impl = block_impl
    return config


@needs_library
def test_network_and_train_steps_are_unchanged():
    """Same variable tree, logits, gradients, losses, parameters and running averages
    after a few train steps, with either block_impl."""
    from sejax.training import steps, train_state

    rng = np.random.default_rng(0)
    _, shape = train_state.model_from_config(_tiny_config("xla"))
    features = rng.standard_normal((3, 8, *shape[1:]), np.float32)
    labels = rng.integers(0, 8, (3, 8))
    results = {}
    for impl in ("xla", "fused"):
        config = _tiny_config(impl)
        model, _ = train_state.model_from_config(config)
        state = train_state.create_train_state(config, 10, seed=0, bn_axis_name=None)
        apply = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
        logits = apply({"params": state.params, "batch_stats": state.batch_stats}, features[0])
        lowered = (
            jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
            .lower({"params": state.params, "batch_stats": state.batch_stats}, features[0])
            .as_text()
        )
        assert (ops.BN_RELU_POOL_FORWARD in lowered) == (impl == "fused"), impl
        step = jax.jit(lambda s, b: steps.train_step(s, b, axis_name=None))
        losses = []
        for x, y in zip(features, labels, strict=True):
            state, metrics = step(state, {"features": x, "label": y})
            losses.append(float(metrics["loss"]))
        results[impl] = logits, losses, state

    (logits_x, loss_x, state_x), (logits_f, loss_f, state_f) = results["xla"], results["fused"]
    assert jax.tree.structure(state_x.params) == jax.tree.structure(state_f.params)
    assert jax.tree.structure(state_x.batch_stats) == jax.tree.structure(state_f.batch_stats)
    assert_close(logits_f, logits_x, "logits", rtol=1e-4)
    np.testing.assert_allclose(loss_f, loss_x, rtol=1e-4)
    lr = _tiny_config("xla").train.learning_rate
    for tree_f, tree_x in ((state_f.params, state_x.params),
                           (state_f.batch_stats, state_x.batch_stats)):  # fmt: skip
        flat = jax.tree_util.tree_flatten_with_path(tree_f)[0]
        for (path, a), b in zip(flat, jax.tree.leaves(tree_x), strict=True):
            name = jax.tree_util.keystr(path)
            # Conv biases are removed by BatchNorm: zero gradient up to rounding, which Adam
            # turns into steps of the learning rate (test_onednn_conv); running means carry them.
            carries_bias = "Conv_0']['bias" in name or name.endswith("['mean']")
            atol = 3 * lr if carries_bias else 1e-5
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=atol,
                                       err_msg=name)  # fmt: skip
    fresh = train_state.create_train_state(_tiny_config("fused"), 10, seed=0, bn_axis_name=None)
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))),
                         state_f.batch_stats, fresh.batch_stats)  # fmt: skip
    moved = jax.tree.leaves(moved)
    assert max(moved) > 1e-3  # the running averages were updated


def test_config_choice_is_validated():
    from sejax.configs import loading
    from sejax.configs.validation import validate
    from sejax.errors import ConfigError

    config = loading.load_config(None)
    assert config.model.block_impl == "auto"
    config.model.block_impl = "cpp"
    with pytest.raises(ConfigError, match=r"model\.block_impl"):
        validate(config)
    with pytest.raises(ConfigError, match=r"model\.block_impl"):
        models.build_model(config.model)
    with pytest.raises(ValueError, match="block_impl"):
        onednn.use_fused_block("cpp")


def test_unavailable_library_falls_back_to_xla_with_one_warning(monkeypatch):
    monkeypatch.setattr(onednn, "_load_error", "BuildError: no compiler")
    monkeypatch.setattr(onednn, "_warned", set())
    block = models.ConvBlock(4, block_impl="fused", conv_impl="xla")
    x = jnp.ones((2, 6, 6, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        variables = block.init(jax.random.PRNGKey(0), x, train=False)
        block.apply(variables, x, train=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "no compiler" in messages[0], messages
    assert "XLA's convolution and BatchNorm-ReLU-pool" in messages[0]
    assert set(variables["params"]["BatchNorm_0"]) == {"scale", "bias"}


# ------------------------------------------------------------------------------------------
# Multiple devices (a subprocess: the device count is fixed at JAX's start).

_MULTI_DEVICE = textwrap.dedent(
    """
    from functools import partial
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from tests.test_bn_relu_pool import make_inputs, flax_block, fused_block, assert_close

    assert jax.device_count() == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    x, s, b, g = make_inputs((4, 9, 8, 16))
    # The reference: one device, the whole batch.
    ref = lambda x, s, b: jnp.sum(flax_block(x, s, b) * g)
    v2, g2 = jax.jit(jax.value_and_grad(ref, argnums=(0, 1, 2)))(x, s, b)
    for check_vma in (True, False):
        for block in (flax_block, fused_block):
            def local(x, s, b, g, block=block):  # this device's share of the loss, [1]
                return jnp.sum(block(x, s, b, "batch") * g)[None]
            def total(x, s, b, local=local, check_vma=check_vma):
                f = jax.shard_map(local, mesh=mesh, in_specs=(P("batch"), P(), P(), P("batch")),
                                  out_specs=P("batch"), check_vma=check_vma)
                return jnp.sum(f(x, s, b, g))
            v1, g1 = jax.jit(jax.value_and_grad(total, argnums=(0, 1, 2)))(x, s, b)
            assert_close(v1, v2, f"{block.__name__} shard_map({check_vma=}) loss")
            for name, a, e in zip(("dx", "dscale", "dbias"), g1, g2):
                assert_close(a, e, f"{block.__name__} shard_map({check_vma=}) {name}", rtol=1e-4)

    split = lambda a: a.reshape(2, a.shape[0] // 2, *a.shape[1:])
    for block in (flax_block, fused_block):
        def step(x, s, b, g, block=block):
            f = lambda x, s, b: jnp.sum(block(x, s, b, "d") * g)
            l, (dx, ds, db) = jax.value_and_grad(f, argnums=(0, 1, 2))(x, s, b)
            return jax.lax.psum(l, "d"), dx, jax.lax.psum(ds, "d"), jax.lax.psum(db, "d")
        pstep = jax.pmap(step, axis_name="d", in_axes=(0, None, None, 0))
        l, dx, ds, db = pstep(split(x), s, b, split(g))
        assert_close(l[0], v2, f"{block.__name__} pmap loss")
        assert_close(dx.reshape(x.shape), g2[0], f"{block.__name__} pmap dx", rtol=1e-4)
        assert_close(ds[0], g2[1], f"{block.__name__} pmap dscale", rtol=1e-4)
        assert_close(db[0], g2[2], f"{block.__name__} pmap dbias", rtol=1e-4)
    print("MULTI_DEVICE_OK")
    """
)


@needs_library
def test_global_batch_statistics_under_shard_map_and_pmap():
    run_on_cpu_devices(_MULTI_DEVICE, "MULTI_DEVICE_OK")
