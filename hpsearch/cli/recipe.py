"""The whole recipe as two commands: search (coarse, then refine while the best moves) and final (test once)."""

from __future__ import annotations

import sys
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
    grouped,
)
from hpsearch.errors import Preempted


@grouped
def search(
    spec_file: SpecArg,
    overrides: StageOverrides,
    run: RunOptions,
    budget: BudgetOpt = None,
    timeout: TimeoutOpt = None,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Run the whole recipe: coarse, then refine stages while the best improves by more than the noise.

    Unless the study file says search_plan = "study", the stages are planned
    from the budget: coarse is TPE at a third of refine's epochs over about
    half the budget, and explores more when nothing stands out from the
    noise (docs/recipe.md).
    Each stage's top configurations are re-run with other seeds, which
    measures the noise; configurations rank by their mean (shrunk toward the
    stage's mean by that noise). Refine fits its box to the configurations
    the noise cannot tell from the best, carries the best of them in at the
    new length, and samples the rest at random inside the box. After each
    stage one line says what was decided; it stops when the best moved less
    than the noise, or the budget of trial-epochs has no room for another
    stage (the last is sized to what is left). The stage flags (--trials,
    --epochs, --seed, ...) set the coarse stage. Ctrl-C keeps every finished
    trial; the same command continues.

    Example: hpsearch search studies/digits_mlp.toml --budget 700 --seed 1 --timeout 2h
    """
    from hpsearch.cli.progress import ProgressDisplay
    from hpsearch.cli.render import changes_table, leaderboard_table, make_console
    from hpsearch.cli.search import (
        INTERRUPTED_EXIT,
        INTERRUPTED_MESSAGE,
        _deadline,
        _early_workers,
        _executor,
        _population_note,
        _trackers,
        print_stage_notes,
        warn,
    )
    from hpsearch.leaderboard import frame
    from hpsearch.search.recipe import search as run_search
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store
    from hpsearch.trackers import open_trackers

    deadline = _deadline(timeout)
    executor = _executor(run)
    spec = load_spec(spec_file)
    trackers = _trackers(spec, run)
    store = Store(spec.name, directory, storage)
    out, err = make_console(), make_console(stderr=True)
    displays: list[Any] = []
    shown: set[str] = set()  # the refine stages whose derived space was printed
    tracking: list[Any] = []  # the stage's trackers, open over its runs (explore, re-runs) until it ends

    def listener(info: Any) -> Any:
        for d in displays:
            d.__exit__(None, None, None)
        if info.parent and info.name not in shown:  # as `refine` prints it: old -> new range, and why
            shown.add(info.name)
            out.print(changes_table(info))
        if not tracking or tracking[0].stage != info.name:
            tracking[:] = [open_trackers(trackers, info, lambda line: warn(err, line))]
        displays[:] = [ProgressDisplay(err, info, run.quiet).__enter__()]
        return tracking[0].around(displays[0])

    def say(line: str) -> None:
        for d in displays:
            d.__exit__(None, None, None)
        displays.clear()
        out.print(line, soft_wrap=True, markup=False)

    def stage_ended(info: Any) -> None:  # what the stage says when run alone: K, notices, border flags
        for d in displays:
            d.__exit__(None, None, None)
        displays.clear()
        flags = print_stage_notes(err, executor, info, store.trials(info))
        for t in tracking:
            t.close(flags)
        tracking.clear()

    try:
        # The workers stay from one stage to the next (torch, the data and the first calls load once per
        # command, not once per stage); started before the search begins, ended on the way out.
        with _early_workers(executor) as start_workers:
            if hasattr(executor, "keep_workers"):  # a pool (--workers 0 has none)
                executor.keep_workers = True
            start_workers(spec.workload, None)
            _population_note(err, run, spec.workload, spec.space)
            result = run_search(
                store,
                spec,
                overrides.as_dict(),
                budget,
                executor,
                listener,
                run.pruner.value,
                deadline,
                say,
                stage_ended,
            )
    except KeyboardInterrupt as e:
        for t in tracking:
            t.close(ended="interrupted")
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        raise typer.Exit(Preempted.exit_code if isinstance(e, Preempted) else INTERRUPTED_EXIT) from None
    finally:
        for d in displays:
            d.__exit__(None, None, None)
        for t in tracking:
            t.close(ended="failed")  # an error ended the stage (closed ones stay as they ended)
    last = result.stages[-1]
    if result.timed_out:
        err.print(
            f"timeout: stopped in {last.name}; run the same command again to continue", soft_wrap=True, markup=False
        )
    df = frame([last], [store.trials(last)], run.top)
    title = f"{spec.name} {last.name}: top {min(run.top, len(df))} ({spec.direction.value} {spec.metric})"
    out.print(leaderboard_table(df, spec.metric, last.space.names, title))
    if result.best is not None:
        params = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.best.params.items()
        )
        out.print(
            f"best configuration: {params} ({result.best.describe(spec.metric)}); "
            f"test it once: hpsearch final {spec.name}",
            soft_wrap=True,
            markup=False,
        )


def final(
    name: NameArg,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs of each run [default: the last stage's].")
    ] = None,
    seeds: Annotated[
        int, typer.Option("--seeds", min=1, help="Runs of each configuration, each with its own seed.")
    ] = 3,
    ensemble: Annotated[
        int,
        typer.Option(
            "--ensemble",
            min=1,
            help="Test the top K configurations (each retrained --seeds times): each, "
            "and (model workloads) their averaged prediction.",
        ),
    ] = 1,
    again: Annotated[
        bool, typer.Option("--again", help="Evaluate the test split again (counted, with a warning).")
    ] = False,
    device: Annotated[
        str, typer.Option("--device", help="Device the runs train on (auto, cpu, cuda:0, ...).")
    ] = "auto",
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="Processes running the seed runs at once [default: one per core (per GPU with GPUs), "
            "at most one per run]; 0 or 1: one after another in this process. The results are the same.",
        ),
    ] = None,
    split_from_env: Annotated[
        bool,
        typer.Option(
            "--split-from-env",
            help="A command workload without {split}: its script reads $HPSEARCH_SPLIT "
            "(else final refuses it: it would test on validation).",
        ),
    ] = False,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Retrain the best configuration with other seeds and evaluate it once on the test split.

    The best is the noise-aware ranking's (the mean of its re-runs) in the
    study's latest stage; it is retrained --seeds times for --epochs (default:
    that stage's) with the trial's split set to "test" (trial.split,
    {split} and $HPSEARCH_SPLIT in a command, data()'s third split in a model
    workload). A command without {split} is refused unless --split-from-env;
    a run whose workload reports another split ("split": "val") fails. The
    runs go in parallel where the machine has room (--workers), one line on
    stderr as each starts and ends; their logs go to logs/final/ in the
    study's results folder. The result (each seed's value, mean ± spread) is
    stored with the study, apart from the search:
    a second `final` prints it without touching the test split, unless
    --again. Writes the best configuration as best.toml and best.json and,
    for a model workload, best.pt: the weights (state_dict) of its run with
    the best test metric (build(params).load_state_dict(torch.load(path))).
    --ensemble K also scores, for a model workload, the averaged prediction
    of every run of the top K (softmax probabilities for cross_entropy, raw
    outputs otherwise; each configuration weighs the same).

    Example: hpsearch final digits_mlp --seeds 5
    """
    from hpsearch.cli.render import make_console
    from hpsearch.errors import HpsearchError
    from hpsearch.search.final import SplitUnknown
    from hpsearch.search.final import final as run_final
    from hpsearch.store.storage import Store

    out, err = make_console(), make_console(stderr=True)
    store = Store(name, directory, storage, create=False)
    try:
        result = run_final(
            store,
            epochs,
            seeds,
            ensemble,
            again,
            device,
            warn=lambda line: err.print(f"warning: {line}", soft_wrap=True, markup=False),
            workers=workers,
            split_from_env=split_from_env,
            progress=lambda event: err.print(final_progress(event), soft_wrap=True, markup=False),
        )
    except SplitUnknown as e:  # the library names no flag of a script; here, the usual one
        raise HpsearchError(
            e.template.replace("add {split} to the command", "add `--split {split}` to the command")
        ) from None
    if not result.ran:
        err.print(
            f"stored result (the test split was evaluated {result.evaluations} time(s)); --again evaluates it again",
            soft_wrap=True,
            markup=False,
        )
    out.print(final_table(name, result.data))
    stored_ensemble = result.data.get("ensemble")
    if stored_ensemble and stored_ensemble["value"] is None:
        out.print(
            f"--ensemble {stored_ensemble['k']}: each configuration on its own; {stored_ensemble['reason']}",
            soft_wrap=True,
            markup=False,
        )
    for path in result.files:
        out.print(f"wrote {path}", soft_wrap=True, markup=False)


def final_progress(event: Any) -> str:
    """One progress line of `final` (stderr): the plan, then each run as it starts and ends."""
    import math

    from hpsearch.search.final_runs import RunEnded, RunsPlanned, RunStarted
    from hpsearch.workloads.api import TrialStatus

    if isinstance(event, RunsPlanned):
        if not event.slots:
            where = "one after another in this process"
        else:
            kind = "one per GPU" if event.slots[0].visible is not None else "cpu"
            where = (
                f"{len(event.slots)} at a time in worker processes "
                f"({kind}, {event.slots[0].threads} torch thread(s) each)"
            )
        return (
            f"final: {event.runs} run(s) of the top {event.configs} configuration(s), {where}; "
            f"logs: {event.logs}/trial-N.log"
        )
    if isinstance(event, RunStarted):
        run = event.run
        return (
            f"final: run {run.record.number + 1}/{event.total} started: "
            f"rank {run.rank}, seed {run.record.seed} ({event.where})"
        )
    assert isinstance(event, RunEnded)
    result, record = event.result, event.result.run.record
    value = result.metrics.get(record.metric)
    if result.state == TrialStatus.COMPLETE and value is not None and math.isfinite(value):
        how = f"{record.metric} {value:.4f}"
    else:
        state = "failed" if result.state == TrialStatus.FAIL else result.state
        how = f"{state}: {result.reason or 'no ' + record.metric}"
    head = f"final: run {record.number + 1}/{event.total} ended: rank {result.run.rank}, seed {record.seed}"
    return f"{head}: {how} ({result.duration_s:.1f} s)" + (
        "" if result.state == TrialStatus.COMPLETE else f"; log: {record.log_path}"
    )


def final_table(name: str, data: dict[str, Any]) -> Any:
    """The stored final result as a table: one row per configuration, each seed's test metric, mean ± spread."""
    from rich.table import Table

    from hpsearch.space import fmt

    metric = data["metric"]
    table = Table(title=f"{name} final: test {metric}, {data['epochs']} epochs, from {data['stage']}", box=None)
    for column in ("rank", f"test {metric}", "per seed", "val mean (n)", "params"):
        table.add_column(column, no_wrap=column != "params", overflow="fold")  # the params wrap first
    for entry in data["configs"]:
        mean = "failed" if entry["mean"] is None else f"{entry['mean']:.4f}"
        spread = f" ± {entry['spread']:.4f}" if entry["spread"] is not None else ""
        failed = len(entry.get("failed", ()))  # results stored before per-config failures: none shown
        each = " ".join(f"{r['value']:.4f}" for r in entry["runs"]) + (f" ({failed} failed)" if failed else "")
        params = ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in entry["params"].items())
        val = f"{entry['val_mean']:.4f} ({entry['val_n']})"
        table.add_row(str(entry["rank"]), mean + spread, each.strip(), val, params)
    ensemble = data.get("ensemble")
    if ensemble and ensemble["value"] is not None:
        table.add_row(
            "ensemble",
            f"{ensemble['value']:.4f}",
            f"{ensemble['runs']} runs averaged",
            "",
            f"the top {ensemble['k']}, averaged prediction",
        )
    return table
