"""The instruments' commands: sanity and lr-find (the recipe's checks before searching)."""

from __future__ import annotations

from typing import Annotated

import typer

from hpsearch.cli.options import DeviceOpt, DirOpt, SpecArg

LR_FIND_PLOT = "lr_find.png"  # in the study's results folder


SANITY_FILE = "sanity.json"  # in the study's results folder: the checks, as data


def sanity(spec_file: SpecArg, device: DeviceOpt = "cpu", directory: DirOpt = None) -> None:
    """Check a workload before searching: initial loss at chance, and that it can overfit 20 examples.

    Calls the study's train(trial) with trial.mode = "sanity" and
    trial.subset = 20: the workload must call trial.watch(model, optimizer,
    loss_fn) and, when trial.subset is set, train on only that many examples.

    Initial loss (classification): the first training loss against log(C) for
    C classes; PASS within 20%, else WARN (labels, init scale, softmax before
    the loss). For regression losses (MSE, L1, Huber, Gaussian/Poisson NLL)
    there is no chance level: N/A, which counts as passed.

    Overfit: weight decay 0, lr 0.1, 0.01, 0.001 (those inside the study's
    range, largest first), at most 300 steps each; PASS when the loss on the
    20 examples falls below 0.05 with 100% accuracy (classification), or to
    1% of its first value (regression; a loss that goes negative must fall by
    log(10) nats), else FAIL: do not search.

    The checks are also written as sanity.json in the study's results
    folder (--dir). Exits 0 when every check passes (PASS or N/A), 1
    otherwise (WARN, FAIL or SKIP).

    Example: hpsearch sanity studies/digits_mlp.toml --dir results
    """
    import dataclasses
    import json

    from hpsearch.cli.render import make_console, sanity_table
    from hpsearch.instruments.sanity import run_sanity
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import results_dir

    spec = load_spec(spec_file)
    report = run_sanity(spec, device=device)
    make_console().print(sanity_table(report))
    saved = results_dir(directory) / spec.name / SANITY_FILE
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({**dataclasses.asdict(report), "passed": report.passed}, indent=2) + "\n")
    make_console(stderr=True).print(f"checks saved to {saved}", soft_wrap=True, markup=False)
    if not report.passed:
        raise typer.Exit(1)


def lr_find(
    spec_file: SpecArg,
    apply: Annotated[
        bool,
        typer.Option("--apply", help="Write the suggested range into the study file's lr (old file kept as .bak)."),
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
    from hpsearch.cli.render import make_console
    from hpsearch.instruments.lr_range import apply_range, find_lr_range
    from hpsearch.report.plots import plot_lr_range
    from hpsearch.space import fmt
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import results_dir

    spec = load_spec(spec_file)
    found = find_lr_range(spec, iterations=iterations, device=device)
    plot = plot_lr_range(found, results_dir(directory) / spec.name / LR_FIND_PLOT)
    out, err = make_console(), make_console(stderr=True)
    err.print(f"{len(found.lrs)} steps, {found.stopped}; plot: {plot}", soft_wrap=True)
    out.print(f"suggested lr range: low = {fmt(found.low)}, high = {fmt(found.high)}")
    if apply:
        backup = apply_range(spec_file, found.low, found.high)
        err.print(f"wrote it into {spec_file} (old file: {backup})", soft_wrap=True)
