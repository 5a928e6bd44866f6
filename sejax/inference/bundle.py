"""A trained model as inference needs it: config, label names, normalisation and variables.

Prediction and export must not depend on the training run's config file, data or optimizer,
so everything travels with the model. A model is found in one of three places:

- a training workdir (``sejax train --workdir W``): its Orbax checkpoints, whose ``meta`` item
  holds the run config, label names and normalisation statistics. Only the parameters and
  BatchNorm statistics are restored (a partial restore), so the optimizer never matters;
- a model folder written by ``sejax export`` (`save`): ``sejax_model.json`` (the same meta)
  plus ``variables/`` (an Orbax checkpoint of parameters and BatchNorm statistics, never
  pickle), beside the serialised inference functions;
- a model *name*: a model folder ``<dir>/<name>/`` found in the folders listed in
  ``$SEJAX_MODEL_PATH`` (``os.pathsep``-separated) or in the package's ``sejax/pretrained/``,
  so a shipped pretrained model is just a model folder dropped there.

Several of these make an *ensemble* (`ensemble`, or a list given to `load`): networks of one
architecture and front end, typically seeds of one recipe, whose variables are stacked on a
leading member axis and applied with ``jax.vmap``; the model's output is the mean of their
probabilities, as ``sejax ensemble`` scores cross-validation runs. A model folder holds one
network or one ensemble, in the same two files.

Imports neither TensorFlow nor librosa: this runs on accelerator hosts without them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from sejax import io
from sejax.configs import loading as config_lib
from sejax.data import features
from sejax.errors import CheckpointError, DataError, SejaxError
from sejax.model import models
from sejax.training import checkpoints, train_state

MODEL_FILE = "sejax_model.json"
VARIABLES_DIR = "variables"
FORMAT = "sejax-model"
VERSION = 2  # the newest format this sejax reads; 2 adds ensembles (`ENSEMBLE_VERSION`)
SINGLE_VERSION = 1  # what a one-network folder is written as, so older sejax still reads it
ENSEMBLE_VERSION = 2
MODEL_PATH_ENV = "SEJAX_MODEL_PATH"
PRETRAINED_DIR = Path(__file__).parents[1] / "pretrained"
CHECKPOINT_CHOICES = ("best", "latest")


@dataclasses.dataclass(frozen=True)
class Bundle:
    """Everything needed to turn audio into emotion probabilities, restored on one device.

    ``meta`` is the JSON record the model came with (checkpoint meta or ``sejax_model.json``):
    besides config, labels and normalisation it may hold the split, metrics and provenance.
    """

    config: ml_collections.ConfigDict
    label_names: tuple[str, ...]
    mean: np.ndarray  # [n_mels] float32, subtracted from the log-Mel features
    std: np.ndarray  # [n_mels] float32, divides them
    variables: dict[str, Any]  # {'params': ..., 'batch_stats': ...}
    source: str  # where it was loaded from, for messages and provenance
    step: int | None
    meta: dict[str, Any]
    members: int = 0  # > 0: an ensemble of this many networks, each variable [members, ...]

    @property
    def sample_rate(self) -> int:
        return int(self.config.features.sample_rate)

    @property
    def window_samples(self) -> int:
        """Samples in the model's fixed analysis window (``features.duration_s`` long)."""
        return features.num_samples(self.config.features)

    @property
    def per_speaker(self) -> bool:
        """Trained on per-speaker normalised features (``data.normalization``): inputs want
        their speaker's statistics, `sejax.inference.predict.Predictor.speaker_statistics`."""
        return self.config.data.normalization == "per_speaker"

    def model(self) -> models.CnnBiLstm:
        """The network, unmapped (inference uses BatchNorm's running averages); an ensemble
        applies it to each member's variables (`sejax.inference.predict.make_apply`)."""
        return train_state.model_from_config(self.config)[0]


# ------------------------------------------------------------------------------------------
# Finding a model.


