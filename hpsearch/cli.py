"""The hpsearch command line: a thin layer over the library.

Each command parses, calls one core function and renders. Usage and input
errors become one `Error: ...` line on stderr with exit code 2 (no traceback
unless --debug); data goes to stdout, progress and warnings to stderr.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hpsearch import __version__
from hpsearch.errors import HpsearchError
from hpsearch.pruner import Pruner
from hpsearch.strategy import Strategy

app = typer.Typer(
    name="hpsearch",
    help="Coarse-to-fine hyperparameter search for PyTorch models.\n\n"
    "Example: hpsearch coarse studies/digits_mlp.toml && hpsearch refine digits_mlp",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


# Options shared by several commands, written once.
DirOpt = Annotated[
    Optional[Path],
    typer.Option("--dir", help="Folder holding one results folder per study [default: $HPSEARCH_DIR or ./studies]."),
]
StorageOpt = Annotated[
    Optional[str],
    typer.Option(
        "--storage",
        help="Optuna storage URL (sqlite:///x.db, postgresql://...) or .journal file, instead of --dir "
        "[default: $HPSEARCH_STORAGE].",
    ),
]
TrialsOpt = Annotated[Optional[int], typer.Option("--trials", min=1, help="Trials of this stage (overrides the study file).")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs per trial (overrides the study file).")]
StrategyOpt = Annotated[
    Optional[Strategy],
    typer.Option("--strategy", help="random (recipe default: beats grid when few params matter), grid, or tpe."),
]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Seed of the sampler and of every trial.")]
TopKOpt = Annotated[
    Optional[int], typer.Option("--top-k", min=1, help="Best trials the border check and the next refine look at.")
]
TopOpt = Annotated[int, typer.Option("--top", min=1, help="Rows of the leaderboard shown.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
DevicesOpt = Annotated[
    str,
    typer.Option(
        "--devices",
        help="Where trials train: auto (every visible CUDA GPU, else the CPU), cpu, cuda (all GPUs), "
        "or a list such as cuda:0,cuda:2. Each GPU worker sees only its own GPU.",
    ),
]
PerDeviceOpt = Annotated[
    Optional[int], typer.Option("--per-device", min=1, help="Trials running at once on each GPU [default: 1].")
]
WorkersOpt = Annotated[
    Optional[int],
    typer.Option(
        "--workers",
        min=0,
        help="CPU worker processes [default: one per core]; torch's threads are split between them so the "
        "cores are not oversubscribed. 0 runs the trials one by one in this process.",
    ),
]
TrialTimeoutOpt = Annotated[
    Optional[float],
    typer.Option(
        "--trial-timeout",
        min=0.001,
        metavar="SECONDS",
        help="Kill a trial running longer than this (its worker is replaced); recorded as FAIL: timeout.",
    ),
]
PopulationOpt = Annotated[
    Optional[str],
    typer.Option(
        "--population",
        metavar="K|auto",
        help="Train K trials at once in one vectorized model per worker, for workloads with a population "
        "entry point (the built-in digits MLP has one; others run one trial per worker, with a notice). "
        "auto: a worker measures K = 1, 2, 4, ... and keeps the largest that still raises trials/second by 15%%.",
    ),
]
PrunerOpt = Annotated[
    Pruner,
    typer.Option(
        "--pruner",
        help="Stop hopeless trials early from their per-epoch metric: none, median (worse than the median of "
        "earlier trials at the same epoch, after 5 trials) or hyperband. Diverged losses are always stopped.",
    ),
]

_state = {"debug": False}
INTERRUPTED_MESSAGE = "\nInterrupted: completed trials are kept; run the same command again to continue."


def _version(value: bool) -> None:
    if value:
        print(f"hpsearch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Coarse-to-fine hyperparameter search for PyTorch models.

    Example: hpsearch coarse studies/digits_mlp.toml && hpsearch refine digits_mlp
    """
    _state["debug"] = debug or _state["debug"]


