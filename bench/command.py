"""Benchmark: the per-trial overhead of a command workload over the script's own run, side by side.

One tiny script (start the interpreter, print one epoch's JSON report line,
exit) is run N times, one after another, four ways in this one run:
- bare:      subprocess.run of the script, N times (the interpreter start and the script: the floor);
- optuna:    a plain Optuna loop on a journal file whose objective runs the script and parses its line
             (what a user writes by hand);
- hpsearch --workers 0: run_stage with the in-process executor;
- hpsearch --workers 1: run_stage with one worker process (what the CLI uses).
Prints ms per trial (min and median of --runs repeats) and each one's overhead
over bare. Goal: hpsearch's overhead under 50 ms per trial.

    .venv/bin/python bench/command.py --trials 100 --runs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.dispatch import InlineExecutor, PoolExecutor, plan_workers
from hpsearch.dispatch.plan import DispatchConfig
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store

SCRIPT = 'import json, sys\nprint(json.dumps({"epoch": 1, "val_accuracy": float(sys.argv[1])}))\n'


def bare(n: int, folder: Path) -> float:
    start = time.perf_counter()
    for i in range(n):
        subprocess.run([sys.executable, str(folder / "tiny.py"), str(i / n)], check=True, capture_output=True)
    return (time.perf_counter() - start) / n


def plain_optuna(n: int, folder: Path) -> float:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(folder / f"plain-{time.time_ns()}.journal")))
    study = optuna.create_study(direction="maximize", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        out = subprocess.run(
            [sys.executable, str(folder / "tiny.py"), str(lr)], check=True, capture_output=True, text=True
        )
        return json.loads(out.stdout.splitlines()[-1])["val_accuracy"]

    start = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - start) / n


def hpsearch_run(n: int, folder: Path, workers: int) -> float:
    study = folder / "study.toml"
    name = f"cmd{time.time_ns()}"
    study.write_text(
        f'name = "{name}"\nmetric = "val_accuracy"\n[workload]\ncommand = "python tiny.py {{lr}}"\n'
        f"[coarse]\ntrials = {n}\nepochs = 1\n[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n"
    )
    spec = load_spec(study)
    store = Store(spec.name, folder / "results")
    info = start_coarse(store, spec, {})
    executor = InlineExecutor() if workers == 0 else PoolExecutor(plan_workers(DispatchConfig(workers=workers)))
    start = time.perf_counter()
    result = run_stage(store, info, executor)
    elapsed = time.perf_counter() - start
    assert result.ran == n and not result.failures, result.failures[:3]
    return elapsed / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    methods = {
        "bare subprocess": lambda f: bare(args.trials, f),
        "plain Optuna + subprocess": lambda f: plain_optuna(args.trials, f),
        "hpsearch --workers 0": lambda f: hpsearch_run(args.trials, f, 0),
        "hpsearch --workers 1": lambda f: hpsearch_run(args.trials, f, 1),
    }
    times: dict[str, list[float]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "tiny.py").write_text(SCRIPT)
        for _ in range(args.runs):  # interleaved, so a slow spell of the machine hits every method alike
            for name, method in methods.items():
                times[name].append(1000 * method(folder))
    floor = min(times["bare subprocess"])
    print(f"{args.trials} trials of a tiny script, {args.runs} runs each (ms per trial; overhead = min - bare's min)")
    print(f"{'method':<28}{'min':>9}{'median':>9}{'overhead':>10}")
    for name, values in times.items():
        print(f"{name:<28}{min(values):9.1f}{statistics.median(values):9.1f}{min(values) - floor:10.1f}")


if __name__ == "__main__":
    main()
