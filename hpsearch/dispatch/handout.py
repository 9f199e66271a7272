"""What each idle worker of the pool trains next, and the trial queued behind a short one.

Short trials, one by one, get their successor queued: once a worker's last trial completed in
under QUEUE_BELOW_S, its next trial is drawn and sent while the current one trains, so the worker
goes from one to the next with no round trip to the coordinator. Not for TPE, which would draw it
one result short (`TrialSource.queueable`). A queued trial never waits behind a running one while a
worker is free: a worker that falls idle takes it back (the holder is told to drop it) when the
holder's trial has run past QUEUE_BELOW_S, or when the stage has no new trial for it.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque

from hpsearch.dispatch.handle import WorkerHandle
from hpsearch.dispatch.plan import AUTO
from hpsearch.dispatch.source import Job, Stop, TrialSource, Wait

QUEUE_BELOW_S = 1.0  # a worker whose last trial completed in less gets its next one queued behind the current


class Handout:
    """One run's hand-out: trials drawn but started nowhere (`pending`), and the source's last answer."""

    def __init__(self) -> None:
        self.pending: deque[Job] = deque()  # drawn, started nowhere: queued on a worker that died, or taken back
        self.answer: Wait | Stop | None = None  # the source's last answer when it gave no trial

    @property
    def stopped(self) -> bool:
        """The source said Stop the last time it was asked (a Wait: ask again)."""
        return isinstance(self.answer, Stop)

    def run(
        self,
        source: TrialSource,
        workers: list[WorkerHandle],
        population: int | str,
        timeout: float | None,
    ) -> None:
        """Give each idle worker its trials (K of them: `population`), then queue the next trial behind each
        short one; their workers' deadlines are `timeout`."""
        for w in workers:
            if w.idle:
                # While one worker measures K (auto), the others train trials one by one meanwhile.
                k = 1 if population == AUTO else self._share(source, workers, int(population))
                if not (jobs := self._next_for(source, workers, k)):
                    return
                with contextlib.suppress(OSError):  # died while idle: its death is read from the connection next
                    w.give(jobs, timeout, together=population != 1, replies=source.answers_reports)
        for w in workers:  # then the next trial behind each short one: asked once per trial it starts
            if w.jobs and w.queued is None and w.unasked and self._queues(source, w, population):
                w.unasked = False
                if not (jobs := self._ask(source, 1)):
                    continue
                with contextlib.suppress(OSError):  # died: the pool hands the queued trial to its successor
                    w.queue(jobs[0], replies=source.answers_reports)

    def _next_for(self, source: TrialSource, workers: list[WorkerHandle], k: int) -> list[Job]:
        """What an idle worker trains next: a trial drawn earlier that no worker started (its worker died, or
        it was taken back), a trial queued behind one that has run past QUEUE_BELOW_S (the queue's premise,
        a short trial, no longer holds), a new trial, or any trial still queued: a queued trial never waits
        behind a running one while a worker is free."""
        if self.pending:
            return [self.pending.popleft()]
        now = time.perf_counter()
        holders = [w for w in workers if w.queued is not None and w.jobs]  # no jobs: starting it right now
        overdue = [
            w for w in holders if any(j is not None and now - j.started > QUEUE_BELOW_S for j in w.jobs.values())
        ]
        if overdue:
            return [overdue[0].recall()]
        if jobs := self._ask(source, k):
            return jobs
        return [holders[0].recall()] if holders else []

    def _ask(self, source: TrialSource, k: int) -> list[Job]:
        """Up to `k` new trials; none when the source says Wait or Stop (kept: the loop ends on a Stop)."""
        answer = source.next(k)
        self.answer = None if isinstance(answer, list) else answer
        return answer if isinstance(answer, list) else []

    def _queues(self, source: TrialSource, worker: WorkerHandle, population: int | str) -> bool:
        """Whether `worker` gets its next trial now, behind the one it trains: one by one, its last trial
        completed in under QUEUE_BELOW_S, and a sampler that learns nothing from results (random, grid:
        TPE would draw it one result short)."""
        short = worker.last_s is not None and worker.last_s < QUEUE_BELOW_S
        return short and population == 1 and source.queueable

    def _share(self, source: TrialSource, workers: list[WorkerHandle], k: int) -> int:
        """K, or less near the stage's end: the trials left to start, shared by the workers without
        trials (still starting ones too): 30 trials left and K = 32 would give one worker all of them."""
        idle = sum(1 for w in workers if not w.jobs)
        left = source.left
        return max(1, min(k, -(-left // max(idle, 1))))
