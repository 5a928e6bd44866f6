"""Which audio files may become training examples, and the report of those that may not.

`sejax prepare` screens every file it finds before computing its features. A problem file is
never dropped silently: it is rejected with a one-word ``problem`` and a reason, listed in
``rejected.tsv`` beside the shards and counted in ``metadata.json`` (``report``), so that
prepared + rejected = found. With ``data.strict`` the first problem file stops the run.

Accepted as they are, converted on load: any sample rate (resampled), any number of channels
(averaged to mono), PCM or float samples. Rejected: the `PROBLEMS` below. Digital silence is
rejected rather than kept: a clip with no signal carries no emotion, and its features would
be the constant floor of the dB scale whatever its label says.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sejax.data import audio
from sejax.data.audio import BadAudio
from sejax.errors import ConfigError

PROBLEMS = {
    "bad_name": "the name does not follow the corpus's convention, or repeats a recording",
    "left_out": "its label is left out by data.label_map (not a fault; listed for the count)",
    "unreadable": "missing or cannot be read",
    "empty": "0 bytes, or a header with no samples",
    "not_audio": "no known audio header (text, an image, random bytes)",
    "corrupt": "an audio header, but the data does not decode",
    "truncated": "the header declares more audio data than the file holds",
    "non_finite": "NaN or Inf samples",
    "silent": "digital silence: no sample reaches one 16-bit step (1/32768)",
    "too_short": "shorter than data.min_duration_s",
    "too_long": "longer than data.max_duration_s",
}
# Faults of the data (strict mode stops at them); a label left out by the config is not one.
FAULTS = tuple(p for p in PROBLEMS if p != "left_out")
SILENCE_PEAK = 1 / 32768
REPORT_FILE = "rejected.tsv"


@dataclasses.dataclass(frozen=True)
class Limits:
    """Clip durations accepted, in seconds at any sample rate (``max_s`` 0: no limit)."""

    min_s: float = 0.1
    max_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.min_s >= 0:
            raise ConfigError(f"data.min_duration_s={self.min_s!r} must be >= 0")
        if not (self.max_s == 0 or self.max_s > self.min_s):
            raise ConfigError(
                f"data.max_duration_s={self.max_s!r} must be 0 (no limit) or more than "
                f"data.min_duration_s={self.min_s!r}"
            )

    @classmethod
    def from_config(cls, data_cfg: Any) -> Limits:
        return cls(float(data_cfg.min_duration_s), float(data_cfg.max_duration_s))

    def to_json(self) -> dict[str, float]:
        return {"min_duration_s": self.min_s, "max_duration_s": self.max_s}


@dataclasses.dataclass(frozen=True)
class Rejected:
    """One file left out of the shards: where, which `PROBLEMS` key, and the details."""

    source: str
    problem: str
    reason: str
    sha256: str = ""  # of the file's bytes when it could be read: reuse notices a fix

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def screen(data: bytes, source: str, sample_rate: int, limits: Limits) -> audio.Decoded:
    """Decodes one file's bytes, or raises `BadAudio` naming the file and its problem.

    The duration limit is checked from the header first, so an hours-long file is refused
    without being decoded into memory.
    """
    truncated = audio.wav_truncation(data)
    if truncated:
        raise BadAudio(f"{source}: {truncated}", "truncated")

    def check_declared(declared: float) -> None:
        if limits.max_s and declared > limits.max_s:
            raise _too_long(source, declared, limits)

    decoded = audio.decode(data, sample_rate, name=source, on_header=check_declared)
    seconds = len(decoded.wave) / sample_rate
    if seconds < limits.min_s:
        raise BadAudio(
            f"{source}: too short, {seconds:.3f} s < data.min_duration_s={limits.min_s}",
            "too_short",
        )
    if limits.max_s and seconds > limits.max_s:
        raise _too_long(source, seconds, limits)
    peak = float(np.max(np.abs(decoded.wave)))
    if peak < SILENCE_PEAK:
        raise BadAudio(f"{source}: silent, peak amplitude {peak:.2g} < 1/32768", "silent")
    return decoded


def _too_long(source: str, seconds: float, limits: Limits) -> BadAudio:
    return BadAudio(
        f"{source}: too long, {seconds:.1f} s > data.max_duration_s={limits.max_s} "
        "(0 lifts the limit)",
        "too_long",
    )


def summarize(found: int, prepared: int, rejected: Sequence[Rejected]) -> dict[str, Any]:
    """The counts ``metadata.json`` keeps; ``prepared + rejected == found`` always."""
    if prepared + len(rejected) != found:
        raise AssertionError(f"{prepared} prepared + {len(rejected)} rejected != {found} found")
    by_problem = collections.Counter(r.problem for r in rejected)
    return {
        "found": found,
        "prepared": prepared,
        "rejected": len(rejected),
        "by_problem": {p: by_problem[p] for p in PROBLEMS if by_problem[p]},
        "report_file": REPORT_FILE,
    }


def write_report(path: str | Path, rejected: Sequence[Rejected]) -> None:
    """``rejected.tsv``: a header, then path, problem and reason of each rejected file."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["path", "problem", "reason"])
    for r in rejected:
        writer.writerow([r.source, r.problem, " ".join(r.reason.split())])
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")


def format_summary(report: dict[str, Any], rejected: Sequence[Rejected], where: Path,
                   max_listed: int = 20) -> str:  # fmt: skip
    """A few lines for the terminal: the counts, then the rejected files (the first ones)."""
    by_problem = ", ".join(f"{n} {p}" for p, n in report["by_problem"].items())
    lines = [f"Prepared {report['prepared']} of {report['found']} files found; rejected "
             f"{report['rejected']}" + (f" ({by_problem})" if by_problem else "")]  # fmt: skip
    lines += [f"  {r.problem}: {r.reason}" for r in rejected[:max_listed]]
    if len(rejected) > max_listed:
        lines.append(f"  ... and {len(rejected) - max_listed} more")
    if rejected:
        lines.append(f"Every rejected file and why: {where / REPORT_FILE}")
    return "\n".join(lines)
