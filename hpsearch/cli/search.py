"""The commands that run stages: coarse, refine, and worker (one more machine on a stage)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from hpsearch.cli.options import (
    BudgetOpt,
    DirOpt,
    NameArg,
    RunOptions,
    SpecArg,
    StageOverrides,
    StorageOpt,
    TimeoutOpt,
    flag,
    grouped,
)
from hpsearch.errors import Preempted, StageStoppedShort, render_settings

INTERRUPTED_MESSAGE = "\nInterrupted: completed trials are kept; run the same command again to continue."
INTERRUPTED_EXIT = 130  # as a shell reports Ctrl-C

StartWithOpt = Annotated[
    Path | None,
    typer.Option(
        "--start-with",
        metavar="FILE",
        help="Run these configurations first: the best.toml (or best.json) `hpsearch final` writes, a TOML file of "
        "[[configs]] tables, or a JSON list of objects. Every value must lie in the study's space (else exit 2, "
        "before any trial); a param the file lacks takes its midpoint. They count toward --trials and --budget.",
    ),
]
FromStudyOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="OTHER[:STAGE]",
        help="Run another study's best configurations first (--from-top of them; from STAGE, else its latest stage "
        "with a completed trial), read from the same --dir/--storage. A value outside this study's range is "
        "clipped into it, one not in a set takes the nearest value; each change is said.",
    ),
]
FromTopOpt = Annotated[
    int | None,
    typer.Option("--from-top", min=1, metavar="K", help="How many configurations --from takes [default: 5]."),
]


@grouped
def coarse(
    spec_file: SpecArg,
    overrides: StageOverrides,
    run: RunOptions,
    budget: BudgetOpt = None,
    timeout: TimeoutOpt = None,
    directory: DirOpt = None,
    storage: StorageOpt = None,
    start_with: StartWithOpt = None,
    from_study: FromStudyOpt = None,
    from_top: FromTopOpt = None,
) -> None:
    """Run (or continue) a study's coarse stage: wide ranges, short trials.

    Creates the study from the study file, or continues its coarse stage until
    it has its number of finished trials. Prints the leaderboard and flags
    parameters whose best value lies on the border of their range.

    Trials run in worker processes over every visible GPU (else one per CPU
    core); live progress goes to stderr. A trial that crashes, dies, times
    out, stalls (stops reporting: --stall-factor, --stall-floor) or diverges
    is recorded with its reason and the search goes on; Ctrl-C (or a closed
    terminal: SIGHUP) keeps every finished trial, and the same command continues.
    --budget EPOCHS caps the trial-epochs the stage spends (with a pruner, the
    way to know its cost); --timeout starts no trial after that long.
    --start-with FILE and --from OTHER run given configurations first, and so
    do the study file's `good` values (README: Warm starts and known-good values).

    Example: hpsearch coarse studies/digits_mlp.toml --trials 40 --epochs 2 --workers 2
    """
    from hpsearch.spec import load_spec

    deadline = _deadline(timeout)
    given = _with_budget(overrides, budget)
    executor = _executor(run)
    spec = load_spec(spec_file)  # validated (its workload exists) before any worker imports the workload
    trackers = _trackers(spec, run)  # the study file's, as it is now (a resumed stage stored an older copy)
    warm, notes = _warm_starts(spec, start_with, from_study, from_top, directory, storage)  # checked before too
    with _early_workers(executor) as start_workers:
        start_workers(spec.workload, _target(lambda: spec.coarse.with_overrides(**given), spec.space))
        from hpsearch.cli.render import make_console
        from hpsearch.search.stages import start_coarse
        from hpsearch.store.storage import Store

        store = Store(spec.name, directory, storage)
        notice = make_console(stderr=True)
        if unused := spec.unused_params():
            names = ", ".join("{" + p + "}" for p in unused)
            notice.print(
                f"warning: the command never uses {names}; the script gets them only from $HPSEARCH_PARAMS",
                soft_wrap=True,
                markup=False,
            )
        _population_note(notice, run, spec.workload, spec.space)
        say = lambda line: notice.print(render_settings(line, flag), soft_wrap=True, markup=False)  # noqa: E731
        for line in notes:
            say(line)
        info = start_coarse(store, spec, given, notify=say, warm=warm)
        _run_and_show(store, info, run, executor, deadline=deadline, trackers=trackers)


@grouped
def refine(
    name: NameArg,
    overrides: StageOverrides,
    run: RunOptions,
    from_stage: Annotated[
        str | None, typer.Option("--from", help="Parent stage to refine from [default: the latest stage].")
    ] = None,
    budget: BudgetOpt = None,
    timeout: TimeoutOpt = None,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Run the next refine stage: ranges narrowed around the best trials, longer trials.

    Takes the top-k completed trials of the latest stage (or --from), narrows
    each range around them in log space (padded by a quarter of their span,
    at least 0.1 decade), widens it a decade past any border the best values
    sit on, prints old -> new range per parameter and why, and runs the stage
    (refine-1, refine-2, ...). An unfinished refine stage is continued instead.

    Trials are dispatched as in `coarse` (--devices, --workers, --pruner, ...).

    Example: hpsearch refine digits_mlp --epochs 15 --top-k 5 --pruner median
    """
    from hpsearch.search.stages import plan_refine
    from hpsearch.store.storage import Store

    deadline = _deadline(timeout)
    executor = _executor(run)
    store = Store(name, directory, storage, create=False)
    info, flags, resumed = plan_refine(store, from_stage, _with_budget(overrides, budget))
    with _early_workers(executor) as start_workers:
        start_workers(info.spec.workload, _target(lambda: info.settings, info.space))
        from hpsearch.cli.render import changes_table, make_console, print_flags

        out, err = make_console(), make_console(stderr=True)
        if resumed:
            err.print(f"continuing unfinished stage {info.name}")
        else:
            print_flags(err, flags, info.parent or "")
        _population_note(err, run, info.spec.workload, info.space)
        out.print(changes_table(info))
        _run_and_show(store, info, run, executor, deadline=deadline)


