"""What an executor may call: the `TrialSource` a stage's coordinator is to it, and nothing else.

Executors (inline.py, pool.py) import this module and no part of search/: the coordinator
(search/coordinator.py) is handed in and answers each "what now?" with one value (`Job`s, `Wait`
or `Stop`). tests/test_architecture.py checks that an executor touches no other attribute of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hpsearch.search.jobs import Answer, Job, Stop, Wait

if TYPE_CHECKING:
    from hpsearch.limits import LimitOverrides, TrialLimits
    from hpsearch.space import Space
    from hpsearch.workloads.api import TrialOutcome
    from hpsearch.workloads.spec import Workload

__all__ = ["Answer", "Executor", "Job", "Stop", "TrialSource", "Wait"]


@runtime_checkable
class TrialSource(Protocol):
    """One stage's trials, as an executor sees them."""

    @property
    def workload(self) -> Workload:
        """What to load in the trial's process."""

    @property
    def space(self) -> Space:
        """The stage's search space (its midpoint is where a population size is measured)."""

    @property
    def limits(self) -> TrialLimits:
        """The stage's stall rule and log bound: the study file's, with the executor's overrides applied
        (every trial's record carries its log bound already)."""

    @property
    def metric(self) -> str:
        """The metric a trial must return."""

    @property
    def left(self) -> int:
        """Trials still to start for the stage's target: an executor starts no more workers than that."""

    @property
    def queueable(self) -> bool:
        """Whether a trial may be drawn before the running ones end (the sampler learns nothing from them)."""

    @property
    def answers_reports(self) -> bool:
        """Whether a report's answer needs the source (a pruner reads it); if not, a trial's process applies
        the divergence rule itself and goes on without waiting."""

    def next(self, k: int = 1) -> Answer:
        """Up to `k` trials to run now, or Wait (ask again in its seconds), or Stop."""

    def report(
        self,
        job: Job,
        epoch: int,
        metrics: dict[str, float],
        seconds: float | None = None,
        iterations: int | None = None,
    ) -> str | None:
        """One epoch's metrics of a running trial: the reason to stop it, or None."""

    def report_many(
        self, reports: list[tuple[Job, int, dict[str, float], float | None, int | None]]
    ) -> list[str | None]:
        """`report` for each member of a population at one epoch, in one write; the reasons in order."""

    def finish(self, job: Job, outcome: TrialOutcome) -> None:
        """How a trial ended (a crash, a timeout and a dead worker are outcomes too)."""

    def finish_many(self, ended: list[tuple[Job, TrialOutcome]]) -> None:
        """`finish` for several trials (a population's members), in one write."""


class Executor(Protocol):
    """What runs a stage's trials (inline.py, pool.py): handed a TrialSource, it runs trials until Stop."""

    notices: list[str]  # what it decided and the user should hear (the K it measured, workers capped...)

    @property
    def overrides(self) -> LimitOverrides:
        """The stall rule's and log bound's settings given for this run, over each study file's."""

    def run(self, source: TrialSource) -> None:
        """Run the source's trials until it says Stop."""
