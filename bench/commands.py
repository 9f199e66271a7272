"""Benchmark: whole commands on short real trials, hpsearch against plain Optuna, side by side.

The same training code (the built-in digits MLP, `hpsearch.workloads.digits:mlp`)
runs N trials x E epochs:
- hpsearch: `hpsearch coarse STUDY --population 1` with its default workers
  (one per core), a fresh results folder each run;
- the same with no trial queued behind a short one (`QUEUE_BELOW_S = 0`,
  set in the command's process): what queueing the next trial buys;
- plain Optuna, one process: `study.optimize` on a JournalFileBackend;
- plain Optuna, two processes on one journal (n_trials split between them),
  one thread each (OMP_NUM_THREADS=1, as hpsearch gives its workers).
Every figure is a whole command (interpreter start, imports, data load)
timed from outside; min and median of --runs runs. Also the start-up of a
stage, from `hpsearch coarse` of a 1-trial, 1-epoch study (default workers):

    start-up = the whole command's wall time - its one trial's own duration,

the duration measured in the worker that ran it (its `duration_s`, as the
leaderboard shows it: the trial's data load and torch's first calls count as
the trial). So start-up is everything else: interpreter and CLI imports,
Optuna, the storage and the stage, the worker's start and its imports of
torch and the workload, the leaderboard, the workers' and the command's exit.
For scale, the same run times `python -c "import hpsearch.workloads.digits"`
alone (the workload's module: torch, as the worker imports it), a floor for
any start-up that imports the workload before its trial, and prints the
start-up beyond it: hpsearch's own part.

    .venv/bin/python bench/commands.py --trials 128 --epochs 3 --runs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

OPTUNA_SCRIPT = """
import sys, optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads.digits import mlp

journal, n, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.create_study(study_name="digits", storage=JournalStorage(JournalFileBackend(journal)),
                            direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed), load_if_exists=True)

def objective(trial):
    params = {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
              "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-5, 1e-4, 1e-3]),
              "momentum": trial.suggest_categorical("momentum", [0.5, 0.9, 0.95, 0.99])}
    def report(epoch, metrics, timing):
        trial.report(metrics["val_accuracy"], epoch)
        return None
    ctx = TrialContext(TrialRecord(trial.number, params, epochs, trial.number), _on_report=report)
    return mlp(ctx)["val_accuracy"]

study.optimize(objective, n_trials=n)
"""


UNQUEUED = (
    "import sys, hpsearch.dispatch.handout as handout; handout.QUEUE_BELOW_S = 0.0; from hpsearch.cli.app import main; "
    "sys.argv[0] = 'hpsearch'; main()"
)


def study_file(folder: Path, trials: int, epochs: int) -> Path:
    path = folder / f"digits_{trials}x{epochs}.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            name = "digits_{trials}x{epochs}"
            workload = "hpsearch.workloads.digits:mlp"
            metric = "val_accuracy"
            [coarse]
            trials = {trials}
            epochs = {epochs}
            [params.lr]
            low = 1e-4
            high = 1.0
            log = true
            [params.weight_decay]
            values = [0, 1e-5, 1e-4, 1e-3]
            [params.momentum]
            values = [0.5, 0.9, 0.95, 0.99]
            """
        )
    )
    return path


def timed(commands: list[list[str]], threads: int | None = None) -> float:
    """Seconds for the commands run at once (all started together) to finish; `threads`: their
    OMP_NUM_THREADS (two processes with torch's default of one thread per core oversubscribe 2 cores)."""
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, env=env) for c in commands
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(commands[0])} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def first_trial_seconds(folder: Path, name: str) -> float:
    """The duration of trial 0 of study `name` in results folder `folder`, measured where it trained."""
    from hpsearch.store.storage import Store
    from hpsearch.trials import DURATION_ATTR, trial_attr

    store = Store(name, folder, create=False)
    [trial] = [t for t in store.trials(store.stage("coarse")) if t.number == 0]
    return float(trial_attr(trial, DURATION_ATTR))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {
        "hpsearch (default workers)": [],
        "hpsearch, nothing queued": [],
        "optuna, 1 process": [],
        "optuna, 2 processes": [],
    }
    whole: list[float] = []  # the 1-trial command
    first: list[float] = []  # its trial's own duration
    imports: list[float] = []  # python -c "import hpsearch.workloads.digits"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = study_file(folder, args.trials, args.epochs)
        one = study_file(folder, 1, 1)
        script = folder / "plain.py"
        script.write_text(OPTUNA_SCRIPT)
        py = str(BIN / "python")
        for run in range(args.runs):
            out = folder / f"run{run}"
            results["hpsearch (default workers)"].append(
                timed([[str(BIN / "hpsearch"), "coarse", str(spec), "--dir", str(out), "--population", "1", "-q"]])
            )
            unqueued = [py, "-c", UNQUEUED, "coarse", str(spec), "--dir", str(out / "u"), "--population", "1", "-q"]
            results["hpsearch, nothing queued"].append(timed([unqueued]))
            results["optuna, 1 process"].append(
                timed([[py, str(script), str(out / "one.journal"), str(args.trials), str(args.epochs), "0"]])
            )
            half = args.trials // 2
            two = str(out / "two.journal")
            timed([[py, "-c", "import optuna"]])  # warm the page cache alike for both
            results["optuna, 2 processes"].append(
                timed([[py, str(script), two, str(half), str(args.epochs), str(s)] for s in (1, 2)], threads=1)
            )
            whole.append(timed([[str(BIN / "hpsearch"), "coarse", str(one), "--dir", str(out / "s"), "-q"]]))
            first.append(first_trial_seconds(out / "s", "digits_1x1"))
            imports.append(timed([[py, "-c", "import hpsearch.workloads.digits"]]))
    print(f"{args.trials} digits-MLP trials x {args.epochs} epochs, whole commands, {args.runs} runs (min / median s):")
    for name, times in results.items():
        print(f"  {name:<28} {min(times):6.2f} / {statistics.median(times):6.2f}")
    base = min(results["hpsearch (default workers)"])
    mid = statistics.median(results["hpsearch (default workers)"])
    for label, name in (
        ("queueing the next trial", "hpsearch, nothing queued"),
        ("vs optuna 1 process", "optuna, 1 process"),
        ("vs optuna 2 processes", "optuna, 2 processes"),
    ):
        times = results[name]
        print(f"  {label}: {min(times) / base:.2f}x by min, {statistics.median(times) / mid:.2f}x by median")
    startup = [w - f for w, f in zip(whole, first)]
    print("a 1-trial, 1-epoch hpsearch coarse (min / median s):")
    print(f"  {'whole command':<28} {min(whole):6.2f} / {statistics.median(whole):6.2f}")
    print(f"  {'its trial, in its worker':<28} {min(first):6.2f} / {statistics.median(first):6.2f}")
    print(
        f"  {'start-up (whole - trial)':<28} {min(startup):6.2f} / {statistics.median(startup):6.2f}   "
        "(goal: under 2 s)"
    )
    print(f"  {'the workload import alone':<28} {min(imports):6.2f} / {statistics.median(imports):6.2f}")
    beyond = [s - i for s, i in zip(startup, imports)]
    print(f"  {'start-up beyond that import':<28} {min(beyond):6.2f} / {statistics.median(beyond):6.2f}")


if __name__ == "__main__":
    main()
