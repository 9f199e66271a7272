"""The commands that read a study: leaderboard, studies, curves, report."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from hpsearch.cli.options import DirOpt, NameArg, StageOpt, StorageOpt

FINAL_MARK = "✓"  # studies: the stage `final` tested (its result in a line under the table)


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


def leaderboard(
    name: NameArg,
    stage: StageOpt = None,
    top: Annotated[
        int | None,
        typer.Option("--top", min=1, help="Print only the N best rows (the CSV keeps every trial) [default: all]."),
    ] = None,
    csv: Annotated[
        str | None,
        typer.Option(
            "--csv",
            help="Also write every trial as CSV to PATH ('-' = stdout, instead of the table): "
            "of every stage, unless --stage.",
        ),
    ] = None,
    output_format: Annotated[Format, typer.Option("--format", help="How to print it on stdout.")] = Format.table,
    wide: Annotated[
        bool,
        typer.Option(
            "--wide", help="Every column at full width, full names (may be wider than the terminal: pipe to `less -S`)."
        ),
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            metavar="NAME,...",
            help="The table shows rank, trial and these CSV columns, e.g. lr,border,reason,duration_s.",
        ),
    ] = None,
    all_runs: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also the earlier runs of resumed trials (preempted, interrupted, worker lost), each linked to "
            "its trial by attempt_of.",
        ),
    ] = False,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Show the ranked trials of a stage (or all stages), with border flags and the final result.

    One row per trial: completed ones ranked by the study's metric and
    direction, then pruned and failed ones with their reason. The table fits
    the terminal (or $COLUMNS): params, metric and state, more columns as
    room allows; long names abbreviated, a value on a border marked ↑ (high)
    or ↓ (low), and a legend line below it saying so. --wide or --columns
    show more; CSV and JSON always hold every column. The CSV has the
    columns rank, trial, stage, state, reason, <metric>, <params>, epochs,
    duration_s, border, and the other metrics the workload returned, then
    update_ratio (last per-epoch update:weight ratio; the recipe wants ~1e-3),
    lr_hint ('lr too low?' below 1e-4; 'lr too high?' above 1e-2 with a loss that rose or oscillated) and notes
    (undertrained, overfitting, flat: lr too low or dead, unstable: lr too high?).
    After `hpsearch final`, one line under the table gives its stored test
    result (mean ± spread, the ensemble's, how many times it was tested).

    Example: hpsearch leaderboard digits_mlp --stage all --csv leaderboard.csv
    """
    from hpsearch.cli.render import leaderboard_table, make_console, print_flags
    from hpsearch.errors import HpsearchError
    from hpsearch.leaderboard import ALL, frame, select_stages, to_text, write_csv
    from hpsearch.refine import stage_flags
    from hpsearch.search.final import stored_final, summary
    from hpsearch.store.storage import Store

    store = Store(name, directory, storage, create=False)
    # Read each stage's trials once: on PostgreSQL reading a large stage is most of the command's time.
    stages = select_stages(store, stage)
    every = select_stages(store, ALL) if csv and stage is None else stages  # the CSV: every stage unless --stage
    read = {s.name: store.trials(s) for s in every}
    trials = [read[s.name] for s in stages]
    df = frame(stages, trials, runs=all_runs)
    if wide and columns:
        raise HpsearchError("--wide shows every column, --columns the ones named: pass one of them")
    chosen = list(dict.fromkeys(c.strip() for c in columns.split(",") if c.strip())) if columns else None
    unknown = [c for c in chosen or [] if c not in df.columns]
    if unknown:
        raise HpsearchError(
            f"--columns: no column {', '.join(map(repr, unknown))}; the columns are: {', '.join(map(str, df.columns))}"
        )
    out, err = make_console(), make_console(stderr=True)
    written = df if len(every) == len(stages) else frame(every, [read[s.name] for s in every], runs=all_runs)
    if csv == "-":
        sys.stdout.write(to_text(written, "csv"))
        return
    if csv:
        write_csv(written, csv)
    shown = df.head(top) if top else df
    if output_format != Format.table:
        sys.stdout.write(to_text(shown, output_format.value))
    else:
        spec = stages[0].spec
        names = list(dict.fromkeys(n for s in stages for n in s.space.names))
        title = f"{name}: {', '.join(s.name for s in stages)} ({spec.direction.value} {spec.metric})"
        # Only --wide and --columns can be wider than the terminal: their lines are kept whole.
        out.print(
            leaderboard_table(shown, spec.metric, names, title, wide=wide, columns=chosen), crop=not (wide or chosen)
        )
        tested = stored_final(store)
        if tested is not None:
            out.print(summary(tested), soft_wrap=True, markup=False, highlight=False)
    for info, stage_trials in zip(stages, trials):
        print_flags(err, stage_flags(info, stage_trials), info.name)
    if csv:
        err.print(
            f"wrote {len(written)} rows to {csv}" + (" (every stage; --stage picks one)" if written is not df else "")
        )


