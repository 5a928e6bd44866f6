"""Multi-process runs: start-up settings, per-process input, and real 2-process training.

The end-to-end tests start ``sejax train`` as two processes with two simulated CPU devices
each, joined over 127.0.0.1 by JAX's distributed runtime (gloo collectives), next to a
one-process run on four devices with the same global batch; then one process resumes the
two-process run from its checkpoint. Every subprocess has a deadline and is killed with its
process group when the test ends, so a hung collective cannot block the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jax
import numpy as np
import pytest

from sejax.cli import main as cli
from sejax.configs import loading as config_lib
from sejax.configs.default import get_config
from sejax.data import demo, input_pipeline, prepare, splits
from sejax.errors import ConfigError
from sejax.training import distributed, parallel
from tests.conftest import TINY_OVERRIDES, tiny_args

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 420  # per phase; a healthy phase takes well under a minute on two idle cores
# The tiny run, smaller still: a CNN without the recurrent layers compiles in seconds, and
# every step is logged so the trajectories compare step by step.
RUN = {"data.shuffle_buffer": "64", "model.conv_channels": "(4, 8)", "model.lstm_layers": "0",
       "train.parallel": "jit", "train.log_every_steps": "1"}  # fmt: skip
STEPS_PER_EPOCH = 120 // 16  # train actors 17-20, 30 clips each; global batch 16


def _config(**overrides: str):
    config = config_lib.apply_overrides(get_config(), TINY_OVERRIDES.items())
    config = config_lib.apply_overrides(config, RUN.items())
    return config_lib.apply_overrides(config, overrides.items())


# ------------------------------------------------------------------------------------------
# Start-up: which settings a process joins with (no JAX runtime involved).

NO_ENV: dict[str, str] = {}
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[001-002]", "SLURM_NTASKS": "8",
         "SLURM_PROCID": "3", "SLURM_LOCALID": "3"}  # fmt: skip


def test_single_process_by_default_and_when_off():
    assert distributed.settings(_config(), NO_ENV) is None
    assert distributed.settings(_config(**{"distributed.mode": "off"}), SLURM) is None
    # A one-task SLURM job is a plain process (that may use all of its node's GPUs).
    assert distributed.settings(_config(), {**SLURM, "SLURM_NTASKS": "1"}) is None


def test_explicit_settings_from_config_then_environment():
    explicit = _config(**{"distributed.coordinator": "10.0.0.1:1234",
                          "distributed.num_processes": "4",
                          "distributed.process_id": "2"})  # fmt: skip
    s = distributed.settings(explicit, {"JAX_PROCESS_ID": "3"})
    assert (s.coordinator, s.num_processes, s.process_id) == ("10.0.0.1:1234", 4, 2)
    assert s.explicit
    env = {"JAX_COORDINATOR_ADDRESS": "host:99", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    s = distributed.settings(_config(), env)
    assert (s.coordinator, s.num_processes, s.process_id) == ("host:99", 2, 1)
    s = distributed.settings(_config(**{"distributed.process_id": "0"}), env)
    assert s.process_id == 0  # the config wins over the environment


def test_detected_clusters_leave_the_values_to_jax():
    s = distributed.settings(_config(), SLURM)
    assert s.detected == "slurm" and (s.coordinator, s.num_processes, s.process_id) == (None,) * 3
    tpu = distributed.settings(_config(), {"TPU_WORKER_HOSTNAMES": "w-0,w-1,w-2,w-3"})
    assert tpu.detected == "tpu" and tpu.fallback_to_single
    on = distributed.settings(_config(**{"distributed.mode": "on"}), NO_ENV)
    assert on is not None and not on.fallback_to_single


@pytest.mark.parametrize(
    ("overrides", "env", "message"),
    [
        ({"distributed.coordinator": "localhost"}, NO_ENV, r"distributed\.coordinator='localhost'"),
        ({"distributed.num_processes": "2", "distributed.process_id": "2"}, NO_ENV,
         r"distributed\.process_id=2 must be smaller"),
        ({"distributed.mode": "cluster"}, NO_ENV, r"distributed\.mode='cluster'"),
        ({"distributed.num_processes": "2", "train.parallel": "pmap"}, NO_ENV, r"train\.parallel"),
        ({"distributed.coordinator": "h:1"}, NO_ENV, r"not set: distributed\.num_processes"),
        ({}, {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES"),
        ({"distributed.mode": "off", "distributed.process_id": "1"}, NO_ENV, "contradicts"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_key(overrides, env, message):
    with pytest.raises(ConfigError, match=message):
        distributed.settings(_config(**overrides), env)


def test_cli_flags_set_the_config_keys(tmp_path, capsys):
    code = cli.main(["train", "--workdir", str(tmp_path), "--coordinator", "nohost",
                     "--num-processes", "2", "--process-id", "0"])  # fmt: skip
    assert code == 2
    assert "distributed.coordinator='nohost' must look like HOST:PORT" in capsys.readouterr().err


def test_initialize_passes_explicit_values_and_defers_to_detection(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", *SLURM):
        monkeypatch.delenv(name, raising=False)
    distributed.initialize(_config())
    assert calls == []  # one process: nothing to join
    distributed.initialize(_config(**{"distributed.coordinator": "10.0.0.1:1234",
                                      "distributed.num_processes": "2",
                                      "distributed.process_id": "1"}))  # fmt: skip
    assert calls[-1]["coordinator_address"] == "10.0.0.1:1234"
    assert calls[-1]["num_processes"] == 2 and calls[-1]["process_id"] == 1
    assert calls[-1]["cluster_detection_method"] == "deactivate"
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    distributed.initialize(_config())
    assert calls[-1]["coordinator_address"] is None and calls[-1]["num_processes"] is None
    assert "cluster_detection_method" not in calls[-1]


def test_pmap_is_refused_with_several_processes(monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"train\.parallel='jit'"):
        parallel.Parallel("pmap")


# ------------------------------------------------------------------------------------------
# Input: per-process slices of the same global batches; exact-once evaluation.


@pytest.fixture(scope="module")
def shards_dir(tmp_path_factory) -> Path:
    """The tiny run's shards, prepared once (examples spread over several shard files)."""
    root = tmp_path_factory.mktemp("distributed_data")
    config = _config()
    corpus = demo.generate_demo_corpus(
        root / "audio", actors=tuple(config.data.demo_actors),
        repetitions=tuple(config.data.demo_repetitions), duration_s=config.features.duration_s,
    )  # fmt: skip
    prepare.prepare(corpus, root / "shards", config.features, num_workers=1,
                    examples_per_shard=64, progress=False)  # fmt: skip
    return root / "shards"


