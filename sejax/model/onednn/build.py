"""Compiling the library of sejax's CPU custom calls (``csrc/``: the oneDNN convolution,
``onednn_conv.cc``, and the fused BatchNorm-ReLU-pool, ``bn_relu_pool.cc``) from the package's
own source, with the system C++ compiler, against the oneDNN wheels' headers and library and the
XLA FFI headers that jaxlib ships (``jax.ffi.include_dir()``). No binary is downloaded.

A library comes from one of two places, tried in this order by `library`:

1. **install time** (``setup.py`` calls `build_installed`): ``_lib/onednn_conv.so`` in the
   package, next to a stamp (``onednn_conv.json``) saying what it was built against. Used
   when its source hash and platform match and its FFI API version is the runtime jaxlib's or
   an older one of the same major version (XLA accepts older handlers). pip's default
   isolated builds have no jaxlib, so they skip this step (a ``--no-build-isolation``
   install runs it);
2. **first use**: a per-user cache, ``$SEJAX_ONEDNN_CACHE`` or
   ``${XDG_CACHE_HOME:-~/.cache}/sejax/onednn``, one file per key (source, compiler and
   flags, jaxlib version, oneDNN location and version, platform), compiled under a file lock
   so concurrent processes compile once; about 10 s.

Why not build in pip's isolated environment: it would need jaxlib and the oneDNN headers as
build requirements on every install (some 750 MB), and pip would pick the newest jaxlib for
the build, whose FFI headers may be newer than the runtime's: a library built against them
is refused ("handler's API version is incompatible").

Only the standard library is imported at module level: ``setup.py`` loads this file by path
in a build environment that may have no jax.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
SOURCES = (CSRC / "onednn_conv.cc", CSRC / "bn_relu_pool.cc")  # compiled into one library
HEADERS = (CSRC / "cpu_runtime.h",)
INSTALLED_DIR = Path(__file__).with_name("_lib")
LIBRARY_NAME = "onednn_conv.so"
STAMP_NAME = "onednn_conv.json"
CACHE_ENV = "SEJAX_ONEDNN_CACHE"
# The CPU-only oneDNN wheels (header wheel, library wheel). The PyPI `onednn` 2024+ wheels
# are SYCL builds whose CPU engine needs a SYCL CPU device, so they are not listed.
WHEELS = (("onednn-devel-cpu-gomp", "onednn-cpu-gomp"),)
INSTALL_HINT = "pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"
FLAGS = (
    "-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden", "-fopenmp", "-Wall",
    "-Wno-unused-function",
)  # fmt: skip


class BuildError(RuntimeError):
    """The library cannot be built or used here (no compiler, headers, oneDNN, or a failed
    compilation); the message says what is missing."""


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """Everything the compiled library depends on; its `key` names the binary."""

    compiler: str
    ffi_include: Path
    ffi_api: tuple[int, int]  # XLA_FFI_API_MAJOR, XLA_FFI_API_MINOR of those headers
    jaxlib: str
    onednn_include: Path
    onednn_lib: Path
    onednn_version: str

    def command(self, output: Path) -> list[str]:
        # --disable-new-dtags writes DT_RPATH, which libdnnl's own dependencies see too.
        return [
            self.compiler, *FLAGS, "-isystem", str(self.ffi_include),
            "-isystem", str(self.onednn_include), f"-I{CSRC}", *map(str, SOURCES),
            "-o", str(output),
            f"-L{self.onednn_lib}", "-ldnnl", f"-Wl,-rpath,{self.onednn_lib}",
            "-Wl,--disable-new-dtags",
        ]  # fmt: skip

    def stamp(self) -> dict[str, object]:
        return {
            "source_sha256": source_hash(),
            "platform": sysconfig.get_platform(),
            "jaxlib": self.jaxlib,
            "ffi_api": list(self.ffi_api),
            "onednn": self.onednn_version,
            "onednn_lib": str(self.onednn_lib),
            "command": self.command(Path(LIBRARY_NAME)),
        }

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.stamp(), sort_keys=True).encode()).hexdigest()[:16]


def source_hash() -> str:
    """One digest of every source and header, so a change to any rebuilds the library."""
    digest = hashlib.sha256()
    for path in (*SOURCES, *HEADERS):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _wheel_file(dist: str, suffix: str) -> Path | None:
    """The installed file of wheel ``dist`` whose path ends with ``suffix``."""
    try:
        files = metadata.distribution(dist).files or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix):
            path = Path(f.locate()).resolve()
            if path.exists():
                return path
    return None


def find_onednn() -> tuple[Path, Path, str]:
    """``(include dir, lib dir, version)`` of the CPU-only (GNU OpenMP) oneDNN wheels."""
    for devel, lib in WHEELS:
        header = _wheel_file(devel, "include/oneapi/dnnl/dnnl.hpp")
        library = _wheel_file(lib, "libdnnl.so.3")  # RECORD: ../../libdnnl.so.3
        if header is None or library is None:
            continue
        include = header.parents[2]
        config = (include / "oneapi/dnnl/dnnl_config.h").read_text()
        runtime = re.search(r"#define DNNL_CPU_RUNTIME DNNL_RUNTIME_(\w+)", config)
        if runtime is None or runtime.group(1) != "OMP":
            raise BuildError(f"{devel}: oneDNN is not the OpenMP CPU build ({INSTALL_HINT})")
        return include, library.parent, metadata.version(lib)
    raise BuildError(f"the oneDNN CPU wheels are not installed ({INSTALL_HINT})")


def find_compiler() -> str:
    """``$CXX`` or g++ on PATH."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"no C++ compiler {name!r} on PATH (install g++, or set CXX)")
    return path


