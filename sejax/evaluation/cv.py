"""Actor-disjoint k-fold cross-validation: ``sejax cv``.

Folds (``make_folds``, pure): every actor is tested in exactly one fold. The default fold set
is balanced by gender: the male and the female actors, each in id order, are cut into
``num_folds`` contiguous runs and fold i takes the i-th run of each; for RAVDESS's 24 actors
(odd ids male) and 6 folds, fold i tests actors 4i+1..4i+4, two men and two women. Each fold
validates (model selection, early stopping) on ``cv.val_actors_per_fold`` of its training
actors, alternating male and female, taken from the next folds' test actors, never from its
own. ``cv.fold_set='emobox'`` uses EmoBox's six RAVDESS folds instead and ``cv.folds`` any
explicit ones. With ``data.split_by='random'`` the folds are random parts of the clips
(stratified by label, every speaker on every side): the leaking protocol, labelled as such.

Running (``run``): the shards are prepared once and shared; each fold is an ordinary
``train.train_and_evaluate`` in ``W/fold_<i>`` with the fold's validation and test actors, so
a fold resumes from its checkpoints and a fold whose ``eval/test.json`` exists is finished and
skipped. Aggregation (``aggregate``) reads the folds' test reports: per-fold metrics, their
mean and std, and metrics pooled over every fold's test predictions, written to ``W/cv.json``
with a pooled confusion-matrix PNG and the folds' learning curves.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from sejax.configs import default
from sejax.configs import loading as config_lib
from sejax.configs.validation import validate
from sejax.errors import ConfigError, DataError
from sejax.evaluation import metrics as evaluation

# EmoBox (Ma et al., Interspeech 2024): its six RAVDESS speech folds' test actors.
EMOBOX_RAVDESS_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20, 21), (4, 10, 12, 14), (8, 9, 19, 23), (3, 5, 7, 24), (2, 15, 16, 18),
    (6, 13, 17, 22),
)  # fmt: skip
GENDER_ORDER = ("male", "female", "unknown")
METRICS = ("accuracy", "uar", "macro_f1")


@dataclasses.dataclass(frozen=True)
class Fold:
    """One fold's test, validation and training groups: actor ids, or random parts of the
    clips when ``unit == 'part'`` (the leaking protocol)."""

    index: int
    test: tuple[int, ...]
    validation: tuple[int, ...]
    train: tuple[int, ...]
    unit: str = "actor"

    def to_json(self) -> dict[str, Any]:
        return {"fold": self.index, "unit": self.unit, "test": list(self.test),
                "validation": list(self.validation), "train": list(self.train)}  # fmt: skip


# ------------------------------------------------------------------------------------------
# Fold construction.


def actor_genders(examples: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Each actor's gender ('male', 'female' or 'unknown') from the shards' example rows."""
    genders: dict[int, str] = {}
    for e in examples:
        actor, gender = int(e["actor"]), str(e.get("gender") or "unknown")
        if genders.get(actor, "unknown") == "unknown":
            genders[actor] = gender if gender in GENDER_ORDER else "unknown"
    return dict(sorted(genders.items()))


def balanced_test_groups(genders: Mapping[int, str], num_folds: int) -> list[tuple[int, ...]]:
    """Test actors per fold: each gender, in id order, cut into ``num_folds`` contiguous runs.

    Runs differ in length by at most one; a gender's longer runs go to the folds after those
    that took the previous gender's longer runs, so fold sizes differ by at most one too.
    """
    if num_folds > len(genders):
        raise ConfigError(
            f"cv.num_folds={num_folds} but the corpus has only {len(genders)} actors: every fold "
            "needs at least one test actor"
        )
    folds: list[list[int]] = [[] for _ in range(num_folds)]
    offset = 0
    for gender in GENDER_ORDER:
        members = sorted(a for a, g in genders.items() if g == gender)
        base, extra = divmod(len(members), num_folds)
        start = 0
        for i in range(num_folds):
            size = base + (1 if (i - offset) % num_folds < extra else 0)
            folds[i] += members[start : start + size]
            start += size
        offset += extra
    return [tuple(sorted(f)) for f in folds]


