"""Managing stored studies: delete a study or its latest stages."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hpsearch.cli.options import DirOpt, NameArg, StorageOpt
from hpsearch.errors import HpsearchError


def delete(
    name: NameArg,
    stage: Annotated[
        str | None,
        typer.Option("--stage", help="Delete this stage and every later one [default: the whole study]."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask (needed when not on a terminal).")] = False,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Delete a study, or a stage and the stages after it, from its storage (journal or database).

    Every trial of those stages goes; with the whole study, its stored
    `hpsearch final` result goes too (the `<name>.final` Optuna study) and,
    from its default results folder, the folder (journal, logs, plots,
    report, best.toml/json/pt). Asks
    first on a terminal; elsewhere pass --yes. Use it to start over after
    changing a study file whose coarse stage already has results.

    Example: hpsearch delete digits_mlp --stage refine-2 --yes
    """
    from hpsearch.cli.render import make_console
    from hpsearch.search.final import stored_final
    from hpsearch.store.storage import Store

    store = Store(name, directory, storage, create=False)
    doomed = store.stages_from(stage)
    names = [s.name for s in doomed]
    what = (
        f"study {name!r}" if stage is None else f"stage{'s' if len(names) > 1 else ''} {', '.join(names)} of {name!r}"
    )
    tested = (
        len(doomed) == len(store.stages()) and stored_final(store) is not None
    )  # the final result goes with the study
    also = " and its final result" if tested else ""
    what += also
    trials = sum(len(store.trials(s)) for s in doomed)
    if not yes:
        if not sys.stdin.isatty():
            raise HpsearchError(f"deleting {what} ({trials} trials) needs confirmation: pass --yes")
        typer.confirm(f"Delete {what} ({trials} trials) from {store.location}?", abort=True, err=True)
    gone = store.delete_stages(doomed)
    make_console(stderr=True).print(
        f"deleted {', '.join(gone)} of {name}{also} ({trials} trials) from {store.location}",
        soft_wrap=True,
        markup=False,
    )


def repair(
    name: NameArg,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Repair a damaged study journal: keep every readable record, before and after the damage.

    A journal line that is not a record (a garbage line, a record cut off by
    a power loss or a full disk and glued to the next one) is dropped; a
    whole record glued behind a torn one is recovered. The original file is
    kept beside the journal (optuna.journal.damaged-<time>). A torn final
    record needs no repair: the next write sets it aside by itself.

    Example: hpsearch repair digits_mlp
    """
    from hpsearch.cli.render import make_console
    from hpsearch.store.journal import repair_journal
    from hpsearch.store.storage import journal_path

    report = repair_journal(journal_path(name, directory, storage))
    err = make_console(stderr=True)
    if report.backup is None:
        err.print(
            f"{report.path}: no damaged record ({report.kept} records); nothing changed", soft_wrap=True, markup=False
        )
        return
    lines = ", ".join(map(str, report.dropped_lines[:10])) + (" ..." if len(report.dropped_lines) > 10 else "")
    salvaged = f", recovered {report.salvaged} whole record(s) glued behind torn ones" if report.salvaged else ""
    err.print(
        f"{report.path}: kept {report.kept} records, dropped line(s) {lines}{salvaged}; "
        f"original kept as {report.backup}",
        soft_wrap=True,
        markup=False,
    )
