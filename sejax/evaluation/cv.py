"""Actor-disjoint k-fold cross-validation: ``sejax cv``.

Folds: `sejax.evaluation.folds` (every actor tested in exactly one fold, balanced by gender,
EmoBox's or explicit ones, or random parts of the clips for the leaking protocol).

Running (``run``): the shards are prepared once and shared; each fold is an ordinary
`sejax.evaluation.evaluate.train_and_evaluate` in ``W/fold_<i>`` with the fold's validation
and test actors, so an interrupted fold resumes from its checkpoints. A finished fold leaves
a small record, ``W/folds/fold_<i>.json`` (`sejax.evaluation.records`), and the records are
what is aggregated: folds run on other days or machines are gathered by copying their records
in, and a folder of committed records re-aggregates with no data and no training.

Aggregation (``aggregate``): per-fold test metrics, their mean and std, metrics pooled over
every fold's test clips, and the validation metrics beside them (recipes are chosen on those,
never on test), written to ``W/cv.json`` with a pooled confusion-matrix PNG and the folds'
learning curves.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from sejax import io
from sejax.configs import default
from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.data import prepare
from sejax.data import shards as shards_lib
from sejax.errors import ConfigError, DataError
from sejax.evaluation import evaluate, metrics, records
from sejax.evaluation import folds as folds_lib
from sejax.evaluation.folds import EMOBOX_RAVDESS_FOLDS, fold_config, folds_for
from sejax.evaluation.records import METRICS
from sejax.training.validation import classification_metrics

# ------------------------------------------------------------------------------------------
# Running the folds.

# Keys that say where a fold's data is or which actors it holds out, not how it trains: two
# fold runs that differ only in these ran the same recipe.
PER_FOLD_KEYS = (
    "data.path", "data.prepared_dir", "data.split_by", "data.val_actors", "data.test_actors",
    "data.random_parts", "data.random_val_parts", "data.random_test_parts", "eval.splits",
)  # fmt: skip


def fold_dir(workdir: Path, index: int) -> Path:
    return workdir / f"fold_{index}"


def records_dir(workdir: Path) -> Path:
    """Where the fold records live (`sejax.evaluation.records`): ``W/folds/fold_<i>.json``."""
    return workdir / "folds"


def is_finished(directory: Path) -> bool:
    """A fold is finished once its test report is written (the last step of training)."""
    return (directory / "eval" / "test.json").is_file()


def _comparable(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A config as JSON values, without the ``cv`` section (which folds run may change)."""
    return {k: v for k, v in json.loads(json.dumps(config_dict, default=list)).items()
            if k != "cv"}  # fmt: skip


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Sequence[str] = ()
) -> list[str]:
    """``"key: old -> new"`` for every setting two run configs differ in (the ``cv`` section
    and ``ignore`` left out: dotted keys, or sections whose every key is left out). A key
    sejax added after the old run, left at its default, changes nothing."""
    flat_old = config_lib.flatten(_comparable(old))
    flat_new = config_lib.flatten(_comparable(new))
    defaults = config_lib.flatten(_comparable(default.get_config().to_dict()))
    keys = sorted(
        k for k in flat_old.keys() | flat_new.keys()
        if not any(k == i or k.startswith(f"{i}.") for i in ignore)
        and flat_old.get(k) != flat_new.get(k)
        and not (k not in flat_old and k in defaults and flat_new.get(k) == defaults[k])
    )  # fmt: skip
    return [f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys]


def check_same_config(directory: Path, config: ml_collections.ConfigDict) -> None:
    """A fold folder written by another config must not be resumed or counted silently."""
    path = directory / "config.json"
    if not path.is_file():
        return
    differences = config_differences(json.loads(path.read_text()), config.to_dict())
    if differences:
        raise ConfigError(
            f"{directory} was run with another config ({', '.join(differences[:5])}); use a "
            "new --workdir, or the config it was run with"
        )


def check_same_recipe(path: Path, record: Mapping[str, Any], config: ml_collections.ConfigDict):
    """A fold record made by another recipe must not be pooled with this one's folds."""
    differences = config_differences(record["config"], config.to_dict(), PER_FOLD_KEYS)
    if differences:
        raise ConfigError(
            f"{path} was made by another recipe ({', '.join(differences[:5])}); keep each "
            "recipe's fold records in a workdir of their own"
        )


