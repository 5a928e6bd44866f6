"""sejax.host_memory: XLA:CPU's per-execution temporary buffer is reused, not faulted in again."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sejax import host_memory

# A program whose temporary buffer (exp(x) transposed for the dot, 64 MiB) is allocated on every
# execution; prints the minor page faults of each of ten executions after ten (the heap grows
# to its steady size over the first few, then stays there), and the settings' answer.
PROGRAM = """
import json, resource
import sejax
from sejax import host_memory
import jax, jax.numpy as jnp
x, v = jnp.ones((4096, 4096), jnp.float32), jnp.ones((4096, 4), jnp.float32)
f = jax.jit(lambda x: (jnp.exp(x).T @ v).sum())
faults = []
for i in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(x).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": host_memory.reuse_freed_memory(), "faults": faults[10:]}))
"""
BUFFER_PAGES = 64 * 2**20 // 4096


def _mostly_reused(faults: list[int]) -> bool:
    """Most executions fault no page in (the heap grows now and then, when threads free and
    allocate in another order and a freed block does not fit)."""
    return sum(f < 100 for f in faults) >= len(faults) // 2


glibc = pytest.mark.skipif(host_memory._glibc() is None, reason="glibc's mallopt only")


def run(tuning: str) -> dict:
    env = dict(os.environ, **{host_memory.ENV: tuning})
    out = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True,
                         text=True, timeout=300, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


@glibc
def test_import_sejax_lets_xla_reuse_its_temporary_buffers():
    tuned, default = run("1"), run("0")
    assert tuned["applied"] and not default["applied"]
    # Up to jax 0.12.0, glibc's defaults map every execution's buffer afresh and fault all its
    # pages in; later XLA:CPU may keep the buffer itself (0.12.1 faults none in): then the
    # settings must not make it worse, which the assertion below checks either way.
    faulted_every_time = all(f > BUFFER_PAGES // 2 for f in default["faults"])
    assert faulted_every_time or _mostly_reused(default["faults"]), default
    assert _mostly_reused(tuned["faults"]), tuned


def test_the_settings_are_made_once_and_report_the_first_answer(monkeypatch):
    monkeypatch.setattr(host_memory, "_applied", None)
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(host_memory, "_glibc", FakeLibc)
    assert host_memory.reuse_freed_memory() is True
    assert host_memory.reuse_freed_memory() is True
    assert calls == list(host_memory.SETTINGS)  # one arena, no mmap, no trim; once


def test_opting_out_or_another_libc_changes_nothing(monkeypatch):
    monkeypatch.setattr(host_memory, "_glibc", lambda: pytest.fail("must not touch libc"))
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setenv(host_memory.ENV, "0")
    assert host_memory.reuse_freed_memory() is False
    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.delenv(host_memory.ENV)
    monkeypatch.setattr(host_memory, "_glibc", lambda: None)  # not glibc
    assert host_memory.reuse_freed_memory() is False


def test_a_refused_setting_reports_false(monkeypatch):
    class RefusingLibc:
        def mallopt(self, param, value):
            return 0

    monkeypatch.setattr(host_memory, "_applied", None)
    monkeypatch.setattr(host_memory, "_glibc", RefusingLibc)
    assert host_memory.reuse_freed_memory() is False
