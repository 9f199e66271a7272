"""Overdue trials (past the trial timeout) and stalled ones: the pool's measure of its stage's epochs,
and which worker's trials went silent past the stall rule (limits.stall_limit: the rule, its defaults
and what it does without a basis).

The pool tells `StallWatch` each report it hears (`heard`: the gap since the worker's last report, or
since its trials started, is one epoch) and each completed trial's duration (`completed`); `reason`
says why a worker's trials count as stalled, or None. Measures are this run's: a stage's, from its
start (a search's stages each start anew).
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING

from hpsearch.limits import TIMEOUT, StallLimit, TrialLimits, stall_limit, stall_reason

if TYPE_CHECKING:
    from hpsearch.dispatch.handle import WorkerHandle

WINDOW = 256  # the latest epochs (and trials) the medians are taken over: a stage's pace, kept current
TIMEOUT_REASON = TIMEOUT  # a trial that ran past the trial timeout
RECOMPUTE_S = 1.0  # the limit is worked out again at most this often (a median per message would cost)


class StallWatch:
    """The stage's epoch gaps and trial durations, and the stall limit they give."""

    def __init__(self, limits: TrialLimits) -> None:
        self.limits = limits
        self.gaps: deque[float] = deque(maxlen=WINDOW)
        self.durations: deque[float] = deque(maxlen=WINDOW)
        self._limit: StallLimit | None = None
        self._computed = -RECOMPUTE_S

    def heard(self, worker: WorkerHandle) -> None:
        """`worker` sent a report (a population's epoch: one message): one gap, and its silence ends."""
        now = time.monotonic()
        self.gaps.append(now - worker.heard)
        worker.heard = now

    def completed(self, seconds: float) -> None:
        self.durations.append(seconds)

    def reason(self, worker: WorkerHandle, now: float) -> str | None:
        """Why `worker`'s trials count as stalled ('stalled: no report for 61 s (limit 60 s: ...)'), or None."""
        silent = now - worker.heard
        if self.limits.stall_factor <= 0 or silent <= self.limits.stall_floor:
            return None  # the floor is the least a limit can be: no need to work it out
        if now - self._computed >= RECOMPUTE_S:
            self._limit = stall_limit(self.gaps, self.durations, self.limits.stall_factor, self.limits.stall_floor)
            self._computed = now
        if self._limit is None or silent <= self._limit.seconds:
            return None
        return stall_reason(silent, self._limit)

    def overdue(self, workers: list[WorkerHandle]) -> list[tuple[WorkerHandle, str]]:
        """The workers whose trials ran past their deadline (the trial timeout: reason `timeout`) or went
        silent past the stall rule (`stalled: ...`), with the reason; idle or K-measuring ones never."""
        now, found = time.monotonic(), []
        for w in workers:
            if not w.jobs or None in w.jobs.values():  # idle, or measuring K (it reports nothing meanwhile)
                continue
            timed_out = w.deadline is not None and now >= w.deadline
            if (reason := TIMEOUT_REASON if timed_out else self.reason(w, now)) is not None:
                found.append((w, reason))
        return found

    @staticmethod
    def wait_time(workers: list[WorkerHandle], longest: float) -> float:
        """How long the pool may wait for a message: until the nearest trial deadline, at most `longest`."""
        deadlines = [w.deadline for w in workers if w.jobs and w.deadline is not None]
        if not deadlines:
            return longest
        return min(max(min(deadlines) - time.monotonic(), 0.0), longest)