def run(config: ml_collections.ConfigDict, workdir: str | Path, log: Any = print) -> dict[str, Any]:
    """Trains and evaluates the selected folds, then aggregates every fold recorded.

    A fold is done once ``W/folds/fold_<i>.json`` holds its record: it is kept, whether it was
    trained here or copied in from another machine. A finished fold folder without a record
    gets one. When every selected fold is recorded, nothing is trained and no data is read, so
    a folder of committed records re-aggregates by itself. Returns the cv.json record; ``log``
    receives one progress line per fold.
    """
    folds_lib.check_config(validate(config))
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    stored = records.read_all(records_dir(workdir))
    for index, record in stored.items():
        check_same_recipe(records.record_path(records_dir(workdir), index), record, config)
    count = num_folds(config)
    selected = set(config.cv.only_folds) or set(range(count))
    shards_dir = None
    if not selected <= set(stored):
        shards_dir = prepare.ensure_shards(config, workdir)
        examples = shards_lib.load_metadata(shards_dir)["examples"]
        sources = [e["source"] for e in examples]
        for fold in folds_for(config, examples):
            if fold.index not in selected:
                continue
            what = f"fold {fold.index + 1}/{count}: test {fold.unit}s {list(fold.test)}, " \
                   f"validation {list(fold.validation)}"  # fmt: skip
            if fold.index in stored:
                if stored[fold.index]["definition"] != fold.to_json():
                    raise DataError(
                        f"{records.record_path(records_dir(workdir), fold.index)} holds other "
                        f"actors than fold {fold.index} of this config: {what}"
                    )
                log(f"{what}: recorded earlier, kept")
                continue
            directory = fold_dir(workdir, fold.index)
            cfg = fold_config(config, fold, shards_dir)
            check_same_config(directory, cfg)
            if is_finished(directory):
                log(f"{what}: finished earlier, kept ({directory})")
            else:
                log(f"{what}: training in {directory}")
                evaluate.train_and_evaluate(cfg, directory)
            stored[fold.index] = records.fold_record(
                directory, fold.to_json(), sources, cfg.to_dict(), git_state()
            )
            records.write(records_dir(workdir), stored[fold.index])
    record = aggregate(workdir, stored, count, config)
    record.update(shards=None if shards_dir is None else str(shards_dir),
                  wall_seconds=round(time.time() - started, 1))  # fmt: skip
    io.write_json(workdir / "cv.json", record, indent=1)
    return record


def num_folds(config: ml_collections.ConfigDict) -> int:
    """How many folds ``config.cv`` makes, known without the data."""
    if config.data.split_by != "random" and config.cv.folds:
        return len(config.cv.folds)
    if config.data.split_by != "random" and config.cv.fold_set == "emobox":
        return len(EMOBOX_RAVDESS_FOLDS)
    return int(config.cv.num_folds)


# ------------------------------------------------------------------------------------------
# Aggregation.


def fold_result(record: Mapping[str, Any]) -> dict[str, Any]:
    """One fold's row of cv.json: its test metrics, its validation metrics, how it ran."""
    test, definition = record["test"], record["definition"]
    validation = record.get("validation")
    result = {
        "fold": record["fold"],
        "test_actors": list(test["actors"]) or list(definition["test"]),
        "validation_actors": list(definition["validation"])
        if definition.get("unit", "actor") == "actor" else None,
        "num_examples": test["num_examples"],
        **{k: test[k] for k in METRICS},
        "per_class_recall": test["per_class_recall"],
        "confusion_matrix": test["confusion_matrix"],
        "validation": {k: validation[k] for k in METRICS} if validation else None,
        "best_epoch": record.get("best_epoch"),
        "epochs": record.get("epochs"),
        "train_seconds": record.get("train_seconds"),
        "leaking": bool(record.get("leaking", False)),
        "cpu": "; ".join(sorted(records.cpu_kinds(record))) or None,
    }  # fmt: skip
    if definition.get("unit") == "part":
        result["test_parts"] = list(definition["test"])
    return result


def pooled_metrics(splits: Sequence[Mapping[str, Any]], label_names: Sequence[str]) -> dict:
    """Metrics over every fold's clips of one split together (one confusion matrix); a clip
    in two folds' test sets is an error (the folds overlap)."""
    clips = [c for s in splits for c in s["clips"]]
    if len(set(clips)) != len(clips):
        raise DataError("a clip is in the test set of two folds: the folds overlap")
    labels = np.concatenate([s["label"] for s in splits])
    preds = np.concatenate([s["pred"] for s in splits])
    report = classification_metrics(labels, preds, label_names)
    return {
        "num_examples": report["num_examples"],
        **{k: report[k] for k in METRICS},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
    }


