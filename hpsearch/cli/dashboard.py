"""The command that serves a study in optuna-dashboard: dashboard."""

from __future__ import annotations

from typing import Annotated

import typer

from hpsearch.cli.options import DirOpt, NameArg, StorageOpt


def dashboard(
    name: NameArg,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. 127.0.0.1 keeps it to this machine (from another one: "
            "ssh -L 8080:127.0.0.1:8080 HOST); 0.0.0.0 opens it to the network, without a password.",
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")] = 8080,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Serve a study in optuna-dashboard (read-only) until Ctrl-C; prints its URL and one per stage.

    Each stage is its own Optuna study in the dashboard's list, named
    <name>.<stage> (digits_mlp.coarse, digits_mlp.refine-1, and
    digits_mlp.final once `hpsearch final` ran). A trial's value is the
    study's metric, its intermediate values the metric at each epoch (the
    dashboard's learning curves); its user attributes are hpsearch's record:
    `result` (seed, epochs, curves of every metric, metrics, duration, log),
    `reason` (why it was pruned or failed) and `owner`. Nothing can be
    changed from the dashboard: use hpsearch's commands. Needs the
    `dashboard` extra: pip install 'hpsearch[dashboard]'.

    Example: hpsearch dashboard digits_mlp --port 8080, then open http://127.0.0.1:8080/dashboard
    """
    from hpsearch.cli.render import make_console
    from hpsearch.dashboard import open_dashboard

    out, err = make_console(), make_console(stderr=True)
    with open_dashboard(name, directory, storage, host, port) as board:
        out.print(board.url, soft_wrap=True, markup=False, highlight=False)
        wide = max(len(p.stage) for p in board.pages)
        for page in board.pages:
            out.print(
                f"  {page.stage:<{wide}}  {page.url}  ({page.study_name}, {page.trials} trials)",
                soft_wrap=True,
                markup=False,
                highlight=False,
            )
        err.print(
            f"optuna-dashboard on {board.location}, read-only. Each stage is its own study in its list; "
            f"a trial's value is {board.metric}, its intermediate values {board.metric} per epoch (the curves), "
            "its user attributes hpsearch's `result` (seed, epochs, curves, metrics, duration, log) and `reason`. "
            "Ctrl-C stops it.",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
        try:
            board.serve()
        except KeyboardInterrupt:
            err.print("dashboard stopped", markup=False, highlight=False)
