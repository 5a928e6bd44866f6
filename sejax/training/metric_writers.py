"""Where training metrics go: ``<workdir>/metrics.jsonl`` and TensorBoard, through CLU's writers.

JSON lines are the machine-readable record (one object per logged step, appended, so a
resumed run continues the same file); TensorBoard is for looking at curves.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from clu import metric_writers


class JsonlWriter(metric_writers.MetricWriter):
    """Appends ``{"step": s, "time": t, **scalars}`` lines to a file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", buffering=1)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({k: float(np.asarray(v)) for k, v in scalars.items()})
        self._file.write(json.dumps(record) + "\n")

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_summaries(self, step, values, metadata=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def create_writer(
    workdir: str | Path, *, tensorboard: bool = True, enabled: bool = True
) -> metric_writers.MetricWriter:
    """metrics.jsonl, plus TensorBoard event files under ``<workdir>/tensorboard``.

    ``enabled=False`` gives a writer that drops everything: in a multi-process run only
    process 0 writes, so the shared workdir holds one record of the run.
    """
    if not enabled:
        return metric_writers.MultiWriter([])
    writers: list[metric_writers.MetricWriter] = [JsonlWriter(Path(workdir) / "metrics.jsonl")]
    if tensorboard:
        writers.append(metric_writers.SummaryWriter(str(Path(workdir) / "tensorboard")))
    return metric_writers.MultiWriter(writers)
