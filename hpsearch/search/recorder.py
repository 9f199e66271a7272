"""How a trial's reports and outcome reach the storage: its metric at each epoch (and the pruner's
verdict on it), its attributes (seed, epochs, curves, log, reason), its state and value (Optuna's
tell); and the stage's best trial, kept up to date from them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import SpecError
from hpsearch.pruner import is_last_report, prune_reason
from hpsearch.search.jobs import merged_curves
from hpsearch.store import optuna_compat as compat
from hpsearch.trials import (
    CURVE_EPOCHS_ATTR,
    CURVES_ATTR,
    DURATION_ATTR,
    EPOCHS_ATTR,
    EPOCHS_RUN_ATTR,
    HEARTBEAT_LOST,
    LOG_ATTR,
    LOG_TAIL_ATTR,
    METRICS_ATTR,
    REASON_ATTR,
    RESULT_ATTR,
    SEED_ATTR,
    metric_value,
    ranked_trials,
)
from hpsearch.workloads.api import TrialOutcome, TrialStatus

if TYPE_CHECKING:
    import optuna

    from hpsearch.search.jobs import Job
    from hpsearch.store.storage import StageInfo

BEST_RESCAN = 100  # finishes between full reads of the stage's best (other coordinators' trials)
STATES = {TrialStatus.PRUNED: TrialState.PRUNED, TrialStatus.FAIL: TrialState.FAIL}


class Recorder:
    """Writes one stage's outcomes, and keeps its best completed trial."""

    def __init__(self, study: optuna.Study, info: StageInfo) -> None:
        self.study, self.info = study, info
        self._best: FrozenTrial | None = None
        self._stale = True  # read from the storage at the first call

    def record(self, job: Job, outcome: TrialOutcome) -> None:
        """Write how `job` ended. Raises optuna's UpdateFinishedTrialError when another coordinator failed
        it meanwhile (its verdict stands), and SpecError when a completed trial lacks the study's metric."""
        trial, metric = job.trial, self.info.spec.metric
        job.write_reports()  # held ones first: in the same append as the outcome (finish_many's block)
        result: dict[str, Any] = {
            SEED_ATTR: job.record.seed,
            EPOCHS_ATTR: job.record.epochs,
            EPOCHS_RUN_ATTR: job.reports,
        }
        result[DURATION_ATTR] = round(outcome.duration_s, 4)
        # A run whose worker died returns no curves: the coordinator heard its reports. A resumed run's
        # continue its trial's earlier runs'; a failed run's may be continued (the epochs say where).
        curves, epochs = merged_curves(job, outcome.curves or job.heard)
        if job.before_epochs or outcome.state == TrialStatus.FAIL:
            result[CURVE_EPOCHS_ATTR] = epochs
        kept = {
            CURVES_ATTR: curves,
            METRICS_ATTR: outcome.metrics,
            LOG_ATTR: outcome.log,
            LOG_TAIL_ATTR: outcome.log_tail,
        }
        trial.set_user_attr(
            RESULT_ATTR, {**result, **{key: value for key, value in kept.items() if value}}
        )  # the ones it has
        if outcome.reason:
            trial.set_user_attr(REASON_ATTR, outcome.reason)
        if outcome.state != TrialStatus.COMPLETE:
            compat.tell(self.study, trial, state=STATES[TrialStatus(outcome.state)])
        elif metric not in outcome.metrics:
            compat.tell(self.study, trial, state=TrialState.FAIL)
            returned = ", ".join(outcome.metrics) or "nothing"
            raise SpecError(
                self.info.spec.path,
                "metric",
                f"the workload never returns {metric!r} (it returned: {returned}); "
                "set metric to one of those, or return it from the workload",
            )
        else:
            spec = self.info.spec
            value = metric_value(outcome.metrics, outcome.curves, metric, spec.direction, spec.metric_epoch)
            self.offer(compat.tell(self.study, trial, value))

    def hear(self, job: Job, epoch: int, metrics: dict[str, float], pruner: str) -> str | None:
        """One epoch's metrics of a running trial: its metric to the storage (held for a later write when no
        pruner reads it), then the reason to stop it (diverged, pruned by `pruner`: never at its last epoch)."""
        metric, answers = self.info.spec.metric, pruner != "none"
        reported = metric in metrics and math.isfinite(metrics[metric])
        try:
            if reported:
                job.report_value(metrics[metric], epoch, hold=not answers)
            reason = job.check(metrics)
            last = is_last_report(epoch, job.reports, job.epochs)
            if reason is None and reported and answers and not last and job.trial.should_prune():
                reason = prune_reason(pruner)
        except UpdateFinishedTrialError:
            return HEARTBEAT_LOST  # failed by another machine (our heartbeat stalled): stop wasting the worker
        return reason

    def best(self, finished: int) -> FrozenTrial | None:
        """The stage's best completed trial: kept up to date from the outcomes recorded here, and read again
        from the storage (others' trials too) every BEST_RESCAN finishes (a rescan each: quadratic)."""
        if self._stale or finished % BEST_RESCAN == 0:
            ranked = ranked_trials(self.study.get_trials(deepcopy=False), self.info.spec.direction)
            self._best, self._stale = (ranked[0] if ranked else None), False
        return self._best

    def offer(self, trial: FrozenTrial) -> None:
        """A trial just told: the best, if it beats the one kept."""
        ranked = ranked_trials([t for t in (self._best, trial) if t is not None], self.info.spec.direction)
        self._best = ranked[0] if ranked else self._best
