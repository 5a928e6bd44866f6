"""The ``sejax`` command: prepare, train, evaluate, download.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sejax.errors import SejaxError

REAL_DATA_HINT = (
    "To train on real RAVDESS: sejax train --workdir runs/ravdess "
    "--config experiments/configs/ravdess.py --config.data.path=PATH "
    "(PATH: the Zenodo zip Audio_Speech_Actors_01-24.zip, its extracted folder, or "
    "prepared shards; `sejax download --out DIR` fetches the zip)."
)


def _config(args: argparse.Namespace, overrides: Sequence[str]):
    from sejax import config as config_lib

    config = config_lib.load_config(args.config)
    config = config_lib.apply_overrides(config, config_lib.parse_override_args(overrides))
    return config_lib.validate(config)


def _emit(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, default=str), flush=True)


def cmd_prepare(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax import prepare

    config = _config(args, overrides)
    summary = prepare.prepare(
        args.data,
        args.out,
        config.features,
        corpus=config.data.corpus,
        on_bad_name=config.data.on_bad_name,
        num_workers=config.data.num_workers,
        examples_per_shard=config.data.examples_per_shard,
        overwrite=args.overwrite,
    )
    return {"command": "prepare", **summary}


def cmd_train(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax import train

    config = _config(args, overrides)
    summary = train.train_and_evaluate(config, args.workdir)
    test = summary.get("test")
    print(f"Reports: {Path(args.workdir) / 'eval'} (JSON and confusion-matrix PNG per split)")
    if test:
        print(f"Test: accuracy {test['accuracy']:.3f}, UAR {test['uar']:.3f}, "
              f"macro-F1 {test['macro_f1']:.3f} on {test['num_examples']} examples")  # fmt: skip
    if not config.data.path:
        print("This was the built-in synthetic demo corpus. " + REAL_DATA_HINT)
    return {"command": "train", **summary}


def cmd_evaluate(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax import train

    reports = train.evaluate(args.workdir, splits=(args.split,), checkpoint=args.checkpoint)
    report = reports[args.split]
    print(f"Report: {report['report_path']}")
    keys = ("accuracy", "uar", "macro_f1", "loss", "num_examples", "step")
    return {"command": "evaluate", "workdir": str(Path(args.workdir).absolute()),
            "split": args.split, **{k: report[k] for k in keys}}  # fmt: skip


def cmd_download(args: argparse.Namespace, overrides: Sequence[str]) -> dict[str, Any]:
    from sejax import archive, download

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    zip_path = download.download(args.url, out / Path(args.url).name, args.md5 or None)
    result: dict[str, Any] = {"command": "download", "zip": str(zip_path)}
    if args.extract:
        target = out / zip_path.stem
        archive.safe_extract_zip(zip_path, target)
        result["extracted"] = str(target)
    return result


def build_parser() -> argparse.ArgumentParser:
    from sejax import download

    parser = argparse.ArgumentParser(
        prog="sejax",
        description="Speech emotion recognition in JAX/Flax. Config overrides: "
        "--config.KEY=VALUE (e.g. --config.train.batch_size=64).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="compute log-Mel shards from a corpus")
    p.add_argument("--data", required=True, help="zip, folder of RAVDESS-named audio")
    p.add_argument("--out", required=True, help="folder for the shards and metadata.json")
    p.add_argument("--config", default=None, help="config file (features are read from it)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace shards prepared with a different feature config")  # fmt: skip
    p.set_defaults(fn=cmd_prepare)

    p = sub.add_parser("train", help="train and evaluate (resumes an existing workdir)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--config", default=None, help="config file; default: the demo corpus")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a trained workdir on a split")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test", choices=("train", "validation", "test"))
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("download", help="download (and extract) the RAVDESS speech zip")
    p.add_argument("--out", required=True)
    p.add_argument("--url", default=download.RAVDESS_URL)
    p.add_argument("--md5", default=download.RAVDESS_MD5)
    p.add_argument("--no-extract", dest="extract", action="store_false")
    p.set_defaults(fn=cmd_download)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)  # Orbax's info/warnings drown the progress
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command not in ("prepare", "train"):
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        summary = args.fn(args, rest)
    except SejaxError as e:
        print(f"sejax {args.command}: error: {e}", file=sys.stderr)
        return 2
    _emit(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
