"""Preparation throughput: `sejax prepare` against a one-file-at-a-time librosa loop.

    python benchmarks/prepare.py                    # the shared RAVDESS copy, 1440 files
    python benchmarks/prepare.py --limit 200 --rounds 1
    python benchmarks/prepare.py --data DIR --workers 2 --no-cli

Competitors, on the same files in one run, taking turns round by round (the order reverses
every other round; the best round of each counts, since other jobs only ever add time):

- ``librosa_loop``: what a user writes, one file after another, library defaults:
  ``librosa.load(sr)``, ``fix_length``, ``librosa.feature.melspectrogram`` with the reference
  parameters and ``power_to_db`` (checked to equal sejax's features);
- ``librosa_loop_blas1``: the same loop with BLAS limited to one thread, as prepare's workers
  run (a multi-threaded BLAS on the tiny Mel product fights other jobs on a small machine);
- ``prepare``: `sejax.data.prepare.prepare` in this process (TensorFlow already imported, worker
  fork server already started: the library's steady state), ``--workers`` (0: all cores);
- ``loop_script`` and ``cli``: the loop as a fresh Python process, and
  ``python -m sejax prepare``: what a user waits for, imports and worker start-up included.

Then where prepare's time goes: per-file stages in one process with one BLAS thread
(read, sha256, screening with decoding, crop/pad, `sejax.data.features.log_mel`, serialise, write)
and the fixed costs (imports, collecting the corpus), and what the per-file work would cost
done differently (`front_end_alternatives`: decoding only the analysis window; the STFT +
Mel + dB by librosa, as numpy/scipy array code per file or on batches, or
`sejax.data.frontend_jax` under jit).
``--limit N`` takes the first N files. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_RAVDESS = REPO.parent / "shared" / "data" / "ravdess-speech-16k"
AUDIO_SUFFIXES = (".flac", ".wav")


def audio_files(root: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    return files[:limit] if limit else files


def linked_subset(root: Path, files: Sequence[Path], into: Path) -> Path:
    """A folder of symlinks to ``files`` in their layout under ``root`` (never a copy)."""
    for f in files:
        link = into / f.relative_to(root)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f.resolve())
    return into


def blas_threads(n: int | None) -> contextlib.AbstractContextManager:
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def librosa_features(path: Path, cfg: dict) -> np.ndarray:
    """One file the way a librosa user computes the reference features: ``[T, n_mels]``."""
    import librosa

    y, _ = librosa.load(path, sr=cfg["sample_rate"])
    return librosa_log_mel(
        librosa.util.fix_length(y, size=round(cfg["sample_rate"] * cfg["duration_s"])), cfg
    )


def librosa_log_mel(wave: np.ndarray, cfg: dict) -> np.ndarray:
    """librosa's STFT + Mel + dB of one fixed-length clip, ``[T, n_mels]``."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=wave, sr=cfg["sample_rate"], n_fft=cfg["n_fft"], hop_length=cfg["hop_length"],
        win_length=cfg["win_length"], window=cfg["window"], center=cfg["center"],
        pad_mode="constant", power=cfg["power"], n_mels=cfg["n_mels"], fmin=cfg["fmin"],
        fmax=cfg["fmax"],
    )  # fmt: skip
    return librosa.power_to_db(mel, ref=1.0, amin=cfg["amin"], top_db=None).T


def librosa_loop(files: Sequence[Path], cfg: dict, threads: int | None) -> list[np.ndarray]:
    with blas_threads(threads):
        return [librosa_features(f, cfg) for f in files]


# ------------------------------------------------------------------------------------------
# Where prepare's time goes.


class Stages:
    """Accumulates wall time per named stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def per_file_ms(self, n: int) -> dict[str, float]:
        return {k: round(1e3 * v / n, 3) for k, v in self.seconds.items()}


def stage_breakdown(files: Sequence[Path], cfg: dict, tmp: Path) -> dict[str, float]:
    """prepare's per-file work split into stages, one process, one BLAS thread (ms per file)."""
    from sejax import io
    from sejax.data import audio, features, screening, shards

    tf = io.tensorflow()
    limits = screening.Limits()
    row = {"label": 0, "actor": 1, "intensity": 1, "statement": 1, "repetition": 1, "index": 0}
    t = Stages()
    with blas_threads(1), tf.io.TFRecordWriter(str(tmp / "breakdown.tfrecord")) as writer:
        for f in files:
            with t("read"):
                data = audio.read_source(str(f))
            with t("sha256"):
                digest = hashlib.sha256(data).hexdigest()
            with t("screen_decode"):  # header checks, decode, resample, silence check
                wave = screening.screen(data, str(f), cfg["sample_rate"], limits).wave
            with t("fix_length"):
                wave = features.fix_length(wave, cfg)
            with t("log_mel"):  # STFT, power, Mel, dB
                db = features.log_mel(wave, cfg)
            with t("serialise"):
                proto = shards.example_proto(tf, db.astype("<f4").tobytes(),
                                             {**row, "sha256": digest})  # fmt: skip
            with t("tfrecord_write"):
                writer.write(proto)
    return t.per_file_ms(len(files))


