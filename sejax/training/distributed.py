"""Multi-process runs on JAX's distributed runtime: joining the run, and who does what.

A multi-host run starts the same ``sejax train`` once per host (TPU pod slice) or once per GPU
(SLURM). ``jax.distributed.initialize`` connects the processes, after which ``jax.devices()``
lists every device of every process and one jitted step spans them all. It must run before
JAX touches a device, so the training loop (`sejax.training.train.train`) calls it first.

When a run is multi-process (``config.distributed``, see ``settings``):

- explicit: ``distributed.coordinator`` (``HOST:PORT`` of process 0), ``num_processes`` and
  ``process_id``, from the config, from ``sejax train --coordinator/--num-processes/
  --process-id``, or from the environment (``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``,
  ``JAX_PROCESS_ID``); config values win over the environment. JAX's cluster detection is
  then switched off, so nothing overrides what was given (``JAX_LOCAL_DEVICE_IDS`` still
  restricts a process to some of its host's GPUs).
- detected (``mode='auto'``, the default): a SLURM step with more than one task, or a Cloud
  TPU VM. sejax then calls ``jax.distributed.initialize()`` without arguments and lets JAX's
  own cluster detection find the coordinator, process count and id.
- ``mode='on'`` always initialises, filling what is not given by JAX's detection (Open MPI,
  Kubernetes...); ``mode='off'`` never does (one process, even inside a SLURM step).

The rest of the module holds what multi-process code needs: whether this is process 0 (the
only one that writes files), "process 0 first" for work on shared storage, and gathering
host arrays from all processes. Everything is a no-op with one process, and JAX is imported
only inside functions, so config validation stays cheap.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import ml_collections
import numpy as np

from sejax.errors import ConfigError, SejaxError

MODES = ("auto", "on", "off")
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by JAX itself, too
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"
# What JAX's SLURM detection needs (jax._src.clusters.SlurmCluster); set inside `srun` steps.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
              "SLURM_LOCALID")  # fmt: skip

PMAP_SINGLE_PROCESS = (
    "train.parallel='pmap' maps over one process's devices only; a multi-process run needs "
    "train.parallel='jit' (one jitted step over the mesh of every process's devices)"
)

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    """Arguments for ``jax.distributed.initialize``; None leaves a value to JAX's detection."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    timeout_s: int
    detected: str | None  # 'slurm' | 'tpu' when the cluster was detected, else None
    # Only cluster detection asked for this run to be multi-process (mode 'auto', nothing
    # given): if JAX cannot make sense of the cluster, run as one process instead of failing.
    fallback_to_single: bool = False

    @property
    def explicit(self) -> bool:
        return None not in (self.coordinator, self.num_processes, self.process_id)


# ------------------------------------------------------------------------------------------
# Configuration.


def check_config(config: ml_collections.ConfigDict) -> None:
    """Checks the ``distributed.*`` keys alone (no environment); raises ConfigError."""
    d = config.distributed
    if d.mode not in MODES:
        raise ConfigError(
            f"distributed.mode={d.mode!r} is not allowed; choose one of {list(MODES)}"
        )
    if d.coordinator:
        _check_address(d.coordinator, "distributed.coordinator")
    if not isinstance(d.num_processes, int) or d.num_processes < 0:
        raise ConfigError(
            f"distributed.num_processes={d.num_processes!r} must be >= 1 (0: not set)"
        )
    if not isinstance(d.process_id, int) or d.process_id < -1:
        raise ConfigError(f"distributed.process_id={d.process_id!r} must be >= 0 (-1: not set)")
    if d.num_processes and d.process_id >= d.num_processes:
        raise ConfigError(
            f"distributed.process_id={d.process_id} must be smaller than "
            f"distributed.num_processes={d.num_processes} (ids count from 0)"
        )
    if not isinstance(d.initialization_timeout_s, int) or d.initialization_timeout_s < 1:
        raise ConfigError(
            f"distributed.initialization_timeout_s={d.initialization_timeout_s!r} must be a "
            "positive number of seconds"
        )
    if d.num_processes > 1 and config.train.parallel == "pmap":
        raise ConfigError(PMAP_SINGLE_PROCESS)
    if d.mode == "off" and (d.coordinator or d.num_processes or d.process_id >= 0):
        raise ConfigError(
            "distributed.mode='off' contradicts distributed.coordinator/num_processes/"
            "process_id: drop them or use mode 'auto'"
        )