def search_path() -> list[Path]:
    """Folders searched for named models: ``$SEJAX_MODEL_PATH`` entries, then the package's."""
    extra = [Path(p).expanduser() for p in os.environ.get(MODEL_PATH_ENV, "").split(os.pathsep)]
    return [p for p in extra if str(p) not in ("", ".")] + [PRETRAINED_DIR]


def available_models() -> list[str]:
    """Names of the model folders on the search path (first occurrence wins)."""
    names: list[str] = []
    for folder in search_path():
        if folder.is_dir():
            for child in sorted(folder.iterdir()):
                if (child / MODEL_FILE).is_file() and child.name not in names:
                    names.append(child.name)
    return names


def resolve(name_or_path: str | os.PathLike[str]) -> tuple[str, Path]:
    """``('folder' | 'workdir', path)`` for a model name, a model folder or a training workdir."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        if (path / MODEL_FILE).is_file():
            return "folder", path.absolute()
        if (path / "checkpoints").is_dir():
            return "workdir", path.absolute()
        raise CheckpointError(
            f"{path} is neither a sejax model folder (no {MODEL_FILE}) nor a training workdir "
            "(no checkpoints/)"
        )
    if os.sep not in text and "/" not in text and not text.startswith("."):
        for folder in search_path():
            if (folder / text / MODEL_FILE).is_file():
                return "folder", (folder / text).absolute()
        names = available_models()
        raise CheckpointError(
            f"no model named {text!r}: available models: {names or 'none installed'} (searched "
            f"${MODEL_PATH_ENV} and {PRETRAINED_DIR}); or pass the path of a training workdir "
            "or of a folder written by `sejax export`"
        )
    raise CheckpointError(f"model path not found: {path}")


# ------------------------------------------------------------------------------------------
# Loading.


def _config_from_meta(meta: dict[str, Any], where: str) -> ml_collections.ConfigDict:
    for key in ("config", "label_names", "normalization"):
        if key not in meta:
            raise CheckpointError(f"{where}: the model's meta lacks {key!r}")
    config = config_lib.from_dict(meta["config"])
    for key in ("features", "model"):
        if key not in config:
            raise CheckpointError(f"{where}: the model's config lacks the {key!r} section")
    return config


def _check_meta(
    config: ml_collections.ConfigDict, meta: dict[str, Any], where: str
) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Label names and normalisation that fit the network and the front end, or an error."""
    try:
        fingerprint = features.fingerprint(config.features)
    except SejaxError as e:
        raise CheckpointError(f"{where}: the model's features config is invalid: {e}") from e
    trained_on = meta.get("features_fingerprint")
    if trained_on and trained_on != fingerprint:
        raise CheckpointError(
            f"{where}: the model was trained on features with fingerprint {trained_on}, but this "
            f"sejax computes {fingerprint} for its features config (the front end changed "
            f"version, now {features.FEATURES_FORMAT} v{features.FEATURES_VERSION}); retrain it"
        )
    labels = tuple(str(x) for x in meta["label_names"])
    if len(labels) != int(config.model.num_classes):
        raise CheckpointError(
            f"{where}: meta 'label_names' has {len(labels)} names but model.num_classes="
            f"{config.model.num_classes}"
        )
    norm = meta["normalization"]
    try:
        mean = np.asarray(norm["mean"], np.float32)
        std = np.asarray(norm["std"], np.float32)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: meta 'normalization' needs 'mean' and 'std' lists") from e
    n_mels = int(config.features.n_mels)
    if mean.shape != (n_mels,) or std.shape != (n_mels,) or not np.all(std > 0):
        raise CheckpointError(
            f"{where}: meta 'normalization' must hold {n_mels} means and {n_mels} positive "
            f"stds (features.n_mels), got shapes {mean.shape} and {std.shape}"
        )
    return labels, mean, std


def _abstract_variables(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Shapes and dtypes of ``{'params', 'batch_stats'}``, placed on the default device."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
        train_state.abstract_variables(config),
    )


