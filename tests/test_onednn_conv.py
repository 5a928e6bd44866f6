"""The oneDNN convolution (sejax.model.onednn, model.conv_impl): values and gradients against
``lax.conv_general_dilated``, the network and its training unchanged, jit/pmap/shard_map,
export keeping XLA's convolution, the build (install time, per-user cache) and the fallback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sejax.model import models, onednn
from sejax.model.onednn import build, ops
from tests.devices import run_on_cpu_devices

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4  # relative to the largest |value| of the reference tensor
_REASON = "" if onednn.available() else (onednn._unavailable() or "")
needs_library = pytest.mark.skipif(bool(_REASON), reason=f"oneDNN library unavailable: {_REASON}")


def ref_conv(x, w, b=None):
    y = jax.lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return y if b is None else y + b


def assert_close(actual, expected, what: str, rtol: float = RTOL) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, what
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    err = float(np.max(np.abs(actual - expected)))
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol} * {scale:.3g}"


def make_inputs(n, h, w, cin, cout, kh=3, kw=3, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    x = jax.random.normal(k[0], (n, h, w, cin), jnp.float32)
    wt = jax.random.normal(k[1], (kh, kw, cin, cout), jnp.float32) / np.sqrt(kh * kw * cin)
    b = jax.random.normal(k[2], (cout,), jnp.float32)
    g = jax.random.normal(k[3], (n, h, w, cout), jnp.float32)
    return x, wt, b, g


def check(shape, *, bias: bool, layout: str = onednn.DEFAULT_LAYOUT) -> None:
    """Value and gradients (x, w[, b]) of ``sum(conv * g)`` under jit, against lax."""
    x, w, b, g = make_inputs(*shape)
    args = (x, w, b) if bias else (x, w)
    argnums = tuple(range(len(args)))

    def ours(*a):
        return onednn.conv2d_same(*a, layout=layout)

    def loss(conv):
        return lambda *a: jnp.sum(conv(*a) * g)

    assert_close(jax.jit(ours)(*args), ref_conv(*args), "y")
    got = jax.jit(jax.grad(loss(ours), argnums=argnums))(*args)
    want = jax.jit(jax.grad(loss(ref_conv), argnums=argnums))(*args)
    for name, a, e in zip(("dx", "dw", "db"), got, want, strict=False):
        assert_close(a, e, name)


# (N, H, W, Cin, Cout[, KH, KW]): the reference network's layers at batch 2, then odd ones.
MODEL_SHAPES = [
    (2, 301, 64, 1, 32),
    (2, 150, 32, 32, 64),
    (2, 75, 16, 64, 128),
    (2, 37, 8, 128, 128),
]
ODD_SHAPES = [
    (1, 5, 7, 1, 3),  # odd H and W, Cin 1
    (1, 1, 1, 1, 1),  # all padding
    (2, 4, 11, 2, 7),  # W > H
    (1, 2, 3, 17, 1),  # Cout 1, kernel larger than the image
    (2, 13, 6, 5, 6, 5, 5),  # 5x5 kernel
    (2, 8, 7, 3, 4, 1, 1),  # 1x1 kernel
    (1, 6, 9, 3, 2, 3, 1),  # non-square kernel
    (2, 7, 8, 4, 3, 2, 4),  # even kernel: the extra padding after, as lax's SAME
]


@needs_library
@pytest.mark.parametrize("shape", MODEL_SHAPES + ODD_SHAPES, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_values_and_gradients_match_lax(shape, bias):
    check(shape, bias=bias)


@needs_library
@pytest.mark.parametrize("layout", sorted(onednn.LAYOUTS))
@pytest.mark.parametrize("shape", [MODEL_SHAPES[3], ODD_SHAPES[0], ODD_SHAPES[5]], ids=str)
def test_every_layout_matches_lax(shape, layout):
    check(shape, bias=True, layout=layout)


def _custom_calls(fn, *args) -> str:
    return jax.jit(fn).lower(*args).as_text()


@needs_library
def test_drop_in_sends_only_float32_same_convs_to_onednn():
    x, w, _, _ = make_inputs(2, 9, 8, 3, 4)
    nhwc = ("NHWC", "HWIO", "NHWC")

    def same(x, w):
        return onednn.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=nhwc)

    assert ops.FORWARD in _custom_calls(same, x, w)
    assert_close(jax.jit(same)(x, w), ref_conv(x, w), "drop-in y")
    others = {  # each goes to the fallback (lax), unchanged
        "strided": lambda x, w: onednn.conv_general_dilated(
            x, w, (2, 2), "SAME", dimension_numbers=nhwc
        ),
        "valid": lambda x, w: onednn.conv_general_dilated(
            x, w, (1, 1), "VALID", dimension_numbers=nhwc
        ),
        "bfloat16": lambda x, w: onednn.conv_general_dilated(
            x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1, 1), "SAME", dimension_numbers=nhwc
        ),
    }
    for name, fn in others.items():
        assert ops.FORWARD not in _custom_calls(fn, x, w), name
    strided = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME", dimension_numbers=nhwc)
    assert_close(others["strided"](x, w), strided, "strided y")


@needs_library
def test_eager_vmap_cache_and_determinism():
    x, w, b, g = make_inputs(2, 6, 5, 3, 4, seed=2)
    assert_close(onednn.conv2d_same(x, w, b), ref_conv(x, w, b), "eager y")
    n = onednn.cache_size()
    onednn.conv2d_same(x, w, b).block_until_ready()
    assert onednn.cache_size() == n  # the same shape comes from the primitive cache
    xs = jnp.stack([x, 2 * x, -x])
    got = jax.jit(jax.vmap(lambda x: onednn.conv2d_same(x, w, b)))(xs)
    assert_close(got, jax.vmap(lambda x: ref_conv(x, w, b))(xs), "vmap y")
    # Resumed runs are checked bit for bit (tests/test_preemption.py): so is the conv.
    grad = jax.jit(jax.grad(lambda x, w: jnp.sum(onednn.conv2d_same(x, w) * g), argnums=(0, 1)))
    first, second = grad(x, w), grad(x, w)
    for a, c in zip(first, second, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@needs_library
def test_threads_match_xla_pool_and_can_be_set():
    x, w, b, _ = make_inputs(2, 9, 8, 3, 4, seed=3)
    jax.block_until_ready(jax.jit(onednn.conv2d_same)(x, w, b))
    assert onednn.num_threads_used() == len(os.sched_getaffinity(0))  # XLA: one per core
    try:
        onednn.set_num_threads(1)
        assert_close(jax.jit(onednn.conv2d_same)(x + 1, w, b), ref_conv(x + 1, w, b), "1 thread")
        assert onednn.num_threads_used() == 1
    finally:
        onednn.set_num_threads(0)
    assert "OpenMP" in onednn.version()


@needs_library
def test_bad_inputs_raise():
    x, w, b, _ = make_inputs(1, 4, 4, 3, 2)
    with pytest.raises(ValueError, match="expected x"):
        onednn.conv2d_same(x, w[:, :, :2])
    with pytest.raises(ValueError, match="bias"):
        onednn.conv2d_same(x, w, b[:1])
    with pytest.raises(TypeError, match="float32"):
        onednn.conv2d_same(x.astype(jnp.bfloat16), w)
    with pytest.raises(ValueError, match="layout"):
        onednn.conv2d_same(x, w, layout="nchw")


# ------------------------------------------------------------------------------------------
# The network and its training.


def _tiny_config(conv_impl: str):
    from tests.inference_fixtures import tiny_config

    config = tiny_config()
    config.model.conv_impl = conv_impl
    return config


@needs_library
def test_network_has_the_same_parameters_and_outputs():
    from sejax.training import train_state

    outs, trees = {}, {}
    for impl in ("xla", "onednn"):
        model, shape = train_state.model_from_config(_tiny_config(impl))
        x = jax.random.normal(jax.random.PRNGKey(1), (3, *shape[1:]))
        variables = models.init_variables(model, jax.random.PRNGKey(0), x)
        trees[impl] = variables
        outs[impl] = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))(variables, x)
        lowered = _custom_calls(lambda v, x, m=model: m.apply(v, x, train=False), variables, x)
        assert (ops.FORWARD in lowered) == (impl == "onednn"), impl
    assert jax.tree.structure(trees["xla"]) == jax.tree.structure(trees["onednn"])
    for a, b in zip(jax.tree.leaves(trees["xla"]), jax.tree.leaves(trees["onednn"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # the same draws
    assert_close(outs["onednn"], outs["xla"], "logits")


@needs_library
def test_train_steps_give_the_same_gradients_losses_and_parameters():
    from sejax.training import steps, train_state

    rng = np.random.default_rng(0)
    config = _tiny_config("xla")
    _, shape = train_state.model_from_config(config)
    features = rng.standard_normal((3, 8, *shape[1:]), np.float32)
    labels = rng.integers(0, config.model.num_classes, (3, 8))
    results = {}
    for impl in ("xla", "onednn"):
        config = _tiny_config(impl)
        model, _ = train_state.model_from_config(config)
        state = train_state.create_train_state(config, 10, seed=0, bn_axis_name=None)

        def loss(params, state=state, model=model):
            variables = {"params": params, "batch_stats": state.batch_stats}
            logits, _ = model.apply(
                variables, features[0], train=True, rngs={"dropout": jax.random.PRNGKey(3)},
                mutable=["batch_stats"],
            )  # fmt: skip
            return jnp.mean(steps.cross_entropy(logits, labels[0]))

        grads = jax.jit(jax.grad(loss))(state.params)
        step = jax.jit(lambda s, b: steps.train_step(s, b, axis_name=None))
        losses = []
        for x, y in zip(features, labels, strict=True):
            state, metrics = step(state, {"features": x, "label": y})
            losses.append(float(metrics["loss"]))
        results[impl] = grads, losses, state

    (grads_x, loss_x, state_x), (grads_o, loss_o, state_o) = results["xla"], results["onednn"]
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_x))
    for g_o, g_x in zip(jax.tree.leaves(grads_o), jax.tree.leaves(grads_x), strict=True):
        assert float(jnp.max(jnp.abs(g_o - g_x))) <= RTOL * scale
    np.testing.assert_allclose(loss_o, loss_x, rtol=1e-4)
    # Conv biases feed BatchNorm, which removes them: their gradient is zero up to rounding
    # (checked above), and Adam turns any rounding into steps of the learning rate with either
    # sign, for any two implementations (im2col vs XLA's autodiff too); BatchNorm's running
    # means, of conv outputs, carry those biases. Everything else agrees to rounding.
    lr = config.train.learning_rate
    for tree_o, tree_x in (
        (state_o.params, state_x.params),
        (state_o.batch_stats, state_x.batch_stats),
    ):
        flat_o = jax.tree_util.tree_flatten_with_path(tree_o)[0]
        for (path, a), b in zip(flat_o, jax.tree.leaves(tree_x), strict=True):
            name = jax.tree_util.keystr(path)
            carries_bias = "Conv_0']['bias" in name or name.endswith("['mean']")
            np.testing.assert_allclose(
                np.asarray(a), np.asarray(b), rtol=1e-4, atol=3 * lr if carries_bias else 1e-5,
                err_msg=name,
            )  # fmt: skip


@needs_library
def test_export_keeps_xla_convolution(tmp_path):
    from sejax.inference import bundle as bundle_lib
    from sejax.inference import export, predict
    from sejax.training import train_state

    config = _tiny_config("onednn")
    model, shape = train_state.model_from_config(config)
    variables = models.init_variables(model, jax.random.PRNGKey(0), jnp.zeros(shape))
    n_mels = config.features.n_mels
    bundle = bundle_lib.Bundle(
        config=config, label_names=tuple(config.data.labels), mean=np.zeros(n_mels, np.float32),
        std=np.ones(n_mels, np.float32), variables=variables, source="test", step=0, meta={},
    )  # fmt: skip
    waves = jnp.zeros((2, bundle.window_samples), jnp.float32)
    # In this process the network runs on oneDNN; the exported function does not.
    apply = predict.make_apply(bundle, "jax")
    served = _custom_calls(lambda w: apply(variables, w, bundle.mean, bundle.std), waves)
    assert ops.FORWARD in served
    exported = export.export_jax(bundle, tmp_path / "f.jaxexport", platforms=("cpu",))
    module = exported.mlir_module()
    assert not any(t in module for t in (ops.FORWARD, ops.BACKWARD_DATA, ops.BACKWARD_WEIGHTS))
    assert "stablehlo.convolution" in module
    probs = export.load_jax_export(tmp_path / "f.jaxexport").call(waves)
    want = jax.nn.softmax(apply(variables, waves, bundle.mean, bundle.std), axis=-1)
    assert_close(probs, want, "exported probabilities")


def test_config_choice_is_validated():
    from sejax.configs import loading
    from sejax.configs.validation import validate
    from sejax.errors import ConfigError

    config = loading.load_config(None)
    assert config.model.conv_impl == "auto"
    config.model.conv_impl = "mkl"
    with pytest.raises(ConfigError, match=r"model\.conv_impl"):
        validate(config)
    with pytest.raises(ConfigError, match=r"model\.conv_impl"):
        models.build_model(config.model)
    with pytest.raises(ValueError, match="conv_impl"):
        onednn.use_onednn("mkl")


# ------------------------------------------------------------------------------------------
# Multiple devices (a subprocess: the device count is fixed at JAX's start).

_MULTI_DEVICE = textwrap.dedent(
    """
    from functools import partial
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    from sejax.model import onednn
    from tests.test_onednn_conv import make_inputs, ref_conv, assert_close

    assert jax.device_count() == 2, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    x, w, b, g = make_inputs(4, 37, 8, 16, 8)
    loss = lambda conv, x, w, b: jnp.sum(conv(x, w, b) * g)
    v2, g2 = jax.jit(jax.value_and_grad(partial(loss, ref_conv), argnums=(0, 1, 2)))(x, w, b)
    for check_vma in (True, False):
        sharded = jax.shard_map(onednn.conv2d_same, mesh=mesh, in_specs=(P("batch"), P(), P()),
                                out_specs=P("batch"), check_vma=check_vma)
        v1, g1 = jax.jit(jax.value_and_grad(partial(loss, sharded), argnums=(0, 1, 2)))(x, w, b)
        assert_close(v1, v2, f"shard_map({check_vma=}) loss")
        for name, a, e in zip(("dx", "dw", "db"), g1, g2):
            assert_close(a, e, f"shard_map({check_vma=}) {name}")

    def step(x, w, b, g):
        f = lambda x, w, b: jnp.sum(onednn.conv2d_same(x, w, b) * g)
        l, (dx, dw, db) = jax.value_and_grad(f, argnums=(0, 1, 2))(x, w, b)
        return l, dx, jax.lax.psum(dw, "d"), jax.lax.psum(db, "d")
    split = lambda a: a.reshape(2, a.shape[0] // 2, *a.shape[1:])
    pstep = jax.pmap(step, axis_name="d", in_axes=(0, None, None, 0))
    l, dx, dw, db = pstep(split(x), w, b, split(g))
    assert_close(l.sum(), v2, "pmap loss")
    assert_close(dx.reshape(x.shape), g2[0], "pmap dx")
    assert_close(dw[0], g2[1], "pmap dw")
    assert_close(db[0], g2[2], "pmap db")
    print("MULTI_DEVICE_OK")
    """
)


@needs_library
def test_shard_map_and_pmap_on_two_cpu_devices():
    run_on_cpu_devices(_MULTI_DEVICE, "MULTI_DEVICE_OK")


# ------------------------------------------------------------------------------------------
# Building: install time (setup.py), the per-user cache, and the fallback with one warning.


@needs_library
def test_install_time_build_and_its_stamp(tmp_path, monkeypatch):
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    built = tmp_path / "sejax" / "model" / "onednn" / "_lib"
    assert (built / build.LIBRARY_NAME).is_file(), proc.stderr
    assert (tmp_path / "sejax" / "model" / "onednn" / "csrc" / "onednn_conv.cc").is_file()
    stamp = json.loads((built / build.STAMP_NAME).read_text())
    tools = build.toolchain()
    assert stamp["source_sha256"] == build.source_hash()
    assert stamp["ffi_api"] == list(tools.ffi_api)
    monkeypatch.setattr(build, "INSTALLED_DIR", built)
    assert build.installed_library(tools.ffi_api) == built / build.LIBRARY_NAME
    with monkeypatch.context() as no_compiler:  # an installed library that fits needs none
        no_compiler.setenv("CXX", "no-such-compiler")
        assert build.library() == built / build.LIBRARY_NAME
    # Built against older FFI headers of the same major version: still used; newer, or
    # from another source: not (the cache builds one instead).
    for ffi_api, source, fits in (
        ([tools.ffi_api[0], tools.ffi_api[1] - 1], build.source_hash(), True),
        ([tools.ffi_api[0], tools.ffi_api[1] + 1], build.source_hash(), False),
        (list(tools.ffi_api), "0" * 64, False),
    ):
        (built / build.STAMP_NAME).write_text(
            json.dumps(dict(stamp, ffi_api=ffi_api, source_sha256=source))
        )
        assert (build.installed_library(tools.ffi_api) is not None) == fits, (ffi_api, source)
    # A missing compiler skips the step and never fails the build.
    monkeypatch.setenv("CXX", "no-such-compiler")
    proc = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path / "b")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "no C++ compiler 'no-such-compiler'" in proc.stderr
    assert not (
        tmp_path / "b" / "sejax" / "model" / "onednn" / "_lib" / build.LIBRARY_NAME
    ).exists()


@needs_library
def test_cache_compiles_once_per_key(tmp_path, monkeypatch):
    compiled, real = [], build.library()

    def fake_compile(tools, output):
        compiled.append(output)
        shutil.copy(real, output)  # the real library, copied: no second compilation
        return output

    tools = build.toolchain()
    monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(build, "compile_library", fake_compile)
    first = build.cached_library(tools)
    assert build.cached_library(tools) == first and compiled == [first]
    assert first.parent == tmp_path and tools.key() in first.name
    other = build.Toolchain(**{**tools.__dict__, "jaxlib": "0.0.1"})  # another jaxlib: another file
    assert build.cached_library(other) != first and len(compiled) == 2


def test_missing_tools_raise_build_errors(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    with pytest.raises(build.BuildError, match="no C\\+\\+ compiler"):
        build.toolchain()
    monkeypatch.setattr(build, "WHEELS", (("no-such-devel-wheel", "no-such-wheel"),))
    with pytest.raises(build.BuildError, match="oneDNN CPU wheels are not installed"):
        build.find_onednn()


@pytest.fixture
def unavailable(monkeypatch):
    """This process as if the library could not be built, the warning not yet given."""

    def load():
        raise build.BuildError("no C++ compiler 'g++' on PATH (install g++, or set CXX)")

    monkeypatch.setattr(onednn, "load", load)
    monkeypatch.setattr(onednn, "_load_error", None)  # not tried yet in this process
    monkeypatch.setattr(onednn, "_warned", set())


@pytest.mark.parametrize("impl", ["onednn", "auto"])
def test_unavailable_library_falls_back_with_one_warning(unavailable, impl):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [onednn.use_onednn(impl) for _ in range(3)] == [False] * 3
        # block_impl 'auto' needs the same library: still one warning for both.
        model = models.CnnBiLstm(conv_channels=(4,), lstm_layers=0, conv_impl=impl)
        x = jnp.ones((2, 8, 8))
        variables = model.init(jax.random.PRNGKey(0), x, train=False)
        lowered = _custom_calls(lambda v, x: model.apply(v, x, train=False), variables, x)
    assert ops.FORWARD not in lowered
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "no C++ compiler" in messages[0] and "XLA's convolution" in messages[0]


def test_fallback_is_silent_where_not_asked_for(unavailable, monkeypatch):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert onednn.use_onednn("xla") is False
        monkeypatch.setattr(onednn, "_wheel_platform", lambda: False)  # e.g. macOS, aarch64
        assert onednn.use_onednn("auto") is False
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
        assert onednn.use_onednn("auto") is False  # not CPU: XLA's, as expected
        assert not caught
        assert onednn.use_onednn("onednn") is False  # asked for on a GPU: said once
    assert len(caught) == 1 and "runs on CPU only" in str(caught[0].message)


@needs_library
def test_conv_layers_benchmark_checks_and_times_onednn(monkeypatch, capsys):
    """benchmarks/conv_layers.py --onednn refuses a oneDNN kernel that disagrees with XLA's,
    and otherwise prints its time and its ratio to XLA's for every block and the sum."""
    pytest.importorskip("tensorflow")  # the benchmark's TensorFlow variant (the data extra)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import conv_layers

    argv = ["conv_layers.py", "--onednn", "--batch", "1", "--repeats", "1"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(conv_layers, "matmul_flops_per_s", lambda: 1e11)
    with monkeypatch.context() as wrong:
        wrong.setattr(conv_layers.onednn, "conv2d_same", lambda x, k: 1.5 * ops.conv2d_same(x, k))
        with pytest.raises(AssertionError, match="Not equal to tolerance"):
            conv_layers.main()
    assert "{" not in capsys.readouterr().out
    conv_layers.main()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 5
    for block in lines[:4]:
        assert block["onednn_over_xla"] == round(block["onednn_ms"] / block["xla_ms"], 2)
    assert lines[4]["onednn_ms"] == pytest.approx(sum(x["onednn_ms"] for x in lines[:4]), abs=0.3)
    assert "onednn_over_xla_time" in lines[4] and "onednn_over_tf_time" in lines[4]


_BWD_WEIGHTS_FORMATS = """
import jax, jax.numpy as jnp
from sejax.model.onednn import ops
ops.load()
for cin, cout in ((8, 16), (1, 8), (12, 16)):
    x, g = jnp.ones((2, 6, 5, cin)), jnp.ones((2, 6, 5, cout))
    jax.block_until_ready(ops._backward_weights(x, g, (3, 3, cin, cout), True, ops.LAYOUTS["auto"]))
"""


def _bwd_weights_src_formats(max_isa: str | None) -> list[str]:
    """The source format of each backward-weights primitive oneDNN ran, by ONEDNN_VERBOSE."""
    env = dict(os.environ, ONEDNN_VERBOSE="1", PYTHONPATH=str(ROOT))
    if max_isa:
        env["ONEDNN_MAX_CPU_ISA"] = max_isa
    else:
        env.pop("ONEDNN_MAX_CPU_ISA", None)
    out = subprocess.run(
        [sys.executable, "-c", _BWD_WEIGHTS_FORMATS],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    rows = [r.split(",") for r in out.splitlines() if ",exec," in r and ",backward_weights," in r]
    return [next(f for f in r if f.startswith("src_f32")) for r in rows]


def _has_avx512_core() -> bool:
    flags = Path("/proc/cpuinfo").read_text().split("flags", 2)[1].split("\n", 1)[0].split()
    return {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= set(flags)


@needs_library
def test_auto_layout_blocks_backward_weights_activations_only_without_avx512():
    """layout 'auto' (the default): on AVX2 kernels the backward-weights pass takes oneDNN's
    blocked activations where the channels fill its 8-wide blocks, NHWC otherwise; with
    AVX-512 kernels NHWC always."""
    if not Path("/proc/cpuinfo").exists():
        pytest.skip("needs /proc/cpuinfo")
    avx2 = _bwd_weights_src_formats("AVX2")
    assert len(avx2) == 3
    assert "blocked:aBcd8b" in avx2[0], avx2  # 8 -> 16 channels: blocked
    assert all("blocked:acdb" in f for f in avx2[1:]), avx2  # 1 or 12 input channels: NHWC
    if _has_avx512_core():
        native = _bwd_weights_src_formats(None)
        assert len(native) == 3 and all("blocked:acdb" in f for f in native), native
