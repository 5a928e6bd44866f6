"""Live speech emotion from the microphone, one line per hop.

    python experiments/stream_microphone.py --model runs/demo            # a workdir or model
    python experiments/stream_microphone.py --model runs/demo --hop 0.5 --seconds 30
    python experiments/stream_microphone.py --model runs/demo --file clip.wav   # no microphone

The microphone is read with the optional ``sounddevice`` package (``pip install sounddevice``;
it needs the PortAudio library, e.g. ``apt install libportaudio2``), opened at the model's
sample rate, mono. ``--file`` feeds a file through the same `sejax.inference.streaming.Stream` in
chunks instead, as fast as it can, which needs no audio hardware.
"""

from __future__ import annotations

import argparse
import queue
import sys
import time
from collections.abc import Iterator, Sequence
from types import ModuleType

import numpy as np

CHUNK_S = 0.1  # audio delivered per callback


def import_sounddevice() -> ModuleType:
    """The optional audio-input library, or a clear exit telling how to get it."""
    try:
        import sounddevice
    except (ImportError, OSError) as e:  # OSError: the package is there but PortAudio is not
        raise SystemExit(
            "reading the microphone needs the optional 'sounddevice' package and the PortAudio "
            f"library: pip install sounddevice (and e.g. apt install libportaudio2). ({e})\n"
            "Without a microphone, stream a file instead: --file clip.wav"
        ) from e
    return sounddevice


def microphone_chunks(
    sd: ModuleType, rate: int, seconds: float | None, device: str | None
) -> Iterator[np.ndarray]:
    """Mono float32 chunks from the default (or named) input device, until ``seconds``."""
    chunks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(data: np.ndarray, frames: int, t: object, status: object) -> None:
        if status:
            print(f"[audio: {status}]", file=sys.stderr)
        chunks.put(data[:, 0].copy())

    blocksize = round(CHUNK_S * rate)
    with sd.InputStream(
        samplerate=rate,
        channels=1,
        dtype="float32",
        blocksize=blocksize,
        device=device,
        callback=callback,
    ):
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            yield chunks.get()


def file_chunks(path: str, rate: int) -> Iterator[np.ndarray]:
    """The file at the model's rate, cut into `CHUNK_S` chunks as a microphone would send."""
    from sejax.data.audio import load_audio

    wave = load_audio(path, rate)
    step = round(CHUNK_S * rate)
    for i in range(0, len(wave), step):
        yield wave[i : i + step]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="model name, exported model folder, or training workdir"
    )
    parser.add_argument(
        "--hop",
        type=float,
        default=None,
        help="seconds between predictions (default: half the model's window)",
    )
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--device", default=None, help="input device name or index")
    parser.add_argument("--file", default=None, help="stream this file instead of the mic")
    args = parser.parse_args(argv)

    import sejax
    from sejax.inference.streaming import Stream

    if not args.file:
        import_sounddevice()  # fail before loading the model if the microphone cannot work

    predictor = sejax.load(args.model, hop_s=args.hop)
    stream = Stream(predictor, hop_s=args.hop)
    rate = predictor.sample_rate
    if args.file:
        chunks = file_chunks(args.file, rate)
    else:
        chunks = microphone_chunks(import_sounddevice(), rate, args.seconds, args.device)
        print(
            f"Listening at {rate} Hz; a prediction every {stream.hop / rate:.2f} s "
            f"over the last {stream.window / rate:.1f} s. Ctrl-C stops.",
            file=sys.stderr,
        )
    try:
        for chunk in chunks:
            for p in stream.push(chunk):
                top = sorted(p.probabilities.items(), key=lambda kv: -kv[1])[:3]
                shown = "  ".join(f"{name} {prob:.2f}" for name, prob in top)
                print(f"{p.start_s:7.2f}-{p.end_s:7.2f}s  {p.label:<10} {shown}", flush=True)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