def _restore_from_workdir(workdir: Path, checkpoint: str) -> Bundle:
    if checkpoint not in CHECKPOINT_CHOICES:
        raise CheckpointError(f"checkpoint={checkpoint!r} is not one of {list(CHECKPOINT_CHOICES)}")
    ema = False

    def target(meta: dict[str, Any]) -> dict[str, Any]:
        """The inference variables only: the optimizer state is never read. A bad meta fails
        here, before any array is read."""
        nonlocal ema
        where = f"{workdir / 'checkpoints'}"
        config = _config_from_meta(meta, where)
        _check_meta(config, meta, where)
        abstract = _abstract_variables(config)
        # A run that kept a moving average of its weights (train.ema_decay) is served by it.
        ema = float(config.train.ema_decay) > 0
        params = "ema_params" if ema else "params"
        return {params: abstract["params"], "batch_stats": abstract["batch_stats"]}

    restored = checkpoints.restore(workdir, checkpoint, target=target, partial=True)
    variables = dict(restored.state)
    if ema:
        variables["params"] = variables.pop("ema_params")
    bundle = from_variables(variables, restored.meta, workdir, int(restored.step))
    averaged = int(bundle.config.eval.average_last_checkpoints)
    if averaged:  # its reports describe an ensemble this single model is not
        warnings.warn(
            f"{workdir}'s reports evaluate the mean of its last {averaged} checkpoints "
            f"(eval.average_last_checkpoints); this model is its {checkpoint} checkpoint alone "
            f"(step {restored.step})",
            stacklevel=3,
        )
    return bundle


def from_variables(
    variables: dict[str, Any], meta: dict[str, Any], workdir: Path, step: int
) -> Bundle:
    """The bundle of a workdir checkpoint's ``params`` and ``batch_stats`` and its meta,
    checked as a restored one is."""
    where = f"{workdir / 'checkpoints' / str(step)}"
    config = _config_from_meta(meta, where)
    labels, mean, std = _check_meta(config, meta, where)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}}
    return Bundle(config, labels, mean, std, variables, str(workdir), step, meta)


def _restore_from_folder(folder: Path) -> Bundle:
    import orbax.checkpoint as ocp

    where = str(folder / MODEL_FILE)
    try:
        meta = json.loads((folder / MODEL_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {where}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a sejax model file (format is not {FORMAT!r})")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{where}: model format version {meta['version']} is newer than this sejax reads "
            f"({VERSION}); upgrade sejax"
        )
    config = _config_from_meta(meta, where)
    labels, mean, std = _check_meta(config, meta, where)
    variables_dir = folder / VARIABLES_DIR
    if not variables_dir.is_dir():
        raise CheckpointError(f"{folder}: the model folder lacks its {VARIABLES_DIR}/ checkpoint")
    # Restored as saved, without tracing the model for an abstract target (0.7 s of a 3 s
    # `sejax predict`); the arrays are checked against the model's shapes when it is first
    # applied (`check_variables`), which costs no trace of its own.
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(variables_dir.absolute())
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        raise CheckpointError(f"{variables_dir}: cannot restore the model's variables: {e}") from e
    if not isinstance(variables, dict) or "params" not in variables:
        raise CheckpointError(f"{variables_dir}: no 'params' in the model's variables")
    # Host arrays: the predictor puts them on its device once (`predict.Predictor`).
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}}
    members = _members_in(meta, where)
    if members:
        _check_member_axis(variables, members, variables_dir)
    step = None if members else meta.get("source", {}).get("step")
    return Bundle(config, labels, mean, std, dict(variables), str(folder), step, meta, members)