def vectorised_log_mel(waves: np.ndarray, cfg: dict, fft: Callable = np.fft.rfft) -> np.ndarray:
    """librosa's STFT + Mel + dB in a few array calls, one clip ``[N]`` or many ``[B, N]``.

    ``fft``: ``np.fft.rfft`` or ``scipy.fft.rfft`` (both keep float32 -> complex64).
    """
    from sejax.data import features

    n_fft, hop = cfg["n_fft"], cfg["hop_length"]
    window = features.stft_window(cfg["window"], cfg["win_length"], n_fft).astype(np.float32)
    basis_t = np.ascontiguousarray(features._mel_basis(
        cfg["sample_rate"], n_fft, cfg["n_mels"], cfg["fmin"], cfg["fmax"]).T)  # fmt: skip
    pad = n_fft // 2 if cfg["center"] else 0
    padded = np.pad(waves, [(0, 0)] * (waves.ndim - 1) + [(pad, pad)])
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[..., ::hop, :]
    spectrum = fft(frames * window, axis=-1)
    spec = spectrum.real**2 + spectrum.imag**2
    mel = spec @ basis_t
    return 10.0 * np.log10(np.maximum(mel, cfg["amin"]))


def front_end_alternatives(
    files: Sequence[Path], waves: np.ndarray, cfg: dict, batch: int
) -> dict[str, Any]:
    """ms per file of prepare's per-file work done differently, best of 3, one BLAS thread.

    Decoding the whole file vs only the analysis window (``crop='start'`` needs no more;
    the original length comes from the header), and librosa's STFT + Mel + dB per file vs
    `sejax.data.features.log_mel` (what prepare runs), numpy/scipy array code per file and on
    batches, and `sejax.data.frontend_jax` under jit.
    """
    import io

    import jax
    import scipy.fft
    import soundfile as sf

    from sejax.data import features, frontend_jax

    n = round(cfg["sample_rate"] * cfg["duration_s"])
    blobs = [f.read_bytes() for f in files]
    chunks = [waves[i : i + batch] for i in range(0, len(waves), batch)]
    reference = np.stack([librosa_log_mel(w, cfg) for w in waves])
    jax_fn = jax.jit(frontend_jax.make_log_mel(cfg))
    for size in {len(c) for c in chunks}:  # compile outside the timing
        jax_fn(chunks[0][:size]).block_until_ready()

    def window_only(blob: bytes) -> np.ndarray:
        with sf.SoundFile(io.BytesIO(blob)) as f:
            f.frames  # the original length, for metadata.json  # noqa: B018
            return f.read(frames=n, dtype="float32", always_2d=True)

    def whole_file(blob: bytes) -> np.ndarray:
        return sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)[0]

    def per_file(fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        return np.stack([fn(w) for w in waves])

    def batched(fn: Callable[[np.ndarray], Any]) -> np.ndarray:
        return np.concatenate([np.asarray(fn(c)) for c in chunks])

    rfft = scipy.fft.rfft
    candidates: dict[str, Callable[[], Any]] = {
        "decode_whole_file": lambda: [whole_file(b) for b in blobs],
        "decode_window_only": lambda: [window_only(b) for b in blobs],
        "librosa_per_file": lambda: per_file(lambda w: librosa_log_mel(w, cfg)),
        "sejax_per_file": lambda: per_file(lambda w: features.log_mel(w, cfg)),
        "numpy_per_file": lambda: per_file(lambda w: vectorised_log_mel(w, cfg)),
        "scipy_per_file": lambda: per_file(lambda w: vectorised_log_mel(w, cfg, rfft)),
        "numpy_batched": lambda: batched(lambda c: vectorised_log_mel(c, cfg)),
        "scipy_batched": lambda: batched(lambda c: vectorised_log_mel(c, cfg, rfft)),
        "jax_batched": lambda: batched(jax_fn),
    }
    best = dict.fromkeys(candidates, float("inf"))
    outputs: dict[str, Any] = {}
    with blas_threads(1):
        for _ in range(3):  # interleaved, so a busy moment hits every candidate alike
            for name, fn in candidates.items():
                start = time.perf_counter()
                outputs[name] = fn()
                best[name] = min(best[name], time.perf_counter() - start)
    out: dict[str, Any] = {"batch": batch, "files": len(waves)}
    out.update({f"{k}_ms_per_file": round(1e3 * v / len(waves), 3) for k, v in best.items()})
    for name in candidates:
        if not name.startswith("decode"):
            diff = np.abs(np.asarray(outputs[name]) - reference).max()
            out[f"{name}_max_abs_diff_db"] = round(float(diff), 5)
    return out


def fixed_costs(data: Path) -> dict[str, float]:
    """Seconds prepare spends whatever the number of files: imports and corpus collection."""
    from sejax.corpora import sources as sources_lib
    from sejax.corpora.ravdess import EMOTIONS

    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        return time.perf_counter() - start

    start = time.perf_counter()
    sources_lib.collect([("ravdess", data)], labels=EMOTIONS)
    collect_s = time.perf_counter() - start
    return {
        "python_start_s": round(wall("pass"), 2),
        "import_sejax_prepare_s": round(wall("import sejax.data.prepare"), 2),
        "import_sejax_cli_s": round(wall("import sejax.cli.main"), 2),
        "import_tensorflow_s": round(wall("import tensorflow"), 2),
        "import_librosa_stft_s": round(wall("import librosa.core.spectrum, librosa.filters"), 2),
        "collect_s": round(collect_s, 3),
    }


# ------------------------------------------------------------------------------------------
# The run.


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SHARED_RAVDESS), help="a RAVDESS-named folder")
    parser.add_argument("--limit", type=int, default=None, help="the first N files only")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="prepare's workers (0: cores)")
    parser.add_argument("--no-cli", action="store_true", help="skip the fresh-process run")
    parser.add_argument("--profile-files", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="clips per batched front end")
    parser.add_argument("--loop-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from sejax.configs.default import get_features_config
    from sejax.data import features

    cfg = features.canonical_config(get_features_config())
    root = Path(args.data).resolve()
    files = audio_files(root, args.limit)
    if not files:
        raise SystemExit(f"no audio files under {root}")
    if args.loop_only:  # the loop as a user's script: a fresh process, librosa's import paid
        librosa_loop(files, cfg, None)
        return 0

    from sejax.data import prepare

    work = Path(tempfile.mkdtemp(prefix="sejax-bench-prepare-"))
    try:
        data = linked_subset(root, files, work / "corpus") if args.limit else root

        # Warm both sides (imports, filterbank, TensorFlow, the worker fork server) and check
        # the loop computes sejax's features.
        loop_check = librosa_loop(files[:2], cfg, None)
        warm = files[: 2 * prepare.CHUNK_SIZE]  # two chunks: the worker pool starts
        prepare.prepare(linked_subset(root, warm, work / "warm"), work / "warm-out", cfg,
                        progress=False, num_workers=args.workers)  # fmt: skip
        ours = [prepare.compute_one(str(f), cfg)[0] for f in files[:2]]
        loop_diff = max(float(np.abs(a - b).max()) for a, b in zip(loop_check, ours, strict=True))

        def run_prepare() -> None:
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            prepare.prepare(data, out, cfg, progress=False, num_workers=args.workers)

        def run_cli() -> None:
            out = work / "cli-out"
            shutil.rmtree(out, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "sejax", "prepare", "--data", str(data),
                            "--out", str(out)], check=True, capture_output=True)  # fmt: skip

        def run_loop_script() -> None:
            limit = ["--limit", str(args.limit)] if args.limit else []
            subprocess.run([sys.executable, __file__, "--loop-only", "--data", str(root), *limit],
                           check=True, capture_output=True)  # fmt: skip

        competitors: dict[str, Callable[[], object]] = {
            "librosa_loop": lambda: librosa_loop(files, cfg, None),
            "librosa_loop_blas1": lambda: librosa_loop(files, cfg, 1),
            "prepare": run_prepare,
        }
        if not args.no_cli:
            competitors["loop_script"] = run_loop_script
            competitors["cli"] = run_cli
        seconds: dict[str, list[float]] = {name: [] for name in competitors}
        for r in range(args.rounds):
            order = list(competitors) if r % 2 == 0 else list(reversed(competitors))
            for name in order:
                start = time.perf_counter()
                competitors[name]()
                seconds[name].append(time.perf_counter() - start)
                print(f"[prepare] round {r}: {name} {seconds[name][-1]:.1f} s", file=sys.stderr,
                      flush=True)  # fmt: skip
        best = {name: min(s) for name, s in seconds.items()}
        n = len(files)
        result: dict[str, Any] = {
            "benchmark": "prepare",
            "source": str(root),
            "files": n,
            "workers": prepare._resolve_workers(args.workers, -(-n // prepare.CHUNK_SIZE)),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "loop_max_abs_diff_db": round(loop_diff, 5),
            **{f"{name}_files_per_s": round(n / s, 1) for name, s in best.items()},
            "speedup_vs_librosa_loop": round(best["librosa_loop"] / best["prepare"], 2),
            "speedup_vs_librosa_loop_blas1": round(best["librosa_loop_blas1"] / best["prepare"], 2),
            "rounds_s": {name: [round(x, 2) for x in s] for name, s in seconds.items()},
        }
        if "cli" in best:
            result["cli_speedup_vs_loop_script"] = round(best["loop_script"] / best["cli"], 2)
        profiled = files[: args.profile_files]
        result["stages_ms_per_file"] = stage_breakdown(profiled, cfg, work)
        result["fixed_costs"] = fixed_costs(data)
        from sejax.data import audio

        waves = np.stack([features.fix_length(audio.load_audio(str(f), cfg["sample_rate"]), cfg)
                          for f in profiled])  # fmt: skip
        result["alternatives"] = front_end_alternatives(profiled, waves, cfg, args.batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
