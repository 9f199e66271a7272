"""The init command: a study file from a training script's argparse flags."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from hpsearch.cli.options import DirOpt, StorageOpt
from hpsearch.direction import Direction
from hpsearch.helptext import HELP_TIMEOUT_S


def init(
    script: Annotated[Path, typer.Argument(metavar="SCRIPT", help="The training script (argparse flags).")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Study file to write; - prints it [default: the script's, as .toml]."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing study file.")] = False,
    name: Annotated[str | None, typer.Option("--name", help="The study's name [default: the script's stem].")] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", help="The metric the script prints [default: one its help names, else val_accuracy]."),
    ] = None,
    direction: Annotated[
        Direction | None,
        typer.Option(
            "--direction", help="Which way the metric is better [default: minimize for a loss or error, else maximize]."
        ),
    ] = None,
    python: Annotated[
        str, typer.Option("--python", help="Interpreter the command runs (python: hpsearch's own); reads the help too.")
    ] = "python",
    subcommand: Annotated[
        str | None,
        typer.Option("--subcommand", help="The script's training subcommand [default: one named train or fit]."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds `python SCRIPT --help` may take.")
    ] = HELP_TIMEOUT_S,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Write a study file for SCRIPT, a training script with argparse flags (a command workload).

    Runs `python SCRIPT --help` (never imports it; ended after --timeout
    seconds) and reads its flags. Searched, on the recipe's ranges: the
    learning rate (--lr, --learning-rate, --lr0, ...: log range 1e-4..1),
    weight decay (--wd, --weight-decay, ...: 0, 1e-5, 1e-4, 1e-3), momentum
    (0.5, 0.9, 0.95, 0.99), dropout (0..0.5), batch size (16..128); a range
    or set is widened to hold the default the help shows. Filled in per
    trial: epochs ({epochs}: the stage's), seed, device, split. Every other
    flag stays off the command line, so the script's own default runs (the
    file lists them). A script with subcommands: the one named train or fit,
    or --subcommand. The file says in CHECK comments what to look at.
    With --dir/--storage: warns when a study of that name already has
    results there (coarse would continue it).

    Example: hpsearch init train.py && hpsearch coarse train.toml
    """
    from hpsearch.cli.render import make_console
    from hpsearch.scaffold import scaffold, study_name
    from hpsearch.store.storage import study_names

    name = study_name(script, name)
    taken = name in study_names(directory, storage)
    to_stdout = output == Path("-")
    written = scaffold(
        script,
        None if to_stdout else output,
        to_stdout=to_stdout,
        name=name,
        metric=metric,
        direction=direction.value if direction else None,
        python=python,
        subcommand=subcommand,
        timeout=timeout,
        force=force,
    )
    plan = written.scaffold
    err = make_console(stderr=True)
    if written.path is None:
        sys.stdout.write(written.text)
    searched = ", ".join(f"{c.param} ({f.name})" for c, f, _ in plan.searched)
    filled = ", ".join(f"{{{b}}} ({f.name})" for b, f in plan.filled) or "nothing"
    where = f"wrote {written.path}" if written.path else "the study file"
    err.print(
        f"{where}: searches {searched}; fills in {filled}; metric {plan.metric} ({plan.direction})",
        soft_wrap=True,
        markup=False,
    )
    if plan.left:
        err.print(
            f"left at the script's defaults: {', '.join(f.name for f in plan.left)}", soft_wrap=True, markup=False
        )
    for flag, placeholder in plan.todo:
        err.print(
            f"Warning: {flag} is required: write its value in place of {placeholder}", soft_wrap=True, markup=False
        )
    if taken:
        err.print(
            f"Warning: a study named {name} already has results (hpsearch studies); coarse would continue it: "
            f"pick another --name, or start over with hpsearch delete {name}",
            soft_wrap=True,
            markup=False,
        )
    if written.path is not None:
        err.print(f"next: read its CHECK comments, then hpsearch coarse {written.path}", soft_wrap=True, markup=False)
