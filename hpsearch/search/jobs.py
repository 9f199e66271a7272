"""What the coordinator answers an executor's "what now?" with (`Job`s to run, `Wait` or `Stop`), and
what progress displays hear (`TrialEvent`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hpsearch.divergence import DivergenceCheck
from hpsearch.workloads.api import RecordFields, TrialOutcome, TrialRecord

if TYPE_CHECKING:  # annotations only: the CLI imports dispatch/ (and this) before Optuna, which can wait
    import optuna
    from optuna.trial import FrozenTrial

# A report no pruner reads is held for up to this long and then written with the ones after it (at the
# latest with the trial's outcome, in the same journal append): a short trial's reports cost no write of
# their own, and a long one's still reach the storage (other processes' views) within a second or so.
REPORT_HOLD_S = 1.0


@dataclass
class Job(RecordFields):
    """One trial handed to an executor: its Optuna trial (kept here) and its record (sent to the worker)."""

    trial: optuna.Trial
    record: TrialRecord
    check: DivergenceCheck = field(default_factory=DivergenceCheck)
    started: float = field(default_factory=time.perf_counter)
    reports: int = 0  # epochs it reported so far
    held: list[tuple[float, int]] = field(default_factory=list)  # (value, epoch) reports not written yet
    written: float = field(default_factory=time.perf_counter)  # when its reports last reached the storage
    # A resumed run: its trial's earlier runs' curves, the epoch of each of their values, and the epochs
    # already in the storage (copied to this run when it started: Optuna keeps one value per epoch).
    before: dict[str, list[float]] = field(default_factory=dict)
    before_epochs: list[int] = field(default_factory=list)
    stored: set[int] = field(default_factory=set)
    first_epoch: int | None = None  # the epoch of its first report in this run
    heard: dict[str, list[float]] = field(default_factory=dict)  # every metric it reported, per report
    heard_epochs: list[int] = field(default_factory=list)  # ... and the epoch of each

    def hear(self, epoch: int, metrics: dict[str, float]) -> None:
        """One report, kept: a run whose worker dies leaves its curves here (the coordinator's copy)."""
        if self.first_epoch is None:
            self.first_epoch = epoch
        self.heard_epochs.append(epoch)
        for name, value in metrics.items():
            self.heard.setdefault(name, []).append(value)

    def report_value(self, value: float, epoch: int, hold: bool) -> None:
        """The study's metric at `epoch` to the storage (Optuna's intermediate value): now, or, when
        `hold` (no pruner reads it), with the ones after it once REPORT_HOLD_S passed since the last
        write, or by `write_reports` when the trial ends."""
        if epoch in self.stored:
            return  # reported by an earlier run (the last checkpoint was older): that value stays stored
        self.held.append((value, epoch))
        if not hold or time.perf_counter() - self.written >= REPORT_HOLD_S:
            self.write_reports()

    def write_reports(self) -> None:
        """Write the held reports, in order (before the trial's outcome: Optuna refuses them after)."""
        held, self.held = self.held, []
        for value, epoch in held:
            self.trial.report(value, epoch)
        self.written = time.perf_counter()


@dataclass(frozen=True)
class Wait:
    """Nothing to start now, but the stage is not over: trials other coordinators run may still fail and
    need replacing (or a failed grid point is about to be queued again). Ask again in `seconds`."""

    why: str
    seconds: float = 1.0


@dataclass(frozen=True)
class Stop:
    """Start no more trials: the stage has its trials, its budget or time is used up, or it is failing."""

    why: str


Answer = list[Job] | Wait | Stop  # the coordinator's one answer to "what now?": a non-empty list of jobs to run


@dataclass
class TrialEvent:
    """What progress displays hear about: a trial started, reported an epoch, or finished."""

    kind: str  # "start" | "report" | "finish"
    job: Job
    epoch: int | None = None
    metrics: dict[str, float] | None = None
    outcome: TrialOutcome | None = None
    done: int = 0
    target: int = 0
    failed: int = 0
    best: FrozenTrial | None = None
    running: int = 0
    epoch_seconds: float | None = None  # wall time of the reported epoch, measured in the trial's process
    iterations: int | None = None  # optimiser steps in that epoch, when the workload says


Listener = Callable[[TrialEvent], None]


def merged_curves(job: Job, curves: dict[str, list[float]]) -> tuple[dict[str, list[float]], list[int]]:
    """The trial's curves and the epoch of each value, to this run: a resumed run's after its trial's
    earlier runs' (cut where this run took over: an epoch it ran again counts once, at its new value)."""
    epochs = list(job.heard_epochs)
    if not job.before_epochs:
        return curves, epochs
    start = job.first_epoch if job.first_epoch is not None else job.before_epochs[-1] + 1
    keep = sum(1 for epoch in job.before_epochs if epoch < start)
    names = list(job.before) + [n for n in curves if n not in job.before]
    merged = {n: list(job.before.get(n, [])[:keep]) + list(curves.get(n, [])) for n in names}
    return merged, job.before_epochs[:keep] + epochs
