"""The CNN+BiLSTM: the default config is the reference network, layer by layer."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sejax.configs.default import get_model_config
from sejax.errors import ConfigError
from sejax.model.models import CnnBiLstm, build_model


def _size(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def tiny_config(**overrides):
    cfg = get_model_config()
    cfg.conv_channels = (4, 8)
    cfg.lstm_units = 8
    cfg.lstm_layers = 1
    cfg.update(overrides)
    return cfg


@functools.partial(jax.jit, static_argnums=(0,))
def infer(model, variables, x):
    return model.apply(variables, x, train=False)


def init(model, x):
    # XLA:CPU compiles the default (partitionable) threefry draws for 4-D conv kernels
    # several times slower; the other stream keeps these tests fast. Values do not matter.
    with jax.threefry_partitionable(False):
        return jax.jit(model.init, static_argnames="train")(jax.random.PRNGKey(0), x, train=False)


X = np.random.default_rng(1).normal(size=(2, 32, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def attention_variables():
    return init(build_model(tiny_config(temporal_pooling="attention")), X)


@pytest.fixture(scope="module")
def variables(attention_variables):
    """The tiny model's variables: mean and max pooling add no parameters to the rest."""
    params = dict(attention_variables["params"])
    params.pop("attention")
    return {**attention_variables, "params": params}


@pytest.fixture(scope="module")
def reference():
    """Shapes only (jax.eval_shape): the full network is never run here."""
    model = build_model(get_model_config())
    x = jax.ShapeDtypeStruct((2, 301, 64, 1), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)

    def run(variables, x):
        return model.apply(
            variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
        )

    logits, state = jax.eval_shape(run, variables, x)
    return variables, logits, state["intermediates"]


def test_reference_parameter_counts(reference):
    variables, _, _ = reference
    params, stats = variables["params"], variables["batch_stats"]
    convs = [_size(params[f"conv_{i}"]["Conv_0"]) for i in range(4)]
    assert convs == [320, 18_496, 73_856, 147_584]
    for i, channels in enumerate((32, 64, 128, 128)):
        assert _size(params[f"conv_{i}"]["BatchNorm_0"]) == 2 * channels
        assert {k: v.shape for k, v in stats[f"conv_{i}"]["BatchNorm_0"].items()} == {
            "mean": (channels,),
            "var": (channels,),
        }
    assert _size(params["bilstm_0"]) == 656_384 == 2 * 4 * (512 * 128 + 128 * 128 + 128)
    assert _size(params["bilstm_1"]) == 394_240 == 2 * 4 * (256 * 128 + 128 * 128 + 128)
    assert set(params["bilstm_0"]) == {"forward", "backward"}  # two distinct directions
    assert _size(params["head"]) == 2_056
    assert _size(params) == 1_293_640
    assert set(params) == {"conv_0", "conv_1", "conv_2", "conv_3", "bilstm_0", "bilstm_1", "head"}


def test_reference_shapes(reference):
    _, logits, inter = reference
    blocks = [inter[f"conv_{i}"]["__call__"][0].shape for i in range(4)]
    assert blocks == [(2, 150, 32, 32), (2, 75, 16, 64), (2, 37, 8, 128), (2, 18, 4, 128)]
    assert inter["bilstm_0"]["__call__"][0].shape == (2, 18, 256)
    assert inter["bilstm_1"]["__call__"][0].shape == (2, 18, 256)
    assert logits.shape == (2, 8) and logits.dtype == jnp.float32


def test_three_and_four_dim_inputs_agree(variables):
    model = build_model(tiny_config())
    a = infer(model, variables, X)
    assert a.shape == (2, 8)
    np.testing.assert_array_equal(a, infer(model, variables, X[..., None]))


def test_input_too_short_names_the_keys():
    model = build_model(get_model_config())
    with pytest.raises(ConfigError, match=r"features\.duration_s.*model\.conv_channels"):
        jax.eval_shape(
            lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 15, 64)), train=False)
        )


def test_unknown_temporal_pooling():
    with pytest.raises(ConfigError, match=r"model\.temporal_pooling.*'mean', 'max', 'attention'"):
        build_model(tiny_config(temporal_pooling="median"))
    model = CnnBiLstm(conv_channels=(4,), lstm_units=4, temporal_pooling="median")
    with pytest.raises(ConfigError, match=r"model\.temporal_pooling"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8)), train=False)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"dtype": "float16"}, "model.dtype"),
        ({"conv_channels": (4, 0)}, "model.conv_channels"),
        ({"head_dropout": 1.0}, "model.head_dropout"),
        ({"lstm_units": 0}, "model.lstm_units"),
        ({"conv_grad": "fft"}, "model.conv_grad"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_model(tiny_config(**overrides))


def test_unknown_key_is_rejected():
    cfg = tiny_config()
    cfg.lstm_unit = 8  # typo
    with pytest.raises(ConfigError, match="lstm_unit"):
        build_model(cfg)


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_temporal_poolings(pooling, variables, attention_variables):
    model = build_model(tiny_config(temporal_pooling=pooling))
    logits = infer(model, attention_variables if pooling == "attention" else variables, X)
    assert logits.shape == (2, 8) and bool(jnp.all(jnp.isfinite(logits)))


def test_attention_with_flat_scores_is_the_mean(variables, attention_variables):
    """Zero score weights give uniform attention, i.e. exactly mean pooling."""
    attn = build_model(tiny_config(temporal_pooling="attention"))
    flat = jax.tree.map(jnp.zeros_like, attention_variables["params"]["attention"])
    params = {**attention_variables["params"], "attention": flat}
    a = infer(attn, {**attention_variables, "params": params}, X)
    b = infer(build_model(tiny_config()), variables, X)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # With learned scores the pooling differs from the mean.
    assert not np.allclose(infer(attn, attention_variables, X), b, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params(variables):
    bf16 = build_model(tiny_config(dtype="bfloat16"))
    shapes = jax.eval_shape(lambda: bf16.init(jax.random.PRNGKey(0), X, train=False))
    assert {v.dtype for v in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    a = infer(build_model(tiny_config()), variables, X)
    b = infer(bf16, variables, X)
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(a, b, atol=5e-2)


def test_dropout_only_in_training(variables):
    model = build_model(tiny_config(conv_dropout=0.5, head_dropout=0.5))

    @jax.jit
    def train(key):
        out, _ = model.apply(
            variables, X, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
        )
        return out

    with jax.threefry_partitionable(False):  # fast compile, as in init()
        a, b, c = (train(jax.random.PRNGKey(k)) for k in (2, 2, 3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # Inference ignores the dropout rates entirely.
    base = infer(build_model(tiny_config()), variables, X)
    np.testing.assert_array_equal(infer(model, variables, X), base)
