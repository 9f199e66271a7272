"""Re-queuing a trial whose run failed for a retryable reason (interrupted, preempted, its worker
killed or lost: trials.retryable), so that it is resumed: its next run has the same params, seed and
checkpoint folder (linked by `retry_of`, `attempt` and `attempt_of`), up to limits.attempts runs.

The coordinator whose move of the trial to FAIL succeeded re-queues it
(`requeue`), so it is resumed once though several coordinators saw the
run die. Those are two storage writes, and another coordinator may read the
stage between them: it then sees the point failed and not queued again, with
nothing running or waiting, and would end the stage short. On a grid (where a
point that is not queued again is never tried again) a coordinator that
finds such an *orphan* (a resumable FAIL that no trial names as its
`retry_of`) therefore waits for it (`Orphans.pending`: the stage is not
over yet); if the orphan is still there after ORPHAN_GRACE_S by its own clock
(the failing coordinator died between its two writes), it re-queues the point
itself.

Why not enqueue the retry before the FAIL: the FAIL move decides which of the
coordinators that saw a trial die re-queues it; one that enqueued first and
then lost the move would leave a duplicate point that no storage can delete.

A take-over is a rare event (a coordinator dying in the milliseconds between
its two writes); two coordinators taking over the same orphan in the same
instant would queue it twice: each reads the stage again just before it
enqueues, which leaves only that instant.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.limits import TrialLimits
from hpsearch.trials import (
    ATTEMPT_ATTR,
    FIRST_ATTEMPT_ATTR,
    MARKS,
    REASON_ATTR,
    RETRY_OF_ATTR,
    attempt,
    first_attempt,
    resumes,
    trial_params,
)

ORPHAN_GRACE_S = 10.0  # a failing coordinator that has not re-queued its point after this long died in between
log = logging.getLogger("hpsearch.search.coordinator")


def requeue(study: optuna.Study, failed: FrozenTrial | optuna.Trial, params: dict[str, Any]) -> None:
    """Queue the next run of the trial whose run `failed` failed: its `params`, linked to it (`retry_of`),
    its attempt number one more, its first attempt (its seed and checkpoint folder) the same; a warm
    start, a carried configuration, a repeat or a spread point stays marked as one (trials.MARKS)."""
    attrs = {RETRY_OF_ATTR: failed.number, ATTEMPT_ATTR: attempt(failed) + 1, FIRST_ATTEMPT_ATTR: first_attempt(failed)}
    attrs |= {mark: failed.user_attrs[mark] for mark in MARKS if mark in failed.user_attrs}
    study.enqueue_trial(params, user_attrs=attrs)


def orphans(trials: list[FrozenTrial], limits: TrialLimits) -> list[FrozenTrial]:
    """The resumable FAILs (with a point) that no trial names as its `retry_of`: their re-queue is pending."""
    replaced = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    return [
        t
        for t in trials
        if t.state == TrialState.FAIL
        and resumes(t.user_attrs.get(REASON_ATTR), attempt(t), limits)
        and t.number not in replaced
        and trial_params(t)
    ]


class Orphans:
    """One coordinator's watch over a grid stage's orphans: when it first saw each, and the take-over."""

    def __init__(
        self, study: optuna.Study, stage: str, limits: TrialLimits, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.study, self.stage, self.limits, self.clock = study, stage, limits, clock
        self.seen: dict[int, float] = {}  # orphan number -> when this coordinator first saw it
        self.took_over = 0  # points this coordinator re-queued for a failing coordinator that died

    def pending(self) -> int:
        """How many orphans still wait for their failing coordinator's re-queue (read from the storage).

        One seen for ORPHAN_GRACE_S or longer is re-queued here, after a second read shows it still
        orphaned; it then counts as queued (0 pending for it): the caller pops it like any queued point.
        """
        now = self.clock()
        found = orphans(self.study.get_trials(deepcopy=False), self.limits)
        self.seen = {t.number: self.seen.get(t.number, now) for t in found}
        overdue = [n for n, first in self.seen.items() if now - first >= ORPHAN_GRACE_S]
        if overdue:
            still = {t.number: t for t in orphans(self.study.get_trials(deepcopy=False), self.limits)}
            for number in overdue:
                if number in still:
                    log.warning(
                        "stage %s: trial %d failed and its point was never queued again; queuing it here",
                        self.stage,
                        number,
                    )
                    requeue(self.study, still[number], trial_params(still[number]))
                    self.took_over += 1
                del self.seen[number]
        return len(self.seen)
