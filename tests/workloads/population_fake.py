"""Torch-free population workloads for the dispatch tests: no hpsearch import.

`score` opts in to population mode through `score.population`; each member
scores by its lr. A member with lr > 0.5 reports a NaN loss (diverges) while
the others go on. `score_dies` kills its worker process in the middle of a
population. `score_together` is `score` reporting through hpsearch's
`report_population` (imported when it runs), as the built-in trainers do.
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


def score_together(trial):
    return score(trial)


def _together_population(trials):
    from hpsearch.workloads.population import as_members, report_population

    members = as_members(trials)
    for epoch in range(trials[0].epochs):
        losses = [float("nan") if m.params["lr"] > 0.5 else 1.0 - _value(m.params) for m in members]
        report_population(members, epoch, {"train_loss": losses, "val_accuracy": [_value(m.params) for m in members]})
    return [
        {"val_accuracy": _value(m.params), "population_size": float(len(members))} if m.alive else None for m in members
    ]


score_together.population = _together_population


def score_probed(trial):
    import time

    time.sleep(0.02)
    return score(trial)


def _probed_population(trials):
    import time

    if trials[0].stage == "probe":  # auto's timing runs: K=2 pays, K=4 does not
        time.sleep(0.1 if len(trials) <= 2 else 0.1 * len(trials))
        return [{"val_accuracy": 0.0} for _ in trials]
    time.sleep(0.02)  # a real population: as long as one trial alone (stacking pays)
    return _together_population(trials)


score_probed.population = _probed_population