@app.command()
def coarse(
    spec_file: Annotated[Path, typer.Argument(metavar="STUDY_FILE", help="The study file (.toml).")],
    trials: TrialsOpt = None,
    epochs: EpochsOpt = None,
    strategy: StrategyOpt = None,
    seed: SeedOpt = None,
    top_k: TopKOpt = None,
    top: TopOpt = 10,
    directory: DirOpt = None,
    storage: StorageOpt = None,
    quiet: QuietOpt = False,
    devices: DevicesOpt = "auto",
    per_device: PerDeviceOpt = None,
    workers: WorkersOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    population: PopulationOpt = None,
    pruner: PrunerOpt = Pruner.none,
) -> None:
    """Run (or continue) a study's coarse stage: wide ranges, short trials.

    Creates the study from the study file, or continues its coarse stage until
    it has its number of finished trials. Prints the leaderboard and flags
    parameters whose best value lies on the border of their range.

    Trials run in worker processes over every visible GPU (else one per CPU
    core); live progress goes to stderr. A trial that crashes, dies, times
    out or diverges is recorded with its reason and the search goes on;
    Ctrl-C keeps every finished trial, and the same command continues.

    Example: hpsearch coarse studies/digits_mlp.toml --trials 40 --epochs 2 --workers 2
    """
    from hpsearch.dispatch import DispatchConfig, make_executor
    from hpsearch.spec import load_spec
    from hpsearch.stages import start_coarse
    from hpsearch.storage import Store

    executor = make_executor(DispatchConfig(devices, per_device, workers, trial_timeout, population))
    spec = load_spec(spec_file)
    store = Store(spec.name, directory, storage)
    overrides = dict(trials=trials, epochs=epochs, strategy=_value(strategy), seed=seed, top_k=top_k)
    info = start_coarse(store, spec, overrides)
    _run_and_show(store, info, top, quiet, executor, pruner.value)


