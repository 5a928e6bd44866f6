"""sejax: speech emotion recognition in JAX/Flax.

The public API, as a Flax user expects it::

    import sejax

    config = sejax.get_config()                      # the reference recipe on the demo corpus
    summary = sejax.train_and_evaluate(config, "runs/demo")
    predictor = sejax.load("runs/demo")              # or a model name / exported folder
    predictor.predict("clip.wav")

and the pieces the loop is made of: `build_model`, `create_train_state`, `train_step`,
`eval_step`, `evaluate` (a trained workdir), `cross_validate`. Each name is imported on first
use, so ``import sejax`` stays cheap and pulls in neither JAX nor TensorFlow. It does set
glibc's malloc policy so that XLA:CPU reuses each step's temporary buffer instead of faulting
it in again (`sejax.host_memory`; ``SEJAX_MALLOC_TUNING=0`` leaves the defaults).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sejax import host_memory

# Before JAX's first computation creates its threads (see sejax.host_memory).
host_memory.reuse_freed_memory()

__version__ = "0.1.0"

# Public name -> the module that defines it (the one place it is written).
_EXPORTS = {
    "get_config": "sejax.configs.default",
    "load_config": "sejax.configs.loading",
    "build_model": "sejax.model.models",
    "create_train_state": "sejax.training.train_state",
    "train_step": "sejax.training.steps",
    "eval_step": "sejax.training.steps",
    "train_and_evaluate": "sejax.evaluation.evaluate",
    "evaluate": "sejax.evaluation.evaluate",
    "cross_validate": "sejax.evaluation.cv",
    "load": "sejax.inference.predict",
    "Predictor": "sejax.inference.predict",
}
# Where the public name differs from the defining module's own name for it.
_SOURCE_NAMES = {"cross_validate": "run"}

__all__ = [
    "Predictor",
    "__version__",
    "build_model",
    "create_train_state",
    "cross_validate",
    "eval_step",
    "evaluate",
    "get_config",
    "load",
    "load_config",
    "train_and_evaluate",
    "train_step",
]
assert set(__all__) == {"__version__", *_EXPORTS}

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `__getattr__` imports
    from sejax.configs.default import get_config
    from sejax.configs.loading import load_config
    from sejax.evaluation.cv import run as cross_validate
    from sejax.evaluation.evaluate import evaluate, train_and_evaluate
    from sejax.inference.predict import Predictor, load
    from sejax.model.models import build_model
    from sejax.training.steps import eval_step, train_step
    from sejax.training.train_state import create_train_state


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sejax' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), _SOURCE_NAMES.get(name, name))
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
