"""Is recipe B better than recipe A? Fold by fold and clip by clip, on the same folds.

Recipe decisions are made on the validation actors (never on test), and a gain counts only
when it is outside the noise of one training per fold. Two measures of that noise, both
paired (the same folds, the same clips):

- per fold: the differences B - A of the fold metric, their mean, standard deviation and the
  number of folds B wins;
- per clip: a paired bootstrap over the clips of every compared fold pooled together (each
  resample draws clips with replacement and scores both recipes on the same draw), giving a
  95 % interval of the pooled-metric difference and the share of resamples where B is not
  better.

A side may be several runs of one recipe (its seeds): it then scores as the mean of its runs'
metric, on each fold and on each resample, so the question becomes "is B better than a typical
run of A", not "than one lucky or unlucky seed" (seeds of one recipe differ by a few points on
two validation actors). An ensemble against its members is the usual case.

Inputs are the fold records `sejax cv` writes (``sejax.evaluation.records``). Clips are
matched by name, so recipes on other feature sets (another crop, trimmed silence) compare too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from sejax.errors import DataError
from sejax.evaluation import records

METRICS = {
    "uar": balanced_accuracy_score,
    "accuracy": accuracy_score,
    "macro_f1": lambda y, p: f1_score(y, p, average="macro", zero_division=0),
}


Run = Mapping[int, Mapping[str, Any]]  # one run's fold records (``records.read_all``)


def _as_runs(side: Run | Sequence[Run]) -> list[Run]:
    """A side as a list of runs: one run's records, or several runs of one recipe."""
    runs = [side] if isinstance(side, Mapping) else list(side)
    if not runs:
        raise DataError("a side of the comparison has no run")
    return runs


def _aligned(
    reference: Mapping[str, Any], other: Mapping[str, Any], names: tuple[str, str], where: str
) -> np.ndarray:
    """``other``'s predictions in ``reference``'s clip order (`records.clip_order`)."""
    return np.asarray(other["pred"])[records.clip_order(reference, other, names, where)]


def _same_cpu_kind(runs: Sequence[Run], folds: list[int]) -> bool | None:
    """True when, fold by fold, every run of both sides ran on one and the same CPU kind."""
    kinds = [[records.cpu_kinds(run[i]) for run in runs] for i in folds]
    if any(not k for fold in kinds for k in fold):
        return None
    return all(len(set().union(*fold)) == 1 for fold in kinds)


