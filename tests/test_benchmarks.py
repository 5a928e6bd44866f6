"""The peer twins are the reference network, and the harnesses time and report as they say.

Guards the comparison in ``benchmarks/peers.py``: a twin with another parameter count or
output shape would make every ratio meaningless. PyTorch is not a test dependency, so its
checks skip where it is absent. The harnesses run on scripted clocks: what is checked is how
they time (compile apart, warm-up untimed, medians, sums) and that they refuse to time
computations that disagree, not how fast this machine is.
"""

from __future__ import annotations

import importlib.util
import itertools
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


class _Clock:
    """A stand-in for ``time.perf_counter`` that only the step functions move forward."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def _scripted_steps(clock: _Clock, durations: list[float]):
    """A step function whose n-th call takes ``durations[n]`` seconds of ``clock``."""
    pending = iter(durations)

    def step() -> None:
        clock.now += next(pending)

    return step


def test_harness_times_the_compile_apart_and_the_median_of_the_timed_steps(monkeypatch):
    """`peers.time_steps`: the first call is the compile, the warm-up is not timed, the step
    time is the median of the timed calls; `add_flops` rates the examples per second against
    the matmul rate. On a scripted clock, so every number is known."""
    clock = _Clock()
    monkeypatch.setattr(peers, "time", clock)
    step = _scripted_steps(clock, [5.0, 100.0, 100.0, 0.010, 0.030, 0.020])
    row = peers.time_steps(step, warmup=2, steps=3, batch=32)
    assert row["compile_s"] == 5.0 and row["timed_steps"] == 3
    assert row["step_ms"] == 20.0 and row["examples_per_s"] == 1600.0  # 32 / 20 ms
    row = peers.add_flops({"framework": "dummy", **row}, 1e13, "cpu:cpu")
    line = json.loads(json.dumps(row))
    assert set(peers.REQUIRED_KEYS) <= set(line)
    assert line["batch"] == 32 and line["examples_per_s"] > 0
    assert line["mfu"] == pytest.approx(line["examples_per_s"] * 1.5e9 / 1e13, rel=1e-2)
    assert line["gflop_per_s"] == 2400.0 and line["mfu"] == 0.24  # 1.5 GFLOP per example
    assert line["device"] == "cpu:cpu" and line["matmul_gflop_per_s"] == 10000.0


def test_rounds_taking_turns_report_the_median_of_their_medians(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(peers, "time", clock)
    timer = peers.StepTimer(_scripted_steps(clock, [0.001, 0.002, 0.009, 0.004, 0.004, 0.004]))
    assert timer.timed(3) == pytest.approx([0.001, 0.002, 0.009])
    timer.timed(3)
    timer.add_round(0.006, steps=10)  # a round measured elsewhere: its median, 10 steps
    row = timer.result(batch=8)
    assert row["round_step_ms"] == [2.0, 4.0, 6.0] and row["step_ms"] == 4.0
    assert row["timed_steps"] == 16 and row["compile_s"] is None


def test_conv_layers_refuses_to_time_variants_that_disagree(monkeypatch, capsys):
    """benchmarks/conv_layers.py checks, before timing, that XLA's, sejax's and TensorFlow's
    gradients agree: a wrong kernel stops it before the first block's line."""
    import conv_layers

    monkeypatch.setattr(sys, "argv", ["conv_layers.py", "--batch", "1", "--repeats", "1"])
    monkeypatch.setattr(conv_layers.kernels, "conv2d_same",
                        lambda x, k: 1.5 * conv_layers._lax_conv(x, k))  # fmt: skip
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        conv_layers.main()
    assert "{" not in capsys.readouterr().out


