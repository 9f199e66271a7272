"""Torch-free workloads for the recipe tests (search, final). No hpsearch import: like a user's workload."""

import math
import random


def noisy_peak(trial):
    """val_accuracy peaks at lr = 0.01 (1 - 0.2 * decades away), plus seed noise that shrinks with epochs.

    On the test split (trial.split == "test") it returns the noise-free value, so tests can tell.
    """
    true = max(0.0, 1.0 - 0.2 * abs(math.log10(trial.params["lr"]) + 2.0))
    rng = random.Random(trial.seed)
    value = true
    for epoch in range(trial.epochs):
        value = true + rng.gauss(0.0, 0.05 / math.sqrt(epoch + 1))
        trial.report(epoch, train_loss=2.0 - value, val_accuracy=value)
    if trial.split == "test":
        return {"val_accuracy": true, "split_seen": 1.0}
    return {"val_accuracy": value}


def rises_then_falls(trial):
    """val_accuracy = lr-independent bump: 0.5 at epoch 0, 0.9 at epoch 1, 0.6 after (overfits)."""
    curve = [0.5, 0.9] + [0.6] * max(trial.epochs - 2, 0)
    for epoch in range(trial.epochs):
        trial.report(epoch, val_accuracy=curve[epoch])
    return {"val_accuracy": curve[trial.epochs - 1]}


def flat(trial):
    """The same value for every configuration and seed: nothing to find, no noise."""
    for epoch in range(trial.epochs):
        trial.report(epoch, val_accuracy=0.5)
    return {"val_accuracy": 0.5}


def no_test_split(trial):
    """Like a model workload whose data() returns no test split."""
    if trial.split == "test":
        raise ValueError("data() returned no test split")
    return {"val_accuracy": trial.params["lr"]}


def noisy_peak_pid(trial):
    """noisy_peak, also saying which process trained it (a worker's pid)."""
    import os

    return {**noisy_peak(trial), "worker_pid": float(os.getpid())}
