"""hpsearch's function workloads for bench/peers/run_search.py: each trial trains through common.Ledger.

hpsearch loads this file by path (`workloads.py:mnist1d`) and puts its folder on sys.path, so `common`
here is the module run_search.py imported: its ledger charges every epoch that hpsearch's trials run.
"""

from __future__ import annotations

from typing import Any

import common


def _run(trial: Any, workload: str) -> dict[str, float]:
    metric = common.WORKLOADS[workload].metric
    ledger = common.ACTIVE[-1]

    def report(epoch: int, value: float) -> None:
        trial.report(epoch - 1, **{metric: value})  # hpsearch counts epochs from 0; may raise TrialStopped

    evaluation = ledger.evaluate(trial.params, trial.epochs, seed=trial.seed, on_epoch=report)
    return {metric: evaluation.value}


def mnist1d(trial: Any) -> dict[str, float]:
    return _run(trial, "mnist1d")


def digits(trial: Any) -> dict[str, float]:
    return _run(trial, "digits")


def hartmann6(trial: Any) -> dict[str, float]:
    return _run(trial, "hartmann6")
