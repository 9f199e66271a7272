"""Benchmark: storage cost per trial and leaderboard export time, local journal vs PostgreSQL.

    .venv/bin/python bench/storage.py            # journal only
    .venv/bin/python bench/storage.py --postgres # also PostgreSQL (starts a throwaway server on loopback)

1. Per-trial overhead: what the coordinator spends in the storage for one
   trial (ask, attributes, 5 epoch reports, tell) with a workload that does
   nothing, in ms per trial.
2. Leaderboard export: `hpsearch leaderboard NAME --csv PATH` work (open the
   storage, read every trial, build the ranked DataFrame, write CSV) for
   studies of 1,000 and 10,000 trials, in seconds. Target: 10,000 trials in
   under 2 s on the local default (journal).
Prints a table; paste it into bench/RESULTS.md with the machine and date.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import optuna
from optuna.trial import TrialState, create_trial

from hpsearch.leaderboard import leaderboard
from hpsearch.search.coordinator import Coordinator
from hpsearch.search.stages import start_coarse
from hpsearch.spec import parse_spec
from hpsearch.store.storage import Store
from hpsearch.workloads.api import TrialOutcome, TrialStatus

SPEC = {
    "name": "bench",
    "workload": "hpsearch.workloads.digits:mlp",
    "metric": "val_accuracy",
    "params": {
        "lr": {"low": 1e-4, "high": 1.0, "log": True},
        "weight_decay": {"values": [0, 1e-5, 1e-4, 1e-3]},
        "momentum": {"values": [0.5, 0.9, 0.95, 0.99]},
    },
}
EPOCHS = 5


def per_trial_ms(store: Store, n: int) -> float:
    """ms of coordinator/storage work per trial, the workload doing nothing."""
    spec = parse_spec({**SPEC, "coarse": {"trials": n, "epochs": EPOCHS}}, "bench.toml")
    info = start_coarse(store, spec, {})
    run = Coordinator(store, info)
    start = time.perf_counter()
    while isinstance(jobs := run.next(), list):
        [job] = jobs
        curves: dict[str, list[float]] = {"train_loss": [], "val_accuracy": []}
        for epoch in range(EPOCHS):
            metrics = {"train_loss": 1.0 / (epoch + 1), "val_accuracy": 0.5 + 0.05 * epoch}
            run.report(job, epoch, metrics)
            for k, v in metrics.items():
                curves[k].append(v)
        run.finish(
            job,
            TrialOutcome(TrialStatus.COMPLETE, {"val_accuracy": 0.7, "val_loss": 0.3}, curves=curves, duration_s=0.01),
        )
    return (time.perf_counter() - start) * 1000 / n


def fill(store: Store, name: str, n: int) -> None:
    """A stage of n finished trials, written in bulk (realistic attributes, not the run loop)."""
    spec = parse_spec({**SPEC, "name": name, "coarse": {"trials": n, "epochs": EPOCHS}}, "bench.toml")
    store.name = name
    info = start_coarse(store, spec, {})
    study = store.study(info)
    dists = info.space.distributions()
    rng = random.Random(0)
    t0 = datetime.now()
    trials = []
    for i in range(n):
        params = {
            "lr": 10 ** rng.uniform(-4, 0),
            "weight_decay": rng.choice([0, 1e-5, 1e-4, 1e-3]),
            "momentum": rng.choice([0.5, 0.9, 0.95, 0.99]),
        }
        value = 1 - abs(math.log10(params["lr"]) + 1) / 4
        curves = {"train_loss": [1 / (e + 1) for e in range(EPOCHS)], "val_accuracy": [value] * EPOCHS}
        state = TrialState.FAIL if i % 50 == 0 else TrialState.COMPLETE
        trials.append(
            create_trial(
                state=state,
                value=value if state == TrialState.COMPLETE else None,
                params=params,
                distributions=dists,
                user_attrs={
                    "epochs": EPOCHS,
                    "seed": i,
                    "duration_s": 0.5,
                    "curves": curves,
                    "metrics": {"val_accuracy": value, "val_loss": 1 - value},
                    **({"reason": "RuntimeError: boom"} if state == TrialState.FAIL else {}),
                },
                intermediate_values={e: value for e in range(EPOCHS)},
            )
        )
        trials[-1].datetime_start = t0
        trials[-1].datetime_complete = t0 + timedelta(seconds=0.5)
    study.add_trials(trials)


def export_s(make_store, name: str, out: Path) -> float:
    """Seconds for what `hpsearch leaderboard NAME --csv PATH` does, from a cold storage handle."""
    start = time.perf_counter()
    store = make_store(name)
    df = leaderboard(store, "coarse")
    df.to_csv(out, index=False)
    return time.perf_counter() - start


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.postgres import postgres_url

    gen = postgres_url.__wrapped__()  # the fixture's generator, outside pytest
    url = next(gen)
    try:
        yield url
    finally:
        with contextlib.suppress(StopIteration):
            next(gen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", action="store_true", help="also measure PostgreSQL")
    parser.add_argument("--trials", type=int, default=300, help="trials for the per-trial overhead")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        backends = [("journal (default)", lambda name: Store(name, Path(tmp) / "j"))]
        with contextlib.ExitStack() as stack:
            if args.postgres:
                url = stack.enter_context(postgres())
                backends.append(("postgresql", lambda name, url=url: Store(name, url=url)))
            for label, make_store in backends:
                overhead = per_trial_ms(make_store("overhead"), args.trials)
                row = [label, f"{overhead:.1f}"]
                for n in (1_000, 10_000):
                    fill(make_store(f"lb{n}"), f"lb{n}", n)
                    row.append(f"{export_s(make_store, f'lb{n}', Path(tmp) / 'lb.csv'):.2f}")
                rows.append(row)
    header = [
        "storage",
        "ms per trial (ask+5 reports+tell)",
        "leaderboard CSV 1k trials (s)",
        "leaderboard CSV 10k trials (s)",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
