"""Storage faults: a checkpoint or shard write that fails (disk full, read-only folder) raises a
clear error and leaves the earlier checkpoints and shards loadable. Faults are simulated (the
tests often run as root, for whom read-only permissions do not hold)."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import time

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from sejax import io
from sejax.data import prepare, shards
from sejax.errors import CheckpointError, DataError
from sejax.training.checkpoints import Checkpoints, open_for_reading
from tests.test_prepare import make_corpus, read_shards, tiny_cfg, tree_bytes


def _state(value: float) -> dict:
    return {"w": jnp.full((3,), value, jnp.float32), "step": jnp.asarray(int(value))}


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _wait_until_quiet(folder, seconds: float = 0.5, limit: float = 20.0) -> None:
    """Returns once no file under ``folder`` has appeared, gone or grown for ``seconds``."""

    def snapshot():
        try:
            return sorted((str(p), p.stat().st_size) for p in folder.rglob("*") if p.is_file())
        except OSError:  # something vanished while we looked: not quiet
            return time.monotonic()

    before, quiet_since, start = snapshot(), time.monotonic(), time.monotonic()
    while time.monotonic() - quiet_since < seconds and time.monotonic() - start < limit:
        time.sleep(0.1)
        now = snapshot()
        if now != before:
            before, quiet_since = now, time.monotonic()


def test_failed_checkpoint_write_is_clear_and_keeps_earlier_ones(tmp_path, monkeypatch):
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=3)
    ckpts.save(1, _state(1), {"epoch": 1})
    ckpts.wait()
    monkeypatch.setattr(epath.Path, "write_text", _disk_full)  # Orbax writes its JSON so
    with pytest.raises(CheckpointError) as info:
        ckpts.save(2, _state(2), {"epoch": 2})
        ckpts.close()  # an asynchronous save reports here at the latest
    monkeypatch.undo()
    message = str(info.value)
    assert "could not write" in message and "No space left on device" in message
    assert "latest complete: step 1" in message

    reader = open_for_reading(tmp_path)
    assert reader.latest_step() == 1 and reader.all_steps() == [1]
    state, meta = reader.restore(1, _state(0))
    np.testing.assert_array_equal(state["w"], np.ones(3, np.float32))
    assert meta == {"epoch": 1}
    reader.close()
    # Opening for writing again clears what the failed save left; saving works again. (A real
    # run exits on the error; here, first let the failed save's writer threads finish.)
    _wait_until_quiet(tmp_path / "checkpoints")
    writer = Checkpoints(tmp_path / "checkpoints", keep=3)
    writer.save(2, _state(2), {"epoch": 2})
    writer.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["1", "2"]
    assert open_for_reading(tmp_path).latest_step() == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_checkpoint_folder_is_a_clear_error(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=3)
    ckpts.save(1, _state(1), {"epoch": 1})
    ckpts.wait()
    (tmp_path / "checkpoints").chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(CheckpointError, match="could not write"):
            ckpts.save(2, _state(2), {"epoch": 2})
            ckpts.close()
    finally:
        (tmp_path / "checkpoints").chmod(0o755)
    assert open_for_reading(tmp_path).latest_step() == 1


class _FailingWriter:
    """A TFRecordWriter whose disk fills up after ``limit`` records."""

    limit = 3
    real: type  # the TFRecordWriter class it stands in for

    def __init__(self, path: str):
        self._real, self._written = self.real(path), 0

    def write(self, record: bytes) -> None:
        if self._written >= self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._real.write(record)
        self._written += 1

    def close(self) -> None:
        self._real.close()


def test_failed_shard_write_keeps_the_previous_shards(tmp_path, monkeypatch):
    data, out = tmp_path / "data", tmp_path / "shards"
    make_corpus(data)
    cfg = tiny_cfg()
    prepare.prepare(data, out, cfg, num_workers=1, progress=False, examples_per_shard=5)
    before = tree_bytes(out)
    tf_io = io.tensorflow().io
    monkeypatch.setattr(_FailingWriter, "real", tf_io.TFRecordWriter, raising=False)
    monkeypatch.setattr(tf_io, "TFRecordWriter", _FailingWriter)
    with pytest.raises(DataError) as info:
        prepare.prepare(data, out, cfg, num_workers=1, progress=False, overwrite=True)
    monkeypatch.undo()
    assert "could not write the shards" in str(info.value)
    assert "No space left on device" in str(info.value)
    assert tree_bytes(out) == before  # untouched, and still loadable
    assert len(read_shards(out)) == shards.load_metadata(out)["num_examples"] == 14
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "shards"]  # no temp folder


def test_unwritable_parent_folder_is_a_clear_error(tmp_path, monkeypatch):
    make_corpus(tmp_path / "data")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)  # where the staging folder comes from
    with pytest.raises(DataError, match=r"could not write the shards.*Read-only"):
        prepare.prepare(tmp_path / "data", tmp_path / "shards", tiny_cfg(), num_workers=1,
                        progress=False)  # fmt: skip
