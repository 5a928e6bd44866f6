"""``sejax export``: a trained model as a self-contained folder, for sejax and for serving.

The folder holds the model as sejax loads it (`sejax.inference.bundle`: ``sejax_model.json``
with the
config, label names and normalisation, and ``variables/``), so ``sejax predict --model DIR``
and ``sejax.load(DIR)`` work from it alone, and the inference function itself,
waveform windows ``float32 [batch, num_samples]`` at the model's rate -> probabilities
``float32 [batch, num_classes]`` (the JAX front end, the normalisation, the network and the
softmax, weights included), in two serialised forms:

- ``inference.jaxexport``: ``jax.export`` (StableHLO) bytes, lowered for several platforms
  (default cpu, cuda, tpu) with a symbolic batch size. Reload with `load_jax_export` (or
  ``jax.export.deserialize``) and ``.call(waves)``; no sejax or Flax code is needed.
- ``saved_model/``: a TensorFlow SavedModel made with ``jax2tf``, when TensorFlow is
  installed; signature ``serving_default(waveform) -> {'probabilities'}``.

The folder is built beside its destination and renamed into place, so a failed export never
leaves a half-written model folder. TensorFlow is imported only for the SavedModel.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sejax import io
from sejax.errors import ConfigError
from sejax.inference import bundle as bundle_lib
from sejax.inference import predict

JAX_EXPORT_FILE = "inference.jaxexport"
SAVED_MODEL_DIR = "saved_model"
FORMATS = ("jax", "tf")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def inference_function(bundle: bundle_lib.Bundle) -> Callable[[jax.Array], jax.Array]:
    """``waves [B, N] -> probabilities [B, C]``, the model's variables closed over (constants).

    The same computation as a `sejax.inference.predict.Predictor` with the 'jax' front end. Features
    are normalised with the training actors' statistics, also for per-speaker models
    (``bundle.per_speaker``), whose speakers' statistics an exported function cannot know.
    The network uses XLA's convolution and BatchNorm-ReLU-pool (``model.conv_impl='xla'``,
    ``model.block_impl='xla'``): a serialised function that called sejax's C++ custom calls
    would need sejax's library wherever it is loaded.
    """
    config = bundle.config.copy_and_resolve_references()
    config.model.conv_impl = "xla"
    config.model.block_impl = "xla"
    apply = predict.make_apply(dataclasses.replace(bundle, config=config), "jax")
    # Device arrays, not host ones: JAX 0.12 refuses numpy constants closed over by a vmap
    # (an ensemble's members).
    variables = jax.tree.map(jnp.asarray, bundle.variables)
    mean, std = bundle.mean, bundle.std

    def infer(waves: jax.Array) -> jax.Array:
        return jax.nn.softmax(apply(variables, waves, mean, std), axis=-1)

    return infer


def _with_precise_batch_stats(workdir: Any, checkpoint: str, num_batches: int) -> bundle_lib.Bundle:
    """A workdir's model with BatchNorm statistics recomputed from its training batches (one
    restore: the train state feeds both the calibration and the bundle)."""
    from sejax.evaluation import evaluate  # the train state and the run's data: heavy

    if workdir is None:
        raise ConfigError("--precise-bn-batches needs --workdir: the run's training data")
    trained = evaluate.load_trained(workdir, checkpoint)
    state = jax.device_get(evaluate.precise_batch_stats(trained, num_batches))
    meta = dict(trained.meta, precise_bn_batches=num_batches)
    variables = {"params": state.inference_params, "batch_stats": state.batch_stats}
    return bundle_lib.from_variables(variables, meta, trained.workdir, trained.step)


def export_jax(
    bundle: bundle_lib.Bundle, path: Path, platforms: Sequence[str] = DEFAULT_PLATFORMS
) -> jax.export.Exported:
    """Writes the serialised ``jax.export`` artifact with a symbolic batch dimension."""
    spec = jax.ShapeDtypeStruct(
        jax.export.symbolic_shape(f"batch, {bundle.window_samples}"), jnp.float32
    )
    exported = jax.export.export(jax.jit(inference_function(bundle)), platforms=platforms)(spec)
    Path(path).write_bytes(exported.serialize())
    return exported


def load_jax_export(path: str | os.PathLike[str]) -> jax.export.Exported:
    """The inference function from ``inference.jaxexport`` (or a model folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / JAX_EXPORT_FILE
    return jax.export.deserialize(bytearray(path.read_bytes()))


def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


@functools.cache
def tensorflow_problem() -> str | None:
    """Why the 'tf' format cannot be written here (None: it can).

    A SavedModel carries the StableHLO that this JAX writes, run by TensorFlow's own XLA, so
    the two must agree on its version: jax 0.12 writes ops (``vhlo.custom_call_v2``) that
    TensorFlow 2.21 cannot read, while jax 0.10 and TensorFlow 2.21 agree. Found by running a
    one-op function with a symbolic batch (what `export_saved_model` serialises) through
    jax2tf, once per process.
    """
    if not tensorflow_available():
        return "TensorFlow is not installed (pip install 'sejax[data]')"
    import tensorflow as tf
    from jax.experimental import jax2tf

    probe = jax2tf.convert(
        lambda x: x + 1.0,
        polymorphic_shapes=["(batch, 2)"],
        with_gradient=False,
        native_serialization_platforms=("cpu",),
    )
    spec = [tf.TensorSpec([None, 2], tf.float32)]
    try:
        tf.function(probe, input_signature=spec, autograph=False)(tf.zeros((1, 2), tf.float32))
    except Exception as e:  # TensorFlow raises InvalidArgumentError or UnknownError here
        lines = [line.strip() for line in str(e).splitlines() if "error:" in line]
        why = lines[0] if lines else f"{type(e).__name__}"
        return (
            f"TensorFlow {tf.__version__} cannot run the StableHLO that jax {jax.__version__} "
            f"writes ({why[:200]}); on Python 3.11 pip's jax 0.10 writes a version it reads"
        )
    return None


def export_saved_model(bundle: bundle_lib.Bundle, path: Path) -> Path:
    """Writes a TF SavedModel of the inference function (jax2tf, native serialisation)."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    tf.config.set_visible_devices([], "GPU")  # JAX owns the accelerators in this process
    n = bundle.window_samples
    converted = jax2tf.convert(
        inference_function(bundle),
        polymorphic_shapes=[f"(batch, {n})"],
        with_gradient=False,
        native_serialization_platforms=("cpu",),
    )
    module = tf.Module()
    module.label_names = tf.Variable(list(bundle.label_names), trainable=False, name="labels")
    module.serve = tf.function(
        lambda waveform: {"probabilities": converted(waveform)},
        input_signature=[tf.TensorSpec([None, n], tf.float32, name="waveform")],
        autograph=False,
    )
    tf.saved_model.save(
        module, str(path), signatures={"serving_default": module.serve.get_concrete_function()}
    )
    return path


def _check_choices(values: Sequence[str], allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        raise ConfigError(f"{flag}={','.join(values)!r}: choose from {list(allowed)}")
    return values


def export(
    out_dir: str | os.PathLike[str],
    name_or_path: bundle_lib.PathLike | Sequence[bundle_lib.PathLike] | None = None,
    *,
    workdir: bundle_lib.PathLike | Sequence[bundle_lib.PathLike] | None = None,
    checkpoint: str = "best",
    formats: Sequence[str] | None = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    overwrite: bool = False,
    precise_bn_batches: int = 0,
) -> dict[str, Any]:
    """Writes the model folder ``out_dir`` (see the module docstring); returns a summary.

    Several models or workdirs export their ensemble (`sejax.inference.bundle.ensemble`): one
    folder whose variables stack the members' and whose function returns their mean
    probabilities.

    ``formats`` default: 'jax', plus 'tf' when TensorFlow is installed and can run what this
    JAX serialises (`tensorflow_problem`). Asking for 'tf' where it cannot is a ConfigError
    that says why, not a silent skip. ``precise_bn_batches`` > 0
    (a ``workdir`` only: it needs the run's training data) exports BatchNorm statistics
    recomputed from that many training batches
    (`sejax.evaluation.evaluate.precise_batch_stats`), for runs
    trained with ``train.precise_bn_batches=0``.
    """
    if formats is None:
        formats = ("jax", "tf") if tensorflow_problem() is None else ("jax",)
        if tensorflow_available() and tensorflow_problem() is not None:
            warnings.warn(f"no SavedModel written: {tensorflow_problem()}", stacklevel=2)
    formats = [f for f in formats if f.strip()]  # "" means the model alone
    formats = _check_choices(formats, FORMATS, "--formats") if formats else ()
    platforms = _check_choices(platforms, PLATFORMS, "--platforms")
    if "tf" in formats and tensorflow_problem() is not None:
        raise ConfigError(f"--formats tf: {tensorflow_problem()}")
    if precise_bn_batches:
        one = workdir is None or isinstance(workdir, str | os.PathLike)
        workdirs = [workdir] if one else list(workdir)
        bundles = [_with_precise_batch_stats(w, checkpoint, precise_bn_batches) for w in workdirs]
        bundle = bundles[0] if len(bundles) == 1 else bundle_lib.ensemble(bundles)
    else:
        bundle = bundle_lib.load(name_or_path, workdir=workdir, checkpoint=checkpoint)
    meta = bundle_lib.model_meta(bundle)
    summary = Path(bundle.source) / "summary.json"
    if not bundle.members and "metrics" not in meta and summary.is_file():  # a workdir's results
        results = json.loads(summary.read_text())
        meta["metrics"] = {k: results[k] for k in ("validation", "test") if k in results}

    out_dir = Path(out_dir).expanduser().absolute()
    tmp = bundle_lib.new_folder(out_dir, overwrite)
    try:
        bundle_lib.save_variables(bundle, tmp)
        files: dict[str, Any] = {"variables": bundle_lib.VARIABLES_DIR}
        if "jax" in formats:
            export_jax(bundle, tmp / JAX_EXPORT_FILE, platforms)
            files["jax_export"] = {"file": JAX_EXPORT_FILE, "platforms": list(platforms)}
        if "tf" in formats:
            export_saved_model(bundle, tmp / SAVED_MODEL_DIR)
            files["saved_model"] = {"dir": SAVED_MODEL_DIR, "signature": "serving_default",
                                    "input": "waveform", "output": "probabilities"}  # fmt: skip
        meta["files"] = files
        meta["output"] = {"layout": "[batch, num_classes] float32 probabilities",
                          "label_names": list(bundle.label_names)}  # fmt: skip
        (tmp / bundle_lib.MODEL_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        io.replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    return {
        "out": str(out_dir),
        "source": bundle.source,
        "step": bundle.step,
        "members": bundle.members,
        "formats": list(formats),
        "platforms": list(platforms) if "jax" in formats else [],
        "files": sorted(p.name for p in out_dir.iterdir()),
        "size_bytes": size,
        "input": meta["input"],
        "label_names": list(bundle.label_names),
    }


def probe_waves(input_spec: dict[str, Any], count: int = 3) -> np.ndarray:
    """Deterministic speech-like test windows (harmonics with a gliding pitch, plus noise)
    at the model's rate, for checking that reloaded artifacts agree with the predictor."""
    rate, n = int(input_spec["sample_rate"]), int(input_spec["num_samples"])
    t = np.arange(n) / rate
    rng = np.random.default_rng(0)
    waves = []
    for i in range(count):
        f0 = 110.0 * (1 + i) * (1 + 0.2 * np.sin(2 * np.pi * 0.7 * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t + i) ** 2
        waves.append(0.1 * voiced * envelope + 0.01 * rng.standard_normal(n))
    return np.asarray(waves, np.float32)


def check_round_trip(out_dir: str | os.PathLike[str], waves: np.ndarray) -> dict[str, float]:
    """Max |difference| between the predictor and each serialised form on ``waves``."""
    predictor = predict.load(out_dir, frontend="jax")
    expected = predictor.probabilities(waves)
    diffs = {}
    if (Path(out_dir) / JAX_EXPORT_FILE).is_file():
        got = np.asarray(load_jax_export(out_dir).call(jnp.asarray(waves, jnp.float32)))
        diffs["jax"] = float(np.abs(got - expected).max())
    if (Path(out_dir) / SAVED_MODEL_DIR).is_dir():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(Path(out_dir) / SAVED_MODEL_DIR))
        out = loaded.signatures["serving_default"](waveform=tf.constant(waves, tf.float32))
        diffs["tf"] = float(np.abs(out["probabilities"].numpy() - expected).max())
    return diffs
