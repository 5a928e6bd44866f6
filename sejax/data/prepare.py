"""Raw audio -> log-Mel TFRecord shards + metadata.json, once per corpus and features config.

The shard format itself (records, metadata, fingerprint checks) is `sejax.data.shards`; this
module writes it. Feature extraction is the slow, embarrassingly parallel part, so worker
processes compute it from the source paths (chunks of files per task; 'forkserver' or 'spawn'
context, never a fork of the parent, which may already hold TensorFlow or JAX threads;
workers import neither). The parent alone writes the shards, in metadata order, so the output
is byte-identical whatever the number of workers.

Every file found is either prepared or rejected with a reason (`sejax.data.screening`), never
dropped silently; ``strict`` stops at the first problem file instead.

Everything is written into a staging folder beside ``out_dir`` and renamed into place at the
end (`sejax.io.replace_folder`), so a failure (a corrupt file, Ctrl-C) never leaves a
half-written ``out_dir``. An existing ``out_dir`` is reused when it holds the same features
fingerprint and the same source files (names, labels and content); anything else is refused
with a `DataError` unless ``overwrite``. `ensure_shards` is what a run calls: the shards its
config names, prepared first if need be.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from sejax import corpora, io
from sejax.corpora import sources as sources_lib
from sejax.corpora.ravdess import EMOTIONS
from sejax.data import audio, demo, features, screening
from sejax.data import shards as shards_lib
from sejax.errors import ConfigError, DataError

if TYPE_CHECKING:
    import ml_collections

CORPORA = corpora.NAMES
CHUNK_SIZE = 16  # files per worker task: large enough that IPC is cheap, small for balance
# Modules the worker fork server imports once (librosa's STFT pulls in scipy.signal and numba).
# librosa.util.utils compiles numba functions on import; the first STFT imports it lazily,
# which cost each worker's first chunk 1.2-1.9 s instead of 0.1 s (benchmarks/README.md).
_WORKER_PRELOAD = (
    "sejax.data.prepare", "soundfile", "librosa.filters", "librosa.util.utils",
    "threadpoolctl",
)  # fmt: skip

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Feature workers (run in child processes: no TensorFlow, no JAX).


def _init_worker() -> None:
    """Keeps workers off accelerators even if something imports JAX or TF after all, and
    limits BLAS to one thread for the worker's life."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["JAX_PLATFORMS"] = "cpu"
    # A BLAS loaded later (scipy's own OpenBLAS, which librosa >= 1.0 brings in on first use)
    # reads its thread count from the environment when it loads; those loaded already are
    # limited below.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    # Once per worker, not per chunk: threadpoolctl finds the BLAS by scanning every loaded
    # library (~180 here), 6-25 ms a call, which per 16-file chunk was 0.4-1.6 ms per file.
    _single_threaded_blas()  # kept: never restored in a worker


def compute_one(source: str, features_cfg: Any) -> tuple[np.ndarray, int, str]:
    """Features, waveform length at the target rate before crop/pad, sha256 of the file."""
    cfg = features.canonical_config(features_cfg)
    data = audio.read_source(source)
    digest = hashlib.sha256(data).hexdigest()
    try:
        wave = audio.decode_audio(data, cfg["sample_rate"], name=source)
        feats = features.extract(wave, cfg)
    except DataError:
        raise
    except Exception as e:  # a decoder or librosa failure: name the file, keep the cause
        raise DataError(f"{source}: feature extraction failed ({type(e).__name__}: {e})") from e
    return feats, len(wave), digest


def _single_threaded_blas() -> contextlib.AbstractContextManager:
    """One BLAS thread for the Mel projection: parallelism comes from the worker processes.

    Multi-threaded OpenBLAS on a tiny [64, 257] x [257, 301] product only spins against the
    other workers; on a loaded 2-core machine that made extraction ~10x slower.
    """
    try:
        from threadpoolctl import threadpool_limits  # installed with scikit-learn
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class _Result(NamedTuple):
    """What a worker sends back for one file: its features, or why it was rejected."""

    features: bytes | None  # little-endian float32; None when rejected
    num_samples: int  # at the target rate, before crop/pad
    sha256: str  # of the file's bytes ("" if unreadable)
    problem: str = ""  # a `screening.PROBLEMS` key when rejected
    reason: str = ""


