"""Stages: coarse (wide ranges, short trials), then refine-1, refine-2, ... around the best.

`start_coarse` creates or resumes a study's coarse stage, `plan_refine`
derives the next refine stage from the top trials of a parent stage (the
algorithm: refine.py), and `run_stage` runs a stage until it has its number
of finished trials, through an executor (see dispatch/) that a Coordinator
(coordinator.py) feeds, recording every trial - completed, pruned or failed
with its reason - in the stage's Optuna study. `join_stage` runs more trials
of a stage that another command created (`hpsearch worker`, other machines
on a shared PostgreSQL study).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from optuna.trial import TrialState

from hpsearch.border import BorderFlag, check_borders
from hpsearch.errors import HpsearchError, Preempted, SpecError, StageExists, StageFailed
from hpsearch.refine import derive_space, plan_widening
from hpsearch.repeats import Configuration, ranked_configs
from hpsearch.search import warm_starts
from hpsearch.search.coordinator import Coordinator, Listener, StageResult
from hpsearch.search.ledger import Ledger
from hpsearch.search.liveness import owner_tag
from hpsearch.spec import StudySpec, check_stage
from hpsearch.store.storage import StageInfo, Store, transient_errors
from hpsearch.strategy import Strategy
from hpsearch.trials import (
    CARRIED_ATTR,
    INTERRUPTED,
    PREEMPTED,
    REASON_ATTR,
    attempt,
    derive_seed,
    point_key,
    resumes,
    trial_params,
)

if TYPE_CHECKING:
    from hpsearch.dispatch.source import Executor
    from hpsearch.warm_start import WarmStart


def start_coarse(
    store: Store,
    spec: StudySpec,
    overrides: dict[str, Any],
    notify: Callable[[str], None] | None = None,
    warm: Sequence[WarmStart] = (),
) -> StageInfo:
    """The study's coarse stage: created from `spec`, or the stored one when it exists (resume).

    A stored coarse stage that no longer matches the study file (params,
    workload, metric, direction) is replaced while it has no completed trial
    (a first mistake must not lock the study; `notify` hears one line about
    it); after that the study file may not change under it (StageExists).
    `warm` (configurations to run first) and the study file's good values are
    enqueued as its first trials (search/warm_starts.py; `notify` hears what).
    """
    overrides = budget_trials(overrides)
    settings = check_stage(spec.coarse.with_overrides(**overrides), "coarse", spec.path)
    warm_starts.refuse_grid(settings.strategy, warm)
    stages = store.stages()
    existing = [s for s in stages if s.name == "coarse"]
    if existing:
        stored = existing[0]
        changed = [
            key
            for key, mine, theirs in (
                ("params", spec.space, stored.space),
                ("workload", spec.workload, stored.spec.workload),
                ("metric", spec.metric, stored.spec.metric),
                ("direction", spec.direction, stored.spec.direction),
            )
            if mine != theirs
        ]
        if not changed:
            stored = _resume(store, stored, overrides, spec.path)
            return warm_starts.start_stage(store, stored, spec, warm, False, notify)
        if any(t.state == TrialState.COMPLETE for t in store.trials(stored)) or len(stages) > 1:
            raise StageExists(
                spec.path,
                changed[0],
                f"differs from the coarse stage already stored in {store.location}, which has completed trials; "
                "rename the study (name = ...) to keep both, or delete the stored stages to start over",
            )
        store.delete(stored)
        if notify is not None:
            notify(
                f"the stored coarse stage had no completed trial: "
                f"replaced it with {spec.path} ({', '.join(changed)} changed)"
            )
    info = StageInfo("coarse", 0, None, settings, spec.space, spec)
    stored = create_stage(store, info)
    created = stored is info
    stored = info if created else _resume(store, stored, overrides, spec.path)
    return warm_starts.start_stage(store, stored, spec, warm, created, notify)


def _resume(store: Store, stored: StageInfo, overrides: dict[str, Any], file: str) -> StageInfo:
    """A stage that already exists: a new `trials` may raise its target, other settings must agree."""
    given = {k: v for k, v in overrides.items() if v is not None}
    for key, value in given.items():
        if key in ("trials", "top_k", "max_failures", "budget"):
            continue
        old = getattr(stored.settings, key)
        old = old.value if isinstance(old, Strategy) else old
        if value != old:
            raise SpecError(
                file,
                f"${key}",
                f"stage {stored.name} already ran with {key} = {old}; leave it out to continue the stage, "
                "or start a new study to change it",
            )
    settings = stored.settings.with_overrides(
        trials=given.get("trials"),
        top_k=given.get("top_k"),
        max_failures=given.get("max_failures"),
        budget=given.get("budget"),
    )
    if settings != stored.settings:
        stored = replace(stored, settings=settings)
        store.update(stored)
        if stored.settings.strategy == Strategy.grid:
            enqueue_grid(store, stored)  # a raised target needs more points
    return stored


def budget_trials(overrides: dict[str, Any]) -> dict[str, Any]:
    """A `budget` given without `trials` lifts the trials to the budget (each counted trial runs at
    least one epoch), so that the budget, not the trial count, ends the stage (one with a pruner)."""
    if overrides.get("budget") is not None and overrides.get("trials") is None:
        return {**overrides, "trials": overrides["budget"]}
    return overrides


def plan_refine(
    store: Store,
    source: str | None,
    overrides: dict[str, Any],
    top: Sequence[dict[str, Any]] | None = None,
    carry: Sequence[dict[str, Any]] = (),
) -> tuple[StageInfo, list[BorderFlag], bool]:
    """The refine stage to run: an unfinished latest refine stage (resumed), or a new one.

    A new stage `refine-N` narrows the space around `top` (default: the params
    of the top_k configurations of `source`, the latest stage by default, in
    repeats.ranked_configs' noise-aware order), widened past flagged borders
    (checked on the configurations' means), and enqueues `carry` (params) as
    its first trials: the parent's best, re-run at the new length. Its
    seed is the `seed` override, else derived from the parent stage's seed
    (`refine_seed`), so `coarse --seed 7` carries on into every refine.
    Returns (stage, the parent's border flags, resumed?).
    """
    overrides = budget_trials(overrides)
    stages = store.stages()
    latest = store.stage(None)
    if source is None and latest.index > 0 and not stage_complete(store, latest):
        return _resume(store, latest, overrides, "refine"), [], True
    parent = store.stage(source)
    index = max(s.index for s in stages) + 1
    settings = check_stage(parent.spec.refine.with_overrides(**overrides), "refine", "command line")
    if overrides.get("seed") is None:
        settings = replace(settings, seed=refine_seed(parent, index))
    ranked = [c.params for c in ranked_configs(store.trials(parent), parent.spec.direction)]
    if not ranked:
        raise HpsearchError(
            f"stage {parent.name} of {store.name!r} has no completed trials to refine from; "
            f"run or continue it first (its trials failed or it was interrupted)"
        )
    top = list(top) if top is not None else ranked[: settings.top_k]
    flags = plan_widening(parent.space, check_borders(parent.space, ranked, settings.top_k))
    space, changes = derive_space(parent.space, top, flags, parent.settings.strategy)
    info = StageInfo(f"refine-{index}", index, parent.name, settings, space, parent.spec, tuple(changes))
    stored = create_stage(store, info)
    if stored is info:
        for params in carry[: settings.trials]:
            store.study(info).enqueue_trial(
                {k: v for k, v in params.items() if k in space.names}, user_attrs={CARRIED_ATTR: True}
            )
    return (info, flags, False) if stored is info else (_resume(store, stored, overrides, "refine"), [], True)


def refine_seed(parent: StageInfo, index: int) -> int:
    """The seed of refine stage `index` when none is given: derived from its parent stage's seed (and the
    study file's [refine] seed), deterministic, and distinct from the parent's and from its siblings'."""
    return derive_seed("refine", parent.settings.seed, parent.spec.refine.seed, index)


def create_stage(store: Store, info: StageInfo) -> StageInfo:
    """Create the stage's Optuna study; a grid stage gets its points enqueued here, once (by the
    command that won the creation, when several create it at once). Returns the stage as stored."""
    stored = store.create(info)
    if stored is info and info.settings.strategy == Strategy.grid:
        enqueue_grid(store, info)
    return stored


def enqueue_grid(store: Store, info: StageInfo) -> int:
    """Enqueue the grid points the stage has not queued or tried, shuffled by the seed, up to its target.

    Called when the stage is created or its target raised - one command, not
    every coordinator - so concurrent coordinators never queue a point twice.
    Returns how many points it enqueued.
    """
    study = store.study(info)
    trials = study.get_trials(deepcopy=False)
    # A resumed failure's point was queued again by whoever failed it: it is seen through that trial.
    limits = info.spec.limits
    seen = {
        point_key(trial_params(t))
        for t in trials
        if not (t.state == TrialState.FAIL and resumes(t.user_attrs.get(REASON_ATTR), attempt(t), limits))
    }
    points = info.space.grid()
    random.Random(info.settings.seed).shuffle(points)
    missing = [p for p in points if point_key(p) not in seen]
    room = max(info.settings.target(info.space) - len(seen), 0)
    for params in missing[:room]:
        study.enqueue_trial(params)
    return min(room, len(missing))


def stage_complete(store: Store, info: StageInfo) -> bool:
    """Whether a stage is done: it has its trials, or its budget has no room for one more trial."""
    return Ledger.of(info, store.trials(info)).complete


def run_stage(
    store: Store,
    info: StageInfo,
    executor: Executor | None = None,
    listener: Listener | None = None,
    pruner: str = "none",
    salt: int = 0,
    deadline: float | None = None,
) -> StageResult:
    """Run a stage until it has its number of finished trials; returns every trial and the border flags.

    `executor` runs the trials (dispatch.PoolExecutor, or by default
    dispatch.InlineExecutor: one after another in this process), its limit
    overrides in every trial's record; `pruner` is
    one of pruner.PRUNERS; `salt` varies the sampler seed (see Coordinator); no
    trial starts after `deadline` (time.monotonic()) or past the stage's budget. Other
    coordinators may run the same stage at the same time (see join_stage).
    Raises StageFailed when trials ran and every one of them failed.
    KeyboardInterrupt propagates after running trials are recorded as
    interrupted.
    """
    if executor is None:
        from hpsearch.dispatch.inline import InlineExecutor

        executor = InlineExecutor()
    run = Coordinator(store, info, listener, pruner, salt, deadline, executor.overrides)
    try:
        executor.run(run)
    except BaseException as e:
        try:
            run.interrupt(PREEMPTED if isinstance(e, Preempted) else INTERRUPTED)
        except transient_errors():
            pass  # the storage is gone too: the trials stay RUNNING and the next run fails them as stale
        raise
    finally:
        run.close()
    if (failures := run.ledger.failures) and run.ledger.completed_now == 0:
        raise StageFailed(
            f"every trial of stage {info.name} failed ({len(failures)} tried): {failure_summary(failures)}"
        )
    return run.result()


def failure_summary(failures: Sequence[str], most: int = 3) -> str:
    """'trial N: reason' lines as one text, each reason once with the trials it ended ('reason (trials 0,
    1, 2)'), the first `most` reasons."""
    trials: dict[str, list[str]] = {}
    for line in failures:
        number, _, reason = line.partition(": ") if line.startswith("trial ") else ("", "", line)
        trials.setdefault(reason, []).append(number.removeprefix("trial "))
    parts = [
        f"{reason} (trial{'s' if len(ns) > 1 else ''} {', '.join(n for n in ns if n)})" for reason, ns in trials.items()
    ]
    more = f"; and {len(parts) - most} other reason(s)" if len(parts) > most else ""
    return "; ".join(parts[:most]) + more


def join_stage(
    store: Store,
    stage: str | None = None,
    executor: Executor | None = None,
    listener: Listener | None = None,
    pruner: str = "none",
    deadline: float | None = None,
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
    return run_stage(
        store, info, executor, listener, pruner, zlib.crc32(owner_tag().encode()) % 1_000_000_007, deadline
    )


def best_configuration(store: Store) -> tuple[StageInfo, Configuration] | None:
    """THE best configuration of a study, the one `search` names, `final` tests and the report heads with:
    the top of the noise-aware ranking (ranked_configs) in the latest stage that has a completed trial,
    with that stage. None when no stage has one."""
    for info in reversed(store.stages()):
        configs = ranked_configs(store.trials(info), info.spec.direction)
        if configs:
            return info, configs[0]
    return None
