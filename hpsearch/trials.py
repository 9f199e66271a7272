"""What a trial leaves in storage, and the one ranking of trials.

Every attribute hpsearch writes on an Optuna trial is named here (the keys
below), so the coordinator that writes them and the leaderboard, report and
plots that read them agree. `ranked_trials` is THE ranking: completed trials
with a finite value, best first by the study's direction, ties in the order
given (stage order, then trial number). Everything that says "best"
(refine, border flags, leaderboards, curves, the report, `studies`) uses it.
`TrialStatus` (defined in workloads/api.py, which imports neither Optuna nor
torch) is how a run ended as its workload tells it; Optuna's TrialState, what storage keeps.
`derive_seed` is THE way a seed is derived from others (trials, samplers,
refine stages); `epochs_run` THE epochs a trial ran, as leaderboards show them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.direction import Direction
from hpsearch.limits import TIMEOUT, TrialLimits
from hpsearch.strategy import Strategy
from hpsearch.workloads.api import TrialStatus as TrialStatus  # re-exported: how a run ended, beside TrialState

# User attributes of a trial.
OWNER_ATTR = "owner"  # "host:pid#coordinator" of the process running it, to spot stale ones
REASON_ATTR = "reason"  # why it was pruned or failed (also set by whoever fails a dead trial)
# Everything else a finished trial leaves, in ONE attribute (one journal write per trial, not eight):
RESULT_ATTR = "result"  # {"seed", "epochs", "epochs_run", "curves", "metrics", "duration_s", "log", "log_tail"}
SEED_ATTR = "seed"  # the seed its workload was given
EPOCHS_ATTR = "epochs"  # the epochs it was asked to train
EPOCHS_RUN_ATTR = "epochs_run"  # the epochs it reported (counted by the coordinator, also for a killed worker)
CURVES_ATTR = "curves"  # every reported metric, one value per epoch
CURVE_EPOCHS_ATTR = "curve_epochs"  # the epoch of each of those values (a resumed trial's: over its runs)
METRICS_ATTR = "metrics"  # the final metrics it returned
DURATION_ATTR = "duration_s"  # its run time, measured where it trained
LOG_ATTR = "log"  # "host:path" of the trial's captured stdout/stderr
LOG_TAIL_ATTR = "log_tail"  # the last lines of that log
CARRIED_ATTR = "carried"  # a configuration carried into a refine stage from its parent (recipe.py)
REPEAT_ATTR = "repeat_of"  # a configuration run again with another seed, to measure the noise (recipe.py)
WARM_START_ATTR = "warm_start"  # a configuration run first, and where it came from (search/warm_starts.py)
EXPLORE_ATTR = "explore"  # a spread point `search` added to a coarse stage (search/recipe.py)
MARKS = (CARRIED_ATTR, REPEAT_ATTR, WARM_START_ATTR, EXPLORE_ATTR)  # why a trial was queued: its next run keeps it
RETRY_OF_ATTR = "retry_of"  # a resumed trial's run: the number of the run it continues (its previous attempt)
ATTEMPT_ATTR = "attempt"  # which run of its trial this is: 1 (absent) for the first, 2 for the first resumed...
FIRST_ATTEMPT_ATTR = "attempt_of"  # a resumed run's first attempt: its seed and checkpoint folder are that one's
FIXED_PARAMS = "fixed_params"  # Optuna's system attribute holding an enqueued trial's params

# Reasons of failures that say nothing about the parameters (the run was stopped, its worker killed
# or its machine lost): such a trial is resumed (`resumes`), and until then does not count as tried.
INTERRUPTED = "interrupted"  # Ctrl-C, SIGTERM or SIGHUP to the command
PREEMPTED = "preempted"  # SIGUSR1 (a cluster's warning before it takes the node back: SLURM's --signal)
HEARTBEAT_LOST = "worker died (heartbeat lost)"
KILLED = (
    "worker died (signal 9)",
    "worker died (signal 15)",
)  # SIGKILL, SIGTERM from outside: an OOM killer, a scheduler
RETRYABLE = (INTERRUPTED, PREEMPTED, HEARTBEAT_LOST, *KILLED)

DEFAULTS = TrialLimits()

# How a leaderboard lists the trials that are not ranked: pruned, then failed, then running.
STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2, TrialState.RUNNING: 3}


def ranked_trials(trials: Sequence[FrozenTrial], direction: Direction | str) -> list[FrozenTrial]:
    """Completed trials with a finite value, best first; ties keep the order of `trials`."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    return Direction(direction).ranked(done, key=attrgetter("value"))  # done: every value a float


def display_order(trials: Sequence[FrozenTrial], direction: Direction | str) -> list[tuple[int | None, FrozenTrial]]:
    """Every trial that ran, as a leaderboard lists them: (rank, trial) for the ranked ones, best
    first, then the others (rank None) pruned, failed and running, each in the order given.
    WAITING trials (queued grid points) have not run and are left out."""
    ranked = ranked_trials(trials, direction)
    seen = {id(t) for t in ranked}
    rest = [t for t in trials if id(t) not in seen and t.state in STATE_ORDER]
    rest.sort(key=lambda t: STATE_ORDER[t.state])  # stable: the given order within each state
    return [(i, t) for i, t in enumerate(ranked, 1)] + [(None, t) for t in rest]


def trial_attr(trial: FrozenTrial, key: str, default: Any = None) -> Any:
    """What a trial recorded under `key`: from its RESULT_ATTR, else from a user attribute of that name
    (studies written before results were grouped, and the attributes set on their own: owner, reason)."""
    result = trial.user_attrs.get(RESULT_ATTR)
    if isinstance(result, dict) and key in result:
        return result[key]
    return trial.user_attrs.get(key, default)


