"""Install-time build of the oneDNN convolution library (the rest is in pyproject.toml).

``build_py`` also compiles ``sejax/model/onednn/csrc/onednn_conv.cc`` when the build
environment has what it needs (a C++ compiler, jaxlib's FFI headers, the oneDNN wheels: a
``pip install --no-build-isolation`` into an environment that has sejax's dependencies).
Anything missing only skips the step: the library is then compiled on first use into a
per-user cache (``sejax/model/onednn/build.py`` says why and how). It never fails the install.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGE = Path("sejax", "model", "onednn")


def _builder():
    """``sejax/model/onednn/build.py`` loaded by path: importing sejax needs its dependencies."""
    spec = importlib.util.spec_from_file_location(
        "_sejax_onednn_build", ROOT / PACKAGE / "build.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class BuildPyWithOnednn(build_py):
    def run(self) -> None:
        super().run()
        # An editable install imports the package from the source tree.
        target = ROOT / PACKAGE if self.editable_mode else Path(self.build_lib) / PACKAGE
        try:
            library = _builder().build_installed(target)
        except Exception as e:  # whatever fails, the install must not
            print(f"sejax: oneDNN convolution not built at install time: {e}", file=sys.stderr)
            print("sejax: it will be compiled on first use instead", file=sys.stderr)
        else:
            print(f"sejax: built {library}", file=sys.stderr)


setup(cmdclass={"build_py": BuildPyWithOnednn})
