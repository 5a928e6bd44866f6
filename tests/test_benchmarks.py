"""The peer twins are the reference network, and the harness writes the agreed JSON keys.

Guards the comparison in ``benchmarks/peers.py``: a twin with another parameter count or
output shape would make every ratio meaningless. PyTorch is not a test dependency, so its
checks skip where it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import peers

REFERENCE = 1_293_640


def test_sejax_default_model_is_the_reference_size():
    assert peers.sejax_params() == REFERENCE


def test_keras_twin_matches_the_reference():
    keras_twin = pytest.importorskip("keras_twin")
    model = keras_twin.build_model()
    assert keras_twin.trainable_params(model) == REFERENCE
    shapes = [tuple(layer.output.shape[1:]) for layer in model.layers
              if type(layer).__name__ in ("MaxPooling2D", "Reshape", "Bidirectional")]  # fmt: skip
    assert shapes == [(150, 32, 32), (75, 16, 64), (37, 8, 128), (18, 4, 128), (18, 512),
                      (18, 256), (18, 256)]  # fmt: skip
    assert tuple(model.output.shape) == (None, 8)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch not installed")
def test_torch_twin_matches_the_reference():
    import torch
    import torch_twin

    model = torch_twin.ReferenceNet().train()
    assert torch_twin.trainable_params(model) == REFERENCE
    x = torch.zeros(2, 301, 64, 1)
    conv = model.conv(x.permute(0, 3, 1, 2))
    assert tuple(conv.shape) == (2, 128, 18, 4)
    assert tuple(model(x).shape) == (2, 8)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("lstm.bias_hh") for n in frozen)


def test_harness_json_line_has_the_step_throughput_keys():
    calls = []
    row = peers.time_steps(lambda: calls.append(1), warmup=2, steps=3, batch=32)
    assert len(calls) == 1 + 2 + 3
    row = peers.add_flops({"framework": "dummy", **row}, 1e11, "cpu:cpu")
    line = json.loads(json.dumps(row))
    assert set(peers.REQUIRED_KEYS) <= set(line)
    assert line["batch"] == 32 and line["examples_per_s"] > 0
    assert line["mfu"] == pytest.approx(line["examples_per_s"] * 1.5e9 / 1e11, rel=1e-2)


def test_conv_layers_times_the_same_gradients_in_xla_sejax_and_tensorflow(monkeypatch, capsys):
    """benchmarks/conv_layers.py checks, before timing, that XLA's, sejax's and TensorFlow's
    gradients agree on every block; it prints one line per block and a sum over the four."""
    import conv_layers

    monkeypatch.setattr(sys, "argv", ["conv_layers.py", "--batch", "1", "--repeats", "1"])
    conv_layers.main()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["block"] for x in lines[:4]] == [
        "1x301x64x1->32", "1x150x32x32->64", "1x75x16x64->128", "1x37x8x128->128"
    ]  # fmt: skip
    total = lines[4]
    for name in ("xla", "sejax", "tf"):
        assert total[f"{name}_ms"] == pytest.approx(
            sum(x[f"{name}_ms"] for x in lines[:4]), abs=0.3
        )
        assert total[f"{name}_share_of_matmul_rate"] > 0
