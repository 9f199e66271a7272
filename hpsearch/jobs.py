"""What the coordinator hands an executor (`Job`: one trial) and what progress displays hear (`TrialEvent`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna
from optuna.trial import FrozenTrial

from hpsearch.divergence import DivergenceCheck
from hpsearch.workloads.api import RecordFields, TrialOutcome, TrialRecord


@dataclass
class Job(RecordFields):
    """One trial handed to an executor: its Optuna trial (kept here) and its record (sent to the worker)."""

    trial: optuna.Trial
    record: TrialRecord
    check: DivergenceCheck = field(default_factory=DivergenceCheck)
    started: float = field(default_factory=time.perf_counter)
    reports: int = 0  # epochs it reported so far


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
