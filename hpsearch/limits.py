"""What a trial may cost before hpsearch steps in: the stall rule and the bound on its log. Pure rules.

Stalls. A trial is *silent* since its last report (or since it started, before its first). It is
stalled once silent for longer than `stall_limit`: `stall_factor` times its stage's median epoch
(the gaps between consecutive reports, measured by the worker pool in this run), never less than
`stall_floor` seconds. A stage whose trials never report per epoch has no gaps: the median duration
of its completed trials stands in for the epoch. With neither (no trial of the stage reported or
completed yet in this run) there is no basis and nothing is called stalled, however long: a first
epoch may rightly take an hour (a compile, a download, a big model), and --trial-timeout bounds that
case. A stalled trial is ended like a timed-out one (its worker's process group too) and recorded
FAIL `stalled: no report for 61 s (limit 60 s: ...)`. stall_factor = 0 turns the rule off;
stall_floor = 0 leaves no floor. Only worker processes can be watched: with --workers 0 the trial
runs in the coordinator itself, and nothing is called stalled.

Logs. A trial's log keeps at most `log_limit` bytes: the first half and the last half of what it
printed, with one line between them saying how many bytes were left out (workloads/logbound.py).
0 = unbounded.

Attempts. A trial stopped by something other than its parameters (preempted, interrupted, its worker
killed or lost; past the trial timeout only with resume_timeouts) is run again with the same params,
seed and checkpoint folder, and continues from its last checkpoint: at most `attempts` runs in all.

Defaults are TrialLimits'; the study file's top-level keys (stall_factor, stall_floor, log_limit, ...)
replace them, and the command line's flags (LimitOverrides, handed to the executor) replace those
for one run (`with_overrides`, applied by the executor: dispatch/).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hpsearch.errors import HpsearchError, SpecError

STALL_FACTOR = 10.0  # epochs vary by 2-3x (eval passes, checkpoints); silent for 10 of them is a hang, not a slow epoch
STALL_FLOOR_S = 60.0  # never sooner: a first epoch's compile or data load, a slow evaluation pass
LOG_LIMIT = 10_000_000  # bytes kept per trial log: readable in any editor; 1,000 trials stay under 10 GB
TIMEOUT = "timeout"  # the reason of a trial ended past the trial timeout (resumed only with resume_timeouts)
ATTEMPTS = 3  # runs of one trial at most: its first and two resumed after preemption, a lost worker, Ctrl-C
KEYS = ("stall_factor", "stall_floor", "log_limit", "attempts", "resume_timeouts")  # the study file's top-level keys
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*")


@dataclass(frozen=True)
class TrialLimits:
    """The stall rule's settings and the log bound of a study's trials (see the module docstring)."""

    stall_factor: float = STALL_FACTOR  # 0: stall detection off
    stall_floor: float = STALL_FLOOR_S  # seconds; 0: no floor
    log_limit: int = LOG_LIMIT  # bytes; 0: unbounded
    attempts: int = ATTEMPTS  # runs of one trial at most (1: an interrupted trial is never resumed)
    resume_timeouts: bool = False  # a trial past the trial timeout is resumed too (else it fails for good)

    def with_overrides(self, given: LimitOverrides) -> TrialLimits:
        """These limits (the study file's) with the values `given` for this run (the command line's) in their place."""
        values = {k: v for k, v in asdict(given).items() if v is not None}
        if isinstance(values.get("log_limit"), str):
            values["log_limit"] = parse_size(values["log_limit"], "$log_limit")
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrialLimits:
        """As stored (a stage stored before these settings existed: the defaults)."""
        return cls(**{k: v for k, v in (d or {}).items() if k in KEYS})


@dataclass(frozen=True)
class LimitOverrides:
    """TrialLimits' settings given for one run (an executor's: the command line's flags); None = not given."""

    stall_factor: float | None = None
    stall_floor: float | None = None
    log_limit: int | str | None = None  # bytes, or a size such as "10MB"
    attempts: int | None = None

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 1:
            raise HpsearchError(f"$attempts must be 1 or more, got {self.attempts}")
        for key in ("stall_factor", "stall_floor"):
            value = getattr(self, key)
            if value is not None and value < 0:
                raise HpsearchError(f"${key} must be 0 or more, got {value}")
        if self.log_limit is not None:
            parse_size(self.log_limit, "$log_limit")  # a bad size fails here, before any trial runs