def _screened_one(source: str, cfg: dict, limits: screening.Limits) -> _Result:
    digest = ""
    try:
        data = audio.read_source(source)
        digest = hashlib.sha256(data).hexdigest()
        wave = screening.screen(data, source, cfg["sample_rate"], limits).wave
        feats = features.extract(wave, cfg)
    except audio.BadAudio as e:
        return _Result(None, 0, digest, e.kind, str(e))
    except DataError as e:  # e.g. a zip member that cannot be opened
        return _Result(None, 0, digest, "unreadable", str(e))
    except Exception as e:  # a decoder or librosa failure: name the file, keep the cause
        reason = f"{source}: feature extraction failed ({type(e).__name__}: {e})"
        return _Result(None, 0, digest, "corrupt", reason)
    return _Result(feats.astype("<f4").tobytes(), len(wave), digest)


def _compute_chunk(
    sources: Sequence[str], cfg: dict, limits: screening.Limits | None = None
) -> list[_Result]:
    """One worker task: each file screened, then its features (or its problem)."""
    limits = limits or screening.Limits()
    return [_screened_one(source, cfg, limits) for source in sources]


def _resolve_workers(num_workers: int, num_chunks: int) -> int:
    if num_workers <= 0:
        try:
            num_workers = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_workers = os.cpu_count() or 1
    return max(1, min(num_workers, num_chunks))


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Hides ``__main__`` while worker processes start.

    A spawned (or fork-server) child re-runs the parent's main script (as ``__mp_main__``)
    unless the main module has no file: that would import whatever the script imports
    (TensorFlow, JAX) and break scripts without an ``if __name__ == "__main__"`` guard. The
    workers only run functions of this module, so they need nothing from ``__main__``.
    """
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _mp_context() -> multiprocessing.context.BaseContext:
    """'forkserver' where available, else 'spawn': never fork the parent itself.

    The fork server is a clean process started once (it imports only sejax's feature code and
    librosa); each pool forks its workers from it, so later pools start without re-importing.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(_WORKER_PRELOAD))  # only used when the server starts
        return ctx
    return multiprocessing.get_context("spawn")


def _make_executor(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=_mp_context(), initializer=_init_worker
    )


def _submit(executor: concurrent.futures.Executor, fn: Callable, *args: Any):
    """``executor.submit``; the pool starts its processes here, so hide ``__main__``."""
    with _main_module_hidden():
        return executor.submit(fn, *args)


def _chunk_results(
    chunks: Sequence[Sequence[str]], cfg: dict, workers: int, limits: screening.Limits
) -> Iterator[list[_Result]]:
    """Results of every chunk, in chunk order, from ``workers`` processes (1: in-process)."""
    if workers == 1:
        with _single_threaded_blas():  # restored when the generator is closed
            for chunk in chunks:
                yield _compute_chunk(chunk, cfg, limits)
        return
    executor = _make_executor(workers)
    try:
        pending: collections.deque = collections.deque()
        todo = iter(chunks)
        window = 4 * workers  # bounds memory held by finished-but-not-yet-written chunks
        for chunk in todo:
            pending.append(_submit(executor, _compute_chunk, chunk, cfg, limits))
            if len(pending) >= window:
                break
        first = 0  # index of the chunk the oldest pending future computes
        while pending:
            try:
                result = pending.popleft().result()
            except concurrent.futures.BrokenExecutor as e:  # a worker was killed or crashed
                chunk = chunks[first]
                raise DataError(
                    f"a feature worker process died while reading {chunk[0]} .. {chunk[-1]} "
                    f"(or a file near them): {e}. Run with num_workers=1 to find the file."
                ) from e
            first += 1
            next_chunk = next(todo, None)
            if next_chunk is not None:
                pending.append(_submit(executor, _compute_chunk, next_chunk, cfg, limits))
            yield result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------
# Writing shards.


def _hash_file(source: str) -> str:
    return hashlib.sha256(audio.read_source(source)).hexdigest()


def _counts(rows: Sequence[dict], label_names: Sequence[str]) -> dict:
    by_label = collections.Counter(r["emotion"] for r in rows)
    by_actor = collections.Counter(int(r["actor"]) for r in rows)
    return {
        "by_label": {name: by_label.get(name, 0) for name in label_names},
        "by_actor": {str(a): by_actor[a] for a in sorted(by_actor)},
    }


