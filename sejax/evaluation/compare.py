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

Inputs are the fold records `sejax cv` writes (``sejax.evaluation.records``). Clips are
matched by name, so recipes on other feature sets (another crop, trimmed silence) compare too.
"""

from __future__ import annotations

from collections.abc import Mapping
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


def _paired_clips(a: Mapping[str, Any], b: Mapping[str, Any]) -> tuple[np.ndarray, ...]:
    """(labels, A's predictions, B's predictions) over the clips of one fold's split."""
    pred_b = dict(zip(b["clips"], b["pred"], strict=True))
    label_b = dict(zip(b["clips"], b["label"], strict=True))
    if set(pred_b) != set(a["clips"]):
        raise DataError("the two recipes' folds hold other clips: compare runs of the same folds")
    labels = np.asarray(a["label"])
    if any(label_b[c] != y for c, y in zip(a["clips"], labels, strict=True)):
        raise DataError("the two recipes label a clip differently: other label sets?")
    return labels, np.asarray(a["pred"]), np.asarray([pred_b[c] for c in a["clips"]])


def _same_cpu_kind(
    records_a: Mapping[int, Mapping[str, Any]],
    records_b: Mapping[int, Mapping[str, Any]],
    folds: list[int],
) -> bool | None:
    """True when every compared fold's two sides ran on one and the same CPU kind."""
    pairs = [(records.cpu_kinds(records_a[i]), records.cpu_kinds(records_b[i])) for i in folds]
    if any(not ka or not kb for ka, kb in pairs):
        return None
    return all(ka == kb and len(ka) == 1 for ka, kb in pairs)


def compare(
    records_a: Mapping[int, Mapping[str, Any]],
    records_b: Mapping[int, Mapping[str, Any]],
    *,
    split: str = "validation",
    metric: str = "uar",
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Recipe B against recipe A on the folds both have finished (``records.read_all``)."""
    if metric not in METRICS:
        raise DataError(f"metric {metric!r} is not one of {list(METRICS)}")
    folds = sorted(set(records_a) & set(records_b))
    if not folds:
        raise DataError("the two recipes have no finished fold in common")
    score = METRICS[metric]
    per_fold, labels, preds_a, preds_b = [], [], [], []
    for i in folds:
        sa, sb = records_a[i].get(split), records_b[i].get(split)
        if sa is None or sb is None:
            raise DataError(f"fold {i} has no {split} predictions in both records")
        y, pa, pb = _paired_clips(sa, sb)
        a, b = float(score(y, pa)), float(score(y, pb))
        per_fold.append({"fold": i, "a": a, "b": b, "difference": b - a})
        labels.append(y)
        preds_a.append(pa)
        preds_b.append(pb)
    y, pa, pb = (np.concatenate(x) for x in (labels, preds_a, preds_b))
    diffs = np.array([f["difference"] for f in per_fold])

    rng = np.random.default_rng(seed)
    boot = np.empty(resamples)
    for r in range(resamples):
        draw = rng.integers(0, len(y), len(y))
        boot[r] = score(y[draw], pb[draw]) - score(y[draw], pa[draw])
    pooled_a, pooled_b = float(score(y, pa)), float(score(y, pb))
    low, high = np.percentile(boot, [2.5, 97.5])
    return {
        "split": split,
        "metric": metric,
        "folds": folds,
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
            "a": records.run_cpu_kinds(records_a, folds),
            "b": records.run_cpu_kinds(records_b, folds),
        },
        "same_cpu_kind": _same_cpu_kind(records_a, records_b, folds),
        # Which side's validation score is optimistic (its test model chosen on it).
        "chosen_on_validation": {
            side: split == "validation" and any(records.chosen_on_validation(r[i]) for i in folds)
            for side, r in (("a", records_a), ("b", records_b))
        },
    }


def format_comparison(result: Mapping[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """The comparison as a few lines of text, fold by fold."""
    metric, split = result["metric"], result["split"]
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
