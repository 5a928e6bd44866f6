"""Several cross-validated runs (seeds, recipes) as one ensemble, made from their fold records.

Each fold of the ensemble predicts, for every validation and test clip, the mean of its
members' probabilities (clips matched by name, so members may use other feature sets), and is
scored like a trained fold; its record (``records.FORMAT``) names its members, so `sejax cv`'s
aggregation, `sejax compare` and the README tables read it like any other row. Nothing is
trained or predicted again: the records already hold every clip's probabilities.

Which runs to ensemble is a recipe decision like any other: chosen on the validation actors
(`sejax compare MEMBER ENSEMBLE`), never on test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sejax import io
from sejax.configs import loading as config_lib
from sejax.errors import DataError
from sejax.evaluation import cv, records
from sejax.training.validation import classification_metrics

# What makes two runs' folds the same protocol (the other keys are the recipe).
PROTOCOL_KEYS = (("data", "split_by"), ("data", "normalization"), ("cv", "fold_set"))


def _protocol(record: Mapping[str, Any]) -> tuple[Any, ...]:
    config = record.get("config") or {}
    return tuple((config.get(group) or {}).get(key) for group, key in PROTOCOL_KEYS)


def _split(members: Sequence[Mapping[str, Any]], names: Sequence[str], where: str) -> dict:
    """One split's record: the members' mean probabilities, in the first member's clip order."""
    first = members[0]
    labels = np.asarray(first["label"], np.int64)
    probs = np.zeros((len(labels), len(first["probs"][0])), np.float64)
    for member, name in zip(members, names, strict=True):
        order = records.clip_order(first, member, (name, names[0]), where)
        probs += np.asarray(member["probs"], np.float64)[order]
    probs /= len(members)
    preds = probs.argmax(-1)
    return {"labels": labels, "preds": preds, "probs": probs, "clips": list(first["clips"]),
            "actors": list(first.get("actors", []))}  # fmt: skip


def _scored(split: Mapping[str, Any], label_names: Sequence[str]) -> dict[str, Any]:
    labels, probs = split["labels"], split["probs"]
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))
    report = classification_metrics(labels, split["preds"], label_names, losses=nll)
    return {
        "actors": split["actors"],
        "num_examples": report["num_examples"],
        **{k: report[k] for k in (*records.METRICS, "loss")},
        "per_class_recall": {name: c["recall"] for name, c in report["per_class"].items()},
        "confusion_matrix": report["confusion_matrix"],
        "clips": split["clips"],
        "label": split["labels"].astype(int).tolist(),
        "pred": split["preds"].astype(int).tolist(),
        "probs": np.round(split["probs"], 5).tolist(),
    }


def ensemble_records(
    members: Sequence[Mapping[int, Mapping[str, Any]]], names: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """The ensemble's fold records on the folds every member has finished (``members``:
    ``records.read_all`` of each run, ``names``: how to name each in records and errors)."""
    if len(members) < 2 or len(members) != len(names):
        raise DataError("an ensemble needs two or more runs, each with a name")
    out = {}
    for i in records.common_folds(members, names):
        fold = [m[i] for m in members]
        first = fold[0]
        for record, name in zip(fold[1:], names[1:], strict=True):
            if record["label_names"] != first["label_names"]:
                raise DataError(f"{name}: fold {i} has other labels than {names[0]}'s")
            if _protocol(record) != _protocol(first):
                theirs, ours = (dict(zip(PROTOCOL_KEYS, _protocol(r), strict=True))
                                for r in (record, first))  # fmt: skip
                raise DataError(
                    f"{name}: fold {i} was run under another protocol than "
                    f"{names[0]}'s ({theirs} against {ours}): not one ensemble"
                )
        members_info = [
            {"name": name, "test_step": r.get("test_step"), "git": r.get("git"),
             "checkpoint_steps": r.get("checkpoint_steps"), "machine": r.get("machine")}
            for r, name in zip(fold, names, strict=True)
        ]  # fmt: skip
        record = {
            "format": records.FORMAT,
            "fold": i,
            "definition": first["definition"],
            "label_names": first["label_names"],
            "test_step": None,
            "checkpoint_steps": None,
            "leaking": any(r.get("leaking", False) for r in fold),
            "members": members_info,
            "best_epoch": None,
            "epochs": None,
            "stopped_early": None,
            "train_seconds": sum(r.get("train_seconds") or 0 for r in fold),
            "curve": [],
            "config": first.get("config"),
            "member_configs": [r.get("config") for r in fold],
            "git": cv.git_state(),
            # The members' CPU kinds, for a reader; comparisons read each member's own machine.
            "machine": {"cpu": "; ".join(sorted(records.cpu_kinds({"members": members_info})))},
        }
        for split in records.SPLITS:
            if all(r.get(split) for r in fold):
                where = f"fold {i}'s {split} split"
                merged = _split([r[split] for r in fold], names, where)
                record[split] = _scored(merged, first["label_names"])
        if "test" not in record:
            raise DataError(f"fold {i}: a member has no test predictions")
        out[i] = record
    return out


def run(
    member_paths: Sequence[str | Path], out: str | Path, num_folds: int | None = None
) -> dict[str, Any]:
    """Writes ``OUT/folds/fold_<i>.json`` for the ensemble of the runs in ``member_paths``
    (`sejax cv` workdirs or folders of fold records) and ``OUT/cv.json`` aggregating them,
    and returns that record. An existing record in ``OUT/folds`` that is not an ensemble's
    (a trained fold) is never overwritten."""
    out = Path(out).absolute()
    paths = [Path(p).absolute() for p in member_paths]
    members = [records.read_run(p) for p in paths]
    if any(out in (p, p.parent) for p in paths):
        raise DataError(f"{out}: the ensemble is written into one of its members' folders")
    names = [str(p) for p in member_paths]
    made = ensemble_records(members, names)
    folder = cv.records_dir(out)
    for i in made:
        path = records.record_path(folder, i)
        if path.exists() and "members" not in records.read(path):
            raise DataError(f"{path} holds a trained fold's record, not an ensemble's: "
                            "choose another --out")  # fmt: skip
    for record in made.values():
        records.write(folder, record)
    stored = records.read_all(folder)
    config = config_lib.from_dict(made[min(made)]["config"])
    count = num_folds if num_folds is not None else cv.num_folds(config)
    record = cv.aggregate(out, stored, count, config)
    record["test_model"] = f"mean probabilities of {len(names)} runs' test models: " + ", ".join(
        names
    )
    record["members"] = names
    record["config"] = None  # each member's is in the fold records (member_configs)
    io.write_json(out / "cv.json", json.loads(json.dumps(record)), indent=1)
    return record
