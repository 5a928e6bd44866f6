"""The ``sejax`` subcommands that use a trained model: predict, export, report.

`sejax.cli.main` registers them with `add_commands`; they follow its conventions (progress and
tables for people, then one JSON line on standard output that summarises the result;
`SejaxError` -> exit status 2 with one message).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sejax.errors import ConfigError, DataError

MAX_EXPORT_DIFF = 1e-4  # reloaded artifacts must match the predictor to this (probabilities)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--workdir",
        action="append",
        help="a training workdir (its best checkpoint by default); repeated: their ensemble, "
        "the mean of the networks' probabilities",
    )
    group.add_argument(
        "--model",
        action="append",
        metavar="NAME_OR_PATH",
        help="a model name ($SEJAX_MODEL_PATH or sejax/pretrained/), a folder written by "
        "`sejax export`, or a training workdir; repeated: their ensemble",
    )
    p.add_argument(
        "--checkpoint",
        default="best",
        choices=("best", "latest"),
        help="which checkpoint of a workdir (default: best validation UAR)",
    )


def _model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The model arguments: one name or path, or a list of several (an ensemble)."""

    def one_or_list(values: list[str] | None) -> str | list[str] | None:
        return values[0] if values and len(values) == 1 else values

    return {
        "name_or_path": one_or_list(args.model),
        "workdir": one_or_list(args.workdir),
        "checkpoint": args.checkpoint,
    }


def cmd_predict(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax.cli import views as predict_view
    from sejax.inference import predict

    predictor = predict.load(
        **_model_kwargs(args),
        frontend=args.frontend,
        hop_s=args.hop,
        batch_size=args.batch_size,
        windowing="crop" if args.single_window else "sliding",
    )
    speaker = None
    if args.same_speaker:
        if not predictor.bundle.per_speaker:
            raise ConfigError(
                "--same-speaker is for models trained with data.normalization=per_speaker; "
                f"{predictor.bundle.source} was trained with "
                f"{predictor.bundle.config.data.normalization!r}"
            )
        speaker = predictor.speaker_statistics(predict.expand_paths(args.paths))
    elif predictor.bundle.per_speaker:
        print(
            "warning: this model was trained on per-speaker normalised features; without "
            "--same-speaker (all files one speaker) it uses the training actors' statistics, "
            "which it was not trained on",
            file=sys.stderr,
        )
    results = list(predictor.predict_files(args.paths, speaker=speaker))
    labels = predictor.label_names
    if not args.json:
        print(predict_view.format_predictions_table(results, labels, show_windows=args.windows))
    failed = [(name, str(r)) for name, r in results if not isinstance(r, predict.Prediction)]
    summary: dict[str, Any] = {
        "command": "predict",
        "model": predictor.bundle.source,
        "step": predictor.bundle.step,
        "members": predictor.bundle.members,
        "frontend": predictor.frontend,
        "window_s": predictor.window_samples / predictor.sample_rate,
        "hop_s": predictor.hop_samples / predictor.sample_rate,
        "windowing": predictor.windowing,
        "normalization": "speaker" if speaker is not None else "training",
        "label_names": list(labels),
        "num_files": len(results),
        "num_failed": len(failed),
        "results": [
            r.to_json() if isinstance(r, predict.Prediction) else {"source": name, "error": str(r)}
            for name, r in results
        ],
    }
    if args.plot and len(failed) < len(results):
        summary["plot"] = str(predict_view.plot_timeline(results, labels, Path(args.plot)))
        if not args.json:
            print(f"Plot: {summary['plot']}")
    if failed:
        print(json.dumps(summary, default=str), flush=True)  # still report what worked
        raise DataError(
            f"{len(failed)} of {len(results)} files could not be scored: "
            + "; ".join(msg for _, msg in failed[:5])
        )
    return summary


def cmd_export(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax.inference import export

    formats = args.formats.split(",") if args.formats is not None else None
    summary = export.export(
        args.out,
        **_model_kwargs(args),
        formats=formats,
        platforms=args.platforms.split(","),
        overwrite=args.overwrite,
        precise_bn_batches=args.precise_bn_batches,
    )
    if args.verify and summary["formats"]:
        diffs = export.check_round_trip(args.out, export.probe_waves(summary["input"]))
        summary["round_trip_max_abs_diff"] = diffs
        bad = {k: v for k, v in diffs.items() if not v <= MAX_EXPORT_DIFF}
        if bad:
            raise DataError(f"exported model in {args.out} disagrees with the predictor: {bad}")
    print(
        f"Exported {', '.join(['variables', *summary['formats']])} to {summary['out']} "
        f"({summary['size_bytes'] / 1e6:.1f} MB)"
    )
    return {"command": "export", **summary}


def cmd_report(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax.evaluation import report

    summary = report.write_run_report(args.workdir, args.out)
    print(f"Report: {summary['report']}")
    return {"command": "report", **summary}


def add_commands(sub: Any) -> None:
    """Adds predict, export and report to the ``sejax`` subcommand parser."""
    from sejax.data.features import FRONTENDS  # not inference.predict: it imports JAX

    p = sub.add_parser("predict", help="emotion probabilities for audio files or folders")
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="audio files (any format soundfile/audioread decode, any rate and "
        "channel count) or folders searched recursively",
    )
    _add_model_args(p)
    p.add_argument(
        "--hop",
        type=float,
        default=None,
        metavar="SECONDS",
        help="step between sliding windows on clips longer than the model's window "
        "(default: half the window)",
    )
    p.add_argument(
        "--single-window",
        action="store_true",
        help="score only the window training uses (features.crop), no sliding",
    )
    p.add_argument(
        "--frontend",
        choices=FRONTENDS,
        default=None,
        help="log-Mel in jax.numpy (default) or librosa on the host",
    )
    p.add_argument("--batch-size", type=int, default=None, help="windows per batch (32)")
    p.add_argument(
        "--same-speaker",
        action="store_true",
        help="the files are one speaker's: normalise with their own statistics (models "
        "trained with data.normalization=per_speaker)",
    )
    p.add_argument("--windows", action="store_true", help="a table row per window too")
    p.add_argument(
        "--json", action="store_true", help="no table: only the JSON line, with per-window results"
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="draw each file's emotion probabilities over time",
    )
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("export", help="write a model folder with jax.export / SavedModel forms")
    _add_model_args(p)
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument(
        "--formats",
        default=None,
        help="comma list of jax,tf (default: jax, plus tf when TensorFlow is "
        "installed); empty: only the model itself",
    )
    p.add_argument(
        "--platforms",
        default="cpu,cuda,tpu",
        help="platforms the jax.export artifact is lowered for",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.add_argument(
        "--precise-bn-batches",
        type=int,
        default=0,
        metavar="N",
        help="with --workdir: recompute BatchNorm statistics from N training batches of the run "
        "(for runs trained with train.precise_bn_batches=0)",
    )
    p.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip reloading the artifacts and comparing them with the predictor",
    )
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("report", help="write a self-contained HTML report of a training run")
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", default=None, help="HTML file (default: WORKDIR/report.html)")
    p.set_defaults(fn=cmd_report)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the `sejax` command")