def _check_address(address: str, key: str) -> None:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}={address!r} must look like HOST:PORT, e.g. 10.0.0.1:1234")


def _env_int(environ: Mapping[str, str], name: str) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} must be an integer") from None


def detect_cluster(environ: Mapping[str, str] | None = None) -> str | None:
    """'slurm' or 'tpu' when this process is one of several launched by a cluster, else None.

    SLURM: inside an ``srun`` step of more than one task (a one-task job is a plain single
    process that may use all of its node's GPUs). TPU: a Cloud TPU VM (libtpu installed and
    TPU chips attached) or the worker list of a GKE/multislice TPU job; on a single-host TPU VM
    JAX's detection then finds one process, which is harmless.
    """
    environ = os.environ if environ is None else environ
    if all(v in environ for v in SLURM_VARS):
        try:
            if int(environ["SLURM_NTASKS"]) > 1:
                return "slurm"
        except ValueError:
            pass
    for name in ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        if len([h for h in environ.get(name, "").split(",") if h.strip()]) > 1:
            return "tpu"
    if environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    if environ is os.environ and _on_cloud_tpu_vm():
        return "tpu"
    return None


def _on_cloud_tpu_vm() -> bool:
    """libtpu installed and TPU chips visible (``/dev/accel*`` up to v4, ``/dev/vfio/N`` after)."""
    if importlib.util.find_spec("libtpu") is None:
        return False
    return bool(glob.glob("/dev/accel[0-9]*") or glob.glob("/dev/vfio/[0-9]*"))


def settings(
    config: ml_collections.ConfigDict, environ: Mapping[str, str] | None = None
) -> Settings | None:
    """How this process joins a multi-process run, or None to run as a single process.

    Precedence: config keys (and the CLI flags that set them), then the environment, then
    cluster detection. Partial explicit settings are completed by JAX's detection only where
    a cluster is detected (or ``mode='on'``); otherwise the missing ones are an error.
    """
    check_config(config)
    d = config.distributed
    if d.mode == "off":
        return None
    environ = os.environ if environ is None else environ
    coordinator = d.coordinator or environ.get(ENV_COORDINATOR, "").strip() or None
    num_processes = d.num_processes or _env_int(environ, ENV_NUM_PROCESSES)
    process_id = d.process_id if d.process_id >= 0 else _env_int(environ, ENV_PROCESS_ID)
    if coordinator is not None:
        _check_address(coordinator, f"distributed.coordinator (or {ENV_COORDINATOR})")
    if num_processes is not None and num_processes < 1:
        raise ConfigError(f"distributed.num_processes (or {ENV_NUM_PROCESSES}) must be >= 1")
    if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
        raise ConfigError(
            f"distributed.process_id={process_id} (or {ENV_PROCESS_ID}) must be in "
            f"[0, distributed.num_processes={num_processes})"
        )
    given = {
        "distributed.coordinator": coordinator,
        "distributed.num_processes": num_processes,
        "distributed.process_id": process_id,
    }
    timeout = int(d.initialization_timeout_s)
    if all(v is not None for v in given.values()):
        return Settings(coordinator, num_processes, process_id, timeout, detected=None)
    detected = detect_cluster(environ)
    if detected is None and d.mode == "auto":
        if any(v is not None for v in given.values()):
            missing = [k for k, v in given.items() if v is None]
            env = {"distributed.coordinator": ENV_COORDINATOR,
                   "distributed.num_processes": ENV_NUM_PROCESSES,
                   "distributed.process_id": ENV_PROCESS_ID}  # fmt: skip
            raise ConfigError(
                "a multi-process run needs all of distributed.coordinator, num_processes and "
                "process_id; not set: "
                + ", ".join(f"{k} (or {env[k]})" for k in missing)
                + " (and no SLURM or TPU cluster was detected to fill them in)"
            )
        return None
    nothing_given = all(v is None for v in given.values())
    return Settings(coordinator, num_processes, process_id, timeout, detected=detected,
                    fallback_to_single=d.mode == "auto" and nothing_given)  # fmt: skip