def _write_shards(
    tmp: Path,
    utterances: Sequence[Any],
    cfg: dict,
    *,
    workers: int,
    examples_per_shard: int,
    limits: screening.Limits,
    strict: bool,
    advance: Callable[[int], None],
) -> tuple[list[dict], list[dict], list[screening.Rejected]]:
    """Screens every clip, writes the features of the good ones into shards; returns (shards,
    example rows, rejected files). ``strict``: the first rejected file raises DataError."""
    tf = io.tensorflow()
    chunks = [
        [u.source for u in utterances[i : i + CHUNK_SIZE]]
        for i in range(0, len(utterances), CHUNK_SIZE)
    ]
    rows: list[dict] = []
    shards: list[dict] = []
    rejected: list[screening.Rejected] = []
    writer = None
    position = 0  # index into utterances
    try:
        # closing(): an error here also stops the worker processes.
        with contextlib.closing(_chunk_results(chunks, cfg, workers, limits)) as chunk_results:
            for results in chunk_results:
                for result in results:
                    utterance = utterances[position]
                    position += 1
                    if result.problem:
                        if strict:
                            raise DataError(
                                f"{result.reason} [{result.problem}]. data.strict stops at the "
                                "first bad file; without it bad files are reported and skipped."
                            )
                        rejected.append(screening.Rejected(
                            utterance.source, result.problem, result.reason, result.sha256
                        ))  # fmt: skip
                        continue
                    index = len(rows)
                    if index % examples_per_shard == 0:  # start the next shard
                        if writer is not None:
                            writer.close()
                        shards.append({"file": f"shard-{len(shards):05d}.partial",
                                       "num_examples": 0})  # fmt: skip
                        writer = tf.io.TFRecordWriter(str(tmp / shards[-1]["file"]))
                    row = shards_lib.example_row(utterance, index, shards[-1]["file"],
                                                 sha256=result.sha256,
                                                 num_samples=result.num_samples)  # fmt: skip
                    writer.write(shards_lib.example_proto(tf, result.features, row))
                    shards[-1]["num_examples"] += 1
                    rows.append(row)
                advance(len(results))
    finally:
        if writer is not None:
            writer.close()
    # Final names, now that the number of shards is known.
    names = {s["file"]: shards_lib.shard_name(i, len(shards)) for i, s in enumerate(shards)}
    for shard in shards:
        os.rename(tmp / shard["file"], tmp / names[shard["file"]])
        shard["file"] = names[shard["file"]]
        shard["bytes"] = (tmp / shard["file"]).stat().st_size
    for row in rows:
        row["shard"] = names[row["shard"]]
    return shards, rows, rejected


# ------------------------------------------------------------------------------------------
# The out_dir life cycle: reuse, refuse, or replace atomically.


def _is_replaceable(directory: Path) -> bool:
    """Only folders holding nothing but our own files may be replaced (never user data)."""
    ours = (shards_lib.METADATA_FILE, screening.REPORT_FILE)
    return all(p.name in ours or shards_lib.is_shard_file(p.name) for p in directory.iterdir())


def _existing_metadata(out_dir: Path, overwrite: bool) -> dict | None:
    """The metadata of shards already in ``out_dir``; None when there is nothing to keep.

    With ``overwrite`` an existing folder is replaced, but only when it holds nothing except
    shards and metadata.json: never delete what sejax did not write.
    """
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: exists and is not a folder; choose another output folder")
    if not any(out_dir.iterdir()):
        return None
    if overwrite:
        if not _is_replaceable(out_dir):
            raise DataError(
                f"{out_dir} holds files other than shards and {shards_lib.METADATA_FILE}; "
                "refusing to "
                "replace it even with overwrite=True. Choose another output folder."
            )
        return None
    try:
        return shards_lib.load_metadata(out_dir)
    except DataError as e:
        hint = " or pass overwrite=True" if _is_replaceable(out_dir) else ""
        raise DataError(
            f"{out_dir} exists but does not hold usable prepared shards ({e}). Refusing to "
            f"write into it; choose another folder{hint}."
        ) from e


def _label_key(row: dict) -> tuple:
    return (row["source"], int(row["label"]), int(row["actor"]), row.get("split", ""))


def _screened_out(metadata: dict) -> list[dict]:
    """Rejected files that were screened (read and decoded), not refused by name or label."""
    return [r for r in metadata.get("rejected", []) if r["problem"] not in ("bad_name", "left_out")]


def _current_hash(source: str) -> str:
    try:
        return _hash_file(source)
    except DataError:
        return ""


