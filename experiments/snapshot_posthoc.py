"""Which model to test after training: the checkpoint the validation actors chose, the final
one, or the mean class probabilities of the last N (a snapshot ensemble), on the same runs.

    python experiments/snapshot_posthoc.py runs/cv-best/fold_* --sizes 1 3 5

For each run folder it predicts the validation and test splits once per kept checkpoint
(`sejax.training.validation.predict_split`) and scores the best-by-validation checkpoint and the
mean of the last N checkpoints for each N in ``--sizes`` (1: the final model), as
``eval.average_last_checkpoints=N`` would. Training is not repeated; nothing in the run folders
is written. One JSON line per run, then the means over the runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sejax.data import input_pipeline, splits
from sejax.evaluation import evaluate
from sejax.training import checkpoints, validation

METRICS = ("accuracy", "uar", "macro_f1")
SPLITS = ("validation", "test")


def posthoc(workdir: Path, sizes: list[int]) -> dict:
    with checkpoints.open_for_reading(workdir) as ckpts:
        steps, best = ckpts.all_steps(), ckpts.best_step()
    if max(sizes) > len(steps):
        raise SystemExit(f"{workdir} keeps {len(steps)} checkpoints, fewer than {max(sizes)}")
    first = evaluate.load_trained(workdir, steps[0])  # the run's shards and split, read once
    shards = input_pipeline.Shards(first.meta["shards"])
    split = splits.make_split(shards.examples, first.config.data)
    outs: dict[int, dict[str, dict]] = {}
    for step in steps:
        trained = first if step == first.step else evaluate.load_trained(workdir, step)
        outs[step] = {
            name: validation.predict_split(trained.par, trained.state, shards,
                                           split.indices[name], trained.norm,
                                           trained.config.eval.batch_size)
            for name in SPLITS
        }  # fmt: skip

    def scores(members: list[int]) -> dict:
        result = {}
        for name in SPLITS:
            member_outs = [outs[s][name] for s in members]
            out = member_outs[0] if len(members) == 1 else evaluate.mean_prediction(member_outs)
            report = validation.split_metrics(out, split.indices[name], shards.label_names)
            result[name] = {k: round(report[k], 4) for k in METRICS}
        return result

    row = {"workdir": str(workdir), "test_actors": list(split.actors["test"]),
           "best_step": best, "best": scores([best])}  # fmt: skip
    for n in sizes:
        row[f"last_{n}"] = scores(steps[-n:])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="finished `sejax train` folders")
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 3, 5])
    args = parser.parse_args()
    rows = []
    for workdir in args.workdirs:
        rows.append(posthoc(workdir, args.sizes))
        print(json.dumps(rows[-1]), flush=True)
    models = ["best", *(f"last_{n}" for n in args.sizes)]
    mean = {
        m: {s: {k: round(float(np.mean([r[m][s][k] for r in rows])), 4) for k in METRICS}
            for s in SPLITS}
        for m in models
    }  # fmt: skip
    print(json.dumps({"runs": len(rows), "mean": mean}))


if __name__ == "__main__":
    main()
