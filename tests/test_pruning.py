"""Pruners never prune a trial at its last epoch (issue 16): it ran every epoch, so it completes."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsearch.pruner import is_last_report
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import CURVES_ATTR, trial_attr

WORKLOADS = Path(__file__).parent / "workloads" / "issue16.py"
LR_ONLY = "[params.lr]\nlow = 0.01\nhigh = 1.0\n"


def _run(study_file, workload: str, pruner: str, trials: int, epochs: int):
    spec = load_spec(
        study_file(workload=f"{WORKLOADS}:{workload}", coarse=f"trials = {trials}\nepochs = {epochs}", params=LR_ONLY)
    )
    store = Store(spec.name)
    result = run_stage(store, start_coarse(store, spec, {}), pruner=pruner)
    return sorted(result.trials, key=lambda t: t.number)


def _reports(trial) -> int:
    return max((len(v) for v in (trial_attr(trial, CURVES_ATTR) or {}).values()), default=0)


@pytest.mark.parametrize("workload", ["by_lr", "by_lr_from_1"])
def test_pruning_hyperband_with_10_epochs_completes_every_trial_that_ran_them_all(study_file, workload) -> None:
    trials = _run(study_file, workload, "hyperband", trials=30, epochs=10)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "hyperband pruned nothing: the test shows nothing"
    assert all(_reports(t) < 10 for t in pruned)  # was: pruned at the last rung (epoch 9), all 10 epochs run
    assert all(t.state == TrialState.COMPLETE for t in trials if _reports(t) == 10)
    assert sum(t.state == TrialState.COMPLETE for t in trials) > 1  # more than one ranked trial


def test_pruning_median_never_prunes_at_the_last_epoch(study_file) -> None:
    # Every trial ties until its last epoch; there half of them fall below the median.
    trials = _run(study_file, "late_bloomer", "median", trials=12, epochs=3)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12
    assert all(_reports(t) == 3 for t in trials)


def test_pruning_last_report_by_count_or_by_number() -> None:
    # 10 epochs numbered 0..9 or 1..10: the 10th report, or one numbered 9 or more, is the last
    assert is_last_report(epoch=9, reports=10, epochs=10)
    assert is_last_report(epoch=10, reports=10, epochs=10)
    assert is_last_report(epoch=9, reports=5, epochs=10)  # a workload that reports every other epoch
    assert not is_last_report(epoch=8, reports=9, epochs=10)
    assert not is_last_report(epoch=4, reports=5, epochs=10)
