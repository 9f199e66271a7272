"""Stages: coarse (wide ranges, short trials), then refine-1, refine-2, ... around the best.

`start_coarse` creates or resumes a study's coarse stage, `plan_refine`
derives the next refine stage from the top trials of a parent stage, and
`run_stage` runs a stage until it has its number of finished trials, through
an executor (see dispatch.py), recording every trial - completed, pruned or
failed with its reason - in the stage's Optuna study. `join_stage` runs more
trials of a stage that another command created (`hpsearch worker`, other
machines on a shared PostgreSQL study).

Several coordinators may run one stage at once (one per machine). What keeps
them consistent lives in the storage, not in any one process:
- before each trial a coordinator counts the stage's finished and RUNNING
  trials in the storage; it starts one only while finished + running is
  below the target, so the stage overshoots only when coordinators ask at the
  same instant (by at most the trials asked in that instant), and every
  coordinator stops once the target is reached;
- grid points are enqueued once, when the stage is created (or its --trials
  raised), as WAITING trials; coordinators pop them, and the storage lets one
  pop win (row lock on PostgreSQL), so no point runs twice;
- a grid point whose trial was interrupted (Ctrl-C, its process gone, its
  machine's heartbeat lost) is enqueued again by the one coordinator whose
  move of that trial to FAIL succeeded - the storage lets only one succeed,
  so the retry is never duplicated.
"""

from __future__ import annotations

import math
import threading
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from hpsearch.border import BorderFlag, check_borders
from hpsearch.errors import HpsearchError, SpecError, StageFailed
from hpsearch.pruner import make_pruner, prune_reason
from hpsearch.space import Choice, Param, Range, Space, Value, fmt
from hpsearch.spec import StageSpec, Strategy, StudySpec, check_stage
from hpsearch.storage import HEARTBEAT_LOST, OWNER_ATTR, REASON_ATTR, StageInfo, Store, heartbeat_settings, is_stale, owner_tag
from hpsearch.strategy import make_sampler
from hpsearch.workload import TrialOutcome

INTERRUPTED = "interrupted"
# Failures that say nothing about the parameters (the run was stopped, or its machine died): a grid
# point that failed so is retried, and does not count as tried.
RETRYABLE = (INTERRUPTED, HEARTBEAT_LOST)
WAIT_POLL_S = 1.0  # how often a coordinator with nothing to start looks again while others run trials
DIVERGE_FACTOR = 3.0  # a training loss above 3x its first report has exploded (recipe: "several times")
FAIL_FAST = 5  # this many failures in a row with no success: the workload is broken, stop the stage

LOG_MARGIN_MIN = 0.1  # decades of padding around the top-k, at least
MARGIN_FRACTION = 0.25  # padding on each side, as a fraction of the top-k span
LINEAR_MARGIN_MIN = 0.05  # fraction of the old width, for linear ranges
WIDEN_LOG = 1.0  # decades added past a flagged border of a log range
WIDEN_LINEAR = 0.5  # fraction of the old width added past a flagged border of a linear range


# ----------------------------------------------------------------------------- stage planning


def start_coarse(store: Store, spec: StudySpec, overrides: dict[str, Any]) -> StageInfo:
    """The study's coarse stage: created from `spec`, or the stored one when it exists (resume)."""
    settings = check_stage(spec.coarse.with_overrides(**overrides), "coarse", spec.path)
    existing = [s for s in store.stages() if s.name == "coarse"]
    if not existing:
        info = StageInfo("coarse", 0, None, settings, spec.space, spec)
        create_stage(store, info)
        return info
    stored = existing[0]
    for key, mine, theirs in (
        ("params", spec.space, stored.space),
        ("workload", spec.workload, stored.spec.workload),
        ("metric", spec.metric, stored.spec.metric),
        ("direction", spec.direction, stored.spec.direction),
    ):
        if mine != theirs:
            raise SpecError(
                spec.path,
                key,
                f"differs from the coarse stage already stored in {store.location}; "
                "rename the study (name = ...) or remove its results folder to start over",
            )
    return _resume(store, stored, overrides, spec.path)


