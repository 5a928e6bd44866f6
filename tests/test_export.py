"""sejax.inference.export and `sejax export`: the model folder, jax.export and SavedModel
round trips."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import sejax
from sejax.cli import main as cli
from sejax.errors import ConfigError, DataError
from sejax.inference import bundle as bundle_lib
from sejax.inference import export
from tests.inference_fixtures import tiny_run


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny workdir exported once through the command (jax + tf, verified)."""
    workdir, demo = tiny_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("export") / "tiny"
    code = cli.main(["export", "--workdir", str(workdir), "--out", str(out)])
    assert code == 0
    return workdir, demo, out


@pytest.fixture(scope="module")
def predictor(exported):
    return sejax.load(exported[0])


@pytest.fixture(scope="module")
def windows(exported, predictor):
    """Windows of real demo speech plus silence: what the artifacts are compared on."""
    _, demo, _ = exported
    wave = predictor.waveform(sorted(demo.rglob("*.wav"))[3])[0]
    n = predictor.window_samples
    return np.stack([wave[:n], wave[n : 2 * n], np.zeros(n, np.float32)])


def test_folder_layout_and_meta(exported):
    workdir, _, out = exported
    names = sorted(p.name for p in out.iterdir())
    # The SavedModel where this TensorFlow can run this JAX's StableHLO (jax 0.10: yes; 0.12
    # with TensorFlow 2.21: no, and the default formats leave it out).
    tf_files = ["saved_model"] if export.tensorflow_problem() is None else []
    assert names == sorted(["inference.jaxexport", *tf_files, "sejax_model.json", "variables"])
    meta = json.loads((out / "sejax_model.json").read_text())
    assert meta["format"] == "sejax-model" and meta["input"] == {
        "sample_rate": 16000, "num_samples": 16000,
        "layout": "[batch, num_samples] float32 mono waveform in [-1, 1]",
    }  # fmt: skip
    # The run by name, not by this machine's absolute path (the workdir is outside the cwd).
    assert meta["label_names"][4] == "angry" and meta["source"]["path"] == workdir.name
    assert meta["files"]["jax_export"]["platforms"] == ["cpu", "cuda", "tpu"]
    assert not list(out.parent.glob(".tiny.*"))  # no temporary folder left behind


def test_the_source_is_the_workdir_as_named_from_the_current_directory(exported, monkeypatch):
    workdir = exported[0]
    monkeypatch.chdir(workdir.parent.parent)
    bundle = bundle_lib.load(workdir=workdir)
    meta = bundle_lib.model_meta(bundle)
    assert meta["source"] == {"path": f"{workdir.parent.name}/{workdir.name}", "step": bundle.step}
    assert meta["source"]["step"] > 0


def test_jax_export_round_trip(exported, predictor, windows):
    out = exported[2]
    expected = predictor.probabilities(windows)
    artifact = export.load_jax_export(out)
    assert artifact.platforms == ("cpu", "cuda", "tpu")
    assert str(artifact.in_avals[0].shape) == "(batch, 16000)"
    got = np.asarray(artifact.call(jnp.asarray(windows)))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    one = np.asarray(artifact.call(jnp.asarray(windows[1:2])))  # symbolic batch size
    np.testing.assert_allclose(one, expected[1:2], atol=1e-6)


def test_saved_model_round_trip(exported, predictor, windows):
    tf = pytest.importorskip("tensorflow")
    if export.tensorflow_problem():
        pytest.skip(export.tensorflow_problem())
    out = exported[2]
    expected = predictor.probabilities(windows)
    loaded = tf.saved_model.load(str(out / "saved_model"))
    result = loaded.signatures["serving_default"](waveform=tf.constant(windows))
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-6)
    labels = [x.decode() for x in loaded.label_names.numpy()]
    assert labels == list(predictor.label_names)


