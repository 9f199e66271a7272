"""Where a stage's next trial comes from, and the counts read from the storage on the way.

A trial is a queued one (a grid point, or one re-queued after a retryable failure: retry.py), or a
new one the sampler suggests. Several coordinators may deal from one stage: the storage lets one pop
of a queued trial win, and the counts (every coordinator's trials) are read from it - before each
trial on a database (indexed queries), every REFRESH_EVERY trials and at each trial near the target
on the journal (a read costs O(trials) there).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.divergence import DivergenceCheck, first_training_loss
from hpsearch.limits import TrialLimits
from hpsearch.search.jobs import Job, Stop, Wait
from hpsearch.search.liveness import fail_dead_trials, owner_tag
from hpsearch.search.retry import Orphans, requeue
from hpsearch.store import optuna_compat as compat
from hpsearch.store.storage import storage_counts
from hpsearch.strategy import Strategy
from hpsearch.trials import (
    CURVE_EPOCHS_ATTR,
    CURVES_ATTR,
    OWNER_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    RETRY_OF_ATTR,
    attempt,
    first_attempt,
    resumes,
    trial_params,
    trial_seed,
)
from hpsearch.workloads.api import TrialRecord

if TYPE_CHECKING:
    import optuna

    from hpsearch.search.ledger import Ledger
    from hpsearch.store.storage import StageInfo, Store

IDLE_POLL_S = 1.0  # how soon an executor told to Wait asks again
REFRESH_EVERY = 50  # trials between reads of the stage's counts from the journal, away from its target
log = logging.getLogger("hpsearch.search.coordinator")


class Dealer:
    """Deals one stage's trials to one coordinator (`token`), and keeps its `ledger`'s counts read."""

    def __init__(
        self, store: Store, info: StageInfo, study: optuna.Study, ledger: Ledger, token: str, limits: TrialLimits
    ) -> None:
        self.store, self.info, self.study, self.ledger, self.token = store, info, study, ledger, token
        self.limits = limits  # the trials' limits (log bound, attempts): the study file's, the run's overrides applied
        self.grid = info.settings.strategy == Strategy.grid
        self.orphans = Orphans(study, info.name, limits) if self.grid else None
        self.queued = 0  # WAITING trials at the last read (warm starts, carried configurations): popped first
        self.checkpoints = store.checkpoints_dir(info)
        self.pending_retries = 0  # failed grid points whose re-queue is still to come (retry.py)
        self.distributions = info.space.distributions()
        self.logs = store.logs_dir(info)
        self.calls = 0
        self.said_waiting = False  # the first Wait is logged, with what the stage waits for

    def draw(self, running: set[int], heartbeat: bool) -> Job | None:
        """The next trial to start here (its owner, heartbeat and params written), or None: the stage
        has its trials (counting running ones), no room, or nothing queued on a grid."""
        self.pending_retries = 0
        self.calls += 1
        # Queued trials: read by refresh (journal), None (a database: pop_waiting reads), or [] (not due).
        waiting = self.refresh(running) if self._refresh_due() else []
        if self.ledger.left <= 0 or self.ledger.ended():
            return None
        trial = None if waiting == [] else compat.pop_waiting(self.study, waiting)
        if trial is None and self.grid:
            # A queued point we saw may have gone to another coordinator's pop, or one was queued since:
            # read again (the lost one counts as running there; a new one is popped here).
            trial = compat.pop_waiting(self.study, self.refresh(running))
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
        if heartbeat:
            compat.record_heartbeat(self.study, trial)
        compat.suggest(trial, self.distributions)
        self.ledger.started()
        job = Job(trial, self.record(trial))
        if (previous := trial.user_attrs.get(RETRY_OF_ATTR)) is not None:
            self._resume(job, int(previous))
        return job

    def record(self, trial: optuna.Trial) -> TrialRecord:
        """What the workload gets to know of `trial`: the one record that travels to it (pickled as is).
        Every run of a trial has the seed and the checkpoint folder of its first."""
        info, settings, first = self.info, self.info.settings, first_attempt(trial)
        return TrialRecord(
            number=trial.number,
            params=dict(trial.params),
            epochs=settings.epochs,
            seed=trial_seed(settings.seed, info.index, first),
            stage=info.name,
            study=info.spec.name,
            metric=info.spec.metric,
            log_path=str(self.logs / f"trial-{trial.number}.log"),
            workdir=info.spec.folder,
            log_limit=self.limits.log_limit,
            checkpoint_dir=str(self.checkpoints / f"trial-{first}"),
            attempt=attempt(trial),
        )

    def _resume(self, job: Job, previous: int) -> None:
        """A trial's next run continues its previous run (trial `previous`): that run's reports are copied
        into this one (the pruner and the curves see the whole trial, epochs not restarting at 0), its
        curves are kept for this run's to continue, and the divergence rule keeps its baseline."""
        before = self.study.get_trials(deepcopy=False)[previous]
        result = before.user_attrs.get(RESULT_ATTR) or {}
        job.before = dict(result.get(CURVES_ATTR) or {})
        job.before_epochs = list(result.get(CURVE_EPOCHS_ATTR) or sorted(before.intermediate_values))
        for step, value in sorted(before.intermediate_values.items()):
            job.trial.report(value, step)
        job.stored = set(before.intermediate_values)
        first = first_training_loss(job.before)
        job.check = DivergenceCheck(first)
        job.record = replace(job.record, first_loss=first)

    def retry(self, failed: optuna.Trial | FrozenTrial, params: dict[str, Any], reason: str | None) -> bool:
        """Queue the next run of a trial whose run THIS coordinator recorded as failed, when the failure is
        one to resume (trials.resumes: a retryable reason, attempts left). Whether it was queued."""
        if not params or not resumes(reason, attempt(failed), self.limits):
            return False
        requeue(self.study, failed, params)
        self.queued += 1  # read the queue at the next draw: the next run goes first
        return True

    def idle(self, running: set[int]) -> Wait | Stop:
        """The answer when `draw` gave nothing (`running`: this coordinator's trials): Wait while the stage is
        short of its target only by trials that others run (they may still fail and need replacing) or by
        failed grid points about to be queued again; else Stop, saying why."""
        ledger = self.ledger
        if not ledger.short:
            return Stop(ledger.ended_by or ("failing" if ledger.failing() else "done"))
        if ledger.running_total - len(running) <= 0 and self.pending_retries <= 0:
            return Stop("nothing left to start")
        if not self.said_waiting:
            self.said_waiting = True
            elsewhere = [
                f"{t.number} ({t.user_attrs.get(OWNER_ATTR, 'no owner yet')})"
                for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if t.number not in running
            ]
            elsewhere += [f"{self.pending_retries} failed point(s) to be queued again"] if self.pending_retries else []
            log.warning("stage %s: waiting for trials running elsewhere: %s", self.info.name, ", ".join(elsewhere))
        return Wait("trials running elsewhere may fail and need replacing", IDLE_POLL_S)

    def _refresh_due(self) -> bool:
        """Whether to read the counts from the storage before this trial, or trust our own.

        A database is asked every time (indexed queries); so is a grid (its queue), and a stage while
        it has queued trials (warm starts, carried ones: they run before any sampled one). On the journal
        a read costs O(trials), so it happens every REFRESH_EVERY trials, and at every trial near the
        target (where other coordinators' trials decide when to stop): flat per-trial cost.
        """
        if self.store.database or self.grid or self.queued or self.calls % REFRESH_EVERY == 1:
            return True
        return self.ledger.left <= REFRESH_EVERY

    def refresh(self, running: set[int]) -> list[FrozenTrial] | None:
        """Fail dead trials (`running`: the ones this coordinator runs, alive), then count the stage's
        trials by state from the storage (all coordinators).

        On the journal (every trial in this process's memory) one read of the trials serves the
        dead-trial check, the counts and the queue; returns the WAITING trials then (None: read them).
        A database answers each of those with its own indexed query instead.
        """
        ledger = self.ledger
        if self.store.database:
            for t in fail_dead_trials(self.study, self.store.heartbeat, running):
                self.retry(t, trial_params(t), t.user_attrs.get(REASON_ATTR))
            ledger.done, ledger.failed_total, ledger.running_total = storage_counts(
                self.study, self.store, self.grid, self.limits
            )
            return None
        trials = self.study.get_trials(deepcopy=False)
        live = [t for t in trials if t.state == TrialState.RUNNING]
        dead = fail_dead_trials(self.study, False, running, live)
        for t in dead:
            self.retry(t, trial_params(t), t.user_attrs.get(REASON_ATTR))
        if dead:
            trials = self.study.get_trials(deepcopy=False)
        ledger.read(trials)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        self.queued = len(waiting)
        return waiting