def _resume(store: Store, stored: StageInfo, overrides: dict[str, Any], file: str) -> StageInfo:
    """A stage that already exists: --trials may raise its target, other flags must agree."""
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key in ("trials", "top_k"):
            continue
        old = getattr(stored.settings, key)
        old = old.value if isinstance(old, Strategy) else old
        if value != old:
            raise SpecError(
                file,
                f"--{key.replace('_', '-')}",
                f"stage {stored.name} already ran with {key} = {old}; drop the flag to continue it, "
                "or start a new study to change it",
            )
    settings = stored.settings.with_overrides(trials=given.get("trials"), top_k=given.get("top_k"))
    if settings != stored.settings:
        stored = replace(stored, settings=settings)
        store.study(stored).set_user_attr("hpsearch", stored.to_dict())
        if stored.settings.strategy == Strategy.grid:
            enqueue_grid(store, stored)  # a raised target needs more points
    return stored


def plan_refine(store: Store, source: str | None, overrides: dict[str, Any]) -> tuple[StageInfo, list[BorderFlag], bool]:
    """The refine stage to run: an unfinished latest refine stage (resumed), or a new one.

    A new stage `refine-N` narrows the space around the top_k completed trials
    of `source` (default: the latest stage), widened past flagged borders.
    Returns (stage, the parent's border flags, resumed?).
    """
    stages = store.stages()
    latest = store.stage(None)
    if source is None and latest.index > 0 and stage_progress(store, latest)[0] < stage_target(latest):
        return _resume(store, latest, overrides, "refine"), [], True
    parent = store.stage(source)
    settings = check_stage(parent.spec.refine.with_overrides(**overrides), "refine", "command line")
    ranked = ranked_trials(store.trials(parent), parent.spec.direction.value)
    if not ranked:
        raise HpsearchError(
            f"stage {parent.name} of {store.name!r} has no completed trials to refine from; "
            f"run or continue it first (its trials failed or it was interrupted)"
        )
    top = [t.params for t in ranked[: settings.top_k]]
    flags = check_borders(parent.space, [t.params for t in ranked], settings.top_k)
    space, changes = derive_space(parent.space, top, flags, parent.settings.strategy)
    index = max(s.index for s in stages) + 1
    info = StageInfo(f"refine-{index}", index, parent.name, settings, space, parent.spec, tuple(changes))
    create_stage(store, info)
    return info, flags, False


def create_stage(store: Store, info: StageInfo) -> None:
    """Create the stage's Optuna study; a grid stage gets its points enqueued here, once."""
    store.create(info)
    if info.settings.strategy == Strategy.grid:
        enqueue_grid(store, info)


def _point_key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def enqueue_grid(store: Store, info: StageInfo) -> int:
    """Enqueue the grid points the stage has not queued or tried, shuffled by the seed, up to its target.

    Called when the stage is created or its target raised - one command, not
    every coordinator - so concurrent coordinators never queue a point twice.
    Returns how many points it enqueued.
    """
    import random

    study = store.study(info)
    trials = study.get_trials(deepcopy=False)
    # A retryable failure's point was queued again by whoever failed it: it is seen through that trial.
    seen = {
        _point_key(t.params or t.system_attrs.get("fixed_params", {}))
        for t in trials
        if not (t.state == TrialState.FAIL and t.user_attrs.get(REASON_ATTR) in RETRYABLE)
    }
    points = info.space.grid()
    random.Random(info.settings.seed).shuffle(points)
    missing = [p for p in points if _point_key(p) not in seen]
    room = max(stage_target(info) - len(seen), 0)
    for params in missing[:room]:
        study.enqueue_trial(params)
    return min(room, len(missing))


def derive_space(
    space: Space, top: Sequence[dict[str, Any]], flags: Sequence[BorderFlag], parent_strategy: Strategy
) -> tuple[Space, list[dict[str, str]]]:
    """Narrow each parameter around the top trials' values, widening past flagged borders.

    Log ranges: the span of the top values in log space, padded on each side
    by a quarter of the span (at least 0.1 decade, and at least half a grid
    step when the parent was a grid), clipped to the old range - except on a
    flagged side, which moves one decade past the old bound. Linear ranges
    likewise, in units of the old width. Value sets keep the values the top
    trials used plus their neighbours, and gain one value beyond a flagged end.
    `limits` are never crossed. Returns the new space and one note per param.
    """
    flagged = {(f.param, f.side) for f in flags}
    params: list[Param] = []
    changes: list[dict[str, str]] = []
    for p in space:
        values = [t[p.name] for t in top if p.name in t]
        sides = {side for side in ("low", "high") if (p.name, side) in flagged}
        if isinstance(p, Range):
            new, why = _narrow_range(p, values, sides, parent_strategy)
        else:
            new, why = _narrow_choice(p, values, sides)
        params.append(new)
        changes.append({"param": p.name, "old": p.describe(), "new": new.describe(), "why": why})
    return Space(tuple(params)), changes


