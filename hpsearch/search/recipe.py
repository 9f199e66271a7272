"""The whole recipe in one loop: coarse, then refine while the best moves by more than the noise.

`search` runs (or continues) a study stage by stage, all of it derived from
what the storage holds, so Ctrl-C and the same call continue it:

0. the plan (plan.py `plan_stages`, a pure function of the budget and the study
   file): coarse TPE at a third of refine's length over about half the
   budget, refine trials sized from what is left; `search_plan = "study"`
   runs the study file's stages as written, and the coarse flags win over both;
1. coarse: that stage, then its top configurations re-run with other seeds
   (`confirm`), which measures the noise at that length; when its best does
   not stand out from the noise (`stands_out`), more coarse trials at points
   spread over the space, and their re-runs (`explore_more`, decided once);
2. refine-N: the box is fitted to the configurations that stand out (whose
   mean is within two noise units of the best's: `standouts`), the best of
   them are carried in as the first trials at the new length, the rest is
   random inside the box, and again the top ones are re-run (`confirm`);
3. after each stage, one decision: refine again while the best improved by
   more than the noise of the difference and the budget has room for one
   more stage (the last is sized to what is left), else stop.

The budget counts trial-epochs over every stage (trials.spent_epochs: a
pruned or failed trial counts the epochs it ran); each stage is created with
its share as its own `budget`, so the coordinator never starts a trial that
could take the search past it. Ranking is repeats.ranked_configs (means of
the repeats, shrunk by the measured noise). Pure logic over stages.py and
the storage: nothing here prints (`say` hears the decision lines).
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from hpsearch.direction import Direction
from hpsearch.errors import HpsearchError
from hpsearch.repeats import Configuration, difference_noise, noise_sd, ranked_configs
from hpsearch.search.plan import COARSE_RUNS, MIN_REFINE_TRIALS, budget_note, default_budget, plan_note, plan_stages
from hpsearch.search.stages import plan_refine, run_stage, stage_complete, start_coarse
from hpsearch.space import Range, Space
from hpsearch.spec import StudySpec
from hpsearch.store.storage import StageInfo, Store
from hpsearch.trials import EXPLORE_ATTR, REPEAT_ATTR, derive_seed, marked, point_key, spent_epochs, trial_params

PLAN_ATTR = "recipe"  # a stage's plan in its Optuna study's user attributes: {"explore", "repeats", "runs"}
REFINE_RUNS = 3  # refine: the top configurations, to this many runs each
REPEAT_FRACTION = 0.2  # of a refine stage's trials, kept for re-running its top configurations
CARRY = 3  # at most this many of the parent's standouts are carried into refine at the new length
STANDOUT_Z = 2.0  # a configuration stands out when its mean is within this many noise units of the best's
# Coarse explores more when its best does not stand out from the noise (explore_more):
EXPLORE_Z = 2.0  # stands out: best mean above the median configuration's by this many standard errors
EXPLORE_SHARE = 0.5  # of what is left, spent on more coarse trials spread over the space
EXPLORE_REPEATS = 3  # re-runs of the top configurations after them
EXPLORE_CANDIDATES = 20  # random candidates per spread point (the farthest from every trial is taken)


@dataclass
class Step:
    """One decision of the search, after one stage."""

    stage: str
    before: float | None  # the previous stage's best mean (None after coarse)
    best: float
    noise: float | None  # the noise of the comparison (None: not measured, no repeats yet)
    left: int
    budget: int
    decision: str  # "refine", "refine again" or "stop (...)"
    explored: int = 0  # coarse's extra trials at spread points (explore_more): its best did not stand out

    @property
    def line(self) -> str:
        moved = f"{self.before:.4f} → {self.best:.4f}" if self.before is not None else f"{self.best:.4f}"
        noise = f"noise ±{self.noise:.4f}" if self.noise is not None else "noise not measured"
        more = f", {self.explored} more trials spread over the space (the best did not stand out from the noise)" if self.explored else ""
        return f"{self.stage}: best {moved} ({noise}){more}, budget {self.left}/{self.budget} epochs left: {self.decision}"


@dataclass
class SearchResult:
    steps: list[Step] = field(default_factory=list)
    stages: list[StageInfo] = field(default_factory=list)
    best: Configuration | None = None  # the best configuration of the last stage
    timed_out: bool = False


def search(
    store: Store,
    spec: StudySpec,
    overrides: dict[str, Any] | None = None,
    budget: int | None = None,
    executor: Any = None,
    listener: Callable[[StageInfo], Any] | None = None,
    pruner: str = "none",
    deadline: float | None = None,
    say: Callable[[str], None] | None = None,
    stage_ended: Callable[[StageInfo], None] | None = None,
) -> SearchResult:
    """Run or continue the whole search (module docstring); returns its decisions and best configuration.

    `overrides` are the coarse stage's (trials, epochs, strategy, seed, ...);
    `budget` the trial-epochs of the whole search (default: default_budget);
    `listener(stage)` gives each stage's progress listener; `deadline`
    (time.monotonic()) stops starting trials (the stage it ends is resumable);
    `say` hears plan_note's line, then one decision line per stage; `stage_ended(stage)` is called
    before each (the CLI says what a stage run alone says). Raises StageFailed as run_stage does.
    """
    total = budget if budget is not None else default_budget(spec)
    if total < 1:
        raise HpsearchError(f"$budget {total}: must be at least 1 trial-epoch")
    say = say or (lambda line: None)
    result = SearchResult()
    given = {k: v for k, v in (overrides or {}).items() if v is not None and k != "budget"}
    written, spec = spec, plan_stages(spec, total, given)
    for note in (plan_note(written, spec), budget_note(spec, total)):
        if note:
            say(note)
    stage = _coarse(store, spec, given, total)
    previous: Configuration | None = None
    while True:
        result.stages.append(stage)
        ended = _run_planned(store, stage, executor, listener, pruner, deadline, total)
        configs = ranked_configs(store.trials(stage), spec.direction)
        left = total - spent(store, stage.index)  # as it was after this stage, also when replayed on resume
        if stage_ended is not None:
            stage_ended(store.stage(stage.name))
        if ended == "timeout":
            result.timed_out = True
            result.best = configs[0] if configs else previous
            return result
        if not configs:
            raise HpsearchError(f"stage {stage.name} of {store.name!r} has no completed trials to go on from")
        best = configs[0]
        result.best = best
        later = next((s for s in store.stages() if s.parent == stage.name and s.index > stage.index), None)
        step = _decide(store, stage, best, previous, left, total)
        if later is not None:  # decided before (a resumed search): follow the stage that was made
            step.decision = "refine" if previous is None else "refine again"
        result.steps.append(step)
        say(step.line)
        if step.decision.startswith("stop"):
            return result
        stage = later or _next_stage(store, stage, configs, left)
        previous = best


def spent(store: Store, upto: int | None = None) -> int:
    """Trial-epochs spent by every stage of the study (up to stage index `upto`; running trials
    counted at full length)."""
    return sum(spent_epochs(store.trials(s), s.settings.epochs) for s in store.stages() if upto is None or s.index <= upto)


def _coarse(store: Store, spec: StudySpec, given: dict[str, Any], total: int) -> StageInfo:
    """The coarse stage, created with its share of the budget (explore + re-runs), or the stored one."""
    existing = next((s for s in store.stages() if s.name == "coarse"), None)
    settings = spec.coarse.with_overrides(**given)
    plan = _plan(store, existing) if existing is not None else None
    explore = plan["explore"] if plan else max(settings.trials, existing.settings.trials if existing else 0)
    repeats = plan["repeats"] if plan else min(settings.top_k, explore) * (COARSE_RUNS - 1)
    trials = max(explore, existing.settings.trials if existing else 0)  # a stored target is never lowered
    info = start_coarse(store, spec, {**given, "trials": trials, "budget": min(total, (explore + repeats) * settings.epochs)})
    if plan is None:
        _set_plan(store, info, explore, repeats, COARSE_RUNS)
    return info


def _next_stage(store: Store, parent: StageInfo, configs: list[Configuration], left: int) -> StageInfo:
    """A new refine stage after `parent`, sized to what is left of the budget."""
    refine = parent.spec.refine
    trials = min(refine.trials, left // refine.epochs)
    repeats = int(round(trials * REPEAT_FRACTION))
    top = standouts(configs, parent.settings.top_k)
    carry = [c.params for c in top[:CARRY]]
    overrides = {"trials": trials - repeats, "budget": trials * refine.epochs}
    info, _flags, _resumed = plan_refine(store, parent.name, overrides, top=[c.params for c in top], carry=carry)
    _set_plan(store, info, trials - repeats, repeats, REFINE_RUNS)
    return info


def standouts(configs: list[Configuration], top_k: int) -> list[Configuration]:
    """The configurations refine's box is fitted to: those the noise cannot tell from the best (mean
    within STANDOUT_Z standard errors of the difference), at most top_k; the top_k when no noise is measured."""
    sd = noise_sd(configs)
    if sd is None or not configs:
        return configs[:top_k]
    best = configs[0]
    close = [c for c in configs if abs(c.mean - best.mean) <= STANDOUT_Z * difference_noise(sd, c.n, best.n)]
    return ([best] + [c for c in close if c is not best])[:top_k]


def _decide(store: Store, stage: StageInfo, best: Configuration, previous: Configuration | None, left: int, total: int) -> Step:
    stages = store.stages()
    parent = next((s for s in stages if s.name == stage.parent), None)
    sd = noise_sd(ranked_configs(store.trials(stage), stage.spec.direction))
    refine = stage.spec.refine
    room = left // refine.epochs >= MIN_REFINE_TRIALS
    before = previous.mean if previous is not None else None
    noise = None if sd is None else (difference_noise(sd, best.n, previous.n) if previous else sd / best.n**0.5)
    if not room:
        decision = "stop (budget spent)"
    elif previous is None:
        decision = "refine"
    elif parent is not None and parent.settings.epochs == stage.settings.epochs and stage.spec.direction.gain(best.mean, previous.mean) <= (noise or 0.0):
        decision = "stop (the best moved less than the noise)"
    else:
        decision = "refine again"
    explored = (_plan(store, stage) or {}).get("extra", 0) if stage.index == 0 else 0
    return Step(stage.name, before, best.mean, noise, max(left, 0), total, decision, explored)


def _plan(store: Store, info: StageInfo) -> dict[str, int] | None:
    return store.study(info).user_attrs.get(PLAN_ATTR)


def _set_plan(store: Store, info: StageInfo, explore: int, repeats: int, runs: int, **more: int) -> None:
    plan = {"explore": explore, "repeats": repeats, "runs": runs, **more}
    if _plan(store, info) != plan:
        store.study(info).set_user_attr(PLAN_ATTR, plan)


def _run_planned(
    store: Store, info: StageInfo, executor: Any, listener: Callable[[StageInfo], Any] | None, pruner: str,
    deadline: float | None, total: int,
) -> str | None:
    """Run a stage's explore trials, then its re-runs (`confirm`), then, in coarse, more trials when its best
    does not stand out (`explore_more`) and their re-runs; returns "timeout" when the deadline ended it."""
    for _ in range(4):
        info = store.stage(info.name)
        if not stage_complete(store, info):
            result = run_stage(store, info, executor, listener(info) if listener else None, pruner, deadline=deadline)
            if result.ended_by == "timeout":
                return "timeout"
            if result.shortfall:
                raise HpsearchError(f"{result.shortfall}; run the same command again to continue")
        if not confirm(store, store.stage(info.name)) and not explore_more(store, store.stage(info.name), total):
            return None
    return None


def confirm(store: Store, info: StageInfo) -> bool:
    """Enqueue the re-runs of the stage's top configurations (other seeds: other trial numbers) and raise
    its target to hold them; True when the stage got trials to run. Idempotent: re-runs already queued
    or run count, so a resumed search neither repeats nor loses them."""
    plan = _plan(store, info)
    if not plan or plan["repeats"] <= 0:
        return False
    trials = store.trials(info)
    repeats = marked(trials, REPEAT_ATTR)  # a re-run resumed after a stop counts once
    need = plan["repeats"] - len(repeats)
    queued: dict[Any, int] = {}
    for t in repeats:
        if t.state.name == "WAITING":
            queued[point_key(trial_params(t))] = queued.get(point_key(trial_params(t)), 0) + 1
    study = store.study(info)
    added = 0
    for config in ranked_configs(trials, info.spec.direction):
        more = min(max(plan["runs"] - config.n - queued.get(point_key(config.params), 0), 0), need - added)
        for _ in range(more):
            study.enqueue_trial(config.params, user_attrs={REPEAT_ATTR: config.trials[0].number})
        added += more
    target = plan["explore"] + len(repeats) + added
    if info.settings.trials >= target:
        return False
    store.update(replace(info, settings=replace(info.settings, trials=target)))
    return True


def stands_out(configs: list[Configuration], direction: Direction | str) -> bool:
    """Whether the best configuration (configs: ranked) stands out from the noise: its mean beyond the
    median configuration's by more than EXPLORE_Z standard errors of the difference. True when no
    noise is measured (nothing to go on)."""
    sd = noise_sd(configs)
    if sd is None or len(configs) < 3:
        return True
    median = statistics.median(c.mean for c in configs)
    return Direction(direction).gain(configs[0].mean, median) > EXPLORE_Z * difference_noise(sd, configs[0].n, 1)


def explore_more(store: Store, info: StageInfo, total: int) -> bool:
    """Coarse only, decided once (the plan's `extra`): when its best does not stand out (`stands_out`),
    a sampler fed only noise would keep chasing it, so EXPLORE_SHARE of what is left goes to more coarse
    trials (at most as many as it had) at points spread over the space (`spread_points`), then
    EXPLORE_REPEATS more re-runs.
    True when the stage got trials to run."""
    plan = _plan(store, info)
    if info.index != 0 or not plan or "extra" in plan:
        return False
    trials = store.trials(info)
    epochs = info.settings.epochs
    extra = min(int((total - spent(store)) * EXPLORE_SHARE) // epochs - EXPLORE_REPEATS, plan["explore"])
    if stands_out(ranked_configs(trials, info.spec.direction), info.spec.direction) or extra < 1:
        _set_plan(store, info, plan["explore"], plan["repeats"], plan["runs"], extra=0)
        return False
    explore, repeats = plan["explore"] + extra, plan["repeats"] + EXPLORE_REPEATS
    _set_plan(store, info, explore, repeats, plan["runs"], extra=extra)  # first: a crash after it leaves TPE's trials
    points = spread_points(info.space, [trial_params(t) for t in trials], extra, derive_seed("explore", info.settings.seed))
    study = store.study(info)
    for params in points:
        study.enqueue_trial(params, user_attrs={EXPLORE_ATTR: True})
    settings = replace(info.settings, trials=explore + len(marked(trials, REPEAT_ATTR)), budget=min(total, (explore + repeats) * epochs))
    store.update(replace(info, settings=settings))
    return True


def spread_points(space: Space, seen: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """n random points of `space`, each the farthest (in the ranges' unit coordinates: log scale for log
    ranges) from `seen` and the points before it, of EXPLORE_CANDIDATES random candidates. Pure."""
    rng = random.Random(seed)
    ranges = [p for p in space if isinstance(p, Range)]

    def draw() -> dict[str, Any]:
        point: dict[str, Any] = {}
        for p in space:
            if isinstance(p, Range):
                value = min(max(p.unscale(rng.uniform(p.scale(p.low), p.scale(p.high))), p.low), p.high)
                point[p.name] = int(round(value)) if p.type == "int" else value
            else:
                point[p.name] = rng.choice(p.values)
        return point

    def where(point: dict[str, Any]) -> list[float]:
        return [p.position(point[p.name]) for p in ranges if p.name in point]

    taken = [where(q) for q in seen]
    points = []
    for _ in range(n):
        candidates = [draw() for _ in range(EXPLORE_CANDIDATES)]
        best = max(candidates, key=lambda c: min((sum((a - b) ** 2 for a, b in zip(where(c), t)) for t in taken), default=0.0))
        points.append(best)
        taken.append(where(best))
    return points