@pytest.fixture(scope="module")
def pipeline(shards_dir):
    shards = input_pipeline.Shards(shards_dir)
    split = splits.make_split(shards.examples, _config().data)
    return shards, split, shards.normalization(split.indices["train"], "per_band")


@pytest.mark.parametrize("num_processes", [2, 4])
def test_process_slices_form_the_single_process_batches(pipeline, num_processes):
    shards, split, norm = pipeline
    kw = {"batch_size": 16, "seed": 3, "epoch": 1, "shuffle_buffer": 64}
    for skip in (0, 3):
        whole = list(shards.train_batches(split.indices["train"], norm, skip_batches=skip, **kw))
        assert len(whole) == STEPS_PER_EPOCH - skip
        parts = [
            list(shards.train_batches(split.indices["train"], norm, skip_batches=skip,
                                      num_processes=num_processes, process_index=p, **kw))
            for p in range(num_processes)
        ]  # fmt: skip
        for step, batch in enumerate(whole):
            for key in ("index", "label", "features"):
                rows = [part[step][key] for part in parts]
                assert all(len(r) == 16 // num_processes for r in rows)
                np.testing.assert_array_equal(np.concatenate(rows), batch[key])
        assert all(len(part) == len(whole) for part in parts)


@pytest.mark.parametrize(("num_examples", "num_processes"), [(60, 2), (60, 4), (17, 2), (3, 4)])
def test_evaluation_sees_every_example_once_across_processes(pipeline, num_examples, num_processes):
    shards, split, norm = pipeline
    indices = split.indices["validation"][:num_examples]
    parts = [
        list(shards.eval_batches(indices, norm, batch_size=16, num_processes=num_processes,
                                 process_index=p))
        for p in range(num_processes)
    ]  # fmt: skip
    # The eval step is collective: every process runs it equally often, on equal shapes.
    assert len({len(part) for part in parts}) == 1
    seen = []
    for part in parts:
        for batch in part:
            assert {len(v) for v in batch.values()} == {16 // num_processes}
            assert (batch["index"][batch["mask"] == 0] == -1).all()
            seen.extend(batch["index"][batch["mask"] > 0].tolist())
    assert sorted(seen) == sorted(indices.tolist())


# ------------------------------------------------------------------------------------------
# End to end: 2 processes x 2 devices against 1 process x 4 devices.


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(num_devices: int, cache: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "TPU_", "MEGASCALE_", "JAX_", "XLA_"))}  # fmt: skip
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_NUM_CPU_DEVICES=str(num_devices),
        XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
        JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
        # All runs here compare only with each other: take the threefry stream that XLA:CPU
        # compiles fast (see tests/test_parallel.py).
        JAX_THREEFRY_PARTITIONABLE="0",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if cache is not None:  # the resumed run reuses the reference run's compiled steps
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")  # fmt: skip
    return env


