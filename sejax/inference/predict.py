"""Running a trained model on audio: files or waveforms in, emotion probabilities out.

``sejax.load(...)`` returns a `Predictor`. The model was trained on fixed windows of
``features.duration_s`` seconds, so that is what it scores: a clip no longer than the window
is scored once, zero-padded at the end exactly as in training; a longer clip is scored in
sliding windows every ``hop_s`` seconds (the last window ends where the clip ends, so every
window is real audio), and the clip's probabilities are the mean over its windows.
``windowing='crop'`` scores only the window training would have used (``features.crop``).

The same log-Mel features come from one of two front ends: ``'jax'`` (`sejax.data.frontend_jax`,
inside the jitted function, so waveform -> emotion runs on the accelerator and needs no
librosa) or ``'librosa'`` (`sejax.data.features.log_mel` on the host: the very code the training
shards were computed with). Either way the features are normalised with the training
statistics carried by the model and fed to the network with BatchNorm's running averages.
A model trained with ``data.normalization='per_speaker'`` expects each speaker's own
statistics instead: compute them from a few of the speaker's clips with
``Predictor.speaker_statistics`` and pass them as ``speaker=`` (`sejax predict --same-speaker`);
without them the training actors' statistics are used, which such a model was not trained on.
Windows are batched, and batches are padded to power-of-two sizes up to ``batch_size``, so
the jitted function compiles once per size, not once per call.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import flax.errors
import jax
import jax.numpy as jnp
import numpy as np

from sejax.data import audio, features, frontend_jax, input_pipeline
from sejax.errors import CheckpointError, ConfigError, DataError, SejaxError
from sejax.inference import bundle as bundle_lib

FRONTENDS = features.FRONTENDS
WINDOWINGS = ("sliding", "crop")
# What a folder is searched for; a file named explicitly is tried whatever its suffix.
AUDIO_SUFFIXES = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64", ".wma", ".webm",
)  # fmt: skip
MAX_CHANNELS = 16  # a 2-D array with more "channels" than this is probably a batch


@dataclasses.dataclass(frozen=True)
class WindowPrediction:
    """The model's output for one analysis window of a clip (times in seconds)."""

    start_s: float
    end_s: float
    label: str
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4),
                "label": self.label, "probabilities": self.probabilities}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One clip: the top emotion and the probabilities averaged over its windows."""

    source: str | None
    duration_s: float
    label: str
    probabilities: dict[str, float]
    windows: tuple[WindowPrediction, ...]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "duration_s": round(self.duration_s, 4),
                "label": self.label, "confidence": self.confidence,
                "probabilities": self.probabilities,
                "windows": [w.to_json() for w in self.windows]}  # fmt: skip


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the sliding windows over a clip: ``0, hop, 2 hop, ...``, and one more
    ending at the clip's end if the regular ones stop short of it. One window (``[0]``, padded)
    when the clip is not longer than the window."""
    if num_samples <= window:
        return [0]
    starts = list(range(0, num_samples - window + 1, hop))
    if starts[-1] + window < num_samples:
        starts.append(num_samples - window)
    return starts


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Files as given, folders searched recursively for audio (hidden entries skipped)."""
    found: list[str] = []
    for item in paths:
        path = Path(item).expanduser()
        if path.is_dir():
            inside = sorted(
                str(p) for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
            if not inside:
                raise DataError(f"{path}: no audio files found (looked for {AUDIO_SUFFIXES})")
            found.extend(inside)
        elif path.exists():
            found.append(str(path))
        else:
            raise DataError(f"no such file or folder: {path}")
    return found


Stats = tuple[np.ndarray, np.ndarray]  # per-band (mean, std) of log-Mel dB, each [F]


def make_apply(bundle: bundle_lib.Bundle, frontend: str) -> Callable[..., jax.Array]:
    """``(variables, inputs, mean, std) -> logits`` for a front end: 'jax' takes waveforms
    ``[B, N]``, 'librosa' takes its host features ``[B, T, F]``; the features are normalised
    with the per-band ``mean`` and ``std`` (the bundle's, or a speaker's).

    An ensemble (``bundle.members``) maps the network over its stacked members
    (``jax.vmap``) and returns the log of their mean probabilities as its logits, so that a
    softmax of them is that mean, as ``sejax ensemble`` scores cross-validation runs.
    """
    model = bundle.model()
    log_mel = frontend_jax.make_log_mel(bundle.config.features) if frontend == "jax" else None
    members = bundle.members

    def network(variables: Any, x: jax.Array) -> jax.Array:
        if not members:
            return model.apply(variables, x, train=False)
        member_log_probs = jax.vmap(
            lambda v: jax.nn.log_softmax(model.apply(v, x, train=False), axis=-1)
        )(variables)
        return jax.nn.logsumexp(member_log_probs, axis=0) - jnp.log(members)

    def apply(variables: Any, inputs: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
        feats = log_mel(inputs) if log_mel is not None else inputs
        try:
            return network(variables, (feats - mean) / std)
        except (flax.errors.ScopeParamShapeError, flax.errors.ScopeParamNotFoundError) as e:
            # Raised while tracing, before any array is computed: the variables restored
            # from a model folder are checked here rather than by a trace of their own.
            raise CheckpointError(
                f"{bundle.source}: its variables do not match the model its config describes: {e}"
            ) from e

    return apply


def _setting(bundle: bundle_lib.Bundle, key: str, value: Any) -> Any:
    """An explicit argument, else the model config's ``predict.<key>`` (a model saved before
    a key existed reads its default: its config is completed from `sejax.configs.default`)."""
    return bundle.config.predict[key] if value is None else value


class Predictor:
    """A loaded model that scores files and waveforms (see the module docstring).

    ``frontend``, ``hop_s`` and ``batch_size`` default to the model config's ``predict``
    section (``hop_s`` <= 0: half the window).
    """

    def __init__(
        self,
        bundle: bundle_lib.Bundle,
        *,
        frontend: str | None = None,
        hop_s: float | None = None,
        batch_size: int | None = None,
        windowing: str = "sliding",
    ):
        self.bundle = bundle
        self.frontend = _setting(bundle, "frontend", frontend)
        if self.frontend not in FRONTENDS:
            raise ConfigError(f"predict.frontend={self.frontend!r} is not one of {FRONTENDS}")
        if windowing not in WINDOWINGS:
            raise ConfigError(f"windowing={windowing!r} is not one of {WINDOWINGS}")
        self.windowing = windowing
        self.batch_size = _setting(bundle, "batch_size", batch_size)
        if (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or (self.batch_size < 1)
        ):
            raise ConfigError(f"predict.batch_size={self.batch_size!r} must be an integer >= 1")
        self.label_names = bundle.label_names
        self.sample_rate = bundle.sample_rate
        self.window_samples = bundle.window_samples
        hop = float(_setting(bundle, "hop_s", hop_s))
        self.hop_samples = round(hop * self.sample_rate) if hop > 0 else self.window_samples // 2
        if self.hop_samples < 1:
            raise ConfigError(f"predict.hop_s={hop} is shorter than one sample")
        self.features_config = features.canonical_config(bundle.config.features)
        self.num_compilations = 0  # traced shapes of the network function (read by tests)

        apply = make_apply(bundle, self.frontend)

        def run(variables: Any, inputs: jax.Array, mean: jax.Array, std: jax.Array):
            self.num_compilations += 1  # runs at trace time only
            logits = apply(variables, inputs, mean, std)
            return logits, jax.nn.softmax(logits, axis=-1)

        self._run = jax.jit(run)
        self._jax_log_mel = jax.jit(frontend_jax.make_log_mel(self.features_config))
        self._variables = jax.device_put(bundle.variables)

    # -- windows of audio -> numbers -------------------------------------------------------

    def _bucket(self, n: int) -> int:
        """Padded batch size for ``n`` rows: the next power of two, capped at batch_size."""
        return min(self.batch_size, 1 << max(0, n - 1).bit_length())

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        """Raw log-Mel dB ``[B, T, F]`` of windows ``[B, N]`` from this predictor's front end
        (what the shards hold, before normalisation)."""
        windows = self._check_windows(windows)
        if self.frontend == "librosa":
            return np.stack([features.log_mel(w, self.features_config) for w in windows])
        return np.asarray(self._jax_log_mel(windows))

    def _inputs(self, windows: np.ndarray, size: int) -> np.ndarray:
        if self.frontend == "librosa":
            feats = self.log_mel(windows)
            return np.pad(feats, [(0, size - len(feats)), (0, 0), (0, 0)])
        return np.pad(windows, [(0, size - len(windows)), (0, 0)])

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise DataError(
                f"windows must be [batch, {self.window_samples}] (features.duration_s at "
                f"{self.sample_rate} Hz), got {windows.shape}"
            )
        return windows

    def logits_and_probabilities(
        self, windows: np.ndarray, speaker: Stats | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Logits and probabilities ``[B, C]`` of fixed-length windows ``[B, N]``,
        normalised with ``speaker``'s statistics if given, else the training ones."""
        windows = self._check_windows(windows)
        mean, std = self._stats(speaker)
        logits, probs = [], []
        for i in range(0, len(windows), self.batch_size):
            chunk = windows[i : i + self.batch_size]
            size = self._bucket(len(chunk))
            out_logits, out_probs = self._run(self._variables, self._inputs(chunk, size), mean, std)
            logits.append(np.asarray(out_logits)[: len(chunk)])
            probs.append(np.asarray(out_probs)[: len(chunk)])
        if not logits:
            classes = len(self.label_names)
            return np.zeros((0, classes), np.float32), np.zeros((0, classes), np.float32)
        return np.concatenate(logits), np.concatenate(probs)

    def probabilities(self, windows: np.ndarray, speaker: Stats | None = None) -> np.ndarray:
        """Emotion probabilities ``[B, C]`` of fixed-length windows ``[B, N]``."""
        return self.logits_and_probabilities(windows, speaker)[1]

    def _stats(self, speaker: Stats | None) -> Stats:
        if speaker is None:
            return self.bundle.mean, self.bundle.std
        mean, std = (np.asarray(a, np.float32) for a in speaker)
        n_mels = len(self.bundle.mean)
        if mean.shape != (n_mels,) or std.shape != (n_mels,) or not np.all(std > 0):
            raise DataError(
                f"speaker statistics must be {n_mels} means and {n_mels} positive stds, got "
                f"shapes {mean.shape} and {std.shape}"
            )
        return mean, std

    def speaker_statistics(self, inputs: Sequence[Any], sample_rate: int | None = None) -> Stats:
        """Per-band mean and std of the log-Mel features of one speaker's clips (paths or
        waveforms), over the window of each clip that training used (``features.crop``):
        how ``data.normalization='per_speaker'`` normalised that model's training clips."""
        if len(inputs) == 0:
            raise DataError("speaker statistics need at least one clip")
        total = np.zeros(len(self.bundle.mean), np.float64)
        total_sq = np.zeros_like(total)
        frames = 0
        for item in inputs:
            wave, _ = self.waveform(item, sample_rate)
            feats = self.log_mel(features.fix_length(wave, self.features_config)[None])[0]
            total += feats.sum(axis=0)
            total_sq += np.square(feats, dtype=np.float64).sum(axis=0)
            frames += len(feats)
        return input_pipeline.band_mean_std(total, total_sq, frames)

    # -- clips -> windows ------------------------------------------------------------------

    def waveform(self, item: Any, sample_rate: int | None = None) -> tuple[np.ndarray, str | None]:
        """A mono float32 waveform at the model's rate, and its source name (None for arrays).

        Paths are decoded with `sejax.data.audio.load_audio` (any rate, any channel count). Arrays
        are ``[samples]`` or ``[samples, channels]`` (soundfile's layout) at ``sample_rate``
        (default: the model's rate); other rates are resampled as files are.
        """
        if isinstance(item, str | os.PathLike):
            try:
                return audio.load_audio(str(item), self.sample_rate), str(item)
            except ImportError as e:  # hosts without the data extras (soundfile, librosa)
                raise DataError(
                    f"{item}: decoding or resampling it to {self.sample_rate} Hz needs the "
                    f"missing package {e.name!r} (pip install 'sejax[data]')"
                ) from e
        wave = np.asarray(item, dtype=np.float32)
        if wave.ndim == 2 and wave.shape[1] <= MAX_CHANNELS:
            wave = wave.mean(axis=1, dtype=np.float32)
        if wave.ndim != 1:
            raise DataError(
                f"a waveform must be [samples] or [samples, channels<={MAX_CHANNELS}], got shape "
                f"{wave.shape}; pass several clips as a list"
            )
        if wave.size == 0:
            raise DataError("the waveform is empty")
        if not np.all(np.isfinite(wave)):
            raise DataError("the waveform contains NaN or Inf samples")
        rate = self.sample_rate if sample_rate is None else sample_rate
        if rate != self.sample_rate:
            wave = _resample(wave, int(rate), self.sample_rate)
        return wave, None

    def windows(self, wave: np.ndarray) -> tuple[list[int], Callable[[int], np.ndarray]]:
        """Start samples of a clip's windows and a function giving the window at a start."""
        n = self.window_samples
        if self.windowing == "crop":
            start = features.crop_start(wave, self.features_config)
            return [start], lambda _: features.fix_length(wave, self.features_config)
        return window_starts(len(wave), n, self.hop_samples), lambda s: features.fix_length(
            wave[s : s + n], self.features_config
        )

    # -- public API ------------------------------------------------------------------------

    def predict(
        self, inputs: Any, sample_rate: int | None = None, speaker: Stats | None = None
    ) -> Prediction | list[Prediction]:
        """Scores one clip (a path or a waveform) or a list of them, batched together.

        Returns a `Prediction` for one input, a list for a list. Unreadable files raise
        `DataError` naming the file (use `predict_files` to go on past bad files).
        ``speaker``: that speaker's statistics (`speaker_statistics`), for per-speaker models.
        """
        single = not isinstance(inputs, list | tuple)
        items = [inputs] if single else list(inputs)
        clips = [self.waveform(item, sample_rate) for item in items]
        results = self._predict_clips(clips, speaker)
        return results[0] if single else results

    def predict_files(
        self,
        paths: Sequence[str | os.PathLike[str]],
        group_windows: int | None = None,
        speaker: Stats | None = None,
    ) -> Iterator[tuple[str, Prediction | SejaxError]]:
        """``(file, Prediction or the error)`` for every file (folders expanded), in order.

        Files are decoded and batched a group at a time (about ``group_windows`` windows,
        default 4 batches), so long lists need not fit in memory at once.
        """
        group_windows = group_windows or 4 * self.batch_size
        pending: list[tuple[str, np.ndarray | SejaxError]] = []
        pending_windows = 0
        for path in expand_paths(paths):
            try:
                wave, _ = self.waveform(path)
                pending.append((path, wave))
                pending_windows += len(self.windows(wave)[0])
            except SejaxError as e:
                pending.append((path, e))
            if pending_windows >= group_windows:
                yield from self._flush(pending, speaker)
                pending, pending_windows = [], 0
        yield from self._flush(pending, speaker)

    def _flush(
        self, pending: list[tuple[str, np.ndarray | SejaxError]], speaker: Stats | None
    ) -> Iterator[tuple[str, Prediction | SejaxError]]:
        clips = [(x, path) for path, x in pending if isinstance(x, np.ndarray)]
        results = iter(self._predict_clips(clips, speaker))
        for path, x in pending:
            yield path, (next(results) if isinstance(x, np.ndarray) else x)

    def _predict_clips(
        self, clips: list[tuple[np.ndarray, str | None]], speaker: Stats | None = None
    ) -> list[Prediction]:
        plans = [self.windows(wave) for wave, _ in clips]
        owners = [(i, s) for i, (starts, _) in enumerate(plans) for s in starts]
        probs = np.zeros((len(owners), len(self.label_names)), np.float32)
        for b in range(0, len(owners), self.batch_size):
            batch = owners[b : b + self.batch_size]
            windows = np.stack([plans[i][1](s) for i, s in batch])
            probs[b : b + len(batch)] = self.probabilities(windows, speaker)
        results, row = [], 0
        for (wave, source), (starts, _) in zip(clips, plans, strict=True):
            window_probs = probs[row : row + len(starts)]
            row += len(starts)
            results.append(self._prediction(wave, source, starts, window_probs))
        return results

    def _named(self, p: np.ndarray) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.label_names, p, strict=True)}

    def _prediction(
        self, wave: np.ndarray, source: str | None, starts: list[int], window_probs: np.ndarray
    ) -> Prediction:
        rate, n = self.sample_rate, self.window_samples
        windows = tuple(
            WindowPrediction(s / rate, min(s + n, len(wave)) / rate,
                             self.label_names[int(p.argmax())], self._named(p))
            for s, p in zip(starts, window_probs, strict=True)
        )  # fmt: skip
        mean = window_probs.mean(axis=0)
        label = self.label_names[int(mean.argmax())]
        return Prediction(source, len(wave) / rate, label, self._named(mean), windows)


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    """`sejax.data.audio.resample` (as for files), saying what to install without librosa."""
    try:
        return audio.resample(wave, rate, target)
    except ImportError as e:  # pragma: no cover - environments without the data extras
        raise DataError(
            f"resampling {rate} Hz audio to the model's {target} Hz needs librosa "
            "(pip install 'sejax[data]'), or pass audio at the model's rate"
        ) from e


def load(
    name_or_path: bundle_lib.PathLike | Sequence[bundle_lib.PathLike] | None = None,
    *,
    workdir: bundle_lib.PathLike | Sequence[bundle_lib.PathLike] | None = None,
    checkpoint: str = "best",
    frontend: str | None = None,
    hop_s: float | None = None,
    batch_size: int | None = None,
    windowing: str = "sliding",
) -> Predictor:
    """A `Predictor` for a model name, a model folder (``sejax export``) or a training workdir.

    ``sejax.load('runs/demo')`` or ``sejax.load(workdir='runs/demo', checkpoint='latest')``;
    then ``predictor.predict('clip.wav')`` or ``predictor.predict(wave, sample_rate=48000)``.
    A list (``sejax.load(workdir=['runs/seed0', 'runs/seed1'])``) scores their ensemble: the
    mean of the networks' probabilities.
    """
    bundle = bundle_lib.load(name_or_path, workdir=workdir, checkpoint=checkpoint)
    return Predictor(bundle, frontend=frontend, hop_s=hop_s, batch_size=batch_size,
                     windowing=windowing)  # fmt: skip