def _narrow_range(p: Range, values: list[Any], sides: set[str], parent_strategy: Strategy) -> tuple[Range, str]:
    if not values:
        return p, "kept: no top trial has a value"
    xs = [p.scale(v) for v in values]
    lo, hi = p.scale(p.low), p.scale(p.high)
    a, b = min(xs), max(xs)
    width = hi - lo
    min_margin = LOG_MARGIN_MIN if p.log else LINEAR_MARGIN_MIN * width
    if parent_strategy == Strategy.grid:
        min_margin = max(min_margin, width / (p.grid_points - 1) / 2)
    margin = max(MARGIN_FRACTION * (b - a), min_margin)
    unit = "decade" if p.log else ""
    why = [f"top-{len(values)} span [{fmt(p.unscale(a))}, {fmt(p.unscale(b))}] padded by {margin:.2g} {unit}".rstrip()]
    new_lo, new_hi = max(a - margin, lo), min(b + margin, hi)
    widen = WIDEN_LOG if p.log else WIDEN_LINEAR * width
    if "low" in sides:
        new_lo = lo - widen
        why.append(f"widened {'a decade' if p.log else 'by half the width'} below: best on the LOW border")
    if "high" in sides:
        new_hi = hi + widen
        why.append(f"widened {'a decade' if p.log else 'by half the width'} above: best on the HIGH border")
    low, high = p.unscale(new_lo), p.unscale(new_hi)
    lim_lo, lim_hi = p.limits
    if lim_lo is not None and low < lim_lo:
        low = lim_lo
        why.append(f"held at the limit {fmt(lim_lo)}")
    if lim_hi is not None and high > lim_hi:
        high = lim_hi
        why.append(f"held at the limit {fmt(lim_hi)}")
    if p.is_int:
        low, high = math.floor(low), math.ceil(high)
        if p.log:
            low = max(low, 1)
        if low >= high:
            high = low + 1
    else:
        low, high = _round_sig(low, "down"), _round_sig(high, "up")
    return replace(p, low=low, high=high), "; ".join(why)


def _round_sig(x: float, way: str, digits: int = 3) -> float:
    """Round outward to a few significant digits, so ranges print and read cleanly."""
    if x == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(x))) - digits + 1)
    units = x / scale
    # A hair of tolerance so 0.6000000000000001 stays 0.6 rather than rounding out to 0.601.
    units = math.floor(units + 1e-9) if way == "down" else math.ceil(units - 1e-9)
    return float(f"{units * scale:.{digits}g}")


def _narrow_choice(p: Choice, values: list[Any], sides: set[str]) -> tuple[Choice, str]:
    used = [v for v in p.values if v in values]
    if not used:
        return p, "kept: no top trial has a value"
    if not p.numeric:
        return replace(p, values=tuple(used)), f"the values the top-{len(values)} used"
    ordered = list(p.ordered)
    idx = [ordered.index(v) for v in used]
    keep = ordered[max(min(idx) - 1, 0) : max(idx) + 2]
    why = [f"values the top-{len(values)} used, with their neighbours"]
    if "high" in sides:
        extra = _extend(ordered, "high", p.limits)
        if extra is not None:
            keep.append(extra)
            why.append(f"added {fmt(extra)} above: best on the HIGH border")
        else:
            why.append("cannot extend above: at its limit")
    if "low" in sides:
        extra = _extend(ordered, "low", p.limits)
        if extra is not None:
            keep.append(extra)
            why.append(f"added {fmt(extra)} below: best on the LOW border")
        else:
            why.append("cannot extend below: at its limit")
    return replace(p, values=tuple(sorted(keep))), "; ".join(why)