@contextlib.contextmanager
def _processes() -> Iterator[list]:
    """Started ``(Popen, log path)`` pairs; whatever still runs at exit is killed."""
    started: list = []
    try:
        yield started
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _start(started: list, args: list[str], log: Path, num_devices: int, cache=None) -> None:
    with open(log.with_suffix(".out"), "w") as out, open(log.with_suffix(".err"), "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sejax", *args], cwd=log.parent, env=_env(num_devices, cache),
            stdout=out, stderr=err, start_new_session=True,
        )  # fmt: skip
    started.append((proc, log))


def _finish(started: list) -> dict[str, tuple[str, str]]:
    """Waits for every process (one deadline for all); returns {name: (stdout, stderr)}."""
    results = {}
    for proc, log in started:
        try:
            proc.wait(timeout=DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{log.name} did not finish in {DEADLINE_S} s:\n"
                        f"{log.with_suffix('.err').read_text()[-3000:]}")  # fmt: skip
        out, err = log.with_suffix(".out").read_text(), log.with_suffix(".err").read_text()
        assert proc.returncode == 0, f"{log.name} failed:\n{err[-4000:]}"
        results[log.name] = (out, err)
    return results


def _train_args(workdir: Path, shards_dir: Path, epochs: int) -> list[str]:
    return ["train", "--workdir", str(workdir), *tiny_args(**{
        k.replace(".", "__"): v for k, v in {**RUN, "train.num_epochs": str(epochs),
                                              "data.path": str(shards_dir)}.items()})]  # fmt: skip


def _metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _losses(records: list[dict], key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in records if key in r}


