"""Benchmark: whole commands on short real trials, hpsearch against plain Optuna, side by side.

The same training code (the built-in digits MLP, `hpsearch.workloads.digits:mlp`)
runs N trials x E epochs:
- hpsearch: `hpsearch coarse STUDY --population 1` with its default workers
  (one per core), a fresh results folder each run;
- plain Optuna, one process: `study.optimize` on a JournalFileBackend;
- plain Optuna, two processes on one journal (n_trials split between them).
Every figure is a whole command (interpreter start, imports, data load)
timed from outside; min and median of --runs runs. Also the start-up of a
stage: `hpsearch coarse` of a 1-trial, 1-epoch study, and the first trial's
own duration from its leaderboard row.

    .venv/bin/python bench/commands.py --trials 128 --epochs 3 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

OPTUNA_SCRIPT = '''
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
'''


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


def timed(commands: list[list[str]]) -> float:
    """Seconds for the commands run at once (all started together) to finish."""
    start = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT) for c in commands]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(commands[0])} failed: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"hpsearch (default workers)": [], "optuna, 1 process": [], "optuna, 2 processes": []}
    startup: list[float] = []
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
            results["optuna, 1 process"].append(
                timed([[py, str(script), str(out / "one.journal"), str(args.trials), str(args.epochs), "0"]])
            )
            half = args.trials // 2
            two = str(out / "two.journal")
            timed([[py, "-c", "import optuna"]])  # warm the page cache alike for both
            results["optuna, 2 processes"].append(
                timed([[py, str(script), two, str(half), str(args.epochs), str(s)] for s in (1, 2)])
            )
            startup.append(timed([[str(BIN / "hpsearch"), "coarse", str(one), "--dir", str(out / "s"), "-q"]]))
    print(f"{args.trials} digits-MLP trials x {args.epochs} epochs, whole commands, {args.runs} runs (min / median s):")
    for name, times in results.items():
        print(f"  {name:<28} {min(times):6.2f} / {statistics.median(times):6.2f}")
    base = min(results["hpsearch (default workers)"])
    print(f"  speedup vs optuna 1 process: {min(results['optuna, 1 process']) / base:.2f}x;"
          f" vs 2 processes: {min(results['optuna, 2 processes']) / base:.2f}x")
    print(f"  a 1-trial, 1-epoch hpsearch coarse, whole command: min {min(startup):.2f} s, median {statistics.median(startup):.2f} s")


if __name__ == "__main__":
    main()
