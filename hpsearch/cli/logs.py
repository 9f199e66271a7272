"""The command that prints what a trial printed: logs."""

from __future__ import annotations

import shutil
import sys
from typing import Annotated

import typer

from hpsearch.cli.options import DirOpt, NameArg, StorageOpt
from hpsearch.errors import NoTrialLog, TrialNotFound

TrialArg = Annotated[int, typer.Argument(min=0, help="The trial's number (the leaderboard's trial column).")]
LogStageOpt = Annotated[str | None, typer.Option("--stage", help="coarse, refine-1, ... [default: the latest stage].")]


def logs(
    name: NameArg,
    trial: TrialArg,
    stage: LogStageOpt = None,
    directory: DirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Print one trial's output: everything its workload (and the processes it started) printed.

    Each trial's stdout and stderr go to <results>/<name>/logs/<stage>/trial-<n>.log
    on the machine that ran it. There, this prints the whole file. Elsewhere
    (another machine of a shared storage, or once the file is gone) it prints
    the last lines stored with the trial, and says on stderr where the full
    log lives (host:path). A population's members share one log, named
    after its first member.

    Example: hpsearch logs digits_mlp 7 --stage refine-1
    """
    from hpsearch.store.storage import Store
    from hpsearch.trials import LOG_ATTR, LOG_TAIL_ATTR, trial_attr
    from hpsearch.workloads.capture import local_log, on_this_host

    store = Store(name, directory, storage, create=False)
    info = store.stage(stage)
    trials = {t.number: t for t in store.trials(info)}
    if trial not in trials:
        known = f"its trials are 0 to {max(trials)}" if trials else "it has no trials yet"
        raise TrialNotFound(f"stage {info.name} of study {name!r} has no trial {trial}; {known}")
    found = trials[trial]
    ref = str(trial_attr(found, LOG_ATTR, ""))
    path = local_log(ref) if ref else None
    if path is None and not ref:
        expected = store.logs_dir(info) / f"trial-{trial}.log"  # a trial still running records its log when it ends
        path = expected if expected.is_file() else None
    if path is not None:
        with open(path, encoding="utf-8", errors="replace") as f:
            shutil.copyfileobj(f, sys.stdout)
        return
    if not ref:
        raise NoTrialLog(
            f"trial {trial} of {name} {info.name} ({found.state.name.lower()}) has no log: trials run before "
            "hpsearch kept logs have none, and one still running on another machine records its log when it ends"
        )
    tail = str(trial_attr(found, LOG_TAIL_ATTR, ""))
    sys.stdout.write(tail + "\n" if tail and not tail.endswith("\n") else tail)
    shown = "above: its last lines, as stored" if tail else "its stored last lines are empty"
    where = f"was at {ref}, gone now" if on_this_host(ref) else f"lives on {ref}"
    print(f"the full log of trial {trial} {where}; {shown}", file=sys.stderr)
