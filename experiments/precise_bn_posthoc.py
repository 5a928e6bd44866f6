"""Precise BatchNorm after the fact: the test metrics of finished runs' checkpoints with their
running BatchNorm averages and with statistics recomputed from training batches.

    python experiments/precise_bn_posthoc.py runs/cv-reference/fold_* --batches 16

For each run folder it restores a checkpoint (the latest by default), evaluates the test split
as saved, then replaces the BatchNorm averages by the mean statistics of ``--batches`` training
batches of the run's last epoch (``sejax.evaluation.evaluate.precise_batch_stats``, what
``train.precise_bn_batches`` does at every epoch's end) and evaluates again. Training is not
repeated; nothing in the run folders is written. One JSON line per run, then a summary line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sejax.data import input_pipeline, splits
from sejax.evaluation import evaluate
from sejax.training import validation

METRICS = ("accuracy", "uar", "macro_f1")


def posthoc(workdir: Path, batches: int, checkpoint: str) -> dict:
    trained = evaluate.load_trained(workdir, checkpoint)
    config, par, norm = trained.config, trained.par, trained.norm
    shards = input_pipeline.Shards(trained.meta["shards"])
    split = splits.make_split(shards.examples, config.data)
    test, bs = split.indices["test"], config.eval.batch_size
    saved = validation.evaluate_split(par, trained.state, shards, test, norm, bs)
    state = evaluate.precise_batch_stats(trained, batches)
    precise = validation.evaluate_split(par, state, shards, test, norm, bs)
    return {
        "workdir": str(workdir),
        "checkpoint": checkpoint,
        "step": trained.step,
        "test_actors": list(split.actors["test"]),
        "running_averages": {k: round(saved[k], 4) for k in METRICS},
        "precise_bn": {k: round(precise[k], 4) for k in METRICS},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="finished `sejax train` folders")
    parser.add_argument("--batches", type=int, default=16, help="training batches to average")
    parser.add_argument("--checkpoint", choices=("latest", "best"), default="latest")
    args = parser.parse_args()
    rows = []
    for workdir in args.workdirs:
        rows.append(posthoc(workdir, args.batches, args.checkpoint))
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        which: {k: round(float(np.mean([r[which][k] for r in rows])), 4) for k in METRICS}
        for which in ("running_averages", "precise_bn")
    }
    print(json.dumps({"runs": len(rows), "batches": args.batches, "mean": summary}))


if __name__ == "__main__":
    main()