def _mean_std(rows: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    values = {k: np.array([r[k] for r in rows]) for k in METRICS}
    return ({k: float(v.mean()) for k, v in values.items()},
            {k: float(v.std()) for k, v in values.items()})  # fmt: skip


def aggregate(
    workdir: str | Path,
    stored: Mapping[int, Mapping[str, Any]],
    count: int,
    config: ml_collections.ConfigDict,
) -> dict[str, Any]:
    """The cross-validation record over the recorded folds (``complete`` when all ``count``
    are): test metrics per fold, their mean and std, pooled; validation metrics beside them,
    which is what recipes are chosen on."""
    workdir = Path(workdir)
    fold_records = [stored[i] for i in sorted(stored)]
    results = [fold_result(r) for r in fold_records]
    split_by = config.data.split_by
    leaking = split_by == "random" or any(r["leaking"] for r in results)
    # Per-speaker normalisation sees the test speakers' unlabelled audio: not leaking (no
    # labels, no speaker in training), but transductive, and every report says so.
    transductive = config.data.normalization == "per_speaker"
    protocol = ("random clips, speakers in train and test (LEAKING)" if split_by == "random"
                else "actor-disjoint folds")  # fmt: skip
    if transductive:
        protocol += ", per-speaker normalisation (transductive)"
    average_last = config.eval.average_last_checkpoints
    record: dict[str, Any] = {
        "protocol": protocol,
        # The model each fold's test report evaluates.
        "test_model": f"mean probabilities of the last {average_last} checkpoint(s)"
        if average_last else
        f"the checkpoint with the best validation {config.train.selection_metric}",
        "leaking": leaking,
        "transductive": transductive,
        "split_by": split_by,
        "fold_set": None if split_by == "random" else
        ("explicit" if config.cv.folds else config.cv.fold_set),
        "num_folds": count,
        "folds_done": [r["fold"] for r in results],
        "complete": len(results) == count,
        "fold_definitions": [r["definition"] for r in fold_records],
        "folds": results,
        "mean": None, "std": None, "std_ddof": 0, "pooled": None, "validation": None,
        "cpus": sorted({r["cpu"] for r in results if r["cpu"]}),
        # The validation scores are those of checkpoints they chose: optimistic.
        "validation_optimistic": any(records.chosen_on_validation(r) for r in fold_records),
    }  # fmt: skip
    if results:
        label_names = fold_records[0]["label_names"]
        record["mean"], record["std"] = _mean_std(results)
        record["pooled"] = pooled_metrics([r["test"] for r in fold_records], label_names)
        record["label_names"] = label_names
        validated = [r["validation"] for r in results if r["validation"]]
        if len(validated) == len(results):
            mean, std = _mean_std(validated)
            record["validation"] = {"mean": mean, "std": std}
        title = (
            f"pooled over {len(results)} fold(s): accuracy {record['pooled']['accuracy']:.3f}"
            f", UAR {record['pooled']['uar']:.3f}" + (" (LEAKING)" if leaking else "")
        )
        record["confusion_png"] = str(metrics.plot_confusion_matrix(
            record["pooled"]["confusion_matrix"], label_names, workdir / "cv_confusion.png", title
        ))  # fmt: skip
        curves = plot_learning_curves(fold_records, workdir / "cv_learning_curves.png")
        record["learning_curves_png"] = str(curves) if curves else None
    record["train_seconds_total"] = round(sum(r["train_seconds"] or 0 for r in results), 1)
    record["git"] = git_state()
    record["config"] = json.loads(config_lib.to_json(config))
    return record


def plot_learning_curves(fold_records: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Training loss and validation UAR per epoch, one line per fold, from the records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, uar_ax) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for record in fold_records:
        curve, label = record.get("curve") or [], f"fold {record['fold']}"
        train = [p for p in curve if "train_loss" in p]
        val = [p for p in curve if "val_uar" in p]
        if not train and not val:
            continue
        loss_ax.plot([p["epoch"] for p in train], [p["train_loss"] for p in train], label=label)
        uar_ax.plot([p["epoch"] for p in val], [p["val_uar"] for p in val], label=label)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    uar_ax.set(xlabel="epoch", ylabel="validation UAR", title="validation UAR (model selection)")
    for ax in (loss_ax, uar_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    io.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


def git_state() -> dict[str, Any] | None:
    """The sejax checkout's commit and whether it had uncommitted changes (None outside git)."""
    root = Path(__file__).resolve().parents[2]  # the checkout holding the sejax package

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                 text=True, timeout=20)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit.strip(), "dirty": bool(status and status.strip())}
