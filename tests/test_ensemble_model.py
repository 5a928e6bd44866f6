"""Ensembles as one model (`sejax.inference.bundle.ensemble`): several networks' stacked
variables, scored as the mean of their probabilities, loaded, exported and served like one."""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sejax
from sejax.cli import main as cli
from sejax.errors import CheckpointError
from sejax.inference import bundle as bundle_lib
from sejax.inference import export
from tests.inference_fixtures import demo_clips, make_workdir


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Three tiny "trained" runs of one config with different weights, and a demo corpus."""
    root = tmp_path_factory.mktemp("members")
    workdirs = [make_workdir(root / f"seed{seed}", seed=seed) for seed in range(3)]
    return workdirs, demo_clips(root / "demo")


@pytest.fixture(scope="module")
def windows(members):
    predictor = sejax.load(members[0][0])
    spec = {"sample_rate": predictor.sample_rate, "num_samples": predictor.window_samples}
    return export.probe_waves(spec, count=4)


def test_an_ensemble_scores_the_mean_of_its_members_probabilities(members, windows):
    workdirs, demo = members
    each = np.stack([sejax.load(w).probabilities(windows) for w in workdirs])
    assert np.abs(each[0] - each[1]).max() > 1e-3  # the members differ, so the mean is a test
    ensemble = sejax.load(workdir=[str(w) for w in workdirs])
    assert ensemble.bundle.members == 3 and ensemble.bundle.step is None
    np.testing.assert_allclose(ensemble.probabilities(windows), each.mean(axis=0), atol=1e-5)
    # A clip's probabilities (the mean over its windows) are the members' mean too.
    clip = str(sorted(demo.rglob("*.wav"))[2])
    per_member = [sejax.load(w).predict(clip).probabilities for w in workdirs]
    got = ensemble.predict(clip).probabilities
    for label in got:
        assert got[label] == pytest.approx(np.mean([p[label] for p in per_member]), abs=1e-5)
    # One model in a list is that model, not an ensemble of one.
    assert sejax.load(workdir=[workdirs[0]]).bundle.members == 0


def test_an_exported_ensemble_round_trips(members, windows, tmp_path, capsys):
    """`sejax export --workdir A --workdir B` writes one folder: version 2, the members named,
    every variable stacked; the folder, its jax.export artifact and the workdirs agree."""
    workdirs, _ = members
    out = tmp_path / "ensemble"
    args = ["export", "--workdir", str(workdirs[0]), "--workdir", str(workdirs[1]),
            "--out", str(out), "--formats", "jax", "--platforms", "cpu"]  # fmt: skip
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["members"] == 2 and "round_trip_max_abs_diff" in summary
    meta = json.loads((out / bundle_lib.MODEL_FILE).read_text())
    assert meta["version"] == bundle_lib.ENSEMBLE_VERSION
    assert [m["path"] for m in meta["ensemble"]["members"]] == [w.name for w in workdirs[:2]]
    loaded = bundle_lib.load(out)
    assert loaded.members == 2
    assert {np.shape(x)[0] for x in jax.tree.leaves(loaded.variables)} == {2}
    expected = sejax.load(workdir=workdirs[:2]).probabilities(windows)
    np.testing.assert_allclose(sejax.load(out).probabilities(windows), expected, atol=1e-5)
    served = np.asarray(export.load_jax_export(out).call(jnp.asarray(windows)))
    np.testing.assert_allclose(served, expected, atol=1e-4)
    # A single network is still written as version 1, which older sejax reads.
    assert cli.main(["export", "--workdir", str(workdirs[2]), "--out", str(tmp_path / "one"),
                     "--formats", ""]) == 0  # fmt: skip
    one = json.loads((tmp_path / "one" / bundle_lib.MODEL_FILE).read_text())
    assert one["version"] == bundle_lib.SINGLE_VERSION and "ensemble" not in one
    # A model folder joins an ensemble with the provenance it carries (the run it came from).
    export.export(tmp_path / "mixed", [tmp_path / "one", workdirs[0]], formats=())
    mixed = json.loads((tmp_path / "mixed" / bundle_lib.MODEL_FILE).read_text())
    assert [m["path"] for m in mixed["ensemble"]["members"]] == [workdirs[2].name, workdirs[0].name]


def test_members_must_share_labels_front_end_network_and_normalisation(members):
    workdirs, _ = members
    first, second = (bundle_lib.load(w) for w in workdirs[:2])
    with pytest.raises(CheckpointError, match="two or more"):
        bundle_lib.ensemble([first])
    relabelled = dataclasses.replace(second, label_names=tuple(reversed(second.label_names)))
    with pytest.raises(CheckpointError, match="label names"):
        bundle_lib.ensemble([first, relabelled])
    config = second.config.copy_and_resolve_references()
    config.model.lstm_units *= 2
    with pytest.raises(CheckpointError, match=r"model\.lstm_units=.*differs"):
        bundle_lib.ensemble([first, dataclasses.replace(second, config=config)])
    config = second.config.copy_and_resolve_references()
    config.features.n_mels += 1
    with pytest.raises(CheckpointError, match=r"features\.n_mels"):
        bundle_lib.ensemble([first, dataclasses.replace(second, config=config)])
    shifted = dataclasses.replace(second, mean=second.mean + 1.0)
    with pytest.raises(CheckpointError, match="normalisation differs"):
        bundle_lib.ensemble([first, shifted])
    pair = bundle_lib.ensemble([first, second])
    with pytest.raises(CheckpointError, match="already an ensemble"):
        bundle_lib.ensemble([pair, first])
    # Training settings may differ: a member with another seed and epochs joins.
    config = second.config.copy_and_resolve_references()
    config.seed, config.train.num_epochs = 7, 99
    mixed = bundle_lib.ensemble([first, dataclasses.replace(second, config=config)])
    assert [m["seed"] for m in mixed.meta["ensemble"]["members"]] == [first.config.seed, 7]


def test_a_broken_ensemble_folder_is_refused(members, tmp_path):
    """An ensemble file whose variables are not stacked, or that lists one member, is a
    CheckpointError naming the folder; nothing is guessed."""
    workdirs, _ = members
    single = tmp_path / "single"
    export.export(single, workdir=workdirs[0], formats=())
    pair = tmp_path / "pair"
    export.export(pair, workdir=workdirs[:2], formats=())
    unstacked = tmp_path / "unstacked"
    shutil.copytree(pair, unstacked)
    shutil.rmtree(unstacked / bundle_lib.VARIABLES_DIR)
    shutil.copytree(single / bundle_lib.VARIABLES_DIR, unstacked / bundle_lib.VARIABLES_DIR)
    with pytest.raises(CheckpointError, match=r"unstacked.*leading axis of 2"):
        bundle_lib.load(unstacked)
    meta = json.loads((pair / bundle_lib.MODEL_FILE).read_text())
    meta["ensemble"]["members"] = meta["ensemble"]["members"][:1]
    (pair / bundle_lib.MODEL_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="two or more"):
        bundle_lib.load(pair)


def test_predict_command_takes_several_workdirs_as_their_ensemble(members, capsys):
    workdirs, demo = members
    clip = str(sorted(demo.rglob("*.wav"))[5])
    args = ["predict", "--workdir", str(workdirs[0]), "--workdir", str(workdirs[2]), clip, "--json"]
    assert cli.main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = sejax.load(workdir=[workdirs[0], workdirs[2]]).predict(clip).probabilities
    assert summary["members"] == 2
    got = summary["results"][0]["probabilities"]
    assert got == pytest.approx(expected, abs=1e-6)
