"""Loading configs: a Python file's ``get_config()``, dotted command-line overrides, and
configs saved by runs, completed from the defaults.

Configs are data (``ml_collections.ConfigDict``), one file per experiment, as in Flax's
examples. Overrides use the same ``--config.key=value`` spelling as ``ml_collections``'
``config_flags``, but are parsed here so that an unknown key or a value of the wrong type
fails before any work with a message naming the key and what it accepts.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from sejax.configs import default
from sejax.errors import ConfigError


def load_config(path: str | Path | None = None) -> ml_collections.ConfigDict:
    """``get_config()`` of the Python file at ``path`` (the defaults when None), completed
    from the defaults: a key the file leaves out reads its value in `configs.default`, so the
    code reads ``config.section.key`` and every default is written once."""
    if path is None or str(path) == "":
        return default.get_config()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"sejax_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load config file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    return from_dict(config.to_dict())


def _parse_value(text: str) -> Any:
    """A Python literal when the text is one ('3', '1e-3', '(1, 2)', 'True'), else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _leaf_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(_leaf_keys(value, f"{name}."))
        else:
            keys.append(name)
    return keys


def _coerce(key: str, old: Any, new: Any) -> Any:
    """Converts ``new`` to the type of the default ``old``, or raises naming the key."""
    if old is None:
        return new
    if isinstance(old, bool):
        if isinstance(new, bool):
            return new
        if isinstance(new, str) and new.lower() in ("true", "false", "1", "0", "yes", "no"):
            return new.lower() in ("true", "1", "yes")
        if isinstance(new, int) and new in (0, 1):
            return bool(new)
    elif isinstance(old, int):
        if isinstance(new, int) and not isinstance(new, bool):
            return new
    elif isinstance(old, float):
        if isinstance(new, int | float) and not isinstance(new, bool):
            return float(new)
    elif isinstance(old, str):
        return str(new)
    elif isinstance(old, tuple | list):
        if isinstance(new, int) and not isinstance(new, bool):
            new = (new,)
        if isinstance(new, str) and all(isinstance(v, str) for v in old):
            # Lists of strings (data.labels, data.label_map) also read as "a,b,c".
            new = tuple(v.strip() for v in new.split(",") if v.strip())
        if isinstance(new, tuple | list):
            return tuple(new)
    raise ConfigError(
        f"config key {key!r} expects a {type(old).__name__} (default {old!r}); got {new!r}"
    )


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Iterable[tuple[str, Any]]
) -> ml_collections.ConfigDict:
    """Sets dotted keys (``("train.batch_size", "64")``); unknown keys list the known ones."""
    known = _leaf_keys(config)
    for key, raw in overrides:
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}{_closest(key, known)}")
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        value = _parse_value(raw) if isinstance(raw, str) else raw
        with config.unlocked():
            node[leaf] = _coerce(key, node[leaf], value)
    return config


def _closest(key: str, known: Sequence[str]) -> str:
    """``': did you mean model.lstm_units?'`` for the known keys nearest to a mistyped one:
    the whole dotted name, or the same leaf in another section; else where to look."""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
    leaf = key.rsplit(".", 1)[-1]
    close += [k for k in known if k.rsplit(".", 1)[-1] == leaf and k not in close]
    if not close:
        section = key.split(".", 1)[0]
        keys = [k for k in known if k.split(".", 1)[0] == section]
        where = (
            f"the {section} section has {', '.join(keys)}"
            if keys
            else (f"sections are {', '.join(sorted({k.split('.', 1)[0] for k in known}))}")
        )
        return f"; {where}"
    return f": did you mean {' or '.join(close[:3])}?"


def parse_override_args(args: Sequence[str]) -> list[tuple[str, str]]:
    """``['--config.a.b=1', '--config.c', '2']`` -> ``[('a.b', '1'), ('c', '2')]``."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--config."):
            raise ConfigError(
                f"unrecognised argument {arg!r}; overrides look like --config.key=value"
            )
        body = arg[len("--config.") :]
        if "=" in body:
            key, value = body.split("=", 1)
        elif i + 1 < len(args):
            key, value = body, args[i + 1]
            i += 1
        else:
            raise ConfigError(f"override {arg!r} has no value")
        pairs.append((key, value))
        i += 1
    return pairs


def get(config: ml_collections.ConfigDict, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node[part]
    return node


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}``, for hparams and comparisons."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def from_dict(d: dict) -> ml_collections.ConfigDict:
    """Rebuilds a config saved as JSON (lists become tuples, as in the Python configs),
    completed from the defaults: a run saved before a key existed reads that key's default,
    the behaviour it was trained with."""

    def tuples(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: tuples(v) for k, v in x.items()}
        if isinstance(x, list):
            return tuple(tuples(v) for v in x)
        return x

    return ml_collections.ConfigDict(_merged(default.get_config().to_dict(), tuples(d)))


def _merged(defaults: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` over ``defaults``, section by section."""
    out = dict(defaults)
    for key, value in values.items():
        base = out.get(key)
        both = isinstance(base, Mapping) and isinstance(value, Mapping)
        out[key] = _merged(base, value) if both else value
    return out
