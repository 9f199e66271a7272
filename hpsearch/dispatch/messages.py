"""Every message between the pool (pool.py, through handle.py) and a worker process (worker.py), both
directions, as small frozen dataclasses: pickled over the worker's connection, matched by type.

Pool -> worker: `Trial`, `Population`, `ChooseK`, `Reply`, `Replies`, `Stops`, `Drop`.
Worker -> pool: `Ready`, `LoadFailed`, `Chosen`, `Started`, `Report`, `Reports`, `Done`, `DoneAll`.

A `Trial` may come while the one before still trains (short trials: the pool queues the next one, so
no round trip separates them); the worker keeps it until that one is done, and says `Started` as it
starts each trial. A `Drop` takes a queued trial back before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpsearch.workloads.api import TrialOutcome, TrialRecord

# -- pool -> worker


@dataclass(frozen=True, slots=True)
class Trial:
    """One trial to run. replies: whether to wait for an answer to each report (a pruner reads them)."""

    record: TrialRecord
    replies: bool = True


@dataclass(frozen=True, slots=True)
class Population:
    """K trials to train together, through the workload's population entry point."""

    records: list[TrialRecord]
    replies: bool = True


@dataclass(frozen=True, slots=True)
class ChooseK:
    """Measure the best population size at these params (population "auto")."""

    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a `Report`: the reason to stop the trial, or None (go on)."""

    reason: str | None


@dataclass(frozen=True, slots=True)
class Replies:
    """The answers to a `Reports`, in its order."""

    reasons: list[str | None]


@dataclass(frozen=True, slots=True)
class Stops:
    """Stop these trials (trial number -> reason): to a worker that does not wait for replies."""

    reasons: dict[int, str]


@dataclass(frozen=True, slots=True)
class Drop:
    """Forget the queued trial `number`, not started: another worker runs it."""

    number: int


# -- worker -> pool


@dataclass(frozen=True, slots=True)
class Ready:
    """The workload is loaded; the worker waits for trials."""

    pid: int
    has_population: bool


@dataclass(frozen=True, slots=True)
class LoadFailed:
    """The workload cannot be imported: the error's template (the pool renders its settings)."""

    message: str


@dataclass(frozen=True, slots=True)
class Chosen:
    """The measured population size, and how it was measured ('1: 12.0/s, 2: 20.1/s, ...')."""

    k: int
    measured: str


@dataclass(frozen=True, slots=True)
class Started:
    """The worker starts trial `number` now (one it was told to drop and started already: the pool ends
    the worker, whose copy of it counts for nothing)."""

    number: int


@dataclass(frozen=True, slots=True)
class Report:
    """One epoch of a running trial."""

    number: int
    epoch: int
    metrics: dict[str, float]
    seconds: float | None = None
    iterations: int | None = None


@dataclass(frozen=True, slots=True)
class Reports:
    """A population's epoch: every member's report in one message (one reply, one storage write)."""

    reports: list[Report]


@dataclass(frozen=True, slots=True)
class Done:
    """How trial `number` ended."""

    number: int
    outcome: TrialOutcome


@dataclass(frozen=True, slots=True)
class DoneAll:
    """How a population's members ended, in one message (one storage write)."""

    ended: list[Done]


ToWorker = Trial | Population | ChooseK | Reply | Replies | Stops | Drop
FromWorker = Ready | LoadFailed | Chosen | Started | Report | Reports | Done | DoneAll