def epochs_run(trial: FrozenTrial, setting: int) -> int:
    """The epochs a trial ran: the epochs it reported (the coordinator's count, else its curves).

    A trial that reported nothing ran none - unless it completed (or still runs): a workload that
    never reports ran the epochs it was asked for (EPOCHS_ATTR, else `setting`, the stage's).
    """
    ran = trial_attr(trial, EPOCHS_RUN_ATTR)
    if ran is None:
        ran = max((len(v) for v in (trial_attr(trial, CURVES_ATTR) or {}).values()), default=0)
    if ran or trial.state not in (TrialState.COMPLETE, TrialState.RUNNING):
        return int(ran)
    return int(trial_attr(trial, EPOCHS_ATTR, setting))


SEED_BITS = 31  # seeds in [0, 2**31): numpy and torch take them, and so does anything wanting an int32


def derive_seed(*parts: int | str) -> int:
    """A seed derived from `parts` (a name saying what it seeds, then seeds and numbers): deterministic
    on every platform and Python, and unrelated for different parts - unlike `seed + n`, where seeds
    1 and 2 share all but one of their trial seeds. THE one derivation (blake2b of the parts)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 2**SEED_BITS


def trial_seed(stage_seed: int, stage_index: int, number: int) -> int:
    """The seed of trial `number` of a stage (its index tells stages apart even when given one seed)."""
    return derive_seed("trial", stage_seed, stage_index, number)


def trial_params(trial: FrozenTrial) -> dict[str, Any]:
    """The params of a trial, also of one that never started (a queued grid point holds them aside)."""
    return dict(trial.params or trial.system_attrs.get(FIXED_PARAMS, {}))


def point_key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable identity of a parameter point (grid points are compared by it)."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def retryable(reason: str | None, limits: TrialLimits) -> bool:
    """Whether a run that failed for `reason` says nothing about its params: it was stopped from outside."""
    return reason in RETRYABLE or (reason == TIMEOUT and limits.resume_timeouts)


def attempt(trial: FrozenTrial | optuna.Trial) -> int:
    """Which run of its trial `trial` is (1: its first)."""
    return int(trial.user_attrs.get(ATTEMPT_ATTR, 1))


def first_attempt(trial: FrozenTrial | optuna.Trial) -> int:
    """The number of the first run of `trial`'s trial: where its seed and checkpoint folder come from."""
    return int(trial.user_attrs.get(FIRST_ATTEMPT_ATTR, trial.number))


def resumes(reason: str | None, run: int, limits: TrialLimits) -> bool:
    """Whether run number `run` of a trial, failed for `reason`, is run again: retryable, attempts left."""
    return retryable(reason, limits) and run < limits.attempts


def counts(trials: Sequence[FrozenTrial], strategy: Strategy, limits: TrialLimits = DEFAULTS) -> tuple[int, int]:
    """(finished trials that count toward the stage's target, failed trials).

    COMPLETE and PRUNED trials count; on a grid, so does a point whose trial failed for a reason of
    its own (retrying the same point would fail again) or ran out of attempts; a failed run that is
    resumed never counts (its next run will).
    """
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if strategy == Strategy.grid:
        finished += sum(not resumes(t.user_attrs.get(REASON_ATTR), attempt(t), limits) for t in failed)
    return finished, len(failed)


def spent_epochs(trials: Sequence[FrozenTrial], setting: int) -> int:
    """Trial-epochs a stage has spent: the epochs every finished trial ran (completed, pruned and
    failed alike: a pruned or failed trial counts the epochs it ran), plus `setting` for each
    running one (committed: it may still run them all). Queued (WAITING) trials cost nothing yet."""
    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(epochs_run(t, setting) for t in trials if t.state in done) + setting * sum(
        t.state == TrialState.RUNNING for t in trials
    )


def metric_value(
    metrics: dict[str, float], curves: dict[str, list[float]], metric: str, direction: Direction | str, epoch: str
) -> float:
    """A trial's value: its returned `metric` (epoch "last"), or its best reported epoch's ("best",
    in the study's direction; the returned value when it reported none, and the returned value counts too)."""
    value = metrics[metric]
    if epoch != "best":
        return value
    seen = [v for v in (curves.get(metric) or []) if math.isfinite(v)] + ([value] if math.isfinite(value) else [])
    if not seen:
        return value
    return Direction(direction).best(seen)


def continued_runs(trials: Sequence[FrozenTrial]) -> set[int]:
    """The numbers of the runs a later run continues (resumed trials' earlier runs): a leaderboard shows
    each trial once, at its latest run, and these only when asked."""
    return {int(n) for t in trials if (n := t.user_attrs.get(RETRY_OF_ATTR)) is not None}


def reached(trial: FrozenTrial, setting: int) -> int:
    """The epochs a trial reached over all its runs (a resumed one: where its last run got to); its
    epochs_run counts only the last run's (what the budget charges each run)."""
    epochs = trial_attr(trial, CURVE_EPOCHS_ATTR)
    return len(epochs) if epochs and attempt(trial) > 1 else epochs_run(trial, setting)


def marked(trials: Sequence[FrozenTrial], mark: str) -> list[FrozenTrial]:
    """The trials queued for `mark` (one of MARKS), each once: a resumed one at its latest run."""
    later = continued_runs(trials)
    return [t for t in trials if mark in t.user_attrs and t.number not in later]
