"""The ``sejax`` command: prepare, train, cv, evaluate, download; predict, export, report
(those three live in `sejax.cli.inference`).

Each command shows progress on standard error and ends its standard output with one JSON line
that summarises the result, so scripts can read the last line. Problems the user can fix
(bad data, bad config keys or values, missing checkpoints) exit with status 2 and one clear
message instead of a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sejax.errors import ConfigError, SejaxError
from sejax.training.preemption import Preempted

REAL_DATA_HINT = (
    "To train on real RAVDESS: sejax train --workdir runs/ravdess "
    "--config experiments/configs/ravdess.py --config.data.path=PATH "
    "(PATH: the Zenodo zip Audio_Speech_Actors_01-24.zip, its extracted folder, or "
    "prepared shards; `sejax download --out DIR` fetches the zip)."
)


def _config(args: argparse.Namespace, overrides: Sequence[str]):
    from sejax.configs import loading as config_lib
    from sejax.configs.validation import validate

    config = config_lib.load_config(args.config)
    config = config_lib.apply_overrides(config, config_lib.parse_override_args(overrides))
    return validate(config)


def _emit(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, default=str), flush=True)


def cmd_prepare(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax.data import prepare

    if args.corpus:
        overrides = [*overrides, f"--config.data.corpus={args.corpus}"]
    if args.strict:
        overrides = [*overrides, "--config.data.strict=True"]
    config = _config(args, overrides)
    summary = prepare.prepare(
        args.data, args.out, config.features, overwrite=args.overwrite,
        **prepare.data_options(config.data),
    )  # fmt: skip
    return {"command": "prepare", **summary}


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any] | None:
    from sejax.training import distributed

    for flag in ("coordinator", "num_processes", "process_id"):
        if getattr(args, flag) is not None:
            overrides = [*overrides, f"--config.distributed.{flag}={getattr(args, flag)}"]
    config = _config(args, overrides)
    from sejax.evaluation import evaluate  # after the config checks: bad flags fail first

    summary = evaluate.train_and_evaluate(config, args.workdir)
    if not distributed.is_main_process():
        return None  # process 0 prints the run's summary
    test = summary.get("test")
    print(f"Reports: {Path(args.workdir) / 'eval'} (JSON and confusion-matrix PNG per split)")
    if test:
        print(f"Test: accuracy {test['accuracy']:.3f}, UAR {test['uar']:.3f}, "
              f"macro-F1 {test['macro_f1']:.3f} on {test['num_examples']} examples")  # fmt: skip
    if not config.data.path:
        print("This was the built-in synthetic demo corpus. " + REAL_DATA_HINT)
    return {"command": "train", **summary}


def cmd_cv(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """k-fold cross-validation: trains the folds not yet finished, then reports them all."""
    config = _config(args, overrides)
    from sejax.cli import views  # after the config checks
    from sejax.evaluation import cv

    workdir = Path(args.workdir)
    record = cv.run(config, workdir, log=lambda line: print(line, file=sys.stderr, flush=True))
    blind = bool(config.cv.blind)
    print(views.format_cv_table(record, blind=blind))
    print(f"Cross-validation record: {workdir / 'cv.json'} (pooled confusion matrix and "
          "learning curves beside it; each fold's reports in fold_<i>/)"
          + ("; they hold test: read them after the verdict" if blind else ""))  # fmt: skip
    if record["leaking"]:
        print(f"WARNING: {record['protocol']}: these scores overstate accuracy on unseen "
              "speakers", file=sys.stderr)  # fmt: skip
    if not record["complete"]:
        print(f"{len(record['folds_done'])} of {record['num_folds']} folds done; run the same "
              "command without cv.only_folds to finish and pool them all")  # fmt: skip
    return views.cv_summary(record, workdir, blind=blind)


def cmd_compare(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """Recipe B against recipe A on their common folds: per fold and by a paired bootstrap."""
    from sejax.evaluation import compare, records

    runs_a = [records.read_run(path) for path in (args.a, *args.also_a)]
    runs_b = [records.read_run(path) for path in (args.b, *args.also_b)]
    result = compare.compare(
        runs_a, runs_b, split=args.split, metric=args.metric, resamples=args.resamples,
        seed=args.seed, names=[args.a, *args.also_a, args.b, *args.also_b],
    )  # fmt: skip
    print(compare.format_comparison(result, name_a=args.a, name_b=args.b))
    return {"command": "compare", "a": args.a, "b": args.b, "also_a": args.also_a,
            "also_b": args.also_b, **result}  # fmt: skip


def cmd_repeats(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """One recipe's runs (seeds) on the same folds: mean and spread over the runs."""
    from sejax import io
    from sejax.evaluation import records, repeats

    result = repeats.summarize([records.read_run(r) for r in args.runs], args.runs)
    print(repeats.format_repeats(result, metric=args.metric))
    if args.out:
        io.write_json(args.out, result, indent=1)
        print(f"Repeats record: {args.out}")
    return {"command": "repeats", "out": args.out, **result}