@pytest.fixture(scope="module")
def runs(shards_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("multiprocess")
    multi, single = root / "multi", root / "single"
    cache = root / "compilation_cache"
    coordinator = f"127.0.0.1:{_free_port()}"
    out: dict = {"multi": multi, "single": single}
    with _processes() as started:
        # Phase 1, all at once: the two-process run (one epoch) and the one-process
        # reference on four devices (two epochs).
        for i in (0, 1):
            _start(started, [*_train_args(multi, shards_dir, epochs=1),
                             "--coordinator", coordinator, "--num-processes", "2",
                             "--process-id", str(i),
                             "--config.distributed.initialization_timeout_s=120"],
                   root / f"process{i}", num_devices=2)  # fmt: skip
        _start(started, _train_args(single, shards_dir, epochs=2), root / "single", 4, cache)
        out["phase1"] = _finish(started)
        out["multi_metrics"] = _metrics(multi)
        out["multi_summary"] = json.loads((multi / "summary.json").read_text())
        out["multi_test_report"] = json.loads((multi / "eval" / "test.json").read_text())
    with _processes() as started:
        # Phase 2: one process with four devices resumes the two-process run's checkpoint.
        _start(started, _train_args(multi, shards_dir, epochs=2), root / "resumed", 4, cache)
        out["phase2"] = _finish(started)
    return out


def _close(a: float, b: float, rel: float, what: str) -> None:
    assert a == pytest.approx(b, rel=rel, abs=1e-6), what


def test_two_processes_train_like_one(runs):
    """Same global batches, same dropout per device position: the same training losses."""
    reference = _losses(_metrics(runs["single"]), "train_loss")
    multi = _losses(runs["multi_metrics"], "train_loss")
    assert sorted(multi) == list(range(1, STEPS_PER_EPOCH + 1))  # each step logged once
    assert len(set(multi.values())) > 1
    for step, loss in multi.items():
        _close(loss, reference[step], 1e-5, f"train loss at step {step}")
    # Validation runs on running BatchNorm statistics, which also depend on the conv biases:
    # their true gradient is zero (BatchNorm follows), so Adam turns all-reduce rounding
    # noise into updates of up to the learning rate. Hence a looser tolerance than training.
    val_multi = _losses(runs["multi_metrics"], "val_loss")
    val_single = _losses(_metrics(runs["single"]), "val_loss")
    assert list(val_multi) == [STEPS_PER_EPOCH]
    _close(val_multi[STEPS_PER_EPOCH], val_single[STEPS_PER_EPOCH], 5e-3, "validation loss")


def test_only_process_zero_reports(runs):
    (out0, err0), (out1, err1) = runs["phase1"]["process0"], runs["phase1"]["process1"]
    summary = json.loads(out0.strip().splitlines()[-1])
    assert summary == {**runs["multi_summary"], "command": "train"}
    assert summary["num_processes"] == 2 and summary["num_devices"] == 4
    assert summary["steps"] == STEPS_PER_EPOCH
    assert "epoch 1/1" in err0 and "epoch 1/1" not in err1
    assert '"command": "train"' not in out1
    # Evaluation saw every example exactly once across the two processes.
    report = runs["multi_test_report"]
    assert report["num_examples"] == summary["test"]["num_examples"] == 60
    assert np.array(report["confusion_matrix"]).sum() == 60
    assert summary["validation"]["num_examples"] == 60


def test_one_process_resumes_the_two_process_checkpoint(runs):
    out, err = runs["phase2"]["resumed"]
    assert f"Resuming from step {STEPS_PER_EPOCH}" in err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["num_processes"] == 1 and summary["steps"] == 2 * STEPS_PER_EPOCH
    reference = _metrics(runs["single"])
    resumed = _metrics(runs["multi"])
    train = _losses(resumed, "train_loss")
    assert sorted(train) == list(range(1, 2 * STEPS_PER_EPOCH + 1))
    for step in range(STEPS_PER_EPOCH + 1, 2 * STEPS_PER_EPOCH + 1):
        _close(train[step], _losses(reference, "train_loss")[step], 1e-4, f"step {step}")
    val = _losses(resumed, "val_loss")
    _close(val[2 * STEPS_PER_EPOCH], _losses(reference, "val_loss")[2 * STEPS_PER_EPOCH], 5e-3,
           "validation loss after the resumed epoch")  # fmt: skip
    assert summary["test"]["num_examples"] == 60
