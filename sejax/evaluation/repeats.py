"""One recipe run several times (seeds): its mean and spread over the runs, fold by fold.

One training per fold is a draw: the same recipe on the same fold moves by several UAR points
between seeds (experiments/README.md), as much as the differences between recipes. A
recipe's number is then the mean over repeated runs, and the spread between the runs says how
far any one of them can be trusted. This is not an ensemble (`sejax.evaluation.ensemble`
averages the runs' probabilities into one model): it averages the runs' scores, which is what
a recipe trained once by a user can expect.

The runs must be one recipe on the same folds: their fold configs may differ only in the keys
of ``NOT_RECIPE`` (the seed, where the data lie, how a computation is implemented), compared
as `sejax cv` compares a record with its config (`cv.config_differences`); any other
difference is a `DataError` naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sejax.errors import DataError
from sejax.evaluation import cv, records

# Config keys that do not change what is trained: the random draw itself, paths and caches,
# implementation switches that compute the same network, and logging (a section name leaves
# out all its keys). The ``cv`` section is never compared (`cv.config_differences`): the
# folds themselves are, by their definitions.
NOT_RECIPE = (
    "seed",
    "data.path",
    "data.prepared_dir",
    "data.num_workers",
    "data.examples_per_shard",
    "data.prefetch",
    "data.device_resident",
    "model.conv_impl",
    "model.block_impl",
    "model.fast_ops",
    "model.conv_grad",
    "model.scan_unroll",
    "model.dropout_rng",
    "train.parallel",
    "train.log_every_steps",
    "train.checkpoint_every_epochs",
    "eval.batch_size",
    "distributed",
    "predict",
)


def recipe_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """``"key: a -> b"`` for every setting where two fold configs train different things."""
    return cv.config_differences(a, b, NOT_RECIPE)


def _spread(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray(values, np.float64)
    return {"runs": [float(x) for x in v], "mean": float(v.mean()), "std": float(v.std(ddof=1))}


def summarize(
    runs: Sequence[Mapping[int, Mapping[str, Any]]], names: Sequence[str]
) -> dict[str, Any]:
    """Mean and spread over ``runs`` (``records.read_all`` of each, one recipe) on the folds
    every run has finished. Per split and metric: each fold's value per run, mean and sd over
    runs; each run's mean over folds; the recipe's mean (over folds of the folds' means), the
    sd of the folds' means over folds, and the sd between the runs' means."""
    if len(runs) < 2 or len(runs) != len(names):
        raise DataError("repeats need two or more runs of one recipe, each with a name")
    folds = records.common_folds(runs, names)
    for i in folds:
        first = runs[0][i]
        for run, name in zip(runs[1:], names[1:], strict=True):
            differences = recipe_differences(first.get("config") or {}, run[i].get("config") or {})
            if differences:
                raise DataError(
                    f"{name}: fold {i} is another recipe than {names[0]}'s (it differs in "
                    f"{', '.join(differences)}): repeats are one recipe's runs; compare two "
                    "recipes with sejax compare"
                )
    splits = [s for s in records.SPLITS if all(run[i].get(s) for run in runs for i in folds)]
    if "test" not in splits:
        raise DataError("a run has a fold without test predictions")
    # Each run's CPU kinds: runs on other kinds differ by the CPU as well as by the seed.
    kinds = [records.run_cpu_kinds(run, folds) for run in runs]
    result: dict[str, Any] = {"runs": list(names), "folds": folds, "cpu_kinds": kinds}
    for split in splits:
        out: dict[str, Any] = {}
        for metric in records.METRICS:
            table = np.array([[run[i][split][metric] for run in runs] for i in folds])
            fold_means = table.mean(axis=1)
            run_means = table.mean(axis=0)
            per_fold = [{"fold": i, **_spread(row)} for i, row in zip(folds, table, strict=True)]
            out[metric] = {
                "per_fold": per_fold,
                "run_means": [float(x) for x in run_means],
                "mean": float(fold_means.mean()),
                "std_over_folds": float(fold_means.std()),  # ddof 0, as sejax cv's
                "std_between_runs": float(run_means.std(ddof=1)),
                "mean_std_within_fold": float(table.std(axis=1, ddof=1).mean()),
            }
        result[split] = out
    return result


def format_repeats(result: Mapping[str, Any], metric: str = "uar") -> str:
    """Fold by fold, each run's test (validation) metric, their mean and sd, as text."""
    names, splits = result["runs"], [s for s in records.SPLITS if s in result]
    lines = [f"{metric}: {len(names)} runs of one recipe, " + ", ".join(
        f"run {k} = {n}" for k, n in enumerate(names))]  # fmt: skip
    for split in splits:
        s = result[split][metric]
        lines.append(f"{split}:")
        for f in s["per_fold"]:
            cells = " ".join(f"{v:.3f}" for v in f["runs"])
            lines.append(f"  fold {f['fold']}: {cells}  mean {f['mean']:.3f} ± {f['std']:.3f}")
        lines.append(
            f"  mean {s['mean']:.3f} (sd over folds {s['std_over_folds']:.3f}); runs' means "
            + " ".join(f"{v:.3f}" for v in s["run_means"])
            + f" (sd between runs {s['std_between_runs']:.3f}; within a fold "
            f"{s['mean_std_within_fold']:.3f} on average)"
        )
    kinds = result.get("cpu_kinds") or []
    if len({tuple(k) for k in kinds}) > 1:
        lines.append(
            "note: the runs ran on other CPU kinds ("
            + "; ".join(f"run {k}: {', '.join(v) or '?'}" for k, v in enumerate(kinds))
            + "): their spread is the seed's and the CPU's together"
        )
    return "\n".join(lines)