def test_model_folder_predicts_like_the_workdir_and_by_name(exported, predictor, monkeypatch):
    _, demo, out = exported
    clip = str(sorted(demo.rglob("*.wav"))[7])
    from_workdir = predictor.predict(clip)
    from_folder = sejax.load(out).predict(clip)
    assert from_folder.probabilities == pytest.approx(from_workdir.probabilities, abs=1e-6)
    monkeypatch.setenv(bundle_lib.MODEL_PATH_ENV, str(out.parent))
    assert bundle_lib.available_models()[0] == "tiny"  # $SEJAX_MODEL_PATH comes first
    assert "ravdess" in bundle_lib.available_models()  # the shipped model
    by_name = sejax.load("tiny", frontend="librosa").predict(clip)
    assert by_name.probabilities == pytest.approx(from_workdir.probabilities, abs=1e-5)


def test_reexport_needs_overwrite_and_formats_are_checked(exported, tmp_path, capsys):
    _, _, out = exported
    assert cli.main(["export", "--model", str(out), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(DataError, match="not a sejax model folder"):
        export.export(tmp_path / "other", out, formats=())
    with pytest.raises(ConfigError, match="--formats"):
        export.export(tmp_path / "x", out, formats=("onnx",))
    with pytest.raises(ConfigError, match="--platforms"):
        export.export(tmp_path / "x", out, platforms=("metal",))
    # A model-only copy (no serialised functions) of the folder, replacing an older one.
    assert cli.main(["export", "--model", str(out), "--out", str(tmp_path / "copy"),
                     "--formats", ""]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files"] == ["sejax_model.json", "variables"]
    export.export(tmp_path / "copy", out, formats=(), overwrite=True)
    copy = bundle_lib.load(tmp_path / "copy")
    assert copy.label_names == bundle_lib.load(out).label_names and copy.step == 7


def test_a_tensorflow_that_cannot_run_the_export_is_named_and_left_out(
    exported, tmp_path, monkeypatch
):
    _, _, out = exported
    why = "TensorFlow 9.9 cannot run the StableHLO that jax 9.9 writes (test)"
    monkeypatch.setattr(export, "tensorflow_problem", lambda: why)
    with pytest.raises(ConfigError, match=r"--formats tf: TensorFlow 9\.9 cannot run"):
        export.export(tmp_path / "tf", out, formats=("tf",))
    assert not (tmp_path / "tf").exists()  # nothing written
    monkeypatch.setattr(export, "tensorflow_available", lambda: True)
    with pytest.warns(UserWarning, match="no SavedModel written: TensorFlow 9.9"):
        summary = export.export(tmp_path / "default", out)  # the default formats leave tf out
    assert summary["formats"] == ["jax"] and "saved_model" not in summary["files"]


def test_tensorflow_problem_matches_what_tensorflow_can_run():
    """The probe's verdict is what a real SavedModel export does here."""
    pytest.importorskip("tensorflow")
    export.tensorflow_problem.cache_clear()
    problem = export.tensorflow_problem()
    import jax

    if jax.__version_info__ < (0, 11):  # jax 0.10's StableHLO is read by TensorFlow 2.21
        assert problem is None
    else:
        assert problem is None or "cannot run the StableHLO" in problem


def test_a_model_folder_whose_variables_do_not_fit_its_config_is_refused(exported, tmp_path):
    """The folder's variables are restored as saved (no trace of the model for a target);
    the first apply checks them against the network the config describes."""
    import shutil

    from sejax.errors import CheckpointError

    _, demo, out = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    meta = json.loads((broken / "sejax_model.json").read_text())
    meta["config"]["model"]["lstm_units"] *= 2
    (broken / "sejax_model.json").write_text(json.dumps(meta))
    predictor = sejax.load(broken)
    clip = str(sorted(demo.rglob("*.wav"))[0])
    with pytest.raises(CheckpointError, match="do not match the model its config describes"):
        predictor.predict(clip)
