"""sejax.model.xla_cpu_ops computes what the lax ops compute, values and gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from sejax.configs import default
from sejax.model import xla_cpu_ops as kernels
from sejax.model.models import build_model


def _lax_conv(x: jax.Array, w: jax.Array) -> jax.Array:
    nhwc = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=nhwc)


@pytest.mark.parametrize(
    ("shape", "kernel"),
    [((2, 9, 7, 3), (3, 3, 3, 5)), ((3, 8, 6, 4), (2, 4, 4, 2)), ((1, 11, 5, 1), (5, 3, 1, 4))],
)
def test_conv2d_same_matches_lax_values_and_gradients(shape, kernel) -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=kernel), jnp.float32)
    target = jnp.asarray(rng.normal(size=(*shape[:3], kernel[-1])), jnp.float32)

    def loss(conv):
        return lambda x, w: jnp.sum((conv(x, w) - target) ** 2 * jnp.tanh(conv(x, w)))

    np.testing.assert_allclose(kernels.conv2d_same(x, w), _lax_conv(x, w), rtol=1e-5, atol=1e-5)
    got = jax.grad(loss(kernels.conv2d_same), argnums=(0, 1))(x, w)
    want = jax.grad(loss(_lax_conv), argnums=(0, 1))(x, w)
    for g, r in zip(got, want, strict=True):
        assert g.shape == r.shape and g.dtype == r.dtype
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)


def test_conv_general_dilated_falls_back_for_what_it_does_not_cover() -> None:
    x = jnp.ones((1, 8, 8, 2))
    w = jnp.ones((3, 3, 2, 4))
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    strided = kernels.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dn)
    np.testing.assert_array_equal(
        strided, lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=dn)
    )
    valid = kernels.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=dn)
    assert valid.shape == (1, 6, 6, 4)


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize(("shape", "window"), [((2, 9, 7, 3), 2), ((1, 10, 12, 2), 3)])
def test_max_pool_matches_reduce_window_values_and_gradients(shape, window, jit) -> None:
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    pool_w = (window, window)
    ours = kernels.max_pool

    def reference(x):
        return nn.max_pool(x, pool_w, strides=pool_w, padding="VALID")

    np.testing.assert_array_equal(ours(x, window), reference(x))
    weights = jnp.asarray(rng.normal(size=reference(x).shape), jnp.float32)

    def grad(f):
        g = jax.grad(lambda x: jnp.sum(f(x, window) * weights))
        return (jax.jit(g) if jit else g)(x)

    want = grad(lambda x, w: reference(x))
    np.testing.assert_array_equal(grad(ours), want)  # no ties in random data: the same select


@pytest.mark.parametrize("conv_grad", ["im2col", "xla"])
def test_fast_ops_model_equals_lax_model(conv_grad: str) -> None:
    """Same parameter tree, same logits, gradients equal to float32 rounding."""
    cfg = default.get_model_config()
    cfg.conv_channels, cfg.lstm_layers = (4, 8), 0  # no LSTM: only the convs differ
    cfg.conv_grad = conv_grad
    cfg.block_impl = "xla"  # sejax's XLA formulation against lax's, not the C++ block
    fast, plain = build_model(cfg), build_model({**cfg, "fast_ops": False})
    x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 33, 16)), jnp.float32)
    variables = fast.init(jax.random.key(0), x, train=False)
    assert jax.tree.structure(variables) == jax.tree.structure(
        plain.init(jax.random.key(0), x, train=False)
    )

    def loss(model):
        def f(params):
            logits, _ = model.apply(
                {**variables, "params": params},
                x,
                train=True,
                mutable=["batch_stats"],
                rngs={"dropout": jax.random.key(1)},
            )
            return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

        return f

    np.testing.assert_allclose(
        loss(fast)(variables["params"]), loss(plain)(variables["params"]), rtol=1e-5
    )
    got = jax.jit(jax.grad(loss(fast)))(variables["params"])
    want = jax.jit(jax.grad(loss(plain)))(variables["params"])
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-5)


def test_hash_keep_mask_has_the_right_rate_and_no_visible_structure() -> None:
    shape = (64, 50, 40)
    masks = [np.asarray(kernels.hash_keep_mask(jax.random.key(k), shape, 0.3)) for k in range(4)]
    for mask in masks:
        assert mask.dtype == bool and mask.shape == shape
        assert abs(mask.mean() - 0.7) < 0.005  # 128k draws: 5 sigma is ~0.0064
        flat = mask.ravel().astype(np.float32)
        # neighbouring elements (the counter differs by one) are uncorrelated
        assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.02
    assert not np.array_equal(masks[0], masks[1])  # a new key, a new mask
    same = np.asarray(kernels.hash_keep_mask(jax.random.key(0), shape, 0.3))
    np.testing.assert_array_equal(same, masks[0])  # the same key, the same mask
    assert np.asarray(kernels.hash_keep_mask(jax.random.key(0), (1000,), 0.0)).all()


@pytest.mark.parametrize("rng", ["hash", "jax"])
def test_model_dropout_rng_choices_drop_at_train_time_only(rng: str) -> None:
    cfg = default.get_model_config()
    cfg.conv_channels, cfg.lstm_layers, cfg.dropout_rng = (4,), 0, rng
    cfg.conv_dropout = 0.5
    model = build_model(cfg)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 33, 16)), jnp.float32)
    variables = model.init(jax.random.key(0), x, train=False)

    def logits(key: int) -> np.ndarray:
        out, _ = model.apply(
            variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(key)}
        )
        return np.asarray(out)

    assert not np.allclose(logits(0), logits(1))
    np.testing.assert_array_equal(logits(0), logits(0))
    np.testing.assert_array_equal(
        model.apply(variables, x, train=False), model.apply(variables, x, train=False)
    )
