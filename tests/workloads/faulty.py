"""Torch-free workloads that misbehave on purpose, for the dispatch fault tests.

Each fails on chosen trial numbers only (trial 1, or odd ones), so a stage
also has trials that complete and the tests can check the search goes on.
No hpsearch import: like a user's workload.

`slow` reads HPSEARCH_TEST_MARKERS (a folder: it writes `<pid>-<trial>` there
when a trial starts, so a test knows which worker processes exist) and
HPSEARCH_TEST_SLEEP (seconds per epoch, default 0).
"""

import ctypes
import math
import os
import signal
import time
from pathlib import Path


def _fine(trial):
    """A well-behaved trial: val_accuracy peaks at lr = 1e-2."""
    score = 1.0 - 0.05 * (math.log10(trial.params["lr"]) + 2.0) ** 2
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - score + 0.1 / (epoch + 1), val_accuracy=score)
    return {"val_accuracy": score}


def raises_on_1(trial):
    if trial.number == 1:
        raise ValueError("bad batch\nshape mismatch in layer 3")
    return _fine(trial)


def always_raises(trial):
    raise RuntimeError(f"broken data loader (trial {trial.number})")


def exits_on_1(trial):
    """The worker process exits mid-trial (like a library calling exit())."""
    if trial.number == 1:
        trial.report(0, train_loss=1.0, val_accuracy=0.1)
        os._exit(3)
    return _fine(trial)


def sigkill_on_1(trial):
    """The worker is SIGKILLed mid-trial (like the kernel's OOM killer)."""
    if trial.number == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return _fine(trial)


def segfault_on_1(trial):
    """The worker segfaults (like a crashing C extension)."""
    if trial.number == 1:
        ctypes.string_at(0)
    return _fine(trial)


def hangs_on_1(trial):
    """Trial 1 hangs for a minute: only --trial-timeout stops it sooner (then it would complete)."""
    if trial.number == 1:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            time.sleep(0.05)
    return _fine(trial)


def nan_on_odd(trial):
    """Odd trials report a NaN loss at their first epoch: diverged."""
    for epoch in range(trial.epochs):
        loss = float("nan") if trial.number % 2 else 1.0 / (epoch + 1)
        trial.report(epoch, train_loss=loss, val_accuracy=0.5)
    return {"val_accuracy": 0.5}


def explodes_on_odd(trial):
    """Odd trials' training loss grows 10x per epoch: more than 3x the first report."""
    loss = 1.0
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=loss, val_accuracy=0.5)
        loss *= 10.0 if trial.number % 2 else 0.5
    return {"val_accuracy": 0.5}


def linear_score(trial):
    """val_accuracy = lr at every epoch: the median pruner stops the low-lr trials."""
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - trial.params["lr"], val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}


def slow(trial):
    """Sleeps HPSEARCH_TEST_SLEEP seconds per epoch, after leaving a marker with its pid."""
    markers = os.environ.get("HPSEARCH_TEST_MARKERS")
    if markers:
        Path(markers, f"{os.getpid()}-{trial.number}").touch()
    pause = float(os.environ.get("HPSEARCH_TEST_SLEEP", "0"))
    for epoch in range(trial.epochs):
        time.sleep(pause)
        trial.report(epoch, iterations=10, train_loss=1.0 / (epoch + 1), val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}


def grid_point(trial):
    """Records nothing special: for the grid test, the params come back in the metrics."""
    return {"val_accuracy": trial.params["lr"], "pid": float(os.getpid())}


def threads(trial):
    """Returns the torch thread budget its worker was given (OMP_NUM_THREADS)."""
    return {"val_accuracy": 0.5, "omp_threads": float(os.environ.get("OMP_NUM_THREADS", "0"))}