def _source_differences(
    metadata: dict,
    examples: Sequence[sources_lib.Example],
    label_names: Sequence[str],
    limits: screening.Limits,
) -> list[str]:
    """Why the shards do not hold exactly these files, labels and screening (names, labels,
    content, duration limits); a rejected file counts as held, with its content."""
    screened = _screened_out(metadata)
    stored = sorted([e["source"] for e in metadata["examples"]] + [r["source"] for r in screened])
    wanted = sorted(e.source for e in examples)
    if stored != wanted:
        added = sorted(set(wanted) - set(stored))
        removed = sorted(set(stored) - set(wanted))
        lines = [f"{len(added)} new file(s), {len(removed)} file(s) no longer present"]
        lines += [f"new: {s}" for s in added[:5]] + [f"gone: {s}" for s in removed[:5]]
        return lines
    if list(metadata["label_names"]) != list(label_names):
        return [f"target labels {metadata['label_names']} there, {list(label_names)} now"]
    # Shards from before screening have no limits recorded: reused as they are.
    if "screening" in metadata and metadata["screening"] != limits.to_json():
        return [f"screening limits {metadata['screening']} there, {limits.to_json()} now"]
    by_source = {e.source: e for e in examples}
    relabelled = [
        row["source"]
        for row in metadata["examples"]
        if _label_key(row) != _label_key_of(by_source[row["source"]])
    ]
    if relabelled:
        return [
            f"{len(relabelled)} file(s) have another label, speaker or split now "
            "(data.label_map, data.labels or a manifest changed)"
        ] + [f"relabelled: {s}" for s in relabelled[:5]]
    held = [(e["source"], e["sha256"]) for e in metadata["examples"]]
    held += [(r["source"], r.get("sha256", "")) for r in screened]
    changed = [source for source, digest in held if _current_hash(source) != digest]
    if changed:
        return [f"{len(changed)} file(s) changed content since"] + [
            f"changed: {s}" for s in changed[:5]
        ]
    return []


def _label_key_of(e: sources_lib.Example) -> tuple:
    return (e.source, e.label, e.actor, e.recording.split)


def _is_storage_error(e: BaseException) -> bool:
    """A failed write: an OSError, or TensorFlow's own error from the TFRecord writer."""
    tf = sys.modules.get("tensorflow")
    return isinstance(e, OSError) or (tf is not None and isinstance(e, tf.errors.OpError))


def _storage_error(e: BaseException, out_dir: Path) -> DataError:
    return DataError(
        f"could not write the shards for {out_dir} in {out_dir.parent}: {type(e).__name__}: "
        f"{e}. Disk full or read-only? Nothing was changed: shards already in {out_dir} "
        "are still there and loadable."
    )