@app.command()
def refine(
    name: Annotated[str, typer.Argument(help="The study's name (from its study file).")],
    from_stage: Annotated[
        Optional[str], typer.Option("--from", help="Parent stage to refine from [default: the latest stage].")
    ] = None,
    trials: TrialsOpt = None,
    epochs: EpochsOpt = None,
    strategy: StrategyOpt = None,
    seed: SeedOpt = None,
    top_k: TopKOpt = None,
    top: TopOpt = 10,
    directory: DirOpt = None,
    storage: StorageOpt = None,
    quiet: QuietOpt = False,
    devices: DevicesOpt = "auto",
    per_device: PerDeviceOpt = None,
    workers: WorkersOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    population: PopulationOpt = None,
    pruner: PrunerOpt = Pruner.none,
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
    from hpsearch.dispatch import DispatchConfig, make_executor
    from hpsearch.render import changes_table, make_console, print_flags
    from hpsearch.stages import plan_refine
    from hpsearch.storage import Store

    executor = make_executor(DispatchConfig(devices, per_device, workers, trial_timeout, population))
    store = Store(name, directory, storage, create=False)
    overrides = dict(trials=trials, epochs=epochs, strategy=_value(strategy), seed=seed, top_k=top_k)
    info, flags, resumed = plan_refine(store, from_stage, overrides)
    out, err = make_console(), make_console(stderr=True)
    if resumed:
        err.print(f"continuing unfinished stage {info.name}")
    else:
        print_flags(err, flags, info.parent or "")
    out.print(changes_table(info))
    _run_and_show(store, info, top, quiet, executor, pruner.value)


@app.command()
def leaderboard(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    stage: Annotated[
        Optional[str], typer.Option("--stage", help="coarse, refine-1, ... or all [default: the latest stage].")
    ] = None,
    top: Annotated[
        Optional[int], typer.Option("--top", min=1, help="Print only the N best rows (the CSV keeps every trial) [default: all].")
    ] = None,
    csv: Annotated[
        Optional[str], typer.Option("--csv", help="Also write every trial as CSV to PATH ('-' = stdout, instead of the table).")
    ] = None,
    output_format: Annotated[Format, typer.Option("--format", help="How to print it on stdout.")] = Format.table,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Show the ranked trials of a stage (or all stages), with border flags.

    One row per trial: completed ones ranked by the study's metric and
    direction, then pruned and failed ones with their reason. The CSV has the
    columns rank, trial, stage, state, reason, <metric>, <params>, epochs,
    duration_s, border, and the other metrics the workload returned, then
    update_ratio (last per-epoch update:weight ratio; the recipe wants ~1e-3),
    lr_hint ('lr too low?' below 1e-4, 'lr too high?' above 1e-2) and notes
    (undertrained, overfitting, flat: lr too low or dead, unstable: lr too high?).

    Example: hpsearch leaderboard digits_mlp --stage all --csv leaderboard.csv
    """
    from hpsearch.leaderboard import frame, select_stages, to_text
    from hpsearch.render import leaderboard_table, make_console, print_flags
    from hpsearch.stages import ranked_trials, stage_flags
    from hpsearch.storage import Store

    store = Store(name, directory, storage, create=False)
    # Read each stage's trials once: on PostgreSQL reading a large stage is most of the command's time.
    stages = select_stages(store, stage)
    trials = [store.trials(s) for s in stages]
    df = frame(stages, trials)
    out, err = make_console(), make_console(stderr=True)
    if csv == "-":
        sys.stdout.write(to_text(df, "csv"))
        return
    if csv:
        try:
            Path(csv).parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(csv, index=False)
        except OSError as e:
            raise HpsearchError(f"--csv {csv}: cannot write it: {e.strerror}") from None
    shown = df.head(top) if top else df
    if output_format != Format.table:
        sys.stdout.write(to_text(shown, output_format.value))
    else:
        spec = stages[0].spec
        names = list(dict.fromkeys(n for s in stages for n in s.space.names))
        title = f"{name}: {', '.join(s.name for s in stages)} ({spec.direction.value} {spec.metric})"
        out.print(leaderboard_table(shown, spec.metric, names, title))
    for info, stage_trials in zip(stages, trials):
        print_flags(err, stage_flags(info, ranked_trials(stage_trials, info.spec.direction.value)), info.name)
    if csv:
        err.print(f"wrote {len(df)} rows to {csv}")


@app.command()
def studies(
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """List the studies with their stages, trial counts and best metric.

    Example: hpsearch studies --dir studies
    """
    from rich.table import Table

    from hpsearch.render import make_console
    from hpsearch.stages import ranked_trials
    from hpsearch.storage import Store, list_study_names, results_dir

    table = Table(header_style="bold")
    for col in ("study", "stage", "strategy", "trials", "complete", "failed", "best"):
        table.add_column(col)
    names = list_study_names(directory) if not (storage or os.environ.get("HPSEARCH_STORAGE")) else None
    if names is None:
        import optuna

        from hpsearch.storage import open_storage

        summaries = optuna.get_all_study_summaries(open_storage("", directory, storage)[0], include_best_trial=False)
        names = sorted({s.study_name.rsplit(".", 1)[0] for s in summaries if "hpsearch" in s.user_attrs})
    for name in names:
        store = Store(name, directory, storage, create=False)
        for info in store.stages():
            trials = store.trials(info)
            ranked = ranked_trials(trials, info.spec.direction.value)
            best = f"{info.spec.metric} {ranked[0].value:.4f}" if ranked else ""
            complete = sum(t.state.name == "COMPLETE" for t in trials)
            failed = sum(t.state.name == "FAIL" for t in trials)
            table.add_row(name, info.name, info.settings.strategy.value, str(len(trials)), str(complete), str(failed), best)
    console = make_console()
    if not names:
        make_console(stderr=True).print(f"no studies under {results_dir(directory)}; run `hpsearch coarse STUDY_FILE` first")
        return
    console.print(table)


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    stage: Annotated[
        Optional[str], typer.Option("--stage", help="The stage to join: coarse, refine-1, ... [default: the latest stage].")
    ] = None,
    storage: StorageOpt = None,
    directory: DirOpt = None,
    top: TopOpt = 10,
    quiet: QuietOpt = False,
    devices: DevicesOpt = "auto",
    per_device: PerDeviceOpt = None,
    workers: WorkersOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    population: PopulationOpt = None,
    pruner: PrunerOpt = Pruner.none,
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
    from hpsearch.dispatch import DispatchConfig, make_executor
    from hpsearch.render import make_console
    from hpsearch.storage import Store

    executor = make_executor(DispatchConfig(devices, per_device, workers, trial_timeout, population))
    store = Store(name, directory, storage, create=False)
    info = store.stage(stage)
    if not quiet:
        make_console(stderr=True).print(f"joining {name} {info.name} in {store.location}", soft_wrap=True, markup=False)
    _run_and_show(store, info, top, quiet, executor, pruner.value, join=True)


SpecArg = Annotated[Path, typer.Argument(metavar="STUDY_FILE", help="The study file (.toml).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Device the workload trains on (cpu, cuda:0, ...).")]


@app.command()
def sanity(spec_file: SpecArg, device: DeviceOpt = "cpu") -> None:
    """Check a workload before searching: initial loss at chance, and that it can overfit 20 examples.

    Calls the study's train(trial) with trial.mode = "sanity" and
    trial.subset = 20: the workload must call trial.watch(model, optimizer,
    loss_fn) and, when trial.subset is set, train on only that many examples.

    Initial loss: the first training loss against log(C) for C classes; PASS
    within 20%, else WARN (labels, init scale, softmax before the loss).

    Overfit: weight decay 0, lr 0.1, 0.01, 0.001 (those inside the study's
    range, largest first), at most 300 steps each; PASS when the loss on the
    20 examples falls below 0.05 with 100% accuracy, else FAIL: do not search.

    Exits 0 when every check passes, 1 otherwise (WARN, FAIL or SKIP).

    Example: hpsearch sanity studies/digits_mlp.toml
    """
    from hpsearch.render import make_console, sanity_table
    from hpsearch.sanity import run_sanity
    from hpsearch.spec import load_spec

    report = run_sanity(load_spec(spec_file), device=device)
    make_console().print(sanity_table(report))
    if not report.passed:
        raise typer.Exit(1)


@app.command("lr-find")
def lr_find(
    spec_file: SpecArg,
    apply: Annotated[
        bool, typer.Option("--apply", help="Write the suggested range into the study file's lr (old file kept as .bak).")
    ] = False,
    iterations: Annotated[int, typer.Option("--iterations", min=20, help="Optimizer steps of the sweep.")] = 300,
    device: DeviceOpt = "cpu",
    directory: DirOpt = None,
) -> None:
    """LR range test: the learning rates at which the loss falls, to set the coarse stage's lr range.

    Trains with all data and the study's smallest weight decay while the lr
    grows exponentially from 1e-7 to 10 over --iterations steps, recording the
    training loss; stops when the smoothed loss exceeds 4x its minimum.
    Suggests the range from where the loss has fallen by 5% of its total drop
    to where it is lowest, and saves the plot (loss vs lr, log x, range shaded)
    as lr_find.png in the study's results folder. The workload must call
    trial.watch(model, optimizer, loss_fn).

    Example: hpsearch lr-find studies/digits_mlp.toml --apply
    """
    from hpsearch.lr_range import apply_range, find_lr_range
    from hpsearch.render import make_console
    from hpsearch.space import fmt
    from hpsearch.spec import load_spec

    found = find_lr_range(load_spec(spec_file), directory, iterations=iterations, device=device)
    out, err = make_console(), make_console(stderr=True)
    err.print(f"{len(found.lrs)} steps, {found.stopped}; plot: {found.plot}", soft_wrap=True)
    out.print(f"suggested lr range: low = {fmt(found.low)}, high = {fmt(found.high)}")
    if apply:
        backup = apply_range(spec_file, found.low, found.high)
        err.print(f"wrote it into {spec_file} (old file: {backup})", soft_wrap=True)


@app.command()
def curves(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    stage: Annotated[
        Optional[str], typer.Option("--stage", help="coarse, refine-1, ... or all [default: the latest stage].")
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the best trials to draw.")] = 5,
    out_path: Annotated[
        Optional[Path], typer.Option("--out", help="PNG to write [default: <results>/<name>/curves-<stage>.png].")
    ] = None,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Loss curves of the top trials: train solid, val dashed, one colour per trial (PNG + terminal sketch).

    Good lr: falls fast then flattens. Too low: falls almost linearly. Too
    high: explodes, or plateaus early at a high value. Val rising while train
    falls: overfitting. Also prints each curve as a sparkline (one log scale).

    Example: hpsearch curves digits_mlp --stage refine-1 --top 5 --out curves.png
    """
    from hpsearch.plots import plot_curves, top_curves
    from hpsearch.render import curves_text, make_console
    from hpsearch.storage import Store, results_dir

    store = Store(name, directory, storage, create=False)
    found = top_curves(store, stage, top)
    label = stage or store.stage(None).name
    path = plot_curves(found, out_path or results_dir(directory) / name / f"curves-{label}.png", f"{name} {label}: loss curves of the top {len(found)}")
    out = make_console()
    for line in curves_text(found):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    make_console(stderr=True).print(f"wrote {path}", soft_wrap=True)


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    top: Annotated[int, typer.Option("--top", min=1, help="Leaderboard rows per stage.")] = 10,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Write a self-contained HTML report of a study: lineage, spaces, leaderboards, borders, plots.

    One file (images embedded) in the study's results folder: each stage with
    its space and how refine derived it, border flags, leaderboard with the
    diagnostics, metric vs each parameter (log axes, searched range and the
    border zone - outer 10% - marked), and the top trials' loss curves.

    Example: hpsearch report digits_mlp && chromium studies/digits_mlp/report.html
    """
    from hpsearch.render import make_console
    from hpsearch.report import build_report
    from hpsearch.storage import Store

    path = build_report(Store(name, directory, storage, create=False), directory, top)
    make_console().print(str(path), soft_wrap=True)


def _run_and_show(store: Any, info: Any, top: int, quiet: bool, executor: Any, pruner: str, join: bool = False) -> None:
    """Run a stage with live progress, then print its leaderboard and border warnings.

    join=True runs it as one more coordinator (stages.join_stage: `hpsearch worker`).
    """
    from hpsearch.leaderboard import frame
    from hpsearch.render import ProgressDisplay, leaderboard_table, make_console, print_flags, stage_summary
    from hpsearch.stages import join_stage, run_stage

    out, err = make_console(), make_console(stderr=True)
    start = time.perf_counter()
    try:
        with ProgressDisplay(err, info, quiet) as progress:
            if join:
                result = join_stage(store, info.name, executor, listener=progress, pruner=pruner)
            else:
                result = run_stage(store, info, executor, listener=progress, pruner=pruner)
    except KeyboardInterrupt:
        # Typer turns a KeyboardInterrupt into a silent exit 130; say what was kept.
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        raise typer.Exit(130) from None
    for notice in getattr(executor, "notices", []):
        err.print(notice, soft_wrap=True, markup=False)
    if not quiet:
        err.print(stage_summary(result, time.perf_counter() - start))
    df = frame([info], [result.trials], top)
    title = f"{info.spec.name} {info.name}: top {min(top, len(df))} ({info.spec.direction.value} {info.spec.metric})"
    out.print(leaderboard_table(df, info.spec.metric, info.space.names, title))
    print_flags(err, result.flags, info.name)


def _value(choice: Enum | None) -> Any:
    return None if choice is None else choice.value


def run(argv: list[str] | None = None) -> int:
    """Run the CLI on `argv` and return the exit code; every error becomes one line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in argv or os.environ.get("HPSEARCH_DEBUG") == "1"
    try:
        result = app(args=argv, prog_name="hpsearch", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return 130
    except HpsearchError as e:
        _error(str(e))
        return e.exit_code
    except typer.TyperException as e:  # usage errors: unknown flag, bad value, missing argument
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
            return 0
        command = ctx.command_path if ctx is not None else "hpsearch"
        _error(f"{e.format_message()} (see `{command} --help`)")
        return 2
    except Exception as e:
        _error(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        return 1


def _error(message: str) -> None:
    from hpsearch.storage import mask_url

    if _state["debug"]:
        # A driver's traceback can quote the storage URL: mask it there too.
        print(mask_url(traceback.format_exc()), file=sys.stderr, end="")
    print(f"Error: {mask_url(message)}", file=sys.stderr)


def main() -> None:
    sys.exit(run())
