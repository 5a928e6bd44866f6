"""The `sejax` command itself: a fast start, and compiled programs kept between runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sejax.cli import main as cli

FIXTURE = Path(__file__).parent / "fixtures" / "checkpoint_v1"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})  # fmt: skip


@pytest.mark.parametrize("command", [[], ["predict"], ["cv"], ["compare"]])
def test_help_imports_neither_jax_nor_tensorflow(command):
    """`sejax --help` answers at once: the heavy libraries load only when a command runs."""
    code = (
        "import sys\nfrom sejax.cli import main\ntry:\n"
        f"    main.main({[*command, '--help']!r})\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('jax', 'tensorflow', 'librosa') if m in sys.modules))"
    )
    out = _run("-c", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_compilation_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(cli.CACHE_DIR_ENV, str(tmp_path / "c"))
    assert cli.compilation_cache_dir() == tmp_path / "c"
    monkeypatch.setenv(cli.CACHE_DIR_ENV, "")
    assert cli.compilation_cache_dir() is None  # off
    monkeypatch.delenv(cli.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cli.compilation_cache_dir() == tmp_path / "xdg" / "sejax" / "jax"


def test_predict_keeps_its_compiled_programs_for_the_next_run(tmp_path):
    cache = tmp_path / "cache"
    clip = str(next((FIXTURE / "clips").glob("*.wav")))
    args = ["-m", "sejax", "predict", "--workdir", str(FIXTURE), clip, "--json"]
    first = _run(*args, env={cli.CACHE_DIR_ENV: str(cache)})
    assert first.returncode == 0, first.stderr[-2000:]
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run left no compiled program in the cache"
    second = _run(*args, env={cli.CACHE_DIR_ENV: str(cache)})
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert sorted(p.name for p in cache.iterdir()) == entries  # read back, nothing new