def _summary(metadata: dict, out_dir: Path, *, reused: bool, workers: int, t0: float) -> dict:
    return {
        "out_dir": str(out_dir),
        "reused": reused,
        "num_examples": metadata["num_examples"],
        "num_shards": len(metadata["shards"]),
        "num_frames": metadata["num_frames"],
        "num_mels": metadata["num_mels"],
        "fingerprint": metadata["fingerprint"],
        "corpus": metadata["corpus"],
        "counts": metadata["counts"],
        "dropped": {
            f"{c['corpus']}:{label}": n
            for c in metadata.get("corpora", [])
            for label, n in c["dropped"].items()
        },
        "skipped": metadata["skipped"],
        "report": metadata.get("report"),
        "num_workers": workers,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _print_report(metadata: dict, out_dir: Path, enabled: bool) -> None:
    """The screening summary on stderr (with ``progress``); a warning when files were rejected."""
    report = metadata.get("report")
    if report is None:  # shards prepared before screening existed
        return
    rejected = [screening.Rejected(**r) for r in metadata.get("rejected", [])]
    text = screening.format_summary(report, rejected, out_dir)
    if enabled:
        print(text, file=sys.stderr, flush=True)
    elif rejected:
        log.warning("%s", text)


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when enabled and stderr is a terminal; else a no-op."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]log-Mel features"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task("features", total=total)
        yield lambda n: bar.advance(task, n)


def data_options(data_cfg: Any) -> dict[str, Any]:
    """`prepare`'s keyword arguments from ``config.data`` (what the shards depend on)."""
    return {
        "corpus": data_cfg.corpus,
        "on_bad_name": data_cfg.on_bad_name,
        "strict": bool(data_cfg.strict),
        "min_duration_s": float(data_cfg.min_duration_s),
        "max_duration_s": float(data_cfg.max_duration_s),
        "num_workers": data_cfg.num_workers,
        "examples_per_shard": data_cfg.examples_per_shard,
        "labels": tuple(data_cfg.labels),
        "label_map": tuple(data_cfg.label_map),
        "extra_sources": tuple(data_cfg.extra_sources),
    }


def prepare(
    data_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    features_cfg: Any,
    *,
    corpus: str = "ravdess",
    on_bad_name: str = "skip",
    strict: bool = False,
    min_duration_s: float = screening.Limits.min_s,
    max_duration_s: float = screening.Limits.max_s,
    num_workers: int = 0,
    examples_per_shard: int = 256,
    progress: bool = True,
    overwrite: bool = False,
    labels: Sequence[str] = EMOTIONS,
    label_map: Sequence[str] = (),
    extra_sources: Sequence[str] = (),
    unmapped: str = "error",
) -> dict:
    """Computes log-Mel features of every utterance under ``data_path`` into ``out_dir``.

    ``data_path``: a folder or zip of audio named by the ``corpus``'s convention, or a
    manifest file (`sejax.corpora`); ``extra_sources``: more ``"corpus=path"`` entries to
    mix in (`sejax.corpora.sources`). Labels are mapped onto ``labels`` with ``label_map``
    (`sejax.corpora.labels`); a label with no target is an error, or with
    ``unmapped='drop'`` its files are left out and counted in the metadata's ``corpora``.
    ``num_workers``: feature processes; 0 means one per available CPU core, 1 runs in this
    process. Returns a summary dict (``reused`` says whether existing shards were kept).
    Existing shards in ``out_dir`` are reused when they have the same features fingerprint and
    the same source files (paths and sha256 of their bytes); otherwise DataError, unless
    ``overwrite=True``, which always recomputes and replaces them.

    Every file is screened (`sejax.data.screening`): misnamed, unreadable, empty, non-audio,
    corrupt, truncated, NaN, silent, too short (< ``min_duration_s``) or too long
    (> ``max_duration_s``, 0: no limit) files are rejected with their reason into
    ``rejected.tsv`` and ``metadata.json``, and the others prepared (found = prepared +
    rejected). ``strict``: the first bad file raises DataError naming it instead. Whatever
    fails, ``out_dir`` is left as it was.
    """
    t0 = time.perf_counter()
    cfg = features.canonical_config(features_cfg)
    fingerprint = features.fingerprint(cfg)
    corpora.get(corpus)  # ConfigError naming data.corpus
    limits = screening.Limits(float(min_duration_s), float(max_duration_s))
    if isinstance(examples_per_shard, bool) or not (
        isinstance(examples_per_shard, int) and examples_per_shard > 0
    ):
        raise ConfigError(f"data.examples_per_shard={examples_per_shard!r} must be an int > 0")
    if isinstance(num_workers, bool) or not (isinstance(num_workers, int) and num_workers >= 0):
        raise ConfigError(f"data.num_workers={num_workers!r} must be an int >= 0 (0: all cores)")

    data_path = Path(data_path).expanduser().resolve()
    collection = sources_lib.collect(
        [(corpus, data_path), *sources_lib.parse_sources(extra_sources)],
        labels=labels, label_map=label_map, on_bad_name="error" if strict else on_bad_name,
        unmapped=unmapped,
    )  # fmt: skip
    utterances = collection.examples
    named_out = [screening.Rejected(name, "bad_name", f"{name}: {why}")
                 for name, why in collection.skipped]  # fmt: skip
    named_out += [screening.Rejected(src, "left_out", f"{src}: {why}")
                  for src, why in collection.left_out]  # fmt: skip
    present = {e.emotion for e in utterances}
    empty = [label for label in collection.label_names if label not in present]
    if empty and unmapped == "error":
        log.warning("No examples of target label(s) %s: the model will never see them "
                    "(data.labels can list fewer labels)", ", ".join(empty))  # fmt: skip
    out_dir = Path(out_dir).expanduser().absolute()

    existing = _existing_metadata(out_dir, overwrite)
    if existing is not None:
        shards_lib.check_compatible(existing, cfg, where=str(out_dir))
        diffs = _source_differences(existing, utterances, collection.label_names, limits)
        if diffs:
            raise DataError(
                f"{out_dir} holds shards prepared from other audio than {data_path}:\n  "
                + "\n  ".join(diffs)
                + "\nChoose another output folder, or pass overwrite=True to replace them."
            )
        faults = [r for r in existing.get("rejected", []) if r["problem"] in screening.FAULTS]
        if strict and faults:
            raise DataError(f"{faults[0]['reason']} [{faults[0]['problem']}] (rejected when "
                            f"{out_dir} was prepared; data.strict refuses shards with bad "
                            "files)")  # fmt: skip
        log.info("Reusing prepared shards in %s (fingerprint %s)", out_dir, fingerprint[:12])
        _print_report(existing, out_dir, progress)
        return _summary(existing, out_dir, reused=True, workers=0, t0=t0)

    num_chunks = math.ceil(len(utterances) / CHUNK_SIZE)
    workers = _resolve_workers(num_workers, num_chunks)
    try:
        tmp = io.staging_folder(out_dir)
    except OSError as e:
        raise _storage_error(e, out_dir) from e
    try:
        with _progress_bar(len(utterances), progress) as advance:
            shards, rows, screened_out = _write_shards(
                tmp, utterances, cfg, workers=workers, examples_per_shard=examples_per_shard,
                limits=limits, strict=strict, advance=advance,
            )  # fmt: skip
        rejected = named_out + screened_out
        found = len(utterances) + len(named_out)
        report = screening.summarize(found, len(rows), rejected)
        if not rows:
            raise DataError(
                f"no usable audio in {data_path}: all {found} files were rejected\n"
                + screening.format_summary(report, rejected, out_dir)
            )
        label_names = collection.label_names
        metadata = {
            "format": shards_lib.FORMAT,
            "version": shards_lib.VERSION,
            "features_config": features.recorded_config(cfg),
            "features_version": features.FEATURES_VERSION,
            "fingerprint": fingerprint,
            "num_frames": features.num_frames(cfg),
            "num_mels": cfg["n_mels"],
            "label_names": label_names,
            "corpus": collection.corpus,
            "source": str(data_path),
            "corpora": collection.sources,
            "shards": shards,
            "num_examples": len(rows),
            "counts": _counts(rows, label_names),
            "skipped": [[name, reason] for name, reason in collection.skipped],
            "screening": limits.to_json(),
            "report": report,
            "rejected": [r.to_json() for r in rejected],
            "examples": rows,
        }
        screening.write_report(tmp / screening.REPORT_FILE, rejected)
        (tmp / shards_lib.METADATA_FILE).write_text(json.dumps(metadata, indent=1) + "\n",
                                                    encoding="utf-8")  # fmt: skip
        # Our old shards (overwrite) are put back if the rename fails; a folder that appeared
        # meanwhile (another process) is never replaced.
        io.replace_folder(tmp, out_dir, replace_existing=overwrite)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _is_storage_error(e):
            raise _storage_error(e, out_dir) from e
        raise
    _print_report(metadata, out_dir, progress)
    summary = _summary(metadata, out_dir, reused=False, workers=workers, t0=t0)
    log.info(
        "Prepared %d examples in %d shards in %s (%d workers, %.1f s)",
        summary["num_examples"], summary["num_shards"], out_dir, workers, summary["seconds"],
    )  # fmt: skip
    return summary


# ------------------------------------------------------------------------------------------
# Where a run's shards come from.


def ensure_shards(config: ml_collections.ConfigDict, workdir: str | Path) -> Path:
    """A folder of prepared shards matching ``config.features``, prepared first if needed.

    ``config.data.path`` names prepared shards (used as they are, once checked against the
    config), raw audio (a zip, folder or manifest, prepared once into ``data.prepared_dir`` or
    ``workdir/prepared``), or nothing: the built-in demo corpus, generated into the workdir.
    """
    workdir = Path(workdir)
    data_path = str(config.data.path)
    cache = Path(config.data.prepared_dir) if config.data.prepared_dir else workdir / "prepared"
    if not data_path:
        if config.data.corpus != "ravdess":
            raise ConfigError(
                f"data.corpus={config.data.corpus!r} needs data.path; an empty data.path means "
                "the built-in demo corpus, which is RAVDESS-named"
            )
        source = demo.generate_demo_corpus(
            workdir / "demo_corpus",
            actors=tuple(config.data.demo_actors),
            repetitions=tuple(config.data.demo_repetitions),
            sample_rate=config.features.sample_rate,
            duration_s=config.features.duration_s,
        )
    else:
        source = Path(data_path).expanduser()
        if not source.exists():
            raise DataError(f"data.path does not exist: {source}")
        if (source / shards_lib.METADATA_FILE).is_file():
            metadata = shards_lib.load_metadata(source)
            shards_lib.check_compatible(metadata, config.features)
            if list(metadata["label_names"]) != list(config.data.labels):
                raise ConfigError(
                    f"the shards in {source} have labels {metadata['label_names']}, but "
                    f"data.labels={list(config.data.labels)}; prepare them again"
                )
            return source
    prepare(source, cache, config.features, **data_options(config.data))
    return cache
