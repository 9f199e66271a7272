"""Benchmark: what hpsearch's loop costs per trial against the plain Optuna loop it wraps, side by side.

Both run the same trivial objective (one report, one return) on a journal
file in a fresh folder, in this process, one trial after another:
- plain Optuna: `study.optimize(objective, n_trials=N)` on JournalStorage(JournalFileBackend);
- hpsearch: `run_stage` with the in-process executor (coordinator, liveness
  checks, per-trial attributes, border flags at the end), on hpsearch's journal.
Prints ms per trial for each block of --block trials (flat = no growth with
the study's size), the ratio hpsearch / Optuna, and the time of
`leaderboard --csv` over the whole study.

    .venv/bin/python bench/loop.py --trials 10000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.dispatch import InlineExecutor
from hpsearch.leaderboard import frame, write_csv
from hpsearch.search.coordinator import TrialEvent
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store

WORKLOAD = """
def tiny(trial):
    trial.report(0, val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}
"""


def blocks(stamps: list[float], size: int) -> list[float]:
    """ms per trial in each block of `size` consecutive trials."""
    return [
        1000 * (stamps[i + size - 1] - stamps[i - 1 if i else 0]) / size for i in range(0, len(stamps) - size + 1, size)
    ]


def plain_optuna(n: int, folder: Path) -> list[float]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(folder / "plain.journal")))
    study = optuna.create_study(direction="maximize", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    stamps = [time.perf_counter()]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        trial.report(lr, 0)
        return lr

    study.optimize(objective, n_trials=n, callbacks=[lambda s, t: stamps.append(time.perf_counter())])
    return stamps


def hpsearch(n: int, folder: Path) -> tuple[list[float], Store, object]:
    (folder / "tiny.py").write_text(WORKLOAD)
    spec_file = folder / "tiny.toml"
    spec_file.write_text(
        textwrap.dedent(
            f"""
            name = "tiny"
            workload = "tiny.py:tiny"
            metric = "val_accuracy"
            [coarse]
            trials = {n}
            epochs = 1
            [params.lr]
            low = 1e-4
            high = 1.0
            log = true
            """
        )
    )
    store = Store("tiny", folder / "results")
    info = start_coarse(store, load_spec(spec_file), {})
    stamps = [time.perf_counter()]

    def listen(event: TrialEvent) -> None:
        if event.kind == "finish":
            stamps.append(time.perf_counter())

    run_stage(store, info, InlineExecutor("cpu"), listener=listen)
    return stamps, store, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--block", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = blocks(plain_optuna(args.trials, folder), args.block)
        stamps, store, info = hpsearch(args.trials, folder)
        ours = blocks(stamps, args.block)
        start = time.perf_counter()
        write_csv(frame([info], [store.trials(info)]), folder / "board.csv")  # type: ignore[list-item]
        csv_s = time.perf_counter() - start
    print(f"{args.trials} trivial trials, journal file, one process, ms per trial per block of {args.block}:")
    print(f"{'block':>8} {'optuna':>8} {'hpsearch':>9} {'ratio':>6}")
    for i, (a, b) in enumerate(zip(plain, ours)):
        print(f"{i * args.block:>8} {a:>8.2f} {b:>9.2f} {b / a:>6.2f}")
    print(f"hpsearch last/first block: {ours[-1] / ours[0]:.2f}   optuna last/first block: {plain[-1] / plain[0]:.2f}")
    print(f"leaderboard CSV of {args.trials} trials: {csv_s:.2f} s")


if __name__ == "__main__":
    main()