def compare(
    records_a: Run | Sequence[Run],
    records_b: Run | Sequence[Run],
    *,
    split: str = "validation",
    metric: str = "uar",
    resamples: int = 2000,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Recipe B against recipe A on the folds every run has finished. Each side is one run's
    records (``records.read_all``) or a sequence of runs of one recipe, scored as their mean.
    ``names`` (A's runs, then B's) name the runs in errors; default A, A2, ..., B, B2, ..."""
    if metric not in METRICS:
        raise DataError(f"metric {metric!r} is not one of {list(METRICS)}")
    runs_a, runs_b = _as_runs(records_a), _as_runs(records_b)
    if names is None:
        names = [f"{side}{k + 1 if k else ''}" for side, runs in (("A", runs_a), ("B", runs_b))
                 for k in range(len(runs))]  # fmt: skip
    folds = records.common_folds(runs_a + runs_b, names)
    names_a, names_b = names[: len(runs_a)], names[len(runs_a) :]
    score = METRICS[metric]

    def mean_score(y: np.ndarray, preds: list[np.ndarray], draw: Any = slice(None)) -> float:
        return float(np.mean([score(y[draw], p[draw]) for p in preds]))

    per_fold, labels, preds_a, preds_b = [], [], [], []
    for i in folds:
        splits_a = [run[i].get(split) for run in runs_a]
        splits_b = [run[i].get(split) for run in runs_b]
        if any(x is None for x in splits_a + splits_b):
            raise DataError(f"fold {i} has no {split} predictions in both records")
        reference = splits_a[0]
        y = np.asarray(reference["label"])
        where = f"fold {i}'s {split} split"
        pa = [
            _aligned(reference, x, (n, names[0]), where)
            for x, n in zip(splits_a, names_a, strict=True)
        ]
        pb = [
            _aligned(reference, x, (n, names[0]), where)
            for x, n in zip(splits_b, names_b, strict=True)
        ]
        a, b = mean_score(y, pa), mean_score(y, pb)
        per_fold.append({"fold": i, "a": a, "b": b, "difference": b - a})
        labels.append(y)
        preds_a.append(pa)
        preds_b.append(pb)
    y = np.concatenate(labels)
    pa = [np.concatenate(run) for run in zip(*preds_a, strict=True)]
    pb = [np.concatenate(run) for run in zip(*preds_b, strict=True)]
    diffs = np.array([f["difference"] for f in per_fold])

    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    for r in range(resamples):
        draw = rng.integers(0, len(y), len(y))
        boot[r] = mean_score(y, pb, draw) - mean_score(y, pa, draw)
    pooled_a, pooled_b = mean_score(y, pa), mean_score(y, pb)
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "split": split,
        "metric": metric,
        "folds": folds,
        "runs": {"a": len(runs_a), "b": len(runs_b)},
        "per_fold": per_fold,
        "mean_a": float(np.mean([f["a"] for f in per_fold])),
        "mean_b": float(np.mean([f["b"] for f in per_fold])),
        "mean_difference": float(diffs.mean()),
        "std_difference": float(diffs.std(ddof=1)) if len(diffs) > 1 else None,
        "folds_b_better": int((diffs > 0).sum()),
        "pooled_a": pooled_a,
        "pooled_b": pooled_b,
        "pooled_difference": pooled_b - pooled_a,
        "bootstrap": {
            "resamples": resamples,
            "seed": seed,
            "ci95": [float(low), float(high)],
            "p_not_better": float((boot <= 0).mean()),
        },
        # A gain outside the noise: the whole 95 % interval above zero.
        "b_better": bool(low > 0),
        # Whether a fold's two sides ran on other CPU kinds (None: a record does not say):
        # the same command moves a fold by a few points between kinds.
        "cpu_kinds": {
            "a": sorted(set().union(*(records.run_cpu_kinds(r, folds) for r in runs_a))),
            "b": sorted(set().union(*(records.run_cpu_kinds(r, folds) for r in runs_b))),
        },
        "same_cpu_kind": _same_cpu_kind(runs_a + runs_b, folds),
        # Which side's validation score is optimistic (its test model chosen on it).
        "chosen_on_validation": {
            side: split == "validation"
            and any(records.chosen_on_validation(r[i]) for r in runs for i in folds)
            for side, runs in (("a", runs_a), ("b", runs_b))
        },
    }


def format_comparison(result: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """The comparison as a few lines of text, fold by fold."""
    metric, split = result["metric"], result["split"]

    def side_name(name: str, side: str) -> str:
        runs = (result.get("runs") or {}).get(side, 1)
        return f"{name} and {runs - 1} more (mean of {runs} runs)" if runs > 1 else name

    name_a, name_b = side_name(name_a, "a"), side_name(name_b, "b")
    lines = [f"{split} {metric}: {name_b} against {name_a}, fold by fold"]
    lines += [f"  fold {f['fold']}: {f['a']:.3f} -> {f['b']:.3f} ({f['difference']:+.3f})"
              for f in result["per_fold"]]  # fmt: skip
    sd = result["std_difference"]
    lines.append(
        f"  mean {result['mean_a']:.3f} -> {result['mean_b']:.3f}: difference "
        f"{result['mean_difference']:+.3f}"
        + (f" ± {sd:.3f} (sd over folds)" if sd else "")
        + f", {name_b} better on {result['folds_b_better']} of {len(result['folds'])} folds"
    )
    low, high = result["bootstrap"]["ci95"]
    lines.append(
        f"  pooled {result['pooled_a']:.3f} -> {result['pooled_b']:.3f}: paired bootstrap over "
        f"clips, 95% interval of the difference [{low:+.3f}, {high:+.3f}], "
        f"P(not better) {result['bootstrap']['p_not_better']:.3f}"
    )
    verdict = "a gain outside the noise" if result["b_better"] else "no gain outside the noise"
    lines.append(f"  verdict: {verdict}")
    if result.get("same_cpu_kind") is False:
        kinds = result["cpu_kinds"]
        lines.append(
            f"  caution: the two sides ran on other CPU kinds ({name_a}: "
            f"{'; '.join(kinds['a'])}; {name_b}: {'; '.join(kinds['b'])}): one run per fold "
            "moves by a few points between kinds (floating-point order), so the difference "
            "mixes that with the recipes'; compare runs made on one kind"
        )
    for side, name in (("a", name_a), ("b", name_b)):
        if (result.get("chosen_on_validation") or {}).get(side):
            lines.append(
                f"  caution: {name}'s test model (or a member's) is the checkpoint these "
                "validation clips chose, so its validation score is optimistic and the "
                "comparison leans toward it"
            )
    return "\n".join(lines)
