"""sejax: speech emotion recognition in JAX/Flax."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def load(*args: Any, **kwargs: Any) -> Any:
    """A `sejax.predict.Predictor` for a trained model; see `sejax.predict.load`.

    ``sejax.load('runs/demo').predict('clip.wav')``. Imported lazily, so ``import sejax``
    stays cheap and pulls in neither JAX nor Flax.
    """
    from sejax import predict

    return predict.load(*args, **kwargs)
