"""Stages: coarse (wide ranges, short trials), then refine-1, refine-2, ... around the best.

`start_coarse` creates or resumes a study's coarse stage, `plan_refine`
derives the next refine stage from the top trials of a parent stage, and
`run_stage` runs a stage until it has its number of finished trials, through
an executor (see dispatch.py), recording every trial - completed, pruned or
failed with its reason - in the stage's Optuna study.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.border import BorderFlag, check_borders
from hpsearch.errors import HpsearchError, SpecError, StageFailed
from hpsearch.pruner import make_pruner, prune_reason
from hpsearch.space import Choice, Param, Range, Space, Value, fmt
from hpsearch.spec import StageSpec, Strategy, StudySpec, check_stage
from hpsearch.storage import OWNER_ATTR, StageInfo, Store, is_stale, owner_tag
from hpsearch.strategy import make_sampler
from hpsearch.workload import TrialOutcome

INTERRUPTED = "interrupted"
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
        store.create(info)
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
    store.create(info)
    return info, flags, False


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
        finished += sum(t.user_attrs.get("reason") != INTERRUPTED for t in failed)
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
    """The coordinator of one stage: the only one that talks to the storage.

    Executors call `next_job` to get a trial to run, `report` with each
    epoch's metrics (returns a reason to stop the trial, or None), and
    `finish` with the outcome.
    """

    def __init__(self, store: Store, info: StageInfo, listener: Listener | None = None, pruner: str = "none") -> None:
        self.store = store
        self.info = info
        self.listener = listener
        self.pruner = pruner
        self.metric = info.spec.metric
        self.direction = info.spec.direction.value
        self.target = stage_target(info)
        existing = store.trials(info)
        self._recover_stale(existing)
        # Seeded by the history too, so a resumed stage draws new points, not the first ones again.
        seed = info.settings.seed + 10_000 * info.index + len(existing)
        self.study = store.study(
            info,
            sampler=make_sampler(info.settings.strategy, seed),
            pruner=make_pruner(pruner, info.settings.epochs),
        )
        if info.settings.strategy == Strategy.grid:
            self._enqueue_grid(existing)
        self.done, self.failed_total = _counts(self.study.get_trials(deepcopy=False), info.settings.strategy)
        self.running: dict[int, Job] = {}
        self.ran = 0
        self.completed_now = 0
        self.failures: list[str] = []
        self.fail_streak = 0
        self.metric_checked = False

    # -- what executors call

    def next_job(self) -> Job | None:
        """The next trial to run, or None when the stage needs no more trials started."""
        if self.done + len(self.running) >= self.target or self._failing():
            return None
        if self.info.settings.strategy == Strategy.grid and not self._waiting():
            return None
        trial = self.study.ask(self.info.space.distributions())
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
        self._emit("start", job)
        return job

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
        if reported:
            job.trial.report(metrics[self.metric], epoch)
        reason = diverged(job, metrics)
        if reason is None and reported and self.pruner != "none" and job.trial.should_prune():
            reason = prune_reason(self.pruner)
        return reason

    def finish(self, job: Job, outcome: TrialOutcome) -> None:
        """Record how a trial ended. A crash is data: it never stops the stage by itself."""
        self.running.pop(job.number, None)
        self.ran += 1
        trial = job.trial
        if outcome.curves:
            trial.set_user_attr("curves", outcome.curves)
        if outcome.metrics:
            trial.set_user_attr("metrics", outcome.metrics)
        trial.set_user_attr("duration_s", round(outcome.duration_s, 4))
        if outcome.reason:
            trial.set_user_attr("reason", outcome.reason)
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
            if outcome.reason != INTERRUPTED:
                self.failures.append(f"trial {job.number}: {outcome.reason}")
                self.fail_streak += 1
                if self.info.settings.strategy == Strategy.grid:
                    self.done += 1
        self._emit("finish", job, outcome=outcome)

    def interrupt(self) -> None:
        """Record every running trial as FAIL (interrupted); completed trials stay."""
        for job in list(self.running.values()):
            self.finish(job, TrialOutcome("fail", reason=INTERRUPTED, duration_s=time.perf_counter() - job.started))

    # -- results

    def result(self) -> StageResult:
        trials = self.study.get_trials(deepcopy=False)
        ranked = ranked_trials(trials, self.direction)
        flags = check_borders(self.info.space, [t.params for t in ranked], self.info.settings.top_k)
        return StageResult(self.info, trials, self.ran, flags, self.failures)

    def best(self) -> FrozenTrial | None:
        ranked = ranked_trials(self.study.get_trials(deepcopy=False), self.direction)
        return ranked[0] if ranked else None

    # -- internals

    def _failing(self) -> bool:
        return self.fail_streak >= FAIL_FAST and self.completed_now == 0 or len(self.failures) >= self.target

    def _waiting(self) -> bool:
        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _recover_stale(self, trials: Sequence[FrozenTrial]) -> None:
        """Trials left RUNNING by a process that died (SIGKILL, power loss) become FAIL (interrupted)."""
        stale = [t for t in trials if t.state == TrialState.RUNNING and is_stale(t)]
        if not stale:
            return
        study = self.store.study(self.info)
        for t in stale:
            self.store.storage.set_trial_user_attr(t._trial_id, "reason", INTERRUPTED)
            study.tell(t.number, state=TrialState.FAIL)

    def _enqueue_grid(self, trials: Sequence[FrozenTrial]) -> None:
        """Enqueue the grid points not yet tried, shuffled by the seed, up to the target."""
        import random

        def key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
            return tuple(sorted((k, repr(v)) for k, v in params.items()))

        visited = {
            key(t.params or t.system_attrs.get("fixed_params", {}))
            for t in trials
            if not (t.state == TrialState.FAIL and t.user_attrs.get("reason") == INTERRUPTED)
        }
        points = self.info.space.grid()
        random.Random(self.info.settings.seed).shuffle(points)
        missing = [p for p in points if key(p) not in visited]
        room = self.target - len(visited)
        for params in missing[: max(room, 0)]:
            self.study.enqueue_trial(params)

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
    store: Store, info: StageInfo, executor: Any = None, listener: Listener | None = None, pruner: str = "none"
) -> StageResult:
    """Run a stage until it has its number of finished trials; returns every trial and the border flags.

    `executor` runs the trials (dispatch.PoolExecutor, or by default
    InlineExecutor: one after another in this process); `pruner` is one of
    pruner.PRUNERS. Raises StageFailed when trials ran and every one of them
    failed. KeyboardInterrupt propagates after running trials are recorded
    as interrupted.
    """
    from hpsearch.dispatch import InlineExecutor

    run = StageRun(store, info, listener, pruner)
    executor = executor or InlineExecutor()
    try:
        executor.run(run)
    except BaseException:
        run.interrupt()
        raise
    if run.failures and run.completed_now == 0:
        first = "; ".join(run.failures[:3])
        raise StageFailed(f"every trial of stage {info.name} failed ({len(run.failures)} tried): {first}")
    return run.result()
