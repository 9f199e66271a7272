"""Optuna's methods on a bench/peers workload, in the main .venv: three runners in one file (--method).

- tpe_hyperband: TPESampler + HyperbandPruner (min_resource 1, max_resource max_epochs, reduction
  factor 3: Optuna's defaults but for max_resource, given instead of "auto");
- gp: GPSampler, full-length trials (no pruner);
- random_sh: RandomSampler + SuccessiveHalvingPruner (min_resource 1, reduction factor 3), as
  bench/quality.py's "(f) random + succ. halving".

Samplers at their defaults, seeded with the run's seed. Each trial asks the space (lr log-uniform, value
sets as categoricals: Optuna has no ordinal), trains up to max_epochs epochs through common.Ledger
reporting the loss (1 - val_accuracy, or f) each epoch, and is pruned where the pruner says; a trial
starts only when its full length fits in what is left. The pick is the study's best trial (the best
COMPLETE one: a pruned trial never is).

    .venv/bin/python bench/peers/run_optuna.py --method tpe_hyperband --workload mnist1d --seed 0 --budget 20
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

import common
import optuna

METHODS = ("tpe_hyperband", "gp", "random_sh")


def make_study(method: str, seed: int, max_epochs: int) -> tuple[optuna.Study, dict[str, Any]]:
    """The study of `method`, and its settings as written to the result."""
    if method == "tpe_hyperband":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed)
        pruner: optuna.pruners.BasePruner = optuna.pruners.HyperbandPruner(1, max_epochs, 3)
        settings = {"sampler": "TPESampler (defaults)", "pruner": f"HyperbandPruner(1, {max_epochs}, 3)"}
    elif method == "gp":
        sampler, pruner = optuna.samplers.GPSampler(seed=seed), optuna.pruners.NopPruner()
        settings = {"sampler": "GPSampler (defaults)", "pruner": "none: full-length trials"}
    else:
        sampler = optuna.samplers.RandomSampler(seed=seed)
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
        settings = {"sampler": "RandomSampler", "pruner": "SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)"}
    settings["space"] = "lr suggest_float (log), value sets suggest_categorical"
    settings["objective"] = "minimise the loss (1 - val_accuracy, or f), reported each epoch"
    return optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner), settings


def ask(trial: optuna.Trial, space: tuple[common.Param, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for p in space:
        if isinstance(p, common.Float):
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        else:
            params[p.name] = trial.suggest_categorical(p.name, list(p.values))
    return params


def main() -> None:
    args = common.arguments(__doc__.splitlines()[0], METHODS)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workload = common.WORKLOADS[args.workload]
    ledger = common.Ledger(workload, args.budget, args.seed)
    study, settings = make_study(args.method, args.seed, workload.max_epochs)
    while ledger.fits(workload.max_epochs):
        trial = study.ask()
        params = ask(trial, workload.space)

        def on_epoch(epoch: int, value: float, trial: optuna.Trial = trial) -> None:
            trial.report(workload.loss(value), epoch)
            if epoch < workload.max_epochs and trial.should_prune():
                raise common.Stop

        evaluation = ledger.evaluate(params, workload.max_epochs, on_epoch=on_epoch)
        if evaluation.state == "stopped":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, workload.loss(evaluation.value))
            ledger.track(study.best_trial.params)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pick = dict(study.best_trial.params) if done else None
    common.write_result(args, args.method, ledger, pick, {"optuna": metadata.version("optuna")}, settings)


if __name__ == "__main__":
    main()