@grouped
def worker(
    name: NameArg,
    run: RunOptions,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="The stage to join: coarse, refine-1, ... [default: the latest stage]."),
    ] = None,
    storage: StorageOpt = None,
    directory: DirOpt = None,
) -> None:
    """Join a running stage from another machine and run its trials until it has them all, then exit 0.

    The space, settings and workload path come from the storage (a shared
    PostgreSQL database: --storage or $HPSEARCH_STORAGE), so only the study's
    name is needed; the workload must be importable here at the same path.
    Any number of workers may join and leave at any time: each counts the
    stage's finished and running trials in the database before starting one,
    and grid points are taken from one shared queue, never run twice. A
    machine that dies mid-trial stops sending heartbeats; after the grace
    period ($HPSEARCH_HEARTBEAT_GRACE, default 60 s) its trial is recorded as
    FAIL `worker died (heartbeat lost)` and a live worker runs a replacement.

    Trials are dispatched on this machine as in `coarse` (--devices, --workers, ...).

    Example: hpsearch worker digits_mlp --stage coarse --storage postgresql://user:pw@db-host/hpsearch --devices auto
    """
    from hpsearch.store.storage import Store

    executor = _executor(run)
    store = Store(name, directory, storage, create=False)
    info = store.stage(stage)
    with _early_workers(executor) as start_workers:
        start_workers(info.spec.workload, _target(lambda: info.settings, info.space))
        from hpsearch.cli.render import make_console

        if not run.quiet:
            make_console(stderr=True).print(
                f"joining {name} {info.name} in {store.location}", soft_wrap=True, markup=False
            )
        _run_and_show(store, info, run, executor, join=True)


def _warm_starts(
    spec: Any, file: Path | None, study: str | None, top: int | None, directory: Path | None, storage: str | None
) -> tuple[list[Any], list[str]]:
    """--start-with and --from read and checked (search/warm_starts.gather): the configurations and notes."""
    if top is not None and not study:
        raise typer.BadParameter("--from-top needs --from OTHER", param_hint="--from-top")
    if file is None and not study:
        return [], []
    from hpsearch.search.warm_starts import FROM_TOP, gather

    return gather(spec.space, file, study, top or FROM_TOP, directory, storage)


def _executor(run: RunOptions) -> Any:
    from hpsearch.dispatch import DispatchConfig, make_executor

    return make_executor(
        DispatchConfig(run.devices, run.per_device, run.workers, run.trial_timeout, run.population), run.overrides()
    )


@contextmanager
def _early_workers(executor: Any) -> Iterator[Callable[[Any, int | None], None]]:
    """Inside: start(workload, limit) starts the pool's workers now (at most `limit`; None: all), so
    their imports (torch, the data) overlap this process's own start-up (Optuna, the storage, the
    stage); the stage's run adopts them. Workers no run adopted (the set-up failed, Ctrl-C) are
    ended on the way out. Nothing starts in this process (--workers 0), or for a limit under 1
    (invalid settings: the set-up says why).

    Started after load_spec, not before (reading the study file as plain TOML would start them
    ~0.2 s sooner, before Optuna's import): a study file with an error must not run the workload's
    module-level code (downloads, prints) in a worker first."""
    pool_start = getattr(executor, "start", None)

    def start(workload: Any, limit: int | None) -> None:
        if pool_start is not None and (limit is None or limit >= 1):
            pool_start(workload, limit)

    if pool_start is None:
        yield start
        return
    with executor:
        yield start


def _target(settings: Callable[[], Any], space: Any) -> int:
    """The most trials the stage can want (its target: no more workers start early), or 0 when its
    settings are invalid (its set-up says why, and no worker starts before that)."""
    try:
        return settings().target(space)
    except Exception:
        return 0


