"""Orbax checkpoints: save, keep latest N plus best, restore (whole, or the inference fields;
'best', 'latest' or a step), half-written ones ignored."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sejax.errors import CheckpointError
from sejax.training import checkpoints
from sejax.training.checkpoints import Checkpoints, open_for_reading


def _state(scale):
    return {"w": jnp.full((3,), scale, jnp.float32), "step": jnp.asarray(int(scale))}


def test_keeps_latest_and_best_and_restores(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=2)
    for step, uar in [(1, 0.3), (2, 0.9), (3, 0.5), (4, 0.4), (5, 0.2)]:
        ckpts.save(step, _state(step), {"epoch": step, "names": ["x"]}, {"val_uar": uar})
    ckpts.close()
    reader = open_for_reading(tmp_path)
    assert reader.all_steps() == [2, 4, 5]  # latest 2 plus the best (step 2)
    assert reader.best_step() == 2 and reader.latest_step() == 5
    state, meta = reader.restore(2, _state(0))
    np.testing.assert_array_equal(state["w"], np.full(3, 2.0, np.float32))
    assert meta == {"epoch": 2, "names": ["x"]}
    raw, _ = reader.restore_raw(5)
    assert float(raw["w"][0]) == 5.0


def test_half_written_checkpoint_is_ignored(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=3)
    ckpts.save(1, _state(1), {"epoch": 1})
    ckpts.close()
    # A save killed mid-write leaves an uncommitted temporary folder behind.
    tmp = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-123"
    tmp.mkdir()
    (tmp / "state").mkdir()
    reader = open_for_reading(tmp_path)
    assert reader.latest_step() == 1
    state, _ = reader.restore(1, _state(0))
    assert float(state["w"][0]) == 1.0


def test_missing_checkpoints_error_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        open_for_reading(tmp_path / "nowhere")


def test_restore_onto_a_different_model_is_a_clear_error(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints")
    ckpts.save(1, _state(1), {})
    ckpts.close()
    reader = open_for_reading(tmp_path)
    with pytest.raises(CheckpointError, match="does not match"):
        reader.restore(1, {"w": jnp.zeros((5,)), "step": jnp.asarray(0)})
    jax.clear_caches()


def test_checkpoints_from_before_the_weight_average_restore(tmp_path):
    """A state saved before TrainState had ``ema_params`` restores onto today's state of a run
    without a moving average; a state that lacks a field the run fills is still refused."""
    import optax

    from sejax.training import train_state

    state = train_state.TrainState.create(
        apply_fn=None, params={"w": jnp.arange(3.0)}, tx=optax.adam(0.1),
        batch_stats={"m": jnp.ones(2)}, rng=jnp.zeros(2, jnp.uint32),
    )  # fmt: skip
    fields = ("step", "params", "opt_state", "batch_stats", "rng", "skipped_steps")
    before = {k: getattr(state, k) for k in fields}  # the fields it had then
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=2)
    ckpts.save(7, before, {"epoch": 1})
    ckpts.close()
    reader = open_for_reading(tmp_path)
    restored, meta = reader.restore(7, state)
    assert restored.ema_params is None and meta == {"epoch": 1}
    np.testing.assert_array_equal(restored.params["w"], np.arange(3.0))
    assert int(restored.step) == 0 and restored.opt_state[0].count.shape == ()
    averaged = state.replace(ema_params={"w": jnp.zeros(3)}, ema_decay=0.9)
    with pytest.raises(CheckpointError, match="does not match this run's model"):
        reader.restore(7, averaged)


def test_a_checkpoint_is_chosen_by_name_or_step(tmp_path):
    ckpts = Checkpoints(tmp_path / "checkpoints", keep=3)
    for step, uar in [(1, 0.3), (2, 0.9), (3, 0.5)]:
        ckpts.save(step, _state(step), {"epoch": step}, {"val_uar": uar})
    ckpts.close()
    with open_for_reading(tmp_path) as reader:
        assert [reader.step(c) for c in ("best", "latest", 1, 3)] == [2, 3, 1, 3]
        with pytest.raises(CheckpointError, match=r"no checkpoint 7: choose 'best', 'latest' or"):
            reader.step(7)
        with pytest.raises(CheckpointError, match="no checkpoint 'last'"):
            reader.step("last")


def test_restore_reads_the_meta_first_and_only_the_fields_asked_for(tmp_path):
    """`checkpoints.restore`, the one way a workdir's checkpoint is read back: a target built
    from the checkpoint's own meta; with ``partial``, only the fields named (inference's
    weights, never the optimizer state, here a leaf of another shape than any target's)."""
    state = {"params": {"w": jnp.arange(3.0)}, "opt": jnp.ones((5, 5)), "step": jnp.asarray(4)}
    ckpts = Checkpoints(tmp_path / "checkpoints")
    ckpts.save(4, state, {"width": 3})
    ckpts.close()
    seen = []

    def target(meta):
        seen.append(meta)
        return {"params": {"w": jnp.zeros((meta["width"],))}}

    restored = checkpoints.restore(tmp_path, "latest", target=target, partial=True)
    assert seen == [{"width": 3}] and restored.meta == {"width": 3} and restored.step == 4
    assert set(restored.state) == {"params"}
    np.testing.assert_array_equal(restored.state["params"]["w"], np.arange(3.0))
    whole = checkpoints.restore(tmp_path, 4, target=jax.tree.map(jnp.zeros_like, state))
    np.testing.assert_array_equal(whole.state["opt"], np.ones((5, 5)))
    with pytest.raises(CheckpointError, match="does not match this run's model"):
        checkpoints.restore(tmp_path, target={"params": {"w": jnp.zeros((4,))}}, partial=True)
    jax.clear_caches()