def parse_limits(data: dict[str, Any], file: str | Path) -> TrialLimits:
    """The study file's stall_factor, stall_floor, log_limit, attempts and resume_timeouts (absent: the
    defaults). Raises SpecError."""
    values: dict[str, Any] = {}
    for key in ("stall_factor", "stall_floor"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                what = "a number of seconds" if key == "stall_floor" else "a number (a multiple of the median epoch)"
                raise SpecError(file, key, f"must be {what}, 0 or more (0 turns it off), got {value!r}")
            values[key] = float(value)
    if "log_limit" in data:
        try:
            values["log_limit"] = parse_size(data["log_limit"], "log_limit")
        except HpsearchError:
            raise SpecError(
                file, "log_limit", f'must be bytes or a size such as "10MB" (0: unbounded), got {data["log_limit"]!r}'
            ) from None
    if "attempts" in data:
        value = data["attempts"]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(file, "attempts", f"must be a whole number, 1 or more (1: never resume), got {value!r}")
        values["attempts"] = value
    if "resume_timeouts" in data:
        if not isinstance(data["resume_timeouts"], bool):
            raise SpecError(file, "resume_timeouts", f"must be true or false, got {data['resume_timeouts']!r}")
        values["resume_timeouts"] = data["resume_timeouts"]
    return TrialLimits(**values)


def parse_size(value: Any, setting: str) -> int:
    """Bytes in 10000000, "10MB", "512 KiB", "1.5GB" or "0" (KB, MB, GB: powers of 1000; KiB, MiB, GiB:
    of 1024). Raises HpsearchError naming `setting` for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    found = SIZE.fullmatch(value.lower()) if isinstance(value, str) else None
    if not found or found.group(2) not in UNITS:
        raise HpsearchError(f"{setting} {value!r}: use bytes or a size such as 10MB, 512KiB, 1GB (0: unbounded)")
    return int(float(found.group(1)) * UNITS[found.group(2)])


@dataclass(frozen=True)
class StallLimit:
    """How long a trial of the stage may stay silent, and why that long (for the reason it fails with)."""

    seconds: float
    why: str


def stall_limit(
    epoch_gaps: Sequence[float], durations: Sequence[float], factor: float, floor: float
) -> StallLimit | None:
    """The stall rule: `factor` x the median of `epoch_gaps` (seconds between a trial's reports, its
    start counting as one), or with none x the median of `durations` (completed trials'), never under
    `floor`. None when the rule is off (factor 0) or there is no basis yet: nothing is stalled."""
    if factor <= 0:
        return None
    if epoch_gaps:
        basis, what = statistics.median(epoch_gaps), "epoch"
    elif durations:
        basis, what = statistics.median(durations), "trial"
    else:
        return None
    scaled = f"{factor:g} x the stage's median {what} of {seconds(basis)}"
    if factor * basis >= floor:
        return StallLimit(factor * basis, scaled)
    return StallLimit(floor, f"the floor; {scaled} is less")


def stall_reason(silent: float, limit: StallLimit) -> str:
    """The reason a stalled trial fails with: 'stalled: no report for 61 s (limit 60 s: ...)'."""
    return f"stalled: no report for {seconds(silent)} (limit {seconds(limit.seconds)}: {limit.why})"


def seconds(value: float) -> str:
    """A duration as the reasons write it: '61 s', '4.2 s', '0.31 s'."""
    if value >= 10:
        return f"{value:.0f} s"
    return f"{value:.1f} s" if value >= 1 else f"{value:.2g} s"
