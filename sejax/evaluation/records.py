"""A finished cross-validation fold as one small, self-contained JSON record.

A fold's workdir (checkpoints, TensorBoard logs, shards) is large and machine-bound; its
record is what a result is made of: the fold's actors, the validation and test metrics of the
model the run reports, every validation and test clip's label and probabilities (named by
clip, so two recipes can be compared clip by clip even on other feature sets), the learning
curve, the config, the commit and the machine. ``sejax cv`` writes ``W/folds/fold_<i>.json``
beside each finished fold and aggregates from these records, so folds run on different days
or machines are gathered by copying their records into one folder (``experiments/results/``
commits them), with no workdir needed.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sejax import io
from sejax.errors import DataError
from sejax.evaluation.report import read_metrics

FORMAT = "sejax.cv_fold/1"
METRICS = ("accuracy", "uar", "macro_f1")
SPLITS = ("validation", "test")


def clip_name(source: str) -> str:
    """A clip's name independent of where its corpus lies: the file and its folder
    (``Actor_01/03-01-01-01-01-01-01.flac``), from a path or a ``<zip>::<member>`` source."""
    member = source.rsplit("::", 1)[-1].replace("\\", "/")
    return "/".join(PurePosixPath(member).parts[-2:])


def machine() -> dict[str, Any]:
    """The CPU a fold ran on: the same command gives other numbers on another CPU kind
    (floating-point order differs), so comparisons are made within one kind."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = info.get("flags", "").split()
    return {
        "cpu": info.get("model name") or platform.processor(),
        "cpu_family": info.get("cpu family"),
        "cpu_model": info.get("model"),
        "avx512": "avx512f" in flags,
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def cpu_kind(machine_info: Mapping[str, Any] | None) -> str | None:
    """A CPU kind as comparisons need it, e.g. ``AMD EPYC (family 25 model 1, AVX2)``: one
    brand string names several kinds whose floating-point order (and so a run's numbers)
    differs; family, model and AVX-512 tell them apart. None when nothing was recorded."""
    info = machine_info or {}
    cpu = info.get("cpu")
    if not cpu:
        return None
    if info.get("cpu_family") is None:
        return cpu
    vectors = "AVX-512" if info.get("avx512") else "AVX2"
    return f"{cpu} (family {info['cpu_family']} model {info.get('cpu_model')}, {vectors})"


def cpu_kinds(record: Mapping[str, Any]) -> frozenset[str]:
    """The CPU kinds a fold's test model was trained on: one for a trained fold, each
    member's for an ensemble; empty when the record does not say."""
    machines = [m.get("machine") for m in record.get("members") or [record]]
    return frozenset(k for k in map(cpu_kind, machines) if k)


def run_cpu_kinds(run: Mapping[int, Mapping[str, Any]], folds: Sequence[int]) -> list[str]:
    """Every CPU kind the given folds of one run (``read_all``) were trained on, sorted."""
    return sorted(set().union(*(cpu_kinds(run[i]) for i in folds)))


def _split_record(report: Mapping[str, Any], sources: Sequence[str]) -> dict[str, Any]:
    predictions = report["predictions"]
    return {
        "actors": list(report.get("actors", [])),
        "num_examples": report["num_examples"],
        **{k: report[k] for k in (*METRICS, "loss")},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
        "clips": [clip_name(sources[i]) for i in predictions["index"]],
        "label": list(predictions["label"]),
        "pred": list(predictions["pred"]),
        "probs": [[round(float(p), 5) for p in row] for row in predictions["probs"]],
    }


def _curve(metrics_path: Path) -> list[dict[str, float]]:
    """Per epoch: the mean training loss and accuracy since the last epoch, and the
    validation metrics (from the run's metrics.jsonl)."""
    rows = read_metrics(metrics_path)
    curve, loss, acc = [], [], []
    for r in rows:
        if "train_loss" in r:
            loss.append(r["train_loss"])
            acc.append(r.get("train_accuracy", float("nan")))
        if "epoch" in r:
            point = {"epoch": int(r["epoch"]), "step": int(r["step"])}
            if loss:
                point.update(train_loss=sum(loss) / len(loss), train_accuracy=sum(acc) / len(acc))
            point.update({k: r[k] for k in ("val_loss", "val_accuracy", "val_uar") if k in r})
            curve.append(point)
            loss, acc = [], []
    return curve


def fold_record(
    directory: str | os.PathLike[str],
    fold: Mapping[str, Any],
    sources: Sequence[str],
    config: Mapping[str, Any],
    git: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The record of the finished fold run in ``directory``: ``fold`` is its definition
    (``Fold.to_json()``), ``sources`` every example's source by index (the shards' order)."""
    directory = Path(directory)
    reports = {s: io.read_json(directory / "eval" / f"{s}.json") for s in SPLITS}
    if reports["test"] is None:
        raise DataError(f"{directory} has no eval/test.json: the fold has not finished")
    summary = io.read_json(directory / "summary.json") or {}
    record = {
        "format": FORMAT,
        "fold": fold["fold"],
        "definition": dict(fold),
        "label_names": reports["test"]["label_names"],
        "test_step": reports["test"].get("step"),
        "checkpoint_steps": reports["test"].get("checkpoint_steps"),
        "leaking": bool(reports["test"].get("leaking", False)),
        **{s: _split_record(r, sources) for s, r in reports.items() if r is not None},
        "best_epoch": summary.get("best_epoch"),
        "epochs": summary.get("epochs"),
        "stopped_early": summary.get("stopped_early"),
        "train_seconds": summary.get("train_seconds"),
        "curve": _curve(directory / "metrics.jsonl"),
        "config": dict(config),
        "git": dict(git) if git else None,
        "machine": machine(),
    }
    return record


def chosen_on_validation(record: Mapping[str, Any]) -> bool:
    """Whether a fold's test model was picked by its validation score (the checkpoint with the
    best validation metric, `eval.average_last_checkpoints=0`), for a trained fold or for any
    member of an ensemble. Its validation score is then the best of many draws on the same
    clips: optimistic, so a comparison on validation leans toward it."""
    configs = record.get("member_configs") or [record.get("config")]
    return any(
        c is not None and (c.get("eval") or {}).get("average_last_checkpoints", 0) == 0
        for c in configs
    )


def common_folds(
    runs: Sequence[Mapping[int, Mapping[str, Any]]], names: Sequence[str]
) -> list[int]:
    """The folds every run (``read_all`` of each) has finished, each holding the same actors
    in every run; `DataError` naming the run otherwise."""
    folds = sorted(set.intersection(*(set(r) for r in runs)))
    if not folds:
        raise DataError(f"{', '.join(names)}: no fold finished in every run")
    for i in folds:
        for run, name in zip(runs[1:], names[1:], strict=True):
            if run[i].get("definition") != runs[0][i].get("definition"):
                raise DataError(f"{name}: fold {i} holds other actors than {names[0]}'s fold {i}")
    return folds


def clip_order(
    reference: Mapping[str, Any], other: Mapping[str, Any], names: tuple[str, str], where: str
) -> np.ndarray:
    """Indices that put ``other``'s clips (one fold's split of a record) in ``reference``'s
    order, matched by clip name; `DataError` naming ``names`` (other's run, then reference's)
    when the clips or their labels differ. Ensembles and comparisons pair clips this way."""
    name, reference_name = names
    by_clip = {c: i for i, c in enumerate(other["clips"])}
    if len(by_clip) != len(other["clips"]) or set(by_clip) != set(reference["clips"]):
        raise DataError(f"{name}: {where} holds other clips than {reference_name}'s")
    order = np.asarray([by_clip[c] for c in reference["clips"]], np.int64)
    if np.any(np.asarray(other["label"])[order] != np.asarray(reference["label"])):
        raise DataError(f"{name}: {where} labels a clip otherwise than {reference_name}")
    return order


def record_path(folder: str | os.PathLike[str], index: int) -> Path:
    return Path(folder) / f"fold_{index}.json"


def write(folder: str | os.PathLike[str], record: Mapping[str, Any]) -> Path:
    Path(folder).mkdir(parents=True, exist_ok=True)
    return io.write_json(record_path(folder, record["fold"]), record, indent=None)


def read(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A fold record; `DataError` naming the file when it is not one."""
    record = io.read_json(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise DataError(f"{path} is not a sejax cross-validation fold record ({FORMAT})")
    return record


def read_all(folder: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """Every fold record in ``folder`` (``fold_<i>.json``), by fold index."""
    records = {}
    for path in sorted(Path(folder).glob("fold_*.json")):
        record = read(path)
        if path.name != record_path(folder, record["fold"]).name:
            raise DataError(f"{path} holds fold {record['fold']}: rename it or remove it")
        records[record["fold"]] = record
    return records


def read_run(path: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """The fold records of a run: a `sejax cv` workdir (its ``folds/``) or a folder of
    records; `DataError` naming ``path`` when it holds none."""
    folder = Path(path)
    folder = folder / "folds" if (folder / "folds").is_dir() else folder
    found = read_all(folder)
    if not found:
        raise DataError(f"{path}: no fold records (fold_<i>.json) in it or in its folds/")
    return found