def _members_in(meta: dict[str, Any], where: str) -> int:
    """How many networks a model file describes: 0 for one, else its ensemble's size."""
    record = meta.get("ensemble")
    if record is None:
        return 0
    members = record.get("members") if isinstance(record, dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise CheckpointError(f"{where}: 'ensemble' must list its members (two or more)")
    return len(members)


def _check_member_axis(variables: dict[str, Any], members: int, where: Path) -> None:
    shapes = {tuple(np.shape(x))[:1] for x in jax.tree.leaves(variables)}
    if shapes != {(members,)}:
        raise CheckpointError(
            f"{where}: an ensemble of {members} networks needs every variable stacked on a "
            f"leading axis of {members}; found leading axes {sorted(shapes)}"
        )


# ------------------------------------------------------------------------------------------
# Ensembles.

# What must agree for networks to be averaged as one model: the same function from the same
# inputs. Training settings (seed, epochs, augmentation, data paths) may differ.
_ENSEMBLE_SECTIONS = ("features", "model")


def ensemble(bundles: Sequence[Bundle]) -> Bundle:
    """One model scoring the mean probabilities of ``bundles`` (two or more single networks).

    They must share label names, front end (``features``), network (``model``) and input
    normalisation (per-band statistics, equal to 1e-4 dB: seeds trained on the same actors
    have the same ones); the first member's config serves the ensemble. A mismatch is a
    `CheckpointError` naming the member and the key.
    """
    bundles = list(bundles)
    if len(bundles) < 2:
        raise CheckpointError(f"an ensemble needs two or more models, got {len(bundles)}")
    first = bundles[0]
    for b in bundles:
        if b.members:
            raise CheckpointError(f"{b.source} is already an ensemble; list its members instead")
    for b in bundles[1:]:
        if b.label_names != first.label_names:
            raise CheckpointError(
                f"{b.source}: label names {list(b.label_names)} differ from {first.source}'s "
                f"{list(first.label_names)}; an ensemble's members predict the same classes"
            )
        for section in _ENSEMBLE_SECTIONS:
            ours, theirs = b.config[section].to_dict(), first.config[section].to_dict()
            differ = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            if differ:
                raise CheckpointError(
                    f"{b.source}: {section}.{differ[0]}={ours.get(differ[0])!r} differs from "
                    f"{first.source}'s {theirs.get(differ[0])!r}; an ensemble's members share "
                    "their front end and network"
                )
        if b.config.data.normalization != first.config.data.normalization or not (
            np.allclose(b.mean, first.mean, rtol=0, atol=1e-4)
            and np.allclose(b.std, first.std, rtol=0, atol=1e-4)
        ):
            raise CheckpointError(
                f"{b.source}: its input normalisation differs from {first.source}'s (trained on "
                "other actors or features?); an ensemble's members share their per-band "
                "statistics"
            )
    variables = jax.tree.map(
        lambda *xs: np.stack([np.asarray(x) for x in xs]),
        *[jax.device_get(b.variables) for b in bundles],
    )
    # Each member's provenance (the run it came from, as `_provenance` records it) and seed.
    sources = [{**_provenance(b), "seed": int(b.config.seed)} for b in bundles]
    meta = {k: first.meta[k] for k in ("config", "label_names", "normalization") if k in first.meta}
    meta.update(
        features_fingerprint=features.fingerprint(first.config.features),
        ensemble={"members": sources, "output": "mean of the members' probabilities"},
        source={"ensemble": [s["path"] for s in sources]},
    )
    for key in ("split", "precise_bn_batches", "license", "description"):
        values = [b.meta.get(key) for b in bundles]
        if values[0] is not None and all(v == values[0] for v in values):
            meta[key] = values[0]  # what the members share describes the ensemble too
    source = f"ensemble of {len(bundles)}: " + ", ".join(b.source for b in bundles)
    labels, mean, std = first.label_names, first.mean, first.std
    return Bundle(first.config, labels, mean, std, variables, source, None, meta, len(bundles))


PathLike = str | os.PathLike[str]


def load(
    name_or_path: PathLike | Sequence[PathLike] | None = None,
    *,
    workdir: PathLike | Sequence[PathLike] | None = None,
    checkpoint: str = "best",
) -> Bundle:
    """Loads a model by name, model folder or training workdir (``checkpoint`` picks the best
    by validation UAR or the latest checkpoint of a workdir); a list of them loads each and
    makes their `ensemble`."""
    if (name_or_path is None) == (workdir is None):
        raise CheckpointError("give exactly one of a model name/path or workdir")
    given = name_or_path if workdir is None else workdir
    if not isinstance(given, str | os.PathLike):
        items = list(given)
        if len(items) == 1:
            given = items[0]
        else:
            key = "name_or_path" if workdir is None else "workdir"
            return ensemble([load(**{key: item}, checkpoint=checkpoint) for item in items])
        name_or_path, workdir = (given, None) if workdir is None else (None, given)
    if workdir is not None:
        path = Path(workdir).expanduser()
        if not (path / "checkpoints").is_dir():
            raise CheckpointError(
                f"no checkpoints in {path / 'checkpoints'}: train with --workdir {workdir} first"
            )
        return _restore_from_workdir(path.absolute(), checkpoint)
    kind, path = resolve(name_or_path)
    if kind == "workdir":
        return _restore_from_workdir(path, checkpoint)
    return _restore_from_folder(path)


# ------------------------------------------------------------------------------------------
# Saving (the model half of `sejax export`).


def model_meta(bundle: Bundle) -> dict[str, Any]:
    """The ``sejax_model.json`` record of a bundle: config, labels, normalisation, provenance."""
    from sejax import __version__

    keep = ("split", "metrics", "license", "description", "precise_bn_batches", "ensemble")
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": ENSEMBLE_VERSION if bundle.members else SINGLE_VERSION,
        "sejax_version": __version__,
        "config": bundle.config.to_dict(),
        "label_names": list(bundle.label_names),
        "normalization": {
            "mean": bundle.mean.tolist(),
            "std": bundle.std.tolist(),
            "per_speaker": bundle.per_speaker,
        },
        "features_fingerprint": features.fingerprint(bundle.config.features),
        "input": {
            "sample_rate": bundle.sample_rate,
            "num_samples": bundle.window_samples,
            "layout": "[batch, num_samples] float32 mono waveform in [-1, 1]",
        },
        "source": _provenance(bundle),
    }
    record.update({k: bundle.meta[k] for k in keep if k in bundle.meta})
    return json.loads(json.dumps(record, default=list))  # plain JSON types only


