"""The Keras recipe in Keras itself, on one fold of sejax's shards: Keras's own spread.

    python experiments/keras_reference.py --shards runs/ravdess-shards-3s \
        --val-actors 9 10 --test-actors 5 6 7 8 --seed 1

The Keras twin of the reference network (`benchmarks/keras_twin.py`), on the same features,
split and per-band normalisation as a sejax fold, trained as the original Keras script did:
Adam 1e-3, batch 32, shuffled, up to ``--epochs`` epochs, ``EarlyStopping(monitor=
'val_accuracy', patience=10, restore_best_weights=True)``. Prints one JSON line per epoch and
a last one with the test UAR, so several seeds of one fold show how far Keras itself moves
between runs (experiments/README.md, Keras-parity row).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", required=True, help="prepared shards (sejax prepare)")
    parser.add_argument("--val-actors", type=int, nargs="+", required=True)
    parser.add_argument("--test-actors", type=int, nargs="+", required=True)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras_twin
    from sklearn.metrics import balanced_accuracy_score

    from sejax.configs.loading import load_config
    from sejax.data import input_pipeline, splits

    keras = keras_twin.keras
    config = load_config(ROOT / "experiments" / "configs" / "keras_recipe.py")
    config.data.val_actors, config.data.test_actors = args.val_actors, args.test_actors
    shards = input_pipeline.Shards(args.shards)
    split = splits.make_split(shards.examples, config.data)
    norm = shards.normalization(split.indices["train"], config.data.normalization)
    data = {name: shards.arrays(split.indices[name], norm) for name in split.indices}

    keras.utils.set_random_seed(args.seed)
    model = keras_twin.build_model(*data["train"]["features"].shape[1:])
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # fmt: skip

    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = {k: round(float(v), 4) for k, v in (logs or {}).items()}
            print(json.dumps({"epoch": epoch + 1, **logs}), flush=True)

    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.patience,
                                         restore_best_weights=True)  # fmt: skip
    model.fit(data["train"]["features"][..., None], data["train"]["label"], batch_size=32,
              epochs=args.epochs, shuffle=True, verbose=0, callbacks=[Log(), stop],
              validation_data=(data["validation"]["features"][..., None],
                               data["validation"]["label"]))  # fmt: skip
    pred = model.predict(data["test"]["features"][..., None], verbose=0).argmax(-1)
    print(json.dumps({
        "seed": args.seed, "val_actors": args.val_actors, "test_actors": args.test_actors,
        # EarlyStopping leaves stopped_epoch at 0 when it never stopped the run.
        "best_epoch": stop.best_epoch + 1,
        "stopped_epoch": stop.stopped_epoch + 1 if stop.stopped_epoch else None,
        "test_uar": balanced_accuracy_score(data["test"]["label"], pred),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
