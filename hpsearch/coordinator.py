"""The coordinator of one stage on this machine: hands out trials, hears reports, records outcomes.

It is the only part of a process that talks to the storage. An executor
(handed in: see dispatch/) calls `next_job` for a trial to run, `report` with
each epoch's metrics (the answer is a reason to stop the trial, or None) and
`finish` with the outcome; the coordinator never picks an executor.

Several coordinators may run one stage at once; what keeps them consistent
lives in the storage: a coordinator starts a trial only while the stage's
finished + RUNNING trials (read from the storage: before each trial on a
database, every REFRESH_EVERY trials and at each trial near the target on
the journal) are below the target; grid points are enqueued once and popped
(the storage lets one pop win); a grid point whose trial was interrupted is
re-queued by the one coordinator whose move of it to FAIL succeeded, and the
others wait for that re-queue (or take it over: see retry.py).
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from typing import Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpsearch import optuna_compat as compat
from hpsearch.errors import SpecError
from hpsearch.jobs import Job, Listener, TrialEvent
from hpsearch.liveness import LIVE_COORDINATORS, Heartbeat, fail_dead_trials, owner_tag
from hpsearch.pruner import is_last_report, make_pruner, prune_reason
from hpsearch.refine import stage_flags
from hpsearch.retry import Orphans, requeue
from hpsearch.stage_result import StageResult
from hpsearch.storage import StageInfo, Store, storage_counts
from hpsearch.strategy import Strategy, make_sampler
from hpsearch.trials import (
    CURVES_ATTR,
    DURATION_ATTR,
    EPOCHS_ATTR,
    EPOCHS_RUN_ATTR,
    HEARTBEAT_LOST,
    INTERRUPTED,
    LOG_ATTR,
    LOG_TAIL_ATTR,
    METRICS_ATTR,
    OWNER_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    RETRYABLE,
    SEED_ATTR,
    counts,
    derive_seed,
    metric_value,
    ranked_trials,
    spent_epochs,
    trial_params,
    trial_seed,
)
from hpsearch.workloads.api import TrialOutcome, TrialRecord

FAIL_FAST = 5  # this many failures in a row with no success: the workload is broken, stop the stage
BEST_RESCAN = 100  # finishes between full reads of the stage's best (other coordinators' trials)
REFRESH_EVERY = 50  # trials between reads of the stage's counts from the journal, away from its target
log = logging.getLogger("hpsearch.coordinator")


class Coordinator:
    """Hands out one stage's trials on this machine and records how each ended (see the module docstring).

    When `next_job` says None, `waiting_on_others` says whether to look again later (other coordinators
    still run trials that may fail and need replacing) or to stop. Call `close` at the end: it stops the
    heartbeat. `salt` (an int) varies the sampler's seed between coordinators joining the same stage, so
    two machines starting together draw different points. No trial starts past `deadline`
    (time.monotonic) or one that could take the stage past its budget of trial-epochs.
    """

    def __init__(
        self, store: Store, info: StageInfo, listener: Listener | None = None, pruner: str = "none", salt: int = 0,
        deadline: float | None = None,
    ) -> None:
        self.store, self.info, self.listener, self.pruner, self.deadline = store, info, listener, pruner, deadline
        self.metric = info.spec.metric
        self.direction = info.spec.direction
        self.target = info.settings.target(info.space)
        self.max_failures = info.settings.max_failures or self.target
        self.grid = info.settings.strategy == Strategy.grid
        existing = store.trials(info)
        self.spent = spent_epochs([t for t in existing if t.state != TrialState.RUNNING], info.settings.epochs)
        self.ended_by: str | None = None
        # Seeded by the history too, so a resumed stage draws new points, not the first ones again.
        seed = derive_seed("sampler", info.settings.seed, info.index, len(existing), salt)
        self.study = store.study(
            info, sampler=make_sampler(info.settings.strategy, seed), pruner=make_pruner(pruner, info.settings.epochs)
        )
        self.distributions = info.space.distributions()
        self.logs = store.logs_dir(info)
        self.running: dict[int, Job] = {}
        self.ran = self.completed_now = self.fail_streak = 0
        self.failures: list[str] = []
        self.reasons: list[str] = []
        self.done, self.failed_total, self.running_total = 0, 0, 0
        self._said_waiting = False
        self.orphans = Orphans(self.study, info.name) if self.grid else None
        self.pending_retries = 0  # failed grid points whose re-queue is still to come (retry.py)
        self._calls = 0
        self._best: FrozenTrial | None = None
        self._best_stale = True  # read from the storage at the first call
        self.token = uuid.uuid4().hex[:12]  # this coordinator, among others in the same process
        LIVE_COORDINATORS.add(self.token)
        self.heartbeat = Heartbeat(self.study, lambda: [job.trial for job in self.running.values()]) if store.heartbeat else None
        self._refresh()

    # -- what executors call

    def next_job(self) -> Job | None:
        """The next trial to run, or None when the stage needs no more trials started now."""
        self._check_heartbeat()
        self.pending_retries = 0
        if self._failing():
            return None
        self._calls += 1
        # Queued trials: read by _refresh (journal), None (a database: pop_waiting reads), or [] (not due).
        waiting = self._refresh() if self._refresh_due() else []
        if self.done + self.running_total >= self.target or self._ended():
            return None
        trial = None if waiting == [] else compat.pop_waiting(self.study, waiting)
        if trial is None and self.grid:
            # A queued point we saw may have gone to another coordinator's pop, or one was queued since:
            # read again (the lost one counts as running there; a new one is popped here).
            trial = compat.pop_waiting(self.study, self._refresh())
        if trial is None and self.orphans is not None:
            # Every point is taken; one that failed for a retryable reason comes back (retry.py).
            took_over = self.orphans.took_over
            self.pending_retries = self.orphans.pending()
            if self.orphans.took_over == took_over or (trial := compat.pop_waiting(self.study)) is None:
                return None
        if trial is None:
            trial = compat.new_trial(self.study)
        # The owner first, in the write right after the trial's creation: a trial is ownerless only
        # if its coordinator dies within those milliseconds (and then counts as stale, see fail_dead_trials).
        trial.set_user_attr(OWNER_ATTR, owner_tag(self.token))
        if self.heartbeat is not None:
            compat.record_heartbeat(self.study, trial)
        compat.suggest(trial, self.distributions)
        record = TrialRecord(
            number=trial.number,
            params=dict(trial.params),
            epochs=self.info.settings.epochs,
            seed=trial_seed(self.info.settings.seed, self.info.index, trial.number),
            stage=self.info.name,
            study=self.info.spec.name,
            metric=self.metric,
            log_path=str(self.logs / f"trial-{trial.number}.log"),
            workdir=self.info.spec.folder,
            log_limit=self.info.spec.limits.log_limit,
        )
        job = Job(trial, record)
        self.running[job.number] = job
        self.running_total += 1
        self._emit("start", job)
        return job

    def waiting_on_others(self) -> bool:
        """True while the stage is short of its target only by trials other coordinators are running.

        Those may still fail (their machine dies) and need replacing, so a
        coordinator with nothing to start waits instead of leaving. Uses the
        counts of the last `next_job` call.
        """
        others = self.running_total - len(self.running)
        short = not self._failing() and not self.ended_by and self.done < self.target
        waiting = short and (others > 0 or self.pending_retries > 0)
        if waiting and not self._said_waiting:
            self._said_waiting = True
            elsewhere = [
                f"{t.number} ({t.user_attrs.get(OWNER_ATTR, 'no owner yet')})"
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number not in self.running
            ]
            elsewhere += [f"{self.pending_retries} failed point(s) to be queued again"] if self.pending_retries else []
            log.warning("stage %s: waiting for trials running elsewhere: %s", self.info.name, ", ".join(elsewhere))
        return waiting

    def report(
        self, job: Job, epoch: int, metrics: dict[str, float], epoch_seconds: float | None = None, iterations: int | None = None
    ) -> str | None:
        """Per-epoch metrics of a running trial: the reason to stop it (diverged, pruned), or None. Never
        pruned at its last epoch; `epoch_seconds` and `iterations` only feed the progress display."""
        self._check_heartbeat()
        job.reports += 1
        self._emit("report", job, epoch=epoch, metrics=metrics, epoch_seconds=epoch_seconds, iterations=iterations)
        reported = self.metric in metrics and math.isfinite(metrics[self.metric])
        try:
            if reported:
                job.report_value(metrics[self.metric], epoch, hold=not self.answers_reports)
            reason = job.check(metrics)
            last = is_last_report(epoch, job.reports, job.epochs)
            if reason is None and reported and self.answers_reports and not last and job.trial.should_prune():
                reason = prune_reason(self.pruner)
        except UpdateFinishedTrialError:
            return HEARTBEAT_LOST  # failed by another machine (our heartbeat stalled): stop wasting the worker
        return reason

    @property
    def answers_reports(self) -> bool:
        """Whether a report's answer takes the coordinator (a pruner): if not, a worker applies the
        divergence rule itself without waiting, and the report is held for a later write (Job.report_value)."""
        return self.pruner != "none"

    def finish(self, job: Job, outcome: TrialOutcome, emit: bool = True) -> None:
        """Record how a trial ended. A crash is data: it never stops the stage by itself. With emit=False
        the caller tells the listener (finish_many: once the batched write is in and the best is known)."""
        self.running.pop(job.number, None)
        self.running_total = max(self.running_total - 1, 0)
        self.ran += 1
        self.spent += job.reports or (job.epochs if outcome.state == "complete" else 0)  # as trials.epochs_run
        try:
            self._record(job, outcome)
        except UpdateFinishedTrialError:
            # Failed as stale by another coordinator (our heartbeats stopped reaching the database): its verdict
            # stands, and it re-queued a grid point.
            self.failures.append(f"trial {job.number}: {HEARTBEAT_LOST}")
        if emit:
            self._emit("finish", job, outcome=outcome)

    # -- a population's K trials at once: one journal append where K would be (optuna_compat.batched_writes)

    def next_jobs(self, k: int) -> list[Job]:
        """Up to `k` trials to run together, as `next_job` gives them; their owners and params in one write."""
        jobs: list[Job] = []
        with compat.batched_writes(self.study):
            while len(jobs) < k and (job := self.next_job()) is not None:
                jobs.append(job)
        return jobs

    def report_many(self, reports: list[tuple[Job, int, dict[str, float], float | None, int | None]]) -> list[str | None]:
        """`report` for each of a population's members at one epoch: (job, epoch, metrics, seconds,
        iterations) each, their reasons in order. One write for all, unless a pruner must read each first."""
        if self.answers_reports:
            return [self.report(*entry) for entry in reports]
        with compat.batched_writes(self.study) as late:
            reasons = [self.report(*entry) for entry in reports]
        return [HEARTBEAT_LOST if compat.trial_id(entry[0].trial) in late else r for entry, r in zip(reports, reasons)]

    def finish_many(self, ended: list[tuple[Job, TrialOutcome]]) -> None:
        """`finish` for each of a population's members; their outcomes in one write."""
        with compat.batched_writes(self.study) as late:
            for job, outcome in ended:
                self.finish(job, outcome, emit=False)
        for job, _ in ended:
            if compat.trial_id(job.trial) in late:
                self.failures.append(f"trial {job.number}: {HEARTBEAT_LOST}")
            else:
                self._offer_best(compat.latest(job.trial))
        for job, outcome in ended:  # told after the write: the best they carry includes these outcomes
            self._emit("finish", job, outcome=outcome)

    def interrupt(self) -> None:
        """Record every running trial as FAIL (interrupted); completed trials stay."""
        for job in list(self.running.values()):
            self.finish(job, TrialOutcome("fail", reason=INTERRUPTED, duration_s=time.perf_counter() - job.started))

    def close(self) -> None:
        """Stop the heartbeat thread (RDB storages); trials it still owns now count as stale. Idempotent."""
        LIVE_COORDINATORS.discard(self.token)
        if self.heartbeat is not None:
            self.heartbeat.close()
            self.heartbeat = None

    # -- results

    def result(self) -> StageResult:
        trials = self.study.get_trials(deepcopy=False)
        flags = stage_flags(self.info, trials)
        self._refresh()
        return StageResult(self.info, trials, self.ran, flags, self.failures, self.done, self.target, self.reasons, self.ended_by)

    def best(self) -> FrozenTrial | None:
        """The stage's best completed trial: kept up to date from this coordinator's outcomes, and read again
        from the storage (others' trials too) every BEST_RESCAN finishes (a rescan each: quadratic)."""
        if self._best_stale or self.ran % BEST_RESCAN == 0:
            ranked = ranked_trials(self.study.get_trials(deepcopy=False), self.direction)
            self._best, self._best_stale = (ranked[0] if ranked else None), False
        return self._best

    def _offer_best(self, trial: FrozenTrial) -> None:
        ranked = ranked_trials([t for t in (self._best, trial) if t is not None], self.direction)
        self._best = ranked[0] if ranked else self._best

    # -- internals

    def _record(self, job: Job, outcome: TrialOutcome) -> None:
        trial = job.trial
        job.write_reports()  # held ones first: in the same append as the outcome (finish_many's block)
        result: dict[str, Any] = {SEED_ATTR: job.record.seed, EPOCHS_ATTR: job.record.epochs, EPOCHS_RUN_ATTR: job.reports}
        result[DURATION_ATTR] = round(outcome.duration_s, 4)
        kept = {CURVES_ATTR: outcome.curves, METRICS_ATTR: outcome.metrics, LOG_ATTR: outcome.log, LOG_TAIL_ATTR: outcome.log_tail}
        trial.set_user_attr(RESULT_ATTR, {**result, **{key: value for key, value in kept.items() if value}})  # the ones it has
        if outcome.reason:
            trial.set_user_attr(REASON_ATTR, outcome.reason)
        if outcome.state == "complete" and self.metric not in outcome.metrics:
            compat.tell(self.study, trial, state=TrialState.FAIL)
            returned = ", ".join(outcome.metrics) or "nothing"
            raise SpecError(
                self.info.spec.path,
                "metric",
                f"the workload never returns {self.metric!r} (it returned: {returned}); "
                "set metric to one of those, or return it from the workload",
            )
        if outcome.state == "complete":
            value = metric_value(outcome.metrics, outcome.curves, self.metric, self.direction, self.info.spec.metric_epoch)
            self._offer_best(compat.tell(self.study, trial, value))
            self.done += 1
            self.completed_now += 1
            self.fail_streak = 0
        elif outcome.state == "pruned":
            compat.tell(self.study, trial, state=TrialState.PRUNED)
            self.done += 1
            self.fail_streak = 0
        else:
            compat.tell(self.study, trial, state=TrialState.FAIL)
            self.failed_total += 1
            if outcome.reason in RETRYABLE:
                self._retry(trial.number, dict(trial.params))
            else:
                self.failures.append(f"trial {job.number}: {outcome.reason}")
                self.reasons.append(outcome.reason)
                self.fail_streak += 1
                if self.grid:
                    self.done += 1

    def _failing(self) -> bool:
        """The broken-workload rule (FAIL_FAST failures in a row, none completed) or the failure cap."""
        return (self.fail_streak >= FAIL_FAST and self.completed_now == 0) or len(self.failures) >= self.max_failures

    def _ended(self) -> bool:
        """The deadline passed, or one more trial could take the stage past its budget (running ones
        counted at full length): start no more (those running finish; the stage stays resumable)."""
        budget, epochs = self.info.settings.budget, self.info.settings.epochs
        if budget is not None and self.spent + (self.running_total + 1) * epochs > budget:
            self.ended_by = "budget"
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            self.ended_by = "timeout"
        return self.ended_by is not None

    def _check_heartbeat(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.check()

    def _refresh_due(self) -> bool:
        """Whether to read the counts from the storage before this trial, or trust our own.

        A database is asked every time (indexed queries); so is a grid (its queue). On the journal
        a read costs O(trials), so it happens every REFRESH_EVERY trials, and at every trial near the
        target (where other coordinators' trials decide when to stop): flat per-trial cost.
        """
        if self.store.database or self.grid or self._calls % REFRESH_EVERY == 1:
            return True
        return self.done + self.running_total + REFRESH_EVERY >= self.target

    def _refresh(self) -> list[FrozenTrial] | None:
        """Fail dead trials, then count the stage's trials by state from the storage (all coordinators).

        On the journal (every trial in this process's memory) one read of the trials serves the
        dead-trial check, the counts and the queue; returns the WAITING trials then (None: read them).
        A database answers each of those with its own indexed query instead.
        """
        if self.store.database:
            for t in fail_dead_trials(self.study, self.store.heartbeat, set(self.running)):
                self._retry(t.number, trial_params(t))
            self.done, self.failed_total, self.running_total = storage_counts(self.study, self.store, self.grid)
            return None
        trials = self.study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        dead = fail_dead_trials(self.study, False, set(self.running), running)
        for t in dead:
            self._retry(t.number, trial_params(t))
        if dead:
            trials = self.study.get_trials(deepcopy=False)
        finished, failed = counts(trials, self.info.settings.strategy)
        self.done, self.failed_total = finished, failed
        self.spent = spent_epochs([t for t in trials if t.state != TrialState.RUNNING], self.info.settings.epochs)
        self.running_total = sum(t.state == TrialState.RUNNING for t in trials)
        return [t for t in trials if t.state == TrialState.WAITING]

    def _retry(self, number: int, params: dict[str, Any]) -> None:
        """Queue a grid point again after a retryable failure that THIS coordinator recorded."""
        if self.grid and params:
            requeue(self.study, number, params)

    def _emit(self, kind: str, job: Job, **data: Any) -> None:
        if self.listener is not None:
            best = self.best() if kind == "finish" else None
            counts_now: dict[str, Any] = dict(done=self.done, target=self.target, failed=self.failed_total, running=len(self.running))
            self.listener(TrialEvent(kind, job, best=best, **counts_now, **data))

