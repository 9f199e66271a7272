"""Benchmark (not a test) of trial dispatch: what hpsearch adds per trial, and what 2 workers buy.

1. Overhead: the same tiny training function (a 64->10 linear model, 3
   epochs of 4 SGD steps, one report per epoch) run N times
   a. by a bare in-process Optuna loop (study.optimize, in-memory storage),
   b. the same loop on the journal file storage hpsearch uses,
   c. by hpsearch: coordinator + 1 worker process (PoolExecutor), journal storage.
   Per-trial time is measured in steady state (first trial start to last
   trial end); worker start-up (python + torch import, once per stage) is
   reported apart. Overhead = (c) - (a) in ms per trial.
2. Throughput: CPU-bound trials (a small MLP trained with batch 32, like the
   digits study) with 1 vs 2 CPU workers, threads split per worker as the
   CLI does (cores // workers), trials per second and the ratio.

Run: .venv/bin/python bench/dispatch.py [--trials N] [--cpu-trials M]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch  # at import, as a real workload module does: workers load it once, at start-up

HERE = Path(__file__).resolve()
WARM = 3  # trials left out of the steady-state timing: torch's first calls are slow
sys.path.insert(0, str(HERE.parent.parent))


# ----------------------------------------------------------------------------- workloads (run in workers)


def tiny(trial):  # type: ignore[no-untyped-def]
    """A few milliseconds of torch: the per-trial cost hpsearch adds should dominate nothing."""
    torch.manual_seed(trial.seed)
    x, y = torch.randn(128, 64), torch.randint(0, 10, (128,))
    model = torch.nn.Linear(64, 10)
    opt = torch.optim.SGD(model.parameters(), lr=trial.params["lr"])
    loss = torch.tensor(0.0)
    for epoch in range(trial.epochs):
        for i in range(4):
            xb, yb = x[i * 32 : (i + 1) * 32], y[i * 32 : (i + 1) * 32]
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
        trial.report(epoch, iterations=4, train_loss=loss.item(), val_accuracy=1.0 - loss.item() / 10)
    return {"val_accuracy": 1.0 - loss.item() / 10}


def cpu_bound(trial):  # type: ignore[no-untyped-def]
    """About half a second of small-batch MLP training: CPU-bound, like a digits trial."""
    torch.manual_seed(trial.seed)
    x, y = torch.randn(4096, 64), torch.randint(0, 10, (4096,))
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=trial.params["lr"], momentum=0.9)
    loss = torch.tensor(0.0)
    for epoch in range(trial.epochs):
        for i in range(0, 4096, 32):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 32]), y[i : i + 32])
            opt.zero_grad()
            loss.backward()
            opt.step()
        trial.report(epoch, iterations=128, train_loss=loss.item(), val_accuracy=1.0 - loss.item() / 10)
    return {"val_accuracy": 1.0 - loss.item() / 10}


# ----------------------------------------------------------------------------- measurements


def bare_optuna(n: int, epochs: int, storage: object | None) -> float:
    """Seconds per trial of a bare Optuna loop running `tiny` in this process."""
    import optuna

    from hpsearch.workloads.api import TrialContext, TrialRecord

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        ctx = TrialContext(
            TrialRecord(trial.number, {"lr": trial.suggest_float("lr", 1e-4, 1.0, log=True)}, epochs, trial.number)
        )

        def report(epoch: int, metrics: dict[str, float], timing: object = None) -> None:
            trial.report(metrics["val_accuracy"], epoch)
            return None

        ctx._on_report = report  # type: ignore[assignment]
        return tiny(ctx)["val_accuracy"]

    study.optimize(objective, n_trials=WARM)  # warm torch's first-call costs
    start = time.perf_counter()
    study.optimize(objective, n_trials=n)
    return (time.perf_counter() - start) / n


def hpsearch_stage(
    function: str, n: int, epochs: int, workers: int, folder: Path, threads: int | None = None
) -> tuple[float, float]:
    """(steady-state seconds per trial, seconds before the first trial started) for an hpsearch stage."""
    from hpsearch.dispatch import DispatchConfig, PoolExecutor, plan_workers
    from hpsearch.search.coordinator import TrialEvent
    from hpsearch.search.stages import run_stage, start_coarse
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store

    name = f"bench_{function}_{workers}_{threads}"
    study = folder / f"{name}.toml"
    study.write_text(
        f'name = "{name}"\nworkload = "{HERE}:{function}"\nmetric = "val_accuracy"\ndirection = "maximize"\n'
        f"[coarse]\ntrials = {n}\nepochs = {epochs}\nseed = 0\n[refine]\ntrials = 2\n"
        "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n"
    )
    spec = load_spec(study)
    store = Store(name, folder / "results")
    info = start_coarse(store, spec, {})
    stamps: dict[str, float] = {}
    finishes: list[float] = []

    def listen(event: TrialEvent) -> None:
        if event.kind == "start":
            stamps.setdefault("first_start", time.perf_counter())
        elif event.kind == "finish":
            finishes.append(time.perf_counter())

    slots = plan_workers(DispatchConfig("cpu", workers=workers), gpus=[])
    if threads is not None:
        slots = [replace(s, threads=threads) for s in slots]
    executor = PoolExecutor(slots)
    begin = time.perf_counter()
    result = run_stage(store, info, executor, listener=listen)
    assert result.ran == n, f"{result.ran} trials ran, {n} expected: {result.failures[:3]}"
    # Steady state, like the bare loop after its warm-up trials.
    return (finishes[-1] - finishes[WARM - 1]) / (n - WARM), stamps["first_start"] - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="trials of the tiny workload per measurement")
    parser.add_argument("--cpu-trials", type=int, default=24, help="CPU-bound trials per worker count")
    args = parser.parse_args()

    import optuna

    from hpsearch.dispatch import cpu_cores
    from hpsearch.store.storage import JournalFileBackend, JournalStorage

    torch.set_num_threads(cpu_cores())  # the bare loop gets the whole machine, as one worker does
    print(
        f"machine: {platform.machine()}, {cpu_cores()} cores, {platform.python_version()}, torch {torch.__version__}, "
        f"optuna {optuna.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        epochs = 3
        bare_mem = bare_optuna(args.trials, epochs, None)
        bare_journal = bare_optuna(
            args.trials, epochs, JournalStorage(JournalFileBackend(str(folder / "bare.journal")))
        )
        hp, startup = hpsearch_stage("tiny", args.trials, epochs, 1, folder)
        print("\n1. per-trial overhead, tiny workload (3 epochs x 4 steps, a report per epoch)")
        print(f"   bare Optuna loop, in-memory storage:   {bare_mem * 1e3:7.2f} ms/trial")
        print(f"   bare Optuna loop, journal file storage: {bare_journal * 1e3:7.2f} ms/trial")
        print(
            f"   hpsearch, 1 worker, journal storage:    {hp * 1e3:7.2f} ms/trial  "
            f"(worker start-up {startup:.2f} s, once per stage)"
        )
        print(f"   overhead vs bare in-memory: {(hp - bare_mem) * 1e3:.2f} ms/trial, ratio {hp / bare_mem:.2f}x")
        print(
            f"   overhead vs bare journal:   {(hp - bare_journal) * 1e3:.2f} ms/trial, ratio {hp / bare_journal:.2f}x"
        )

        one, _ = hpsearch_stage("cpu_bound", args.cpu_trials, 4, 1, folder)
        one_1t, _ = hpsearch_stage("cpu_bound", args.cpu_trials, 4, 1, folder, threads=1)
        two, _ = hpsearch_stage("cpu_bound", args.cpu_trials, 4, 2, folder)
        print(f"\n2. throughput, CPU-bound trials ({args.cpu_trials} trials per run, small-batch MLP)")
        print(f"   1 worker,  {cpu_cores()} torch threads (CLI default for --workers 1): {1 / one:6.2f} trials/s")
        print(f"   1 worker,  1 torch thread:                              {1 / one_1t:6.2f} trials/s")
        print(
            f"   2 workers, {max(cpu_cores() // 2, 1)} torch thread each (CLI default here):      "
            f"{1 / two:6.2f} trials/s"
        )
        print(f"   ratio 2 workers vs 1 worker ({cpu_cores()} threads): {one / two:.2f}x")
        print(f"   ratio 2 workers vs 1 worker (1 thread):  {one_1t / two:.2f}x")
    print(f"\nload average during the run (1, 5, 15 min): {os.getloadavg()}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