def _population_note(console: Any, run: RunOptions, workload: Any, space: Any) -> None:
    """One line when --population cannot stack a model workload's trials: a non-optimiser param is a range."""
    from hpsearch.workloads.spec import ungrouped_ranges

    if str(run.population or 1) == "1" or not (names := ungrouped_ranges(workload, space)):
        return
    console.print(
        f"note: {', '.join(names)} {'is' if len(names) == 1 else 'are'} drawn from a range and not an optimiser param: "
        "trials that differ in it never share a population, so every population is one trial; "
        "search it as a value set (values = [...]) to stack trials",
        soft_wrap=True,
        markup=False,
    )


def _deadline(timeout: str | None) -> float | None:
    """--timeout as a time.monotonic() deadline (None: none); a bad duration is a one-line error."""
    if not timeout:
        return None
    from hpsearch.durations import parse_duration

    return time.monotonic() + parse_duration(timeout)


def _with_budget(overrides: StageOverrides, budget: int | None) -> dict[str, Any]:
    given = overrides.as_dict()
    return given if budget is None else {**given, "budget": budget}


def _trackers(spec: Any, run: RunOptions) -> Any:
    """The trackers of `spec`'s stages: its [trackers] with --track in place. A tracker's package that is
    not installed is an error here, before any trial."""
    from hpsearch.trackers import check_installed
    from hpsearch.trackers.settings import tracker_spec

    trackers = tracker_spec(spec, run.track)
    check_installed(trackers)
    return trackers


def _run_and_show(
    store: Any,
    info: Any,
    run: RunOptions,
    executor: Any,
    join: bool = False,
    deadline: float | None = None,
    trackers: Any = None,
) -> None:
    """Run a stage with live progress, then print its leaderboard and border warnings.

    join=True runs it as one more coordinator (stages.join_stage: `hpsearch worker`). Its trials go to
    `trackers` (default: the stored study's [trackers] with --track in place).
    """
    from hpsearch.cli.progress import ProgressDisplay
    from hpsearch.cli.render import leaderboard_table, make_console, print_flags, stage_summary
    from hpsearch.leaderboard import frame
    from hpsearch.search.stages import join_stage, run_stage
    from hpsearch.trackers import open_trackers

    out, err = make_console(), make_console(stderr=True)
    start = time.perf_counter()
    pruner = run.pruner.value
    trackers = trackers if trackers is not None else _trackers(info.spec, run)
    try:
        with (
            open_trackers(trackers, info, lambda line: warn(err, line)) as tracking,
            ProgressDisplay(err, info, run.quiet) as progress,
        ):
            listener = tracking.around(progress)
            if join:
                result = join_stage(store, info.name, executor, listener=listener, pruner=pruner, deadline=deadline)
            else:
                result = run_stage(store, info, executor, listener=listener, pruner=pruner, deadline=deadline)
            tracking.close(result.flags)
    except KeyboardInterrupt as e:
        # Typer turns a KeyboardInterrupt into a silent exit 130; say what was kept.
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        raise typer.Exit(Preempted.exit_code if isinstance(e, Preempted) else INTERRUPTED_EXIT) from None
    print_notices(err, executor)
    if not run.quiet:
        err.print(stage_summary(result, time.perf_counter() - start))
    df = frame([info], [result.trials], run.top)
    title = (
        f"{info.spec.name} {info.name}: top {min(run.top, len(df))} ({info.spec.direction.value} {info.spec.metric})"
    )
    out.print(leaderboard_table(df, info.spec.metric, info.space.names, title))
    print_flags(err, result.flags, info.name)
    if result.ended_by == "timeout":
        err.print(
            f"timeout: stage {info.name} stopped starting trials; run the same command again to continue",
            soft_wrap=True,
            markup=False,
        )
    elif result.ended_by == "budget":
        err.print(
            f"stage {info.name} spent its budget of {info.settings.budget} trial-epochs", soft_wrap=True, markup=False
        )
    if result.shortfall:
        raise StageStoppedShort(f"{result.shortfall}; run the same command again to continue")


def print_notices(err: Any, executor: Any) -> None:
    """The executor's notices since the last call (the K auto chose, a capped worker count, no
    population entry point), each once: printed also with --quiet."""
    notices = getattr(executor, "notices", [])
    for notice in notices:
        err.print(render_settings(notice, flag), soft_wrap=True, markup=False)
    notices.clear()


def print_stage_notes(err: Any, executor: Any, info: Any, trials: Any) -> list[Any]:
    """What a stage says as it ends inside `search`, as it would run alone: notices and border flags
    (returned: the stage's trackers get them too)."""
    from hpsearch.cli.render import print_flags
    from hpsearch.refine import stage_flags

    print_notices(err, executor)
    flags = stage_flags(info, trials)
    print_flags(err, flags, info.name)
    return flags


def warn(err: Any, line: str) -> None:
    """One warning line on stderr (a tracker that is down: the stage goes on)."""
    err.print(f"warning: {line}", soft_wrap=True, markup=False)
