"""The jitted train-step gradients of the reference network do not depend on the formulation
of its ops: sejax's XLA:CPU formulations (`model.fast_ops`, the default) and oneDNN's
convolutions give the plain Flax/lax network's gradients.

jaxlib 0.10.2's XLA:CPU miscompiled the autodiff gradient of a strided-slice max-pool inside
the jitted step (BatchNorm gradients off by more than 100 %, eager mode right);
`xla_cpu_ops.max_pool` therefore routes its gradient by the argmax itself. This test is what
caught it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sejax.configs import default
from sejax.model import models, onednn


def _jitted_gradients(batch: int, **model_overrides) -> dict:
    m = default.get_config().model.to_dict()
    m.update(conv_dropout=0.0, head_dropout=0.0, **model_overrides)
    model = models.build_model(m)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 301, 64)), jnp.float32)
    labels = jnp.arange(batch) % m["num_classes"]
    variables = model.init(jax.random.key(0), x, train=False)

    def loss(params):
        logits, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                x, train=True, mutable=["batch_stats"])  # fmt: skip
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return jax.jit(jax.grad(loss))(variables["params"])


IMPLS = [pytest.param({"conv_impl": "xla", "block_impl": "xla"}, id="xla-ops")]
if onednn.available():
    IMPLS.append(pytest.param({"conv_impl": "onednn", "block_impl": "xla"}, id="onednn"))
    IMPLS.append(pytest.param({"conv_impl": "onednn", "block_impl": "fused"}, id="onednn-fused"))


BATCH = 4


@pytest.fixture(scope="module")
def plain() -> dict:
    return _jitted_gradients(BATCH, fast_ops=False, conv_impl="xla", block_impl="xla")


@pytest.mark.parametrize("overrides", IMPLS)
def test_fast_ops_give_the_plain_networks_gradients_under_jit(plain, overrides):
    fast = _jitted_gradients(BATCH, fast_ops=True, **overrides)
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(fast),
                                 jax.tree_util.tree_leaves(plain), strict=True):  # fmt: skip
        name = jax.tree_util.keystr(path)
        if "Conv_0']['bias" in name:  # ~0 under BatchNorm: rounding noise only
            continue
        scale = float(jnp.max(jnp.abs(want)))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-2 * scale, err_msg=name)
