"""Streaming prediction: feed audio chunks as they arrive, get a prediction every hop.

A microphone, a network stream or a file read in pieces delivers audio in chunks of any
size. `Stream` keeps the last window of samples and, each time another ``hop`` of audio has
arrived, scores the window that ends there, with the same `sejax.inference.predict.Predictor` (so a
stream cut from a file gives the predictions of the file's sliding windows). Until a full
window has arrived, the audio so far is scored zero-padded, as a short clip would be
(``emit_partial=False`` waits for a full window instead).

Chunks must already be at the model's sample rate (``predictor.sample_rate``): open the
input device at that rate (see ``experiments/stream_microphone.py``).
"""

from __future__ import annotations

import numpy as np

from sejax.errors import ConfigError, DataError
from sejax.inference.predict import MAX_CHANNELS, Predictor, WindowPrediction


class Stream:
    """Incremental sliding-window prediction over an unbounded stream of samples.

    Times in the emitted `WindowPrediction`s are seconds since the stream started (or since
    the last `reset`); windows scored before a full window arrived start at 0 and are shorter
    than the model's window.
    """

    def __init__(
        self, predictor: Predictor, *, hop_s: float | None = None, emit_partial: bool = True
    ):
        self.predictor = predictor
        rate = predictor.sample_rate
        self.hop = predictor.hop_samples if hop_s is None else round(hop_s * rate)
        if self.hop < 1:
            raise ConfigError(f"hop_s={hop_s} is shorter than one sample at {rate} Hz")
        self.window = predictor.window_samples
        self.emit_partial = emit_partial
        self.reset()

    def reset(self) -> None:
        """Forgets the audio so far; the next chunk starts a new stream at time 0."""
        self._buffer = np.zeros(0, np.float32)  # the most recent samples
        self._buffer_start = 0  # stream index of self._buffer[0]
        self._seen = 0  # samples received
        self._next_end = self.hop  # stream index where the next window ends

    @property
    def samples_seen(self) -> int:
        return self._seen

    def push(self, chunk: np.ndarray) -> list[WindowPrediction]:
        """Adds ``[samples]`` or ``[samples, channels]`` audio; returns the predictions of every
        hop boundary the chunk crossed (none, one, or several for a long chunk)."""
        chunk = np.asarray(chunk, np.float32)
        if chunk.ndim == 2 and chunk.shape[1] <= MAX_CHANNELS:
            chunk = chunk.mean(axis=1, dtype=np.float32)
        if chunk.ndim != 1:
            raise DataError(f"audio chunks must be [samples] or [samples, channels], got "
                            f"{chunk.shape}")  # fmt: skip
        if not np.all(np.isfinite(chunk)):
            raise DataError("audio chunk contains NaN or Inf samples")
        self._buffer = np.concatenate([self._buffer, chunk])
        self._seen += len(chunk)

        ends = []
        while self._next_end <= self._seen:
            if self.emit_partial or self._next_end >= self.window:
                ends.append(self._next_end)
            self._next_end += self.hop
        predictions = self._score(ends) if ends else []

        keep = min(len(self._buffer), self.window)  # all a future window can still need
        self._buffer_start += len(self._buffer) - keep
        self._buffer = self._buffer[len(self._buffer) - keep :]
        return predictions

    def _score(self, ends: list[int]) -> list[WindowPrediction]:
        rate, n = self.predictor.sample_rate, self.window
        windows = np.zeros((len(ends), n), np.float32)
        starts = []
        for row, end in enumerate(ends):
            start = max(0, end - n)
            audio = self._buffer[start - self._buffer_start : end - self._buffer_start]
            windows[row, : len(audio)] = audio  # partial windows are zero-padded at the end
            starts.append(start)
        probs = self.predictor.probabilities(windows)
        labels = self.predictor.label_names
        return [
            WindowPrediction(start / rate, end / rate, labels[int(p.argmax())],
                             {name: float(v) for name, v in zip(labels, p, strict=True)})
            for start, end, p in zip(starts, ends, probs, strict=True)
        ]  # fmt: skip
