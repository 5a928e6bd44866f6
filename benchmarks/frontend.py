"""Front-end throughput: log-Mel with librosa on the host vs `sejax.data.frontend_jax` under jit.

    python benchmarks/frontend.py                      # the demo corpus, reference features
    python benchmarks/frontend.py --data DIR --num-files 400 --batch-size 256   # e.g. on a GPU

Both run side by side in one process on the same fixed-length windows (decoding is not
timed): librosa one file at a time, as `sejax.data.prepare`'s workers do (one worker process;
prepare runs one per core), and the JAX front end on batches (host -> device, compute, and
back to the host, so the numbers compare features ready to write; ``to_device`` leaves them
on the device, as prediction does), and one file at a time (batch 1, as streaming does).
The best of ``--repeats`` runs counts. Prints one JSON line. Without librosa (accelerator
hosts) only the JAX numbers are measured, on ``--data`` files or on synthetic speech-like
windows when soundfile cannot write the demo corpus either.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _load_windows(args: argparse.Namespace, cfg: object) -> tuple[np.ndarray, str]:
    from sejax.data import features

    n = features.num_samples(cfg)
    rate = int(cfg.sample_rate)
    source = args.data
    if source is None:
        if importlib.util.find_spec("soundfile") is None:
            from sejax.inference.export import probe_waves

            waves = probe_waves({"sample_rate": rate, "num_samples": n}, count=args.num_files)
            return waves, "synthetic"
        from sejax.data.demo import generate_demo_corpus

        source = str(Path(tempfile.gettempdir()) / "sejax-bench-demo")
        generate_demo_corpus(source, actors=(21, 22, 23, 24), sample_rate=rate)
    from sejax.data.audio import load_audio
    from sejax.inference.predict import expand_paths

    files = expand_paths([source])[: args.num_files]
    waves = np.stack([features.fix_length(load_audio(f, rate), cfg) for f in files])
    return waves, source


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="folder of audio (default: demo corpus)")
    parser.add_argument("--num-files", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import jax

    from sejax.configs.default import get_features_config
    from sejax.data import features, frontend_jax

    cfg = get_features_config()
    waves, source = _load_windows(args, cfg)
    count = len(waves)
    result: dict[str, object] = {
        "benchmark": "frontend",
        "source": source,
        "num_files": count,
        "window_s": float(cfg.duration_s),
        "batch_size": args.batch_size,
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
    }

    log_mel = jax.jit(frontend_jax.make_log_mel(cfg))
    batches = [waves[i : i + args.batch_size] for i in range(0, count, args.batch_size)]
    batches = [np.pad(b, [(0, args.batch_size - len(b)), (0, 0)]) for b in batches]
    log_mel(batches[0]).block_until_ready()  # compile both shapes outside the timing
    log_mel(waves[0]).block_until_ready()

    def jax_to_host() -> list[np.ndarray]:
        return [np.asarray(log_mel(b)) for b in batches]

    def jax_on_device() -> None:
        out = [log_mel(jax.device_put(b)) for b in batches]
        jax.block_until_ready(out)

    def jax_one_by_one() -> None:
        for w in waves:
            log_mel(w).block_until_ready()

    result["jax_files_per_s"] = count / _best_time(jax_to_host, args.repeats)
    result["jax_to_device_files_per_s"] = count / _best_time(jax_on_device, args.repeats)
    result["jax_batch1_files_per_s"] = count / _best_time(jax_one_by_one, args.repeats)

    if importlib.util.find_spec("librosa") is not None:
        features.log_mel(waves[0], cfg)  # build the filterbank, warm librosa's caches

        def with_librosa() -> list[np.ndarray]:
            return [features.log_mel(w, cfg) for w in waves]

        result["librosa_files_per_s"] = count / _best_time(with_librosa, args.repeats)
        result["speedup_vs_librosa"] = result["jax_files_per_s"] / result["librosa_files_per_s"]
        result["batch1_speedup_vs_librosa"] = (
            result["jax_batch1_files_per_s"] / result["librosa_files_per_s"]
        )
        reference = np.stack(with_librosa())
        result["max_abs_diff_db"] = float(
            np.abs(np.concatenate(jax_to_host())[:count] - reference).max()
        )
    else:
        result["librosa_files_per_s"] = None
    result = {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
