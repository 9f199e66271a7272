"""Torch-free workloads for the stall, queue and log-bound tests. No hpsearch import: like a user's workload.

HPSEARCH_TEST_MARKERS, when set, names a folder: each trial leaves `<pid>-<trial>` there as it
starts (so a test knows the worker processes) and `done-<trial>` as it returns.

- `hangs_on_2`: trial 2 stops reporting at its epoch 2 (a deadlocked loader, a hung collective).
- `waits_for_the_others`: trial 2 waits (at most HPSEARCH_TEST_WAIT_S) until every other trial of
  the stage (HPSEARCH_TEST_TRIALS of them in all) returned, and says whether it saw them all.
- `prints_a_lot`: prints HPSEARCH_TEST_PRINT_MB megabytes (default 20) between a first and a last
  line; `prints_then_hangs` does the same, then hangs (its worker is ended while it sleeps), and
  `prints_then_dies` SIGKILLs its worker.
Run as a script (`python stalls.py`, a command workload), it prints one JSON report line, then as `prints_a_lot`.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

FIRST_LINE = "FIRST LINE OF THE TRIAL"
LAST_LINE = "LAST LINE OF THE TRIAL"


def _mark(name):
    markers = os.environ.get("HPSEARCH_TEST_MARKERS")
    if markers:
        Path(markers, name).touch()


def hangs_on_2(trial):
    _mark(f"{os.getpid()}-{trial.number}")
    for epoch in range(trial.epochs):
        if trial.number == 2 and epoch == 2:
            print("trial 2 hangs now", flush=True)
            time.sleep(3600)
        time.sleep(0.05)
        trial.report(epoch, train_loss=1.0 / (epoch + 1), val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}


def waits_for_the_others(trial):
    _mark(f"{os.getpid()}-{trial.number}")
    saw_all = 1.0
    for epoch in range(trial.epochs):
        time.sleep(0.05)
        if trial.number == 2 and epoch == 1:
            others = {f"done-{n}" for n in range(int(os.environ["HPSEARCH_TEST_TRIALS"])) if n != 2}
            folder = Path(os.environ["HPSEARCH_TEST_MARKERS"])
            end = time.monotonic() + float(os.environ.get("HPSEARCH_TEST_WAIT_S", "20"))
            while not others <= {p.name for p in folder.iterdir()} and time.monotonic() < end:
                time.sleep(0.05)
            saw_all = float(others <= {p.name for p in folder.iterdir()})
        trial.report(epoch, train_loss=1.0 / (epoch + 1), val_accuracy=trial.params["lr"])
    _mark(f"done-{trial.number}")
    return {"val_accuracy": trial.params["lr"], "saw_all": saw_all}


def _print_a_lot():
    megabytes = int(float(os.environ.get("HPSEARCH_TEST_PRINT_MB", "20")))
    print(FIRST_LINE, flush=True)
    block = ("x" * 99 + "\n") * 10_000  # 1 MB
    for _ in range(megabytes):
        sys.stdout.write(block)
    print(LAST_LINE, flush=True)


def prints_a_lot(trial):
    _print_a_lot()
    trial.report(0, train_loss=0.5, val_accuracy=0.5)
    return {"val_accuracy": 0.5}


def prints_then_hangs(trial):
    _mark(f"{os.getpid()}-{trial.number}")
    _print_a_lot()
    time.sleep(3600)


def prints_then_dies(trial):
    """As the kernel's OOM killer would: SIGKILL to the worker alone, mid-trial."""
    _mark(f"{os.getpid()}-{trial.number}")
    _print_a_lot()
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    print(json.dumps({"epoch": 0, "train_loss": 0.5, "val_accuracy": 0.5}), flush=True)
    _print_a_lot()
