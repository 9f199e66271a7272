"""Torch-free population workloads for the dispatch tests: no hpsearch import.

`score` opts in to population mode through `score.population`; each member
scores by its lr. A member with lr > 0.5 reports a NaN loss (diverges) while
the others go on. `score_dies` kills its worker process in the middle of a
population.
"""

import math
import os
import signal


def _value(params):
    return 1.0 - 0.05 * (math.log10(params["lr"]) + 2.0) ** 2


def score(trial):
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - _value(trial.params), val_accuracy=_value(trial.params))
    return _value(trial.params)


def score_population(trials):
    results = [None] * len(trials)
    for epoch in range(trials[0].epochs):
        for i, t in enumerate(trials):
            if getattr(t, "stopped", None):
                continue
            loss = float("nan") if t.params["lr"] > 0.5 else 1.0 - _value(t.params)
            try:
                t.report(epoch, train_loss=loss, val_accuracy=_value(t.params))
            except Exception:
                continue  # stopped (diverged): the others train on
            results[i] = {"val_accuracy": _value(t.params), "population_size": float(len(trials))}
    return results


score.population = score_population


def score_dies(trial):
    return score(trial)


def _dies_population(trials):
    os.kill(os.getpid(), signal.SIGKILL)


score_dies.population = _dies_population
