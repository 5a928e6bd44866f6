"""Graceful stops: SIGTERM and SIGINT become a flag the train loop checks between steps.

A preempted job (a scheduler's SIGTERM, or Ctrl-C) finishes the step it is in, writes a
checkpoint, waits until it is complete, and exits with the shell's convention for a signal,
128 + signal number (143 for SIGTERM, 130 for SIGINT). Re-running the same command resumes
from that step with the same data order and dropout keys. A second Ctrl-C stops at once
(the latest complete checkpoint is still the one resumed; Orbax never exposes a partial one).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

from sejax.errors import SejaxError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(SejaxError):
    """Training stopped on a signal after checkpointing ``step``."""

    def __init__(self, signum: int, step: int, workdir: Path):
        self.signum, self.step, self.workdir = signum, step, workdir
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}; checkpoint saved in {workdir / 'checkpoints'}. "
            "Run the same command again to resume."
        )

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager: while active, SIGTERM/SIGINT set ``signum`` instead of killing us.

    Signal handlers can only be installed from the main thread; elsewhere (a library user's
    worker thread) this is a no-op and signals keep their usual effect.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.signum = signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()