def studies(directory: DirOpt = None, storage: StorageOpt = None) -> None:
    """List the studies with their stages, trial counts, best metric and final test result.

    The stage `hpsearch final` tested is marked ✓, and a line under the
    table per tested study gives its stored result: the best configuration's
    test metric (mean ± spread), the ensemble's, and how many times the test
    split was evaluated.

    Example: hpsearch studies --dir studies
    """
    from hpsearch.cli.render import make_console
    from hpsearch.leaderboard import study_summaries
    from hpsearch.search.final import stored_final, summary
    from hpsearch.store.storage import Store, results_dir

    rows = study_summaries(directory, storage)
    if not rows:
        make_console(stderr=True).print(
            f"no studies under {results_dir(directory)}; run `hpsearch coarse STUDY_FILE` first"
        )
        return
    finals = {
        name: stored_final(Store(name, directory, storage, create=False))
        for name in dict.fromkeys(r.study for r in rows)
    }
    tested = {k: v for k, v in finals.items() if v is not None}
    out = make_console()
    out.print(studies_table(rows, tested))
    for r in rows:  # where running trials are: this machine, others, SLURM tasks (hpsearch slurm)
        if r.running_on:
            out.print(f"running {r.study} {r.stage}: {', '.join(r.running_on)}", soft_wrap=True, markup=False)
    for name, data in tested.items():
        out.print(f"{FINAL_MARK} {name} {summary(data)}", soft_wrap=True, markup=False, highlight=False)


def studies_table(rows: Sequence[Any], finals: dict[str, dict[str, Any]] | None = None) -> Any:
    """One row per stage of each study (leaderboard.StageSummary), its lineage in `from`; with `finals`
    (study -> final.stored_final), the stage each final tested marked FINAL_MARK."""
    from rich import box
    from rich.table import Table

    metrics = {r.metric for r in rows}
    one = metrics.pop() if len(metrics) == 1 else None  # one metric for all: named once, in the title
    title = f"best = {one}" if one else "best = each study's metric"
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    finals = finals or {}
    cells = []
    for r in rows:
        value = "" if r.best is None else f"{r.best:.4f}" if one else f"{r.metric} {r.best:.4f}"
        tested = r.study in finals and finals[r.study].get("stage") == r.stage
        stage = r.stage + (f" {FINAL_MARK}" if tested else "")
        cells.append(
            (
                r.study,
                stage,
                r.parent or "-",
                r.strategy,
                str(r.epochs),
                f"{r.complete}/{r.trials}",
                str(r.failed),
                value,
            )
        )
    # A name is never broken inside a word (`mnist1d_/cmd`, `refine-/1`): each column is at least as wide
    # as its longest cell, and the counts share one column (trials: "complete/all"), so 80 columns hold it.
    for i, col in enumerate(("study", "stage", "from", "strategy", "epochs", "trials", "failed", "best")):
        widest = max([len(col)] + [len(c[i]) for c in cells])
        table.add_column(col, min_width=widest, no_wrap=True, justify="right" if i >= 4 else "left")
    for c in cells:
        table.add_row(*c)
    return table


def curves(
    name: NameArg,
    stage: StageOpt = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the best trials to draw.")] = 5,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="PNG to write [default: <results>/<name>/curves-<stage>.png].")
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
    from hpsearch.cli.render import curves_text, make_console
    from hpsearch.report.plots import plot_curves, top_curves
    from hpsearch.store.storage import Store, results_dir

    store = Store(name, directory, storage, create=False)
    found = top_curves(store, stage, top)
    label = stage or store.stage(None).name
    path = plot_curves(
        found,
        out_path or results_dir(directory) / name / f"curves-{label}.png",
        f"{name} {label}: loss curves of the top {len(found)}",
    )
    out = make_console()
    for line in curves_text(found):
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    make_console(stderr=True).print(f"wrote {path}", soft_wrap=True)


def report(
    name: NameArg,
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
    from hpsearch.cli.render import make_console
    from hpsearch.report.html import build_report
    from hpsearch.store.storage import Store

    path = build_report(Store(name, directory, storage, create=False), directory, top)
    make_console().print(str(path), soft_wrap=True)
