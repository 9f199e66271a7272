"""A stage's accounts: how many trials finished, failed and run, the trial-epochs spent, and the one
rule for whether another trial may start (`room_for`), which `stages.stage_complete` uses too.

The counts are the stage's across every coordinator (read from the storage by the coordinator's
dealer); the failures, reasons and streak are this coordinator's own.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optuna.trial import FrozenTrial, TrialState

from hpsearch.limits import TrialLimits
from hpsearch.strategy import Strategy
from hpsearch.trials import counts, spent_epochs
from hpsearch.workloads.api import TrialStatus

if TYPE_CHECKING:
    from hpsearch.store.storage import StageInfo

FAIL_FAST = 5  # this many failures in a row with no success: the workload is broken, stop the stage


@dataclass
class Ledger:
    """One stage's counts and limits, as this coordinator knows them."""

    target: int  # finished trials the stage wants
    epochs: int  # a trial's length: what a running trial is charged
    budget: int | None  # trial-epochs, over the stage
    max_failures: int
    strategy: Strategy
    deadline: float | None = None  # time.monotonic(): no trial starts after it
    limits: TrialLimits = field(default_factory=TrialLimits)  # attempts: which failed runs are resumed
    done: int = 0  # finished trials that count toward the target (trials.counts), every coordinator's
    failed_total: int = 0
    running_total: int = 0  # RUNNING trials, every coordinator's
    spent: int = 0  # trial-epochs of the finished trials (trials.spent_epochs)
    ran: int = 0  # trials this coordinator ended
    completed_now: int = 0  # ... of which completed
    fail_streak: int = 0  # ... failed in a row (not retryable)
    failures: list[str] = field(default_factory=list)  # 'trial N: reason', this coordinator's
    reasons: list[str] = field(default_factory=list)
    ended_by: str | None = None  # "budget" | "timeout": why no more trials start

    @classmethod
    def of(
        cls,
        info: StageInfo,
        trials: Sequence[FrozenTrial],
        deadline: float | None = None,
        limits: TrialLimits | None = None,
    ) -> Ledger:
        """The ledger of stage `info` whose trials (every coordinator's) are `trials`; `limits`: the study
        file's trial limits with the run's overrides (default: the study file's)."""
        target = info.settings.target(info.space)
        ledger = cls(
            target,
            info.settings.epochs,
            info.settings.budget,
            info.settings.max_failures or target,
            info.settings.strategy,
            deadline,
            limits or info.spec.limits,
        )
        ledger.read(trials)
        return ledger

    # -- the rules

    def room_for(self, n: int) -> bool:
        """Whether `n` more trials fit the budget, running ones counted at full length (they may run it all)."""
        return self.budget is None or self.spent + (self.running_total + n) * self.epochs <= self.budget

    @property
    def left(self) -> int:
        """Trials still to start for the target (may be negative while others finish more than needed)."""
        return self.target - self.done - self.running_total

    @property
    def complete(self) -> bool:
        """The stage has its trials, or no room for one more: nothing left to run."""
        return self.done >= self.target or not self.room_for(1)

    def failing(self) -> bool:
        """The broken-workload rule (FAIL_FAST failures in a row, none completed) or the failure cap."""
        return (self.fail_streak >= FAIL_FAST and self.completed_now == 0) or len(self.failures) >= self.max_failures

    def ended(self) -> bool:
        """The deadline passed, or one more trial could take the stage past its budget: start no more
        (those running finish; the stage stays resumable). Says why in `ended_by`."""
        if not self.room_for(1):
            self.ended_by = "budget"
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            self.ended_by = "timeout"
        return self.ended_by is not None

    @property
    def short(self) -> bool:
        """The stage still wants finished trials and may start them (not failing, not ended)."""
        return not self.failing() and not self.ended_by and self.done < self.target

    # -- what happened

    def read(self, trials: Sequence[FrozenTrial]) -> None:
        """Every coordinator's counts, from the stage's trials."""
        self.done, self.failed_total = counts(trials, self.strategy, self.limits)
        self.spent = spent_epochs([t for t in trials if t.state != TrialState.RUNNING], self.epochs)
        self.running_total = sum(t.state == TrialState.RUNNING for t in trials)

    def started(self) -> None:
        self.running_total += 1

    def ended_one(self, epochs_run: int) -> None:
        """A trial of this coordinator's ended, having run `epochs_run` epochs (charged to the budget)."""
        self.running_total = max(self.running_total - 1, 0)
        self.ran += 1
        self.spent += epochs_run

    def counted(self, number: int, status: TrialStatus, reason: str | None, resumed: bool = False) -> None:
        """Trial `number`'s recorded outcome, in the counts (a failed run that is `resumed`: no failure)."""
        if status == TrialStatus.COMPLETE:
            self.done += 1
            self.completed_now += 1
            self.fail_streak = 0
        elif status == TrialStatus.PRUNED:
            self.done += 1
            self.fail_streak = 0
        else:
            self.failed_total += 1
            if resumed:
                return
            self.failed(number, reason or "failed")
            self.reasons.append(reason or "failed")
            self.fail_streak += 1
            if self.strategy == Strategy.grid:
                self.done += 1  # a grid point that fails for a reason of its own would fail again

    def failed(self, number: int, reason: str) -> None:
        self.failures.append(f"trial {number}: {reason}")