def _provenance(bundle: Bundle) -> dict[str, Any]:
    """The run a bundle came from, as a model folder records it: a model folder's own record;
    for a workdir, its path relative to the current directory when it lies below it
    (``runs/NAME``, as the training command named it), else its folder name; never this
    machine's absolute path, which means nothing where the model is shipped."""
    if bundle.meta.get("source"):
        return dict(bundle.meta["source"])
    path = Path(bundle.source)
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = Path(path.name)
    return {"path": shown.as_posix(), "step": bundle.step}


def new_folder(out_dir: Path, overwrite: bool) -> Path:
    """A temporary folder beside ``out_dir`` to build it in (`sejax.io.staging_folder`; move
    it into place with `sejax.io.replace_folder`); refuses to clobber other data."""
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists():
        ours = (out_dir / MODEL_FILE).is_file()
        if not out_dir.is_dir() or (any(out_dir.iterdir()) and not ours):
            raise DataError(f"{out_dir} exists and is not a sejax model folder; not overwriting")
        if ours and not overwrite:
            raise DataError(f"{out_dir} already holds a model; pass --overwrite to replace it")
    return io.staging_folder(out_dir)


def save_variables(bundle: Bundle, folder: Path) -> Path:
    """Writes ``folder/variables`` (Orbax; parameters and BatchNorm statistics only)."""
    import orbax.checkpoint as ocp

    target = Path(folder).absolute() / VARIABLES_DIR
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(target, bundle.variables)
        checkpointer.wait_until_finished()
    return target