# ------------------------------------------------------------------------------------------
# Start-up.


def initialize(config: ml_collections.ConfigDict) -> None:
    """Joins the multi-process run that the config, environment or cluster describes.

    Does nothing for a single-process run, or when JAX's distributed runtime is already up
    (a caller, or an earlier run in this process, started it). Must run before JAX uses a
    device: JAX fixes its device list when its backend starts.
    """
    import jax

    if jax.distributed.is_initialized():
        return
    s = settings(config)
    if s is None:
        return
    kwargs: dict[str, Any] = {
        "coordinator_address": s.coordinator,
        "num_processes": s.num_processes,
        "process_id": s.process_id,
        "initialization_timeout": s.timeout_s,
    }
    if s.explicit:
        # Explicit means explicit: without this, JAX's SLURM detection would still pin each
        # process to the GPU numbered SLURM_LOCALID.
        kwargs["cluster_detection_method"] = "deactivate"
    where = s.coordinator or f"the {s.detected or 'detected'} cluster's coordinator"
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:
        if s.fallback_to_single:
            # Detection guessed a cluster that JAX cannot describe (e.g. a TPU VM without its
            # metadata server): one process is still a working run.
            log.warning("running as one process: %s cluster detected, but %s", s.detected, e)
            return
        raise ConfigError(f"jax.distributed.initialize could not start: {e}") from e
    except RuntimeError as e:
        if "must be called before" in str(e):
            raise ConfigError(
                "a multi-process run must join JAX's distributed runtime before JAX uses any "
                "device in this process: call sejax.training.distributed.initialize(config) (or "
                "sejax.train_and_evaluate) before other JAX calls"
            ) from e
        raise SejaxError(
            f"could not join the multi-process run at {where} as process "
            f"{s.process_id if s.process_id is not None else '?'} of "
            f"{s.num_processes or '?'} within distributed.initialization_timeout_s="
            f"{s.timeout_s}: {e}. Check that every process was started with the same "
            "coordinator and process count, and that process 0 can be reached there."
        ) from e
    log.info("process %d of %d", jax.process_index(), jax.process_count())


# ------------------------------------------------------------------------------------------
# Who does what.


def process_index() -> int:
    import jax

    return jax.process_index()


def process_count() -> int:
    import jax

    return jax.process_count()


def is_main_process() -> bool:
    """Process 0 writes the run's files (metrics, reports, summary); the others compute the
    same numbers and write nothing, so a shared workdir holds one copy of each."""
    return process_index() == 0


def _all_agree(ok: bool) -> bool:
    """Process 0's ``ok``, seen by every process (a collective: all must call it)."""
    from jax.experimental import multihost_utils

    return bool(multihost_utils.broadcast_one_to_all(np.int32(ok)))


def main_process_first(fn: Callable[[], T], what: str) -> T:
    """Runs ``fn`` on process 0, then, once it succeeded, on the others.

    For work that writes to shared storage and is reused when already done (preparing shards):
    the others wait, then find the result. If process 0 fails, the others raise too instead
    of waiting for it forever.
    """
    if process_count() == 1:
        return fn()
    if is_main_process():
        try:
            result = fn()
        except BaseException:
            _all_agree(False)
            raise
        _all_agree(True)
        return result
    if not _all_agree(True):
        raise SejaxError(f"process 0 failed to {what}; its log says why")
    return fn()


def allgather(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every process's host arrays, concatenated along axis 0 in process order.

    That is the order of the rows of a global batch (``parallel`` lays processes out one after
    another along the mesh), so gathered labels line up with gathered predictions.
    """
    if process_count() == 1:
        return {k: np.asarray(v) for k, v in batch.items()}
    from jax.experimental import multihost_utils

    return {
        k: np.asarray(multihost_utils.process_allgather(np.asarray(v), tiled=True))
        for k, v in batch.items()
    }
