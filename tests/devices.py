"""Running a test script in a fresh process with simulated CPU devices (the device count is
fixed when JAX starts, so the parent test process cannot change its own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_on_cpu_devices(script: str, ok_marker: str, num_devices: int = 2) -> None:
    """Runs ``script`` with ``num_devices`` CPU devices from the repository root; fails the
    calling test, with the script's output, unless it exits 0 and prints ``ok_marker``."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={num_devices}"
    ).strip()
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and ok_marker in proc.stdout, proc.stdout + proc.stderr