def ffi_headers() -> tuple[Path, tuple[int, int], str]:
    """jaxlib's FFI include dir, its FFI API version and jaxlib's version."""
    try:
        import jax.ffi
        import jaxlib
    except ImportError as e:
        raise BuildError(f"jax is not importable ({e}): no XLA FFI headers") from e
    include = Path(jax.ffi.include_dir())
    c_api = include / "xla/ffi/api/c_api.h"
    if not c_api.is_file():
        raise BuildError(f"the XLA FFI headers are missing under {include}")
    text = c_api.read_text()
    api = tuple(
        int(re.search(rf"#define XLA_FFI_API_{k} (\d+)", text).group(1)) for k in ("MAJOR", "MINOR")
    )
    return include, api, jaxlib.__version__


def toolchain() -> Toolchain:
    """The compiler, FFI headers and oneDNN of this environment; BuildError names what is
    missing."""
    compiler = find_compiler()
    ffi_include, ffi_api, jaxlib_version = ffi_headers()
    include, lib, version = find_onednn()
    return Toolchain(compiler, ffi_include, ffi_api, jaxlib_version, include, lib, version)


def compile_library(tools: Toolchain, output: Path) -> Path:
    """Compiles the source into ``output`` (written beside it and renamed into place, so a
    reader never sees a partial file)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    command = tools.command(partial)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as e:
        raise BuildError(f"cannot run {tools.compiler}: {e}") from e
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"compilation failed: {' '.join(command)}\n{proc.stderr[-4000:]}")
    os.replace(partial, output)
    return output


def build_installed(package_dir: Path) -> Path:
    """The install-time build (``setup.py``): ``<package_dir>/_lib/onednn_conv.so`` and its
    stamp. Raises BuildError."""
    tools = toolchain()
    out = package_dir / "_lib"
    library = compile_library(tools, out / LIBRARY_NAME)
    (out / STAMP_NAME).write_text(json.dumps(tools.stamp(), indent=1) + "\n")
    return library


def installed_library(ffi_api: tuple[int, int]) -> Path | None:
    """The install-time library if it fits this runtime, whose jaxlib has FFI API version
    ``ffi_api`` (see the module docstring). Needs no compiler."""
    library, stamp_file = INSTALLED_DIR / LIBRARY_NAME, INSTALLED_DIR / STAMP_NAME
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        return None
    major, minor = stamp.get("ffi_api", (-1, -1))
    fits = (
        library.is_file()
        and stamp.get("source_sha256") == source_hash()
        and stamp.get("platform") == sysconfig.get_platform()
        and major == ffi_api[0]
        and minor <= ffi_api[1]
        and Path(stamp.get("onednn_lib", "")).is_dir()
    )
    return library if fits else None


def cache_dir() -> Path:
    if root := os.environ.get(CACHE_ENV):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sejax" / "onednn"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_library(tools: Toolchain) -> Path:
    """The per-user cached library for ``tools``, compiled first if absent."""
    library = cache_dir() / f"onednn_conv-{tools.key()}.so"
    if library.is_file():
        return library
    with _locked(library.with_suffix(".lock")):
        if not library.is_file():  # another process may have built it meanwhile
            log.info("compiling the oneDNN convolution library into %s (once)", library)
            compile_library(tools, library)
    return library


def library() -> Path:
    """A library that fits this runtime: the install-time one, else the cached one (compiled
    on first use). Raises BuildError."""
    _, ffi_api, _ = ffi_headers()
    return installed_library(ffi_api) or cached_library(toolchain())


if __name__ == "__main__":  # python -m sejax.model.onednn.build: build (or find) and say where
    try:
        print(library())
    except BuildError as e:
        sys.exit(f"error: {e}")
