"""The coordinator of one stage on this machine: the only part of a process that talks to the storage.

An executor (handed in: see dispatch/, which lists what it may call in dispatch/source.py) asks
`next(k)` what to do now and gets one answer: up to k `Job`s to run, `Wait` or `Stop`; it sends
each epoch's metrics to `report` (the answer is a reason to stop the trial, or None) and the
outcome to `finish`. The coordinator never picks an executor. Its parts, one job each:
the `Ledger` (counts, budget, deadline, failures: ledger.py), the `Dealer` (the next trial, and the
counts read from the storage: dealer.py) and the `Recorder` (outcomes, the best: recorder.py).

Several coordinators may run one stage at once; what keeps them consistent lives in the storage: a
coordinator starts a trial only while the stage's finished + RUNNING trials are below the target;
grid points are enqueued once and popped (the storage lets one pop win); a grid point whose trial
was interrupted is re-queued by the one coordinator whose move of it to FAIL succeeded (retry.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial

from hpsearch.limits import LimitOverrides
from hpsearch.pruner import make_pruner
from hpsearch.refine import stage_flags
from hpsearch.search.dealer import Dealer
from hpsearch.search.jobs import Answer, Job, Listener, TrialEvent
from hpsearch.search.ledger import Ledger
from hpsearch.search.liveness import LIVE_COORDINATORS, Heartbeat
from hpsearch.search.recorder import Recorder
from hpsearch.search.stage_result import StageResult
from hpsearch.store import optuna_compat as compat
from hpsearch.store.storage import StageInfo, Store
from hpsearch.strategy import make_sampler
from hpsearch.trials import HEARTBEAT_LOST, INTERRUPTED, derive_seed
from hpsearch.workloads.api import TrialOutcome, TrialStatus

Report = tuple[Job, int, dict[str, float], float | None, int | None]  # job, epoch, metrics, seconds, iterations


class Coordinator:
    """Hands out one stage's trials on this machine and records how each ended (see the module docstring).

    `overrides` (the run's stall rule and log bound, over the study file's) go into every trial's record.
    `salt` varies the sampler's seed between coordinators joining the same stage, so two machines starting
    together draw different points. No trial starts past `deadline` (time.monotonic) or one that could take
    the stage past its budget of trial-epochs. Call `close` at the end: it stops the heartbeat.
    """

    def __init__(
        self,
        store: Store,
        info: StageInfo,
        listener: Listener | None = None,
        pruner: str = "none",
        salt: int = 0,
        deadline: float | None = None,
        overrides: LimitOverrides = LimitOverrides(),
    ) -> None:
        self.info, self.listener, self.pruner = info, listener, pruner
        self.limits = info.spec.limits.with_overrides(overrides)  # the study file's, the run's overrides applied
        existing = store.trials(info)
        self.ledger = Ledger.of(info, existing, deadline, self.limits)
        # Seeded by the history too, so a resumed stage draws new points, not the first ones again.
        seed = derive_seed("sampler", info.settings.seed, info.index, len(existing), salt)
        sampler, epochs = make_sampler(info.settings.strategy, seed), info.settings.epochs
        self.study = store.study(info, sampler=sampler, pruner=make_pruner(pruner, epochs))
        self.token = uuid.uuid4().hex[:12]  # this coordinator, among others in the same process
        self.dealer = Dealer(store, info, self.study, self.ledger, self.token, self.limits)
        self.recorder = Recorder(self.study, info)
        self.running: dict[int, Job] = {}
        LIVE_COORDINATORS.add(self.token)
        running = lambda: [j.trial for j in self.running.values()]  # noqa: E731 - the heartbeat's view of them
        self.heartbeat = Heartbeat(self.study, running) if store.heartbeat else None
        self.dealer.refresh(set(self.running))

    # -- what executors call (dispatch/source.py's TrialSource)

    workload = property(lambda self: self.info.spec.workload)
    space = property(lambda self: self.info.space)
    metric = property(lambda self: self.info.spec.metric)
    left = property(lambda self: self.ledger.left, doc="trials still to start for the stage's target")
    queueable = property(lambda self: not self.info.settings.strategy.learns, doc="may a trial be drawn early")
    answers_reports = property(lambda self: self.pruner != "none", doc="does a report's answer need us (a pruner)")

    def next(self, k: int = 1) -> Answer:
        """What to do now: up to `k` trials to run (their owners and params in one write), or Wait (others'
        trials may still fail and need replacing), or Stop."""
        jobs: list[Job] = []
        with compat.batched_writes(self.study):
            while len(jobs) < k and (job := self._draw()) is not None:
                jobs.append(job)
        if jobs:
            return jobs
        return self.dealer.idle(set(self.running))

    def report(
        self,
        job: Job,
        epoch: int,
        metrics: dict[str, float],
        seconds: float | None = None,
        iterations: int | None = None,
    ) -> str | None:
        """Per-epoch metrics of a running trial: the reason to stop it (diverged, pruned), or None. Never
        pruned at its last epoch; `seconds` and `iterations` only feed the progress display."""
        self._check_heartbeat()
        job.reports += 1
        job.hear(epoch, metrics)
        self._emit("report", job, epoch=epoch, metrics=metrics, epoch_seconds=seconds, iterations=iterations)
        return self.recorder.hear(job, epoch, metrics, self.pruner)

    def report_many(self, reports: list[Report]) -> list[str | None]:
        """`report` for each of a population's members at one epoch, their reasons in order. One write
        for all, unless a pruner must read each first."""
        if self.answers_reports:
            return [self.report(*entry) for entry in reports]
        with compat.batched_writes(self.study) as late:
            reasons = [self.report(*entry) for entry in reports]
        return [HEARTBEAT_LOST if compat.trial_id(entry[0].trial) in late else r for entry, r in zip(reports, reasons)]

    def finish(self, job: Job, outcome: TrialOutcome) -> None:
        """Record how a trial ended. A crash is data: it never stops the stage by itself."""
        self.finish_many([(job, outcome)])

    def finish_many(self, ended: list[tuple[Job, TrialOutcome]]) -> None:
        """Record how trials ended (a population's members, or one), in one write; then tell the listener,
        whose best includes these outcomes."""
        with compat.batched_writes(self.study) as late:
            for job, outcome in ended:
                self._record(job, outcome)
        for job, _ in ended:
            if compat.trial_id(job.trial) in late:
                self.ledger.failed(job.number, HEARTBEAT_LOST)
            else:
                self.recorder.offer(compat.latest(job.trial))
        for job, outcome in ended:
            self._emit("finish", job, outcome=outcome)

    def interrupt(self, reason: str = INTERRUPTED) -> None:
        """Record every running trial as FAIL with `reason` (interrupted, preempted: resumed by a later run
        of the stage); completed trials stay."""
        for job in list(self.running.values()):
            seconds = time.perf_counter() - job.started
            self.finish(job, TrialOutcome(TrialStatus.FAIL, reason=reason, duration_s=seconds))

    def close(self) -> None:
        """Stop the heartbeat thread (RDB storages); trials it still owns now count as stale. Idempotent."""
        LIVE_COORDINATORS.discard(self.token)
        if self.heartbeat is not None:
            self.heartbeat.close()
            self.heartbeat = None

    # -- results (for stages.py)

    def result(self) -> StageResult:
        trials = self.study.get_trials(deepcopy=False)
        flags = stage_flags(self.info, trials)
        self.dealer.refresh(set(self.running))
        led = self.ledger
        return StageResult(
            self.info, trials, led.ran, flags, led.failures, led.done, led.target, led.reasons, led.ended_by
        )

    def best(self) -> FrozenTrial | None:
        return self.recorder.best(self.ledger.ran)

    # -- internals

    def _draw(self) -> Job | None:
        self._check_heartbeat()
        if self.ledger.failing():
            self.dealer.pending_retries = 0
            return None
        job = self.dealer.draw(set(self.running), self.heartbeat is not None)
        if job is not None:
            self.running[job.number] = job
            self._emit("start", job)
        return job

    def _record(self, job: Job, outcome: TrialOutcome) -> None:
        self.running.pop(job.number, None)
        complete = outcome.state == TrialStatus.COMPLETE
        self.ledger.ended_one(job.reports or (job.epochs if complete else 0))  # as trials.epochs_run
        try:
            self.recorder.record(job, outcome)
        except UpdateFinishedTrialError:
            # Failed as stale by another coordinator (our heartbeats stopped reaching the database): its verdict
            # stands, and it re-queued a grid point.
            self.ledger.failed(job.number, HEARTBEAT_LOST)
            return
        failed = outcome.state == TrialStatus.FAIL
        resumed = failed and self.dealer.retry(job.trial, dict(job.trial.params), outcome.reason)
        self.ledger.counted(job.number, TrialStatus(outcome.state), outcome.reason, resumed)

    def _check_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.check()

    def _emit(self, kind: str, job: Job, **data: Any) -> None:
        if self.listener is not None:
            best = self.best() if kind == "finish" else None
            led, running = self.ledger, len(self.running)
            counts: dict[str, Any] = dict(done=led.done, target=led.target, failed=led.failed_total, running=running)
            self.listener(TrialEvent(kind, job, best=best, **counts, **data))