def test_conv_layers_times_the_same_gradients_in_xla_sejax_and_tensorflow(monkeypatch, capsys):
    """benchmarks/conv_layers.py prints one line per block, each variant's median over the
    repeats, and a line with the sum over the four blocks and its share of the matmul rate
    (timings scripted: 1, 2, 3 ms per call for xla, sejax, tf, times the repeat's number)."""
    import conv_layers

    monkeypatch.setattr(sys, "argv", ["conv_layers.py", "--batch", "1", "--repeats", "3"])
    monkeypatch.setattr(conv_layers, "matmul_flops_per_s", lambda: 1e11)
    calls = itertools.count()

    def elapsed_ms(run) -> float:  # calls go repeat by repeat, xla, sejax, tf in turn
        n = next(calls) % 9
        return (1 + n % 3) * [1.0, 5.0, 2.0][n // 3]  # repeats 1, 5, 2: median 2

    monkeypatch.setattr(conv_layers, "_elapsed_ms", elapsed_ms)
    conv_layers.main()
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [x["block"] for x in lines[:4]] == [
        "1x301x64x1->32", "1x150x32x32->64", "1x75x16x64->128", "1x37x8x128->128"
    ]  # fmt: skip
    for block in lines[:4]:
        assert (block["xla_ms"], block["sejax_ms"], block["tf_ms"]) == (2.0, 4.0, 6.0)
        assert block["tf_over_sejax"] == round(4.0 / 6.0, 2)
    total = lines[4]
    for name in ("xla", "sejax", "tf"):
        assert total[f"{name}_ms"] == pytest.approx(
            sum(x[f"{name}_ms"] for x in lines[:4]), abs=0.3
        )
        assert total[f"{name}_share_of_matmul_rate"] > 0
    assert (total["xla_ms"], total["sejax_ms"], total["tf_ms"]) == (8.0, 16.0, 24.0)
    flops = sum(3 * 2 * t * f * 9 * cin * cout for (t, f, cin), cout in conv_layers.BLOCKS)
    assert total["xla_share_of_matmul_rate"] == round(flops / 8.0 / 1e6 / 100.0, 3)
    assert total["matmul_gflop_per_s"] == 100.0 and total["sejax_over_tf_time"] == 0.67


def test_peer_workers_get_every_option_that_shapes_their_step(monkeypatch, tmp_path):
    """The parent hands its options to each framework's worker process: a dropped one (as
    ``--sejax-ops`` once was) silently times the default config instead of the one asked for."""
    import argparse

    started = []
    monkeypatch.setattr(peers.subprocess, "Popen", lambda command, **kw: started.append(command))
    args = argparse.Namespace(warmup=4, threads=1, unroll=3, dtype="float32",
                              sejax_ops="sejax-fused", jax_cache=str(tmp_path))  # fmt: skip
    peers.Worker("sejax", 32, args, str(tmp_path))
    command = started[-1]
    expected = {"--worker": "sejax", "--batch": "32", "--warmup": "4", "--threads": "1",
                "--unroll": "3", "--dtype": "float32", "--sejax-ops": "sejax-fused"}  # fmt: skip
    for option, value in expected.items():
        assert command[command.index(option) + 1] == value, command


def test_step_trace_sums_each_traced_operation_under_its_network_part(tmp_path):
    """The trace reader finds the compiled program's operations in a real profiler trace and
    files each under the part of the network its source names."""
    pytest.importorskip("tensorflow")
    import jax
    import jax.numpy as jnp
    import step_trace

    def net(x, w):
        with jax.named_scope("conv_0"):
            y = jnp.tanh(x @ w)
        with jax.named_scope("bilstm_0"):
            return jnp.sort(y @ w, axis=1).sum()

    x, w = jnp.ones((512, 512)), jnp.full((512, 512), 0.01)
    f = jax.jit(net)
    ops = step_trace.hlo_ops(f.lower(x, w).compile().as_text())
    assert {where for _, where in ops.values()} >= {"conv_0", "bilstm_0"}
    f(x, w).block_until_ready()
    with jax.profiler.trace(str(tmp_path)):
        for _ in range(3):
            f(x, w).block_until_ready()
    times = step_trace.op_times(str(tmp_path))
    traced = {name for name in times if name in ops}
    assert traced, times  # the program's own operations, found by their HLO names
    assert all(times[name] > 0 for name in traced)
    assert {ops[name][1] for name in traced} & {"conv_0", "bilstm_0"}
    assert not any(w in name for name in times for w in step_trace.NOT_WORK)
