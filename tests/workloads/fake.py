"""Torch-free fake workloads for the search logic: fast, deterministic, no hpsearch import.

`peak_above` scores lr by a bump whose optimum (lr = 10) lies ABOVE the
studies' lr ranges, so the best trials crowd the HIGH border.
"""

import math


def peak_above(trial):
    """val_accuracy rises with log10(lr) towards a peak at lr = 10."""
    x = math.log10(trial.params["lr"])
    score = 1.0 - 0.05 * (x - 1.0) ** 2
    for epoch in range(trial.epochs):
        loss = 1.0 - score + 0.1 / (epoch + 1)
        trial.report(epoch, train_loss=loss, val_loss=loss, val_accuracy=score)
    return {"val_accuracy": score, "val_loss": 1.0 - score}


def peak_inside(trial):
    """val_accuracy peaks at lr = 1e-2, inside the ranges: no border."""
    x = math.log10(trial.params["lr"])
    score = 1.0 - 0.05 * (x + 2.0) ** 2
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - score, val_accuracy=score)
    return score


def crash_high_lr(trial):
    """Raises for lr above 0.1: a crashing trial that must be recorded, not end the search."""
    if trial.params["lr"] > 0.1:
        raise ValueError(f"lr {trial.params['lr']:.3g} too large for this model")
    return peak_inside(trial)


def always_fails(trial):
    raise RuntimeError("CUDA error: out of memory (simulated)")


def explodes(trial):
    """Training loss grows tenfold per epoch once lr > 0.1: diverged, stopped early."""
    lr = trial.params["lr"]
    loss = 1.0
    for epoch in range(trial.epochs):
        loss = loss * (10.0 if lr > 0.1 else 0.5)
        trial.report(epoch, train_loss=loss, val_accuracy=1.0 - min(loss, 1.0))
    return {"val_accuracy": 1.0 - min(loss, 1.0)}


def nan_loss(trial):
    trial.report(0, train_loss=float("nan"), val_accuracy=0.1)
    return 0.1


def wrong_metric(trial):
    return {"accuracy": 0.5}
