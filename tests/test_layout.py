"""The package layout is the architecture: dependencies point one way, and the tree says so.

data -> model -> training -> evaluation -> inference -> cli: a module may import its own
layer and the layers below it, never one above (not even inside a function, where a
lazy import would hide the cycle). Read from the source with `ast`, so nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sejax"

# Layer of each part of the package, low to high. The configs package is split by role:
# its defaults and loading sit just above the corpora (the defaults name RAVDESS's labels);
# validation collects the allowed values from the modules that use them, so it sits with
# training and is imported by the loop, evaluation, inference and the command line.
LAYERS = {
    "sejax.errors": 0,
    "sejax.io": 0,
    "sejax.host_memory": 0,
    "sejax.corpora": 1,
    "sejax.configs.default": 2,
    "sejax.configs.loading": 2,
    "sejax.data": 3,
    "sejax.model": 4,
    "sejax.training": 5,
    "sejax.configs.validation": 5,
    "sejax.evaluation": 6,
    "sejax.inference": 7,
    "sejax.cli": 8,
    "sejax.__main__": 8,
    "sejax": 9,  # the public API re-exports every layer (lazily)
}


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    raise KeyError(module)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sejax_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every sejax module ``path`` imports, at any depth of the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("sejax")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sejax"):
            # `from sejax.data import features` imports sejax.data.features. The version
            # string is the one name every layer may take from the package root (loaded
            # first whatever is imported, and it imports nothing itself).
            for alias in node.names:
                if (node.module, alias.name) == ("sejax", "__version__"):
                    continue
                sub = f"{node.module}.{alias.name}"
                where = PACKAGE.parent / sub.replace(".", "/")
                is_module = where.with_suffix(".py").exists() or (where / "__init__.py").exists()
                found.append((node.lineno, sub if is_module else node.module))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))  # raises for a module outside the known layers


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer(path):
    name = module_name(path)
    mine = layer_of(name)
    upward = [
        f"line {line}: {target} (layer {layer_of(target)})"
        for line, target in sejax_imports(path)
        if layer_of(target) > mine
    ]
    assert not upward, f"{name} (layer {mine}) imports a higher layer: {upward}"


def test_the_checker_sees_upward_imports(tmp_path):
    """The rule above can fail: a data module importing training is caught, even lazily."""
    fake = PACKAGE / "data" / "_layout_probe.py"
    assert not fake.exists()
    source = "def f():\n    from sejax.training import train\n"
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    targets = [t for _, t in sejax_imports(probe)]
    assert targets == ["sejax.training.train"]
    assert layer_of("sejax.training.train") > layer_of("sejax.data.prepare")


def test_each_package_is_one_role():
    """The top level holds only the public API, errors, io, the process's malloc settings and
    the role packages."""
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py", "errors.py", "host_memory.py", "io.py"]
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == [
        "cli", "configs", "corpora", "data", "evaluation", "inference", "model", "training"
    ]  # fmt: skip