def cmd_ensemble(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """Several cross-validated runs as one: each clip's mean probabilities, scored per fold."""
    from sejax.cli import views
    from sejax.evaluation import ensemble

    record = ensemble.run(args.runs, args.out)
    print(views.format_cv_table(record))
    print(f"Ensemble record: {Path(args.out) / 'cv.json'} (its fold records in folds/; choose "
          "members on validation: sejax compare MEMBER ENSEMBLE)")  # fmt: skip
    return {**views.cv_summary(record, Path(args.out)), "command": "ensemble"}


def cmd_evaluate(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax.evaluation import evaluate

    if args.data or args.corpus:
        return _evaluate_corpus(args)
    for flag in ("prepared_dir", "label_map", "name", "on_bad_name"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag.replace('_', '-')} needs --data and --corpus")
    args.split = args.split or "test"
    # A checkpoint named on the command line is evaluated alone unless --average-last is given.
    average_last = args.average_last
    if average_last is None and args.checkpoint is not None:
        average_last = 0
    checkpoint = args.checkpoint or "best"
    reports = evaluate.evaluate(
        args.workdir, splits=(args.split,), checkpoint=checkpoint, average_last=average_last
    )
    report = reports[args.split]
    print(f"Report: {report['report_path']}")
    keys = ("accuracy", "uar", "macro_f1", "loss", "num_examples", "step", "checkpoint_steps")
    return {"command": "evaluate", "workdir": str(Path(args.workdir).absolute()),
            "split": args.split, **{k: report[k] for k in keys if k in report}}  # fmt: skip


def _evaluate_corpus(args: argparse.Namespace) -> dict[str, Any]:
    """``evaluate --data PATH --corpus NAME``: cross-corpus, over the shared labels."""
    from sejax import corpora
    from sejax.evaluation import cross_corpus

    if not (args.data and args.corpus):
        raise ConfigError(
            f"cross-corpus evaluation needs both --data and --corpus (one of {list(corpora.NAMES)})"
        )
    if args.split:
        raise ConfigError("--split does not apply with --data: the whole corpus is evaluated")
    if args.average_last:
        raise ConfigError("--average-last does not apply with --data: one checkpoint is evaluated")
    corpora.get(args.corpus, key="--corpus")
    report = cross_corpus.evaluate_corpus(
        args.workdir, args.data, args.corpus, checkpoint=args.checkpoint or "best",
        prepared_dir=args.prepared_dir, label_map=tuple(args.label_map or ()), name=args.name,
        on_bad_name=args.on_bad_name,
    )  # fmt: skip
    dropped = report["dropped_labels"]
    print(f"Report: {report['report_path']}")
    print(f"{args.corpus}: {report['num_examples']} clips over the {len(report['shared_labels'])} "
          f"labels shared with the model: {', '.join(report['shared_labels'])}")  # fmt: skip
    corpus_only = dropped["corpus_labels_without_model_label"]
    print("Dropped corpus labels (no model label): "
          + (", ".join(f"{k} ({n} clips)" for k, n in corpus_only.items()) or "none"))  # fmt: skip
    print("Dropped model labels (not in the corpus): "
          + (", ".join(dropped["model_labels_absent_from_corpus"]) or "none"))  # fmt: skip
    print(f"Accuracy {report['accuracy']:.3f}, UAR {report['uar']:.3f}, "
          f"macro-F1 {report['macro_f1']:.3f}")  # fmt: skip
    keys = ("accuracy", "uar", "macro_f1", "loss", "num_examples", "step", "corpus",
            "shared_labels", "dropped_labels", "report_path")  # fmt: skip
    return {"command": "evaluate", "workdir": str(Path(args.workdir).absolute()),
            "split": report["split"], **{k: report[k] for k in keys}}  # fmt: skip


def cmd_corpora(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    """Lists the supported corpora, their labels and where each maps by default."""
    from sejax import corpora
    from sejax.corpora import labels as labels_lib
    from sejax.corpora.ravdess import EMOTIONS

    no_map = labels_lib.LabelMap({})
    listing = {}
    for corpus in corpora.CORPORA.values():
        mapping = labels_lib.resolve(corpus.name, corpus.labels, EMOTIONS, no_map)
        listing[corpus.name] = {"title": corpus.title, "naming": corpus.naming,
                                "labels": mapping}  # fmt: skip
        shown = ", ".join(f"{k}->{v}" if v and v != k else (k if v else f"{k}->(none)")
                          for k, v in mapping.items()) or "declared by the manifest"  # fmt: skip
        print(f"{corpus.name:9s} {corpus.title}: {corpus.naming}\n          labels: {shown}")
    return {"command": "corpora", "corpora": listing}


def cmd_download(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax.data import archive, download

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.parse.urlparse(args.url).path).name or "download.zip"
    zip_path = download.download(args.url, out / name, args.md5 or None)
    result: dict[str, Any] = {"command": "download", "zip": str(zip_path)}
    if args.extract:
        target = out / zip_path.stem
        archive.safe_extract_zip(zip_path, target)
        result["extracted"] = str(target)
    return result


def build_parser() -> argparse.ArgumentParser:
    from sejax.data import download

    parser = argparse.ArgumentParser(
        prog="sejax",
        description="Speech emotion recognition in JAX/Flax. Config overrides: "
        "--config.KEY=VALUE (e.g. --config.train.batch_size=64).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="compute log-Mel shards from a corpus")
    p.add_argument("--data", required=True,
                   help="zip or folder of a corpus's audio, or a manifest .csv/.tsv")  # fmt: skip
    p.add_argument("--corpus", default=None,
                   help="how --data names its labels (default: config data.corpus); "
                   "see `sejax corpora`")  # fmt: skip
    p.add_argument("--out", required=True, help="folder for the shards and metadata.json")
    p.add_argument("--config", default=None, help="config file (features are read from it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace shards prepared with a different feature config")  # fmt: skip
    p.add_argument("--strict", action="store_true",
                   help="stop at the first bad file (default: reject it, report it in "
                   "OUT/rejected.tsv, go on); config data.strict")  # fmt: skip
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="train and evaluate (resumes an existing workdir)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", default=None, help="config file; default: the demo corpus")
    p.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                   help="multi-process run: address of process 0 "
                   "(config distributed.coordinator, env JAX_COORDINATOR_ADDRESS)")  # fmt: skip
    p.add_argument("--num-processes", type=int, default=None, metavar="N",
                   help="multi-process run: number of processes "
                   "(distributed.num_processes, env JAX_NUM_PROCESSES)")  # fmt: skip
    p.add_argument("--process-id", type=int, default=None, metavar="I",
                   help="multi-process run: this process, 0..N-1 "
                   "(distributed.process_id, env JAX_PROCESS_ID)")  # fmt: skip
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser(
        "cv", help="k-fold actor-disjoint cross-validation (resumes; writes WORKDIR/cv.json)"
    )
    p.add_argument("--workdir", required=True, help="folds train in WORKDIR/fold_<i>")
    p.add_argument("--config", default=None, help="config file; default: the demo corpus")
    p.set_defaults(fn=cmd_cv)

    p = sub.add_parser(
        "compare", help="two cross-validated recipes, fold by fold and by a paired bootstrap"
    )
    p.add_argument("a", help="recipe A: a `sejax cv` workdir or a folder of fold records")
    p.add_argument("b", help="recipe B, on the same folds")
    p.add_argument("--also-a", nargs="+", default=[], metavar="RUN",
                   help="more runs (seeds) of recipe A: A scores as the mean of its runs, "
                        "e.g. an ensemble's members")  # fmt: skip
    p.add_argument("--also-b", nargs="+", default=[], metavar="RUN",
                   help="more runs (seeds) of recipe B, scored as their mean")  # fmt: skip
    p.add_argument("--split", default="validation", choices=("validation", "test"),
                   help="choose recipes on validation (default); report test once")  # fmt: skip
    p.add_argument("--metric", default="uar", choices=("uar", "accuracy", "macro_f1"))
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.set_defaults(fn=cmd_compare)

    p = sub.add_parser(
        "repeats", help="one recipe run several times (seeds): mean and spread over the runs"
    )
    p.add_argument("runs", nargs="+", help="two or more `sejax cv` workdirs or folders of fold "
                   "records of one recipe, run on the same folds")  # fmt: skip
    p.add_argument("--metric", default="uar", choices=("uar", "accuracy", "macro_f1"),
                   help="the metric printed (the record holds all three)")  # fmt: skip
    p.add_argument("--out", default=None, help="writes the summary as JSON to OUT")
    p.set_defaults(fn=cmd_repeats)

    p = sub.add_parser(
        "ensemble", help="several cross-validated runs (seeds, recipes) as one, from their records"
    )
    p.add_argument("runs", nargs="+", help="two or more `sejax cv` workdirs or folders of fold "
                   "records, run on the same folds")  # fmt: skip
    p.add_argument("--out", required=True, help="writes OUT/folds/fold_<i>.json and OUT/cv.json")
    p.set_defaults(fn=cmd_ensemble)

    p = sub.add_parser("evaluate", help="evaluate a trained workdir on a split or another corpus")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default=None, choices=("train", "validation", "test"),
                   help="split of the training corpus (default: test)")  # fmt: skip
    p.add_argument("--checkpoint", default=None, choices=("best", "latest"),
                   help="the checkpoint evaluated alone (default: as the run was configured: "
                   "the best by validation UAR, or eval.average_last_checkpoints)")  # fmt: skip
    p.add_argument("--average-last", type=int, default=None, metavar="N",
                   help="evaluate the mean probabilities of the last N checkpoints "
                   "(default: the run's eval.average_last_checkpoints; 0: the one "
                   "--checkpoint names)")  # fmt: skip
    p.add_argument("--data", default=None,
                   help="cross-corpus: another corpus (folder, zip, manifest or shards), "
                   "evaluated whole over the labels it shares with the model")  # fmt: skip
    p.add_argument("--corpus", default=None, help="cross-corpus: how --data names its labels")
    p.add_argument(
        "--prepared-dir", default=None,
        help="cross-corpus: shard cache (default: WORKDIR/cross/CORPUS-HASH)",
    )  # fmt: skip
    p.add_argument(
        "--label-map", action="append", default=None, metavar="LABEL=TARGET",
        help="cross-corpus: extra label mapping, e.g. exc=happy (repeatable)",
    )  # fmt: skip
    p.add_argument("--name", default=None, help="cross-corpus: report name (cross_CORPUS)")
    p.add_argument("--on-bad-name", default=None, choices=("error", "skip"),
                   help="cross-corpus: files not named by the convention")  # fmt: skip
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("corpora", help="list the supported corpora and their labels")
    p.set_defaults(fn=cmd_corpora)

    p = sub.add_parser("download", help="download (and extract) the RAVDESS speech zip")
    p.add_argument("--out", required=True)
    p.add_argument("--url", default=download.RAVDESS_URL)
    p.add_argument("--md5", default=download.RAVDESS_MD5)
    p.add_argument("--no-extract", dest="extract", action="store_false")
    p.set_defaults(fn=cmd_download)

    from sejax.cli import inference as cli_inference  # predict, export, report

    cli_inference.add_commands(sub)
    return parser


# The commands that compile JAX programs; they keep them in JAX's persistent compilation cache.
COMPILING_COMMANDS = ("train", "cv", "evaluate", "predict", "export")
CACHE_DIR_ENV = "SEJAX_COMPILATION_CACHE"


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept between runs: ``$SEJAX_COMPILATION_CACHE`` (empty:
    off), else ``$XDG_CACHE_HOME/sejax/jax`` (``~/.cache/sejax/jax``). JAX's own
    ``JAX_COMPILATION_CACHE_DIR``, when set, wins over both."""
    if CACHE_DIR_ENV in os.environ:
        return Path(os.environ[CACHE_DIR_ENV]).expanduser() if os.environ[CACHE_DIR_ENV] else None
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "sejax" / "jax"


def _enable_compilation_cache() -> None:
    """A repeated command (a one-file predict, the next fold of a cross-validation) loads its
    compiled step instead of compiling it again: most of a short command's time."""
    directory = compilation_cache_dir()
    if directory is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)  # Orbax's info/warnings drown the progress
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("prepare", "train", "cv"):
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.command in COMPILING_COMMANDS:
        _enable_compilation_cache()
    try:
        summary = args.fn(args, rest)
    except Preempted as e:
        print(f"sejax {args.command}: {e}", file=sys.stderr)
        return e.exit_code
    except SejaxError as e:
        print(f"sejax {args.command}: error: {e}", file=sys.stderr)
        return 2
    if summary is not None:
        _emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
