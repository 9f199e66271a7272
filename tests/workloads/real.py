"""Torch-free workloads written the way users write them: odd param names, numpy values, failing disks."""

from __future__ import annotations

import math

import numpy as np


def named(trial):
    """Params named like the leaderboard's own columns; numpy scalars reported and returned."""
    rank, state, epochs = trial.params["rank"], trial.params["state"], trial.params["epochs"]
    assert isinstance(rank, int) and isinstance(epochs, int), (rank, epochs)
    score = np.float32(1.0 / (1.0 + abs(math.log2(rank) - 3))) + (0.01 if state == "warm" else 0.0)
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=np.float64(1.0 / (epoch + 1)), val_accuracy=score)
    return {"val_accuracy": score, "steps": np.int64(epochs * 10)}


def gaussian_nll(trial):
    """A regression loss that is negative and falls: never divergence."""
    loss = 0.0
    for epoch in range(trial.epochs):
        loss = -1.0 - 2.0 * epoch * trial.params["lr"]
        trial.report(epoch, train_loss=loss, val_loss=loss + 0.1)
    return {"val_loss": loss + 0.1}


def disk_fills_after_three(trial):
    """Works for trials 0-2, then fails every time, as when the disk is full."""
    if trial.number >= 3:
        raise OSError(28, "No space left on device")
    trial.report(0, val_accuracy=0.5)
    return {"val_accuracy": 0.5 + trial.params["lr"] / 10}
