"""A coarse stage's warm starts in the storage: gathered (a file, another study's top configurations)
and enqueued as the stage's first trials (what each source is: warm_start.py).

Every warm start is a trial of the stage like any other: it counts toward the stage's trials and its
budget, TPE learns from it, and the leaderboard's `warm_start` column says where it came from
(trials.WARM_START_ATTR). They are enqueued once, by the command that creates the stage (as
grid points are: stages.create_stage), in this order: the trial at the study file's good values,
the file's configurations, the other study's, then GOOD_SHARE of the stage's trials near the good
values; at most the stage's target, each point once. Run again on a stage that exists (the same
command, to continue it), only the file's and the other study's configurations the stage does not
hold yet are queued. A grid stage takes none: it runs its grid points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from hpsearch.errors import StudyNotFound
from hpsearch.repeats import ranked_configs
from hpsearch.space import Space
from hpsearch.spec import StageSpec, StudySpec
from hpsearch.store.storage import StageInfo, Store
from hpsearch.strategy import Strategy
from hpsearch.trials import WARM_START_ATTR, derive_seed, point_key, trial_params
from hpsearch.warm_start import (
    GOOD_SHARE,
    GOOD_SOURCE,
    NEAR_SOURCE,
    WarmStart,
    WarmStartError,
    fit,
    good_point,
    near_points,
    read_file,
)

FROM_TOP = 5  # configurations taken from another study: as many as refine narrows around by default


def gather(
    space: Space,
    file: str | Path | None = None,
    study: str | None = None,
    top: int = FROM_TOP,
    directory: str | Path | None = None,
    url: str | None = None,
) -> tuple[list[WarmStart], list[str]]:
    """The warm starts of a coarse stage of `space`: `file`'s configurations, then the `top` best of
    `study` ("OTHER" or "OTHER:STAGE", in the same results folder or storage), and notes on what was
    filled in or clipped. Raises WarmStartError for a bad file or an unknown study."""
    starts: list[WarmStart] = []
    notes: list[str] = []
    if file is not None:
        starts, notes = read_file(file, space)
    if study:
        more, said = from_study(study, top, space, directory, url)
        starts, notes = starts + more, notes + said
    return starts, notes


def from_study(
    source: str, top: int, space: Space, directory: str | Path | None = None, url: str | None = None
) -> tuple[list[WarmStart], list[str]]:
    """The `top` best configurations (repeats.ranked_configs) of another study's stage (OTHER:STAGE; by
    default its latest stage with a completed trial), fitted into `space` (warm_start.fit)."""
    name, _, stage = source.partition(":")
    try:
        store = Store(name, directory, url, create=False)
        stages = store.stages_from(stage or None)
    except StudyNotFound as e:
        raise WarmStartError(f"$from {source}: {e}") from None
    for info in stages[:1] if stage else reversed(stages):
        configs = ranked_configs(store.trials(info), info.spec.direction)
        if configs:
            break
    else:
        where = f"stage {stage}" if stage else "any stage"
        raise WarmStartError(f"$from {source}: {where} of {name!r} has no completed trial; run it first")
    starts: list[WarmStart] = []
    notes: list[str] = []
    for config in configs[:top]:
        label = f"study:{name}/{info.name}#{config.trials[0].number}"
        params, said = fit(space, config.params, label)
        starts.append(WarmStart(params, label))
        notes += said
    return starts, notes


def refuse_grid(strategy: Strategy, starts: Sequence[WarmStart]) -> None:
    """A grid stage runs its grid points (its target is at most the grid's size): configurations to
    run first would take the place of grid points, so they are refused."""
    if starts and strategy == Strategy.grid:
        raise WarmStartError(
            "a grid stage runs its grid points, and warm starts would take their place; "
            "run the coarse stage with $strategy random or tpe to start from $start_with / $from"
        )


def plan(spec: StudySpec, settings: StageSpec, starts: Sequence[WarmStart]) -> tuple[list[WarmStart], list[str]]:
    """What a new coarse stage enqueues, in order (module docstring), and notes."""
    space, good, target = spec.space, spec.good, settings.target(spec.space)
    notes: list[str] = []
    if good and settings.strategy == Strategy.grid:
        notes.append(f"a grid stage runs its grid points: the good values of {', '.join(good)} are not used")
        good = {}
    first = [WarmStart(good_point(space, good), GOOD_SOURCE)] if good else []
    seen: set[tuple[tuple[str, str], ...]] = set()
    out: list[WarmStart] = []
    for start in [*first, *starts]:
        if (key := point_key(start.params)) not in seen:
            seen.add(key)
            out.append(start)
    if len(out) > target:
        notes.append(
            f"{len(out) - target} warm start(s) left out: the stage runs {target} trials (raise $trials to run them)"
        )
        out = out[:target]
    if good:
        n = min(int(target * GOOD_SHARE), target - len(out))
        seed = derive_seed("good", settings.seed)
        out += [WarmStart(p, NEAR_SOURCE) for p in near_points(space, good, n, seed)]
    return out, notes


def enqueue(store: Store, info: StageInfo, starts: Sequence[WarmStart]) -> int:
    """Enqueue `starts` as the stage's next trials, each marked with its source; a whole point the stage
    already holds (in any state) is not queued again. Returns how many were queued."""
    study = store.study(info)
    held = {point_key(trial_params(t)) for t in study.get_trials(deepcopy=False)}
    queued = 0
    for start in starts:
        key = point_key(start.params)
        if len(start.params) == len(info.space) and key in held:
            continue
        study.enqueue_trial(dict(start.params), user_attrs={WARM_START_ATTR: start.source})
        held.add(key)
        queued += 1
    return queued


def start_stage(
    store: Store,
    info: StageInfo,
    spec: StudySpec,
    starts: Sequence[WarmStart],
    created: bool,
    notify: Callable[[str], None] | None = None,
) -> StageInfo:
    """Enqueue a coarse stage's warm starts: the whole plan when this command `created` it, else the
    `starts` it does not hold yet. Returns the stage. `notify` hears the notes and what was queued."""
    refuse_grid(info.settings.strategy, starts)
    notes: list[str] = []
    if created:
        starts, notes = plan(spec, info.settings, starts)
    queued = enqueue(store, info, starts)
    say = notify or (lambda line: None)
    for line in notes:
        say(line)
    if queued:
        kinds = {s.source.split(":", 1)[0] for s in starts}
        say(f"warm start: {queued} configuration(s) queued to run first ({', '.join(sorted(kinds))})")
    return info