def _extend(ordered: list[Value], side: str, limits: tuple[float | None, float | None]) -> Value | None:
    """One more value past the end of a numeric set, continuing its spacing.

    Geometric when the set looks log-spaced (ratio >= 2, e.g. 1e-4 -> 1e-3),
    arithmetic otherwise; halfway to a limit when the step would cross it
    (momentum 0.99 with limits [0, 1] -> 0.995). Below a set that starts at
    0, the natural floor, adds a value between 0 and the next one instead.
    """
    if len(ordered) < 2:
        return None
    if side == "high":
        a, b = float(ordered[-2]), float(ordered[-1])
        step = b * (b / a) if a > 0 and b / a >= 2 else b + (b - a)
        limit = limits[1]
        if limit is not None and step >= limit:
            step = (b + limit) / 2 if b < limit else None  # type: ignore[assignment]
        return None if step is None else float(f"{step:.6g}")
    a, b = float(ordered[0]), float(ordered[1])
    if a == 0:
        c = float(ordered[2]) if len(ordered) > 2 else None
        step = b / (c / b) if c and b > 0 and c / b >= 2 else b / 2
    else:
        step = a / (b / a) if a > 0 and b / a >= 2 else a - (b - a)
    limit = limits[0]
    if limit is not None and step <= limit:
        step = (a + limit) / 2 if a > limit else None  # type: ignore[assignment]
    return None if step is None else float(f"{step:.6g}")


# ----------------------------------------------------------------------------- ranking