def _check_groups(groups: Sequence[Sequence[int]], actors: Sequence[int], key: str) -> None:
    """Explicit folds must name only present actors, each once, and leave none out."""
    named = [int(a) for g in groups for a in g]
    unknown = sorted(set(named) - set(actors))
    twice = sorted({a for a in named if named.count(a) > 1})
    missing = sorted(set(actors) - set(named))
    problems = [f"{what} {xs}" for what, xs in (("not in the corpus:", unknown),
                ("in two folds:", twice), ("in no fold:", missing)) if xs]  # fmt: skip
    if problems:
        raise ConfigError(
            f"{key} must test every actor exactly once: {'; '.join(problems)} "
            f"(actors present: {list(actors)})"
        )


def _validation_actors(
    groups: Sequence[tuple[int, ...]], index: int, genders: Mapping[int, str], count: int
) -> tuple[int, ...]:
    """``count`` training actors of fold ``index``, from the next folds' test actors on,
    alternating genders (male, female, unknown) so each gender is represented."""
    k = len(groups)
    candidates = [a for step in range(1, k) for a in groups[(index + step) % k]]
    by_gender = [[a for a in candidates if genders.get(a, "unknown") == g] for g in GENDER_ORDER]
    order = [a for row in itertools.zip_longest(*by_gender) for a in row if a is not None]
    if len(candidates) - count < 1:
        raise ConfigError(
            f"cv.val_actors_per_fold={count} leaves no training actor in fold {index} "
            f"({len(candidates)} actors outside its test set)"
        )
    return tuple(sorted(order[:count]))


def make_folds(
    genders: Mapping[int, str],
    num_folds: int,
    val_per_fold: int = 2,
    test_groups: Sequence[Sequence[int]] | None = None,
) -> list[Fold]:
    """Actor-disjoint folds over the actors of ``genders`` ({actor: 'male'|'female'|...}).

    ``test_groups`` (explicit test actors per fold) replaces the gender-balanced default
    (``balanced_test_groups``). Every actor is tested exactly once; each fold validates on
    ``val_per_fold`` of its own training actors.
    """
    actors = sorted(int(a) for a in genders)
    if test_groups:
        _check_groups(test_groups, actors, "cv.folds")
        groups = [tuple(sorted(int(a) for a in g)) for g in test_groups]
    else:
        if num_folds < 2:
            raise ConfigError(f"cv.num_folds={num_folds} must be >= 2")
        groups = balanced_test_groups(genders, num_folds)
    folds = []
    for i, test in enumerate(groups):
        val = _validation_actors(groups, i, genders, val_per_fold)
        train = tuple(a for a in actors if a not in test and a not in val)
        folds.append(Fold(index=i, test=test, validation=val, train=train))
    return folds


def random_folds(num_folds: int) -> list[Fold]:
    """The leaking protocol: the clips dealt into ``2 * num_folds`` random parts (stratified
    by label); fold i tests parts 2i and 2i+1 and validates on part 2(i+1), the first part
    of the next fold's test set (test 1/k of the clips, validation 1/(2k))."""
    parts = 2 * num_folds
    folds = []
    for i in range(num_folds):
        test, val = (2 * i, 2 * i + 1), (2 * ((i + 1) % num_folds),)
        train = tuple(p for p in range(parts) if p not in test and p not in val)
        folds.append(Fold(index=i, test=test, validation=val, train=train, unit="part"))
    return folds


def folds_for(
    config: ml_collections.ConfigDict, examples: Sequence[Mapping[str, Any]]
) -> list[Fold]:
    """The folds ``config.cv`` asks for over the actors of ``examples``."""
    cv = config.cv
    split_by = config.data.get("split_by", "actor")
    if split_by == "random":
        return random_folds(int(cv.num_folds))
    if split_by != "actor":
        raise ConfigError(
            f"sejax cv builds its own actor-disjoint folds; data.split_by={split_by!r} is not "
            "used with it (set data.split_by='actor', or 'random' for the leaking protocol)"
        )
    genders = actor_genders(examples)
    groups: Sequence[Sequence[int]] | None = tuple(cv.get("folds", ())) or None
    if groups is None and cv.get("fold_set", "balanced") == "emobox":
        groups = EMOBOX_RAVDESS_FOLDS
    return make_folds(genders, int(cv.num_folds), int(cv.val_actors_per_fold), groups)


