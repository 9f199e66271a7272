"""`hpsearch slurm NAME`: workers for a stage as one SLURM job array (hpsearch/cluster/slurm.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from hpsearch.cli.options import DirOpt, RunOptions, StorageOpt, grouped

POLL_S = 5.0  # how often --wait looks at the queue and the stage


@grouped
def slurm(
    name: Annotated[
        str, typer.Argument(metavar="NAME|STUDY_FILE", help="A study's name, or a study file (its coarse stage).")
    ],
    run: RunOptions,
    tasks: Annotated[
        int, typer.Option("--tasks", "-n", min=1, help="Tasks in the job array: each joins the stage like a worker.")
    ] = 2,
    stage: Annotated[
        str | None, typer.Option("--stage", help="The stage to run: coarse, refine-1, ... [default: the latest].")
    ] = None,
    refine: Annotated[
        bool,
        typer.Option("--refine", help="Derive the next refine stage (as `refine` does) and run it."),
    ] = False,
    partition: Annotated[str | None, typer.Option("--partition", "-p", help="sbatch --partition.")] = None,
    time_limit: Annotated[
        str, typer.Option("--time", "-t", help="Each task's time limit: 30m, 4h, 1d (sbatch --time).")
    ] = "4h",
    gpus_per_task: Annotated[int | None, typer.Option("--gpus-per-task", min=0, help="sbatch --gpus-per-task.")] = None,
    cpus_per_task: Annotated[int | None, typer.Option("--cpus-per-task", min=1, help="sbatch --cpus-per-task.")] = None,
    mem: Annotated[str | None, typer.Option("--mem", help="sbatch --mem, e.g. 16G.")] = None,
    account: Annotated[str | None, typer.Option("--account", "-A", help="sbatch --account.")] = None,
    sbatch: Annotated[
        list[str] | None,
        typer.Option("--sbatch", metavar="OPTION", help="Another sbatch option, e.g. --sbatch=--qos=low (repeatable)."),
    ] = None,
    signal_delay: Annotated[
        int, typer.Option("--signal-delay", min=10, help="Seconds of warning a task gets before SLURM takes it.")
    ] = 120,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Stay: show the stage's progress until the array ends (exit 0 when complete)."),
    ] = False,
    storage: StorageOpt = None,
    directory: DirOpt = None,
) -> None:
    """Run a stage's trials on a SLURM cluster: one job array of --tasks tasks, each `hpsearch worker NAME`.

    Given a study file, its coarse stage is created (or continued) here and run there; given a study's
    name, its latest stage (or --stage), or with --refine a new refine stage derived from the latest.

    Every task joins the stage through the study's storage, which every node must reach: PostgreSQL
    (--storage postgresql://...), or the results folder (--dir) on a filesystem all nodes share.
    The options of `hpsearch worker` (--workers, --devices, --pruner...) are each task's. A task that
    SLURM preempts (or whose time runs out) is warned --signal-delay seconds ahead, requeued, and
    resumes its trials from their checkpoints. `hpsearch studies` shows where trials run.

    Example: hpsearch slurm studies/digits_mlp.toml --tasks 8 -p gpu --gpus-per-task 1 -t 4h --storage postgresql://db/hp
    """
    from hpsearch.cluster.slurm import SlurmOptions, StageWorker, submit
    from hpsearch.durations import parse_duration
    from hpsearch.leaderboard import running_on
    from hpsearch.search.stages import plan_refine, start_coarse
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store, results_dir
    from hpsearch.trials import counts

    if name.endswith(".toml"):
        spec = load_spec(Path(name))
        name, store = spec.name, Store(spec.name, directory, storage)
        info = start_coarse(store, spec, {})  # created (or continued) here: its trials run there
    else:
        store = Store(name, directory, storage, create=False)
        info = plan_refine(store, stage, {})[0] if refine else store.stage(stage)
    from hpsearch.dispatch import DispatchConfig

    dispatch = DispatchConfig(run.devices, run.per_device, run.workers, run.trial_timeout, run.population)
    results = None if store.url else str(results_dir(directory).resolve())
    track = tuple(run.track or ())
    worker = StageWorker(name, info.name, results, store.url, dispatch, run.overrides(), run.pruner.value, track)
    options = SlurmOptions(
        partition,
        max(1, round(parse_duration(time_limit) / 60)),
        gpus_per_task,
        cpus_per_task,
        mem,
        account,
        tuple(sbatch or ()),
        signal_delay,
    )
    folder = results_dir(directory).resolve() / name / "slurm"
    jobs = submit(folder, f"hpsearch-{name}", worker, tasks, options)
    array = str(jobs[0].job_id).partition("_")[0]
    flags = " ".join(["--stage", info.name, *run.as_arguments()])
    say = f"submitted job array {array}: {tasks} task(s), each as `hpsearch worker {name} {flags}`"
    print(f"{say}\nlogs: {folder}/   watch: squeue -j {array}; hpsearch studies", file=sys.stderr)
    if not store.database:
        print(f"note: a journal file: every node must see {store.location} on a shared filesystem", file=sys.stderr)
    if not wait:
        return
    while _queued(array):
        trials = store.trials(info)
        done, failed = counts(trials, info.settings.strategy, info.spec.limits)
        where = ", ".join(running_on(trials)) or "nothing yet"
        target = info.settings.target(info.space)
        print(f"{info.name}: {done}/{target} done, {failed} failed; running on {where}", file=sys.stderr)
        time.sleep(POLL_S)
    done, _ = counts(store.trials(info), info.settings.strategy, info.spec.limits)
    if done < info.settings.target(info.space):
        print(f"the array ended with the stage short: {done} of {info.settings.target(info.space)}", file=sys.stderr)
        raise typer.Exit(1)


def _queued(array: str) -> bool:
    """Whether any task of the job array is still pending or running."""
    squeue = shutil.which("squeue") or "squeue"
    out = subprocess.run([squeue, "-h", "-j", array, "-o", "%i"], capture_output=True, text=True, check=False)
    return bool(out.stdout.strip())