def ranked_trials(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """Completed trials with a value, best first."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)]
    return sorted(done, key=lambda t: t.value, reverse=direction == "maximize")  # type: ignore[arg-type,return-value]


def stage_flags(info: StageInfo, ranked: Sequence[FrozenTrial]) -> list[BorderFlag]:
    """A stage's border flags: its own space and top_k, over its completed trials ranked best first."""
    return check_borders(info.space, [t.params for t in ranked], info.settings.top_k)


def stage_target(info: StageInfo) -> int:
    """How many finished trials the stage wants: its trials, or the whole grid if smaller."""
    if info.settings.strategy == Strategy.grid:
        return min(info.settings.trials, len(info.space.grid()))
    return info.settings.trials


def stage_progress(store: Store, info: StageInfo) -> tuple[int, int]:
    """(finished trials that count toward the target, failed trials)."""
    trials = store.trials(info)
    return _counts(trials, info.settings.strategy)


def _counts(trials: Sequence[FrozenTrial], strategy: Strategy) -> tuple[int, int]:
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if strategy == Strategy.grid:
        # A grid point that crashed was tried: retrying the same point would crash again.
        finished += sum(t.user_attrs.get(REASON_ATTR) not in RETRYABLE for t in failed)
    return finished, len(failed)


# ----------------------------------------------------------------------------- running


@dataclass
class Job:
    """One trial handed to an executor: everything a worker needs to run it."""

    trial: optuna.Trial
    number: int
    params: dict[str, Any]
    epochs: int
    seed: int
    stage: str
    study: str
    workload: str
    metric: str
    first_loss: float | None = None
    started: float = field(default_factory=time.perf_counter)


@dataclass
class TrialEvent:
    """What progress displays hear about: a trial started, reported an epoch, or finished."""

    kind: str  # "start" | "report" | "finish"
    job: Job
    epoch: int | None = None
    metrics: dict[str, float] | None = None
    outcome: TrialOutcome | None = None
    done: int = 0
    target: int = 0
    failed: int = 0
    best: FrozenTrial | None = None
    running: int = 0
    epoch_seconds: float | None = None  # wall time of the reported epoch, measured in the trial's process
    iterations: int | None = None  # optimiser steps in that epoch, when the workload says


Listener = Callable[[TrialEvent], None]


@dataclass
class StageResult:
    stage: StageInfo
    trials: list[FrozenTrial]
    ran: int  # trials this invocation ran
    flags: list[BorderFlag]
    failures: list[str]  # reasons of the trials that failed in this invocation


class StageRun:
    """The coordinator of one stage on this machine: the only part of this process that talks to the storage.

    Executors call `next_job` to get a trial to run, `report` with each
    epoch's metrics (returns a reason to stop the trial, or None), and
    `finish` with the outcome. When `next_job` says None, `waiting_on_others`
    says whether to look again later (other coordinators still run trials
    that may fail and need replacing) or to stop. Call `close` at the end: it
    stops the heartbeat thread of RDB storages.

    `salt` (an int) varies the sampler's seed between coordinators joining
    the same stage, so two machines starting together draw different points.
    """

    def __init__(
        self, store: Store, info: StageInfo, listener: Listener | None = None, pruner: str = "none", salt: int = 0
    ) -> None:
        self.store = store
        self.info = info
        self.listener = listener
        self.pruner = pruner
        self.metric = info.spec.metric
        self.direction = info.spec.direction.value
        self.target = stage_target(info)
        self.grid = info.settings.strategy == Strategy.grid
        existing = store.trials(info)
        # Seeded by the history too, so a resumed stage draws new points, not the first ones again.
        seed = info.settings.seed + 10_000 * info.index + len(existing) + salt
        self.study = store.study(
            info,
            sampler=make_sampler(info.settings.strategy, seed),
            pruner=make_pruner(pruner, info.settings.epochs),
        )
        self.distributions = info.space.distributions()
        self.running: dict[int, Job] = {}
        self.ran = 0
        self.completed_now = 0
        self.failures: list[str] = []
        self.fail_streak = 0
        self.done, self.failed_total, self.running_total = 0, 0, 0
        self._refresh()
        self._beating = threading.Event()
        self._heart: threading.Thread | None = None
        if store.heartbeat:
            self._heart = threading.Thread(target=self._beat, name="hpsearch-heartbeat", daemon=True)
            self._heart.start()

    # -- what executors call

    def next_job(self) -> Job | None:
        """The next trial to run, or None when the stage needs no more trials started now."""
        if self._failing():
            return None
        self._refresh()
        if self.done + self.running_total >= self.target:
            return None
        trial_id = self._pop_waiting()
        if trial_id is None:
            if self.grid:
                return None  # every point is taken; one that fails for a retryable reason comes back
            trial_id = self.study._storage.create_new_trial(self.study._study_id)
        # What study.ask() does after its own pop; ask() itself would make a fresh (non-grid) trial
        # whenever another coordinator wins the last waiting point.
        trial = optuna.Trial(self.study, trial_id)
        for name, dist in self.distributions.items():
            trial._suggest(name, dist)
        if self.store.heartbeat:
            self.study._storage.record_heartbeat(trial_id)  # type: ignore[attr-defined]
        trial.set_user_attr(OWNER_ATTR, owner_tag())
        seed = self.info.settings.seed + 10_000 * self.info.index + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("epochs", self.info.settings.epochs)
        job = Job(
            trial=trial,
            number=trial.number,
            params=dict(trial.params),
            epochs=self.info.settings.epochs,
            seed=seed,
            stage=self.info.name,
            study=self.info.spec.name,
            workload=self.info.spec.workload,
            metric=self.metric,
        )
        self.running[job.number] = job
        self.running_total += 1
        self._emit("start", job)
        return job

    def waiting_on_others(self) -> bool:
        """True while the stage is short of its target only by trials other coordinators are running.

        Those may still fail (their machine dies) and need replacing, so a
        coordinator with nothing to start waits (polling every WAIT_POLL_S)
        instead of leaving. Uses the counts of the last `next_job` call.
        """
        others = self.running_total - len(self.running)
        return not self._failing() and self.done < self.target and others > 0

    def report(
        self,
        job: Job,
        epoch: int,
        metrics: dict[str, float],
        epoch_seconds: float | None = None,
        iterations: int | None = None,
    ) -> str | None:
        """Per-epoch metrics of a running trial: the reason to stop it (loss exploded, pruned), or None.

        `epoch_seconds` and `iterations` (optional) only feed the progress display.
        """
        self._emit("report", job, epoch=epoch, metrics=metrics, epoch_seconds=epoch_seconds, iterations=iterations)
        reported = self.metric in metrics and math.isfinite(metrics[self.metric])
        try:
            if reported:
                job.trial.report(metrics[self.metric], epoch)
            reason = diverged(job, metrics)
            if reason is None and reported and self.pruner != "none" and job.trial.should_prune():
                reason = prune_reason(self.pruner)
        except UpdateFinishedTrialError:
            return HEARTBEAT_LOST  # failed by another machine (our heartbeat stalled): stop wasting the worker
        return reason

    def finish(self, job: Job, outcome: TrialOutcome) -> None:
        """Record how a trial ended. A crash is data: it never stops the stage by itself."""
        self.running.pop(job.number, None)
        self.running_total = max(self.running_total - 1, 0)
        self.ran += 1
        try:
            self._record(job, outcome)
        except UpdateFinishedTrialError:
            # Another coordinator failed it as stale (our heartbeats stopped reaching the database,
            # e.g. a network split); its verdict stands, and a grid point was re-queued by it.
            self.failures.append(f"trial {job.number}: {HEARTBEAT_LOST}")
        self._emit("finish", job, outcome=outcome)

    def _record(self, job: Job, outcome: TrialOutcome) -> None:
        trial = job.trial
        if outcome.curves:
            trial.set_user_attr("curves", outcome.curves)
        if outcome.metrics:
            trial.set_user_attr("metrics", outcome.metrics)
        trial.set_user_attr("duration_s", round(outcome.duration_s, 4))
        if outcome.reason:
            trial.set_user_attr(REASON_ATTR, outcome.reason)
        if outcome.state == "complete" and self.metric not in outcome.metrics:
            self.study.tell(trial, state=TrialState.FAIL)
            returned = ", ".join(outcome.metrics) or "nothing"
            raise SpecError(
                self.info.spec.path,
                "metric",
                f"the workload never returns {self.metric!r} (it returned: {returned}); "
                "set metric to one of those, or return it from the workload",
            )
        if outcome.state == "complete":
            self.study.tell(trial, outcome.metrics[self.metric])
            self.done += 1
            self.completed_now += 1
            self.fail_streak = 0
        elif outcome.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
            self.done += 1
            self.fail_streak = 0
        else:
            self.study.tell(trial, state=TrialState.FAIL)
            self.failed_total += 1
            if outcome.reason in RETRYABLE:
                self._retry(trial.number, dict(trial.params))
            else:
                self.failures.append(f"trial {job.number}: {outcome.reason}")
                self.fail_streak += 1
                if self.grid:
                    self.done += 1

    def interrupt(self) -> None:
        """Record every running trial as FAIL (interrupted); completed trials stay."""
        for job in list(self.running.values()):
            self.finish(job, TrialOutcome("fail", reason=INTERRUPTED, duration_s=time.perf_counter() - job.started))

    def close(self) -> None:
        """Stop the heartbeat thread (RDB storages). Idempotent."""
        self._beating.set()
        if self._heart is not None:
            self._heart.join(timeout=5.0)
            self._heart = None

    # -- results

    def result(self) -> StageResult:
        trials = self.study.get_trials(deepcopy=False)
        flags = stage_flags(self.info, ranked_trials(trials, self.direction))
        return StageResult(self.info, trials, self.ran, flags, self.failures)

    def best(self) -> FrozenTrial | None:
        ranked = ranked_trials(self.study.get_trials(deepcopy=False), self.direction)
        return ranked[0] if ranked else None

    # -- internals

    def _failing(self) -> bool:
        return self.fail_streak >= FAIL_FAST and self.completed_now == 0 or len(self.failures) >= self.target

    def _refresh(self) -> None:
        """Fail dead trials, then count the stage's trials by state from the storage (all coordinators)."""
        if self.store.heartbeat:
            for t in self.store.fail_stale(self.study):
                self._retry(t.number, t.params or t.system_attrs.get("fixed_params", {}))
        else:
            self._recover_stale()
        counts = self.store.state_counts(self.study)
        finished = counts.get(TrialState.COMPLETE, 0) + counts.get(TrialState.PRUNED, 0)
        self.failed_total = counts.get(TrialState.FAIL, 0)
        if self.grid and self.failed_total:
            failed = self.study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
            finished += _counts(failed, Strategy.grid)[0]
        self.done = finished
        self.running_total = counts.get(TrialState.RUNNING, 0)

    def _pop_waiting(self) -> int | None:
        """Take a WAITING trial (a queued grid point): the storage lets one coordinator win each."""
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            try:
                if self.study._storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    return t._trial_id
            except UpdateFinishedTrialError:
                continue
        return None

    def _retry(self, number: int, params: dict[str, Any]) -> None:
        """Queue a grid point again after a retryable failure that THIS coordinator recorded.

        Only the coordinator whose move to FAIL succeeded calls this (the
        storage lets one succeed), so the point is queued once.
        """
        if self.grid and params:
            self.study.enqueue_trial(params, user_attrs={"retry_of": number})

    def _recover_stale(self) -> None:
        """Trials left RUNNING by a process on this host that died (SIGKILL, power loss) become FAIL (interrupted).

        For storages without heartbeat (the local journal); RDB storages use the heartbeat instead,
        which also sees other machines.
        """
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number in self.running or not is_stale(t):
                continue
            try:
                self.study._storage.set_trial_user_attr(t._trial_id, REASON_ATTR, INTERRUPTED)
                if self.study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                    self._retry(t.number, t.params or t.system_attrs.get("fixed_params", {}))
            except UpdateFinishedTrialError:
                pass  # another coordinator recovered it first

    def _beat(self) -> None:
        """Heartbeat thread: record a heartbeat for each trial this coordinator runs, every interval."""
        interval, _ = heartbeat_settings()
        storage = self.study._storage  # the study's cached wrapper: it must see every trial we make
        while not self._beating.wait(interval):
            for job in list(self.running.values()):
                try:
                    storage.record_heartbeat(job.trial._trial_id)  # type: ignore[attr-defined]
                except Exception:  # a database blip: the next beat retries; the grace period allows for it
                    pass

    def _emit(self, kind: str, job: Job, **data: Any) -> None:
        if self.listener is not None:
            best = self.best() if kind == "finish" else None
            event = TrialEvent(
                kind,
                job,
                done=self.done,
                target=self.target,
                failed=self.failed_total,
                best=best,
                running=len(self.running),
                **data,
            )
            self.listener(event)


def diverged(job: Job, metrics: dict[str, float]) -> str | None:
    """'diverged' when a reported loss is NaN/inf, or the training loss exceeds 3x its first report."""
    losses = {k: v for k, v in metrics.items() if k.endswith("loss")}
    if any(not math.isfinite(v) for v in losses.values()):
        return "diverged"
    key = "train_loss" if "train_loss" in losses else next(iter(sorted(losses)), None)
    if key is None:
        return None
    if job.first_loss is None:
        job.first_loss = losses[key]
    elif losses[key] > DIVERGE_FACTOR * job.first_loss:
        return "diverged"
    return None


def run_stage(
    store: Store,
    info: StageInfo,
    executor: Any = None,
    listener: Listener | None = None,
    pruner: str = "none",
    salt: int = 0,
) -> StageResult:
    """Run a stage until it has its number of finished trials; returns every trial and the border flags.

    `executor` runs the trials (dispatch.PoolExecutor, or by default
    InlineExecutor: one after another in this process); `pruner` is one of
    pruner.PRUNERS; `salt` varies the sampler seed (see StageRun). Other
    coordinators may run the same stage at the same time (see join_stage).
    Raises StageFailed when trials ran and every one of them failed.
    KeyboardInterrupt propagates after running trials are recorded as
    interrupted.
    """
    from hpsearch.dispatch import InlineExecutor

    run = StageRun(store, info, listener, pruner, salt)
    executor = executor or InlineExecutor()
    try:
        executor.run(run)
    except BaseException:
        run.interrupt()
        raise
    finally:
        run.close()
    if run.failures and run.completed_now == 0:
        first = "; ".join(run.failures[:3])
        raise StageFailed(f"every trial of stage {info.name} failed ({len(run.failures)} tried): {first}")
    return run.result()


def join_stage(
    store: Store,
    stage: str | None = None,
    executor: Any = None,
    listener: Listener | None = None,
    pruner: str = "none",
) -> StageResult:
    """Run trials of an existing stage (None: the latest) until it has its number of finished trials.

    Everything - space, settings, workload path - comes from the storage, so a
    machine needs only the study name and the storage URL (and the workload
    importable at the same path). Any number of coordinators may join and
    leave at any time; this one returns when the stage is complete, also
    waiting for trials other coordinators run, since they may fail and need
    replacing. Raises StudyNotFound for an unknown study or stage.
    """
    info = store.stage(stage)
    # Seed differs per joining process, so machines that join together do not draw the same points.
    return run_stage(store, info, executor, listener, pruner, salt=zlib.crc32(owner_tag().encode()) % 1_000_000_007)