def fold_config(
    config: ml_collections.ConfigDict, fold: Fold, shards_dir: str | Path
) -> ml_collections.ConfigDict:
    """The run config of one fold: the shared shards, the fold's split, test evaluated."""
    out = config_lib.from_dict(config.to_dict())
    with out.unlocked():
        out.data.path = str(shards_dir)
        if fold.unit == "part":
            out.data.random_parts = len(fold.train) + len(fold.test) + len(fold.validation)
            out.data.random_test_parts = fold.test
            out.data.random_val_parts = fold.validation
        else:
            out.data.split_by = "actor"
            out.data.val_actors = fold.validation
            out.data.test_actors = fold.test
        out.eval.splits = ("validation", "test")
    return validate(out)


# ------------------------------------------------------------------------------------------
# Running the folds.


def fold_dir(workdir: Path, index: int) -> Path:
    return workdir / f"fold_{index}"


def is_finished(directory: Path) -> bool:
    """A fold is finished once its test report is written (the last step of training)."""
    return (directory / "eval" / "test.json").is_file()


def _comparable(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A config as JSON values, without the ``cv`` section (which folds run may change)."""
    return {k: v for k, v in json.loads(json.dumps(config_dict, default=list)).items()
            if k != "cv"}  # fmt: skip


def check_same_config(directory: Path, config: ml_collections.ConfigDict) -> None:
    """A fold folder written by another config must not be resumed or counted silently."""
    path = directory / "config.json"
    if not path.is_file():
        return
    old, new = _comparable(json.loads(path.read_text())), _comparable(config.to_dict())
    if old == new:
        return
    flat_old, flat_new = config_lib.flatten(old), config_lib.flatten(new)
    # A key added to sejax after the fold ran, and left at its default, changes nothing.
    defaults = config_lib.flatten(_comparable(default.get_config().to_dict()))
    keys = sorted(
        k for k in flat_old.keys() | flat_new.keys()
        if flat_old.get(k) != flat_new.get(k)
        and not (k not in flat_old and k in defaults and flat_new.get(k) == defaults[k])
    )  # fmt: skip
    if not keys:
        return
    shown = ", ".join(f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys[:5])
    raise ConfigError(
        f"{directory} was run with another config ({shown}); use a new --workdir, or the "
        "config it was run with"
    )


def run(config: ml_collections.ConfigDict, workdir: str | Path, log: Any = print) -> dict[str, Any]:
    """Trains and evaluates the selected folds (skipping finished ones), then aggregates.

    Returns the cv.json record; ``log`` receives one progress line per fold.
    """
    from sejax.data import prepare
    from sejax.data import shards as shards_lib
    from sejax.training import train

    validate(config)
    workdir = Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    shards_dir = prepare.ensure_shards(config, workdir)
    examples = shards_lib.load_metadata(shards_dir)["examples"]
    folds = folds_for(config, examples)
    selected = set(config.cv.get("only_folds", ())) or {f.index for f in folds}
    for fold in folds:
        if fold.index not in selected:
            continue
        directory = fold_dir(workdir, fold.index)
        cfg = fold_config(config, fold, shards_dir)
        check_same_config(directory, cfg)
        what = f"fold {fold.index + 1}/{len(folds)}: test {fold.unit}s {list(fold.test)}, " \
               f"validation {list(fold.validation)}"  # fmt: skip
        if is_finished(directory):
            log(f"{what}: finished earlier, kept ({directory})")
            continue
        log(f"{what}: training in {directory}")
        train.train_and_evaluate(cfg, directory)
    record = aggregate(workdir, folds, config)
    record.update(shards=str(shards_dir), wall_seconds=round(time.time() - started, 1))
    evaluation.write_atomic(
        workdir / "cv.json", lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1))
    )
    return record


# ------------------------------------------------------------------------------------------
# Aggregation.


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def fold_result(workdir: Path, fold: Fold) -> dict[str, Any] | None:
    """One finished fold's test metrics (None if it has not finished)."""
    directory = fold_dir(workdir, fold.index)
    report = _read_json(directory / "eval" / "test.json") if is_finished(directory) else None
    if report is None:
        return None
    summary = _read_json(directory / "summary.json") or {}
    result = {
        "fold": fold.index,
        "test_actors": list(report.get("actors", fold.test)),
        "validation_actors": list(fold.validation) if fold.unit == "actor" else None,
        "num_examples": report["num_examples"],
        **{k: report[k] for k in METRICS},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
        "best_epoch": summary.get("best_epoch"),
        "train_seconds": summary.get("train_seconds"),
        "leaking": bool(report.get("leaking", False)),
        "workdir": str(directory),
    }
    if fold.unit == "part":
        result["test_parts"] = list(fold.test)
    return result


def pooled_metrics(reports: Sequence[Mapping[str, Any]], label_names: Sequence[str]) -> dict:
    """Metrics over every fold's test examples together (one confusion matrix).

    From the saved per-example predictions when every report has them (an example tested in
    two folds is an error), else from the summed confusion matrices (the same numbers).
    """
    if all("predictions" in r for r in reports):
        index = np.concatenate([r["predictions"]["index"] for r in reports]).astype(np.int64)
        if len(np.unique(index)) != len(index):
            raise DataError("an example is in the test set of two folds: the folds overlap")
        labels = np.concatenate([r["predictions"]["label"] for r in reports])
        preds = np.concatenate([r["predictions"]["pred"] for r in reports])
    else:
        cm = np.sum([np.asarray(r["confusion_matrix"]) for r in reports], axis=0)
        pairs = [(t, p) for t in range(len(cm)) for p in range(len(cm)) for _ in range(cm[t, p])]
        labels, preds = (np.array(x) for x in zip(*pairs, strict=True))
    report = evaluation.classification_metrics(labels, preds, label_names)
    return {
        "num_examples": report["num_examples"],
        **{k: report[k] for k in METRICS},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
    }


def aggregate(
    workdir: str | Path, folds: Sequence[Fold], config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """The cross-validation record over the finished folds (``complete`` when all are)."""
    workdir = Path(workdir)
    results, reports = [], []
    for fold in folds:
        result = fold_result(workdir, fold)
        if result is not None:
            results.append(result)
            reports.append(_read_json(fold_dir(workdir, fold.index) / "eval" / "test.json"))
    split_by = config.data.get("split_by", "actor")
    leaking = split_by == "random" or any(r["leaking"] for r in results)
    # Per-speaker normalisation sees the test speakers' unlabelled audio: not leaking (no
    # labels, no speaker in training), but transductive, and every report says so.
    transductive = config.data.get("normalization") == "per_speaker"
    protocol = ("random clips, speakers in train and test (LEAKING)" if split_by == "random"
                else "actor-disjoint folds")  # fmt: skip
    if transductive:
        protocol += ", per-speaker normalisation (transductive)"
    average_last = config.eval.get("average_last_checkpoints", 0)
    record: dict[str, Any] = {
        "protocol": protocol,
        # The model each fold's test report evaluates.
        "test_model": f"mean probabilities of the last {average_last} checkpoint(s)"
        if average_last else "the checkpoint with the best validation UAR",
        "leaking": leaking,
        "transductive": transductive,
        "split_by": split_by,
        "fold_set": None if split_by == "random" else
        ("explicit" if config.cv.get("folds") else config.cv.get("fold_set", "balanced")),
        "num_folds": len(folds),
        "folds_done": [r["fold"] for r in results],
        "complete": len(results) == len(folds),
        "fold_definitions": [f.to_json() for f in folds],
        "folds": results,
        "mean": None, "std": None, "std_ddof": 0, "pooled": None,
    }  # fmt: skip
    if results:
        label_names = reports[0]["label_names"]
        values = {k: np.array([r[k] for r in results]) for k in METRICS}
        record["mean"] = {k: float(v.mean()) for k, v in values.items()}
        record["std"] = {k: float(v.std()) for k, v in values.items()}
        record["pooled"] = pooled_metrics(reports, label_names)
        record["label_names"] = label_names
        title = (
            f"pooled over {len(results)} fold(s): accuracy {record['pooled']['accuracy']:.3f}"
            f", UAR {record['pooled']['uar']:.3f}" + (" (LEAKING)" if leaking else "")
        )
        record["confusion_png"] = str(evaluation.plot_confusion_matrix(
            record["pooled"]["confusion_matrix"], label_names, workdir / "cv_confusion.png", title
        ))  # fmt: skip
        curves = plot_learning_curves(workdir, [r["fold"] for r in results],
                                      workdir / "cv_learning_curves.png")  # fmt: skip
        record["learning_curves_png"] = str(curves) if curves else None
    record["train_seconds_total"] = round(sum(r["train_seconds"] or 0 for r in results), 1)
    record["git"] = git_state()
    record["config"] = json.loads(config_lib.to_json(config))
    return record


def plot_learning_curves(workdir: Path, indices: Sequence[int], path: Path) -> Path | None:
    """Training loss and validation UAR per epoch, one line per fold, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sejax.evaluation.report import read_metrics

    fig, (loss_ax, uar_ax) = plt.subplots(1, 2, figsize=(11, 4))
    drawn = False
    for i in indices:
        rows = read_metrics(fold_dir(workdir, i) / "metrics.jsonl")
        epochs = [r for r in rows if "epoch" in r]
        if not epochs:
            continue
        steps_per_epoch = epochs[0]["step"] / epochs[0]["epoch"]
        train = [r for r in rows if "train_loss" in r]
        loss_ax.plot([r["step"] / steps_per_epoch for r in train],
                     [r["train_loss"] for r in train], label=f"fold {i}")  # fmt: skip
        val = [r for r in epochs if "val_uar" in r]
        uar_ax.plot([r["epoch"] for r in val], [r["val_uar"] for r in val], label=f"fold {i}")
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
    evaluation.write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
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


def summary_line(record: Mapping[str, Any], workdir: str | Path) -> dict[str, Any]:
    """The short form of cv.json that ``sejax cv`` prints as its last line."""
    keep = ("fold", "test_actors", "accuracy", "uar", "macro_f1")
    pooled = record.get("pooled") or {}
    return {
        "command": "cv",
        "workdir": str(Path(workdir).absolute()),
        "protocol": record["protocol"],
        "leaking": record["leaking"],
        "transductive": record.get("transductive", False),
        "num_folds": record["num_folds"],
        "folds_done": record["folds_done"],
        "complete": record["complete"],
        "folds": [{k: r[k] for k in keep} for r in record["folds"]],
        "mean": record["mean"],
        "std": record["std"],
        "pooled": {k: pooled[k] for k in ("num_examples", *METRICS) if k in pooled} or None,
        "cv_json": str(Path(workdir).absolute() / "cv.json"),
    }


def format_table(record: Mapping[str, Any]) -> str:
    """The folds, mean ± std and pooled metrics as a plain-text table."""

    def row(name: str, test: str, n: Any, cells: Sequence[str]) -> str:
        return f"{name:<10}{test:<22}{n!s:>9}" + "".join(f"{c:>14}" for c in cells)

    lines = [row("fold", "test", "examples", ("accuracy", "UAR", "macro-F1"))]
    for r in record["folds"]:
        test = " ".join(map(str, r.get("test_parts") or r["test_actors"]))
        test = test if len(test) < 21 else test[:17] + " ..."
        lines.append(row(str(r["fold"]), test, r["num_examples"],
                         [f"{r[k]:.3f}" for k in METRICS]))  # fmt: skip
    if record["mean"]:
        m, s, p = record["mean"], record["std"], record["pooled"]
        lines.append(row("mean±std", "", "", [f"{m[k]:.3f}±{s[k]:.3f}" for k in METRICS]))
        lines.append(row("pooled", "", p["num_examples"], [f"{p[k]:.3f}" for k in METRICS]))
    if record["leaking"]:
        lines.append("LEAKING: speakers or identical recordings are on both sides of the split")
    if record.get("transductive"):
        lines.append("TRANSDUCTIVE: each test speaker normalised with its own clips' statistics")
    return "\n".join(lines)
