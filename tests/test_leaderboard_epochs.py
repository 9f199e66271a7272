"""The leaderboard's epochs column is the epochs a trial ran, not the stage setting (issue 16)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pandas as pd
from optuna.trial import TrialState

from hpsearch.leaderboard import leaderboard, to_text
from hpsearch.search.coordinator import Coordinator
from hpsearch.search.jobs import Job
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import CURVES_ATTR, epochs_run, trial_attr
from hpsearch.workloads.api import TrialOutcome

WORKLOADS = Path(__file__).parent / "workloads" / "issue16.py"
LR_ONLY = "[params.lr]\nlow = 0.01\nhigh = 1.0\n"
HALF_CRASH = "[params.lr]\nlow = 0.05\nhigh = 0.15\n"  # crash_after_2 crashes above 0.1


def _next_job(coordinator: Coordinator) -> Job | None:
    """The coordinator's next trial, or None when it answers Wait or Stop."""
    answer = coordinator.next()
    return answer[0] if isinstance(answer, list) else None


def _stage(study_file, workload: str, trials: int, epochs: int, pruner: str = "none", params: str = LR_ONLY):
    coarse = f"trials = {trials}\nepochs = {epochs}\nmax_failures = 50"
    spec = load_spec(study_file(name=workload, workload=f"{WORKLOADS}:{workload}", coarse=coarse, params=params))
    store = Store(spec.name)
    run_stage(store, start_coarse(store, spec, {}), pruner=pruner)
    return store


def _reports(trial) -> int:
    return max((len(v) for v in (trial_attr(trial, CURVES_ATTR) or {}).values()), default=0)


def test_leaderboard_epochs_of_pruned_trials_are_the_epochs_they_ran(study_file) -> None:
    store = _stage(study_file, "by_lr", trials=20, epochs=6, pruner="median")
    df = leaderboard(store, None)
    by_number = {t.number: t for t in store.trials(store.stage(None))}
    pruned = df[df.state == "PRUNED"]
    assert len(pruned) and (pruned["epochs"] < 6).all()  # was: 6, the stage setting
    assert all(row.epochs == _reports(by_number[row.trial]) for row in pruned.itertuples())
    assert (df[df.state == "COMPLETE"]["epochs"] == 6).all()
    for text in (to_text(df, "csv"), to_text(df, "json")):  # the files say the same
        rows = pd.read_csv(io.StringIO(text)) if text.startswith("rank") else pd.DataFrame(json.loads(text))
        assert dict(zip(rows["trial"], rows["epochs"])) == dict(zip(df["trial"], df["epochs"]))


def test_leaderboard_epochs_of_a_crashed_trial_and_of_a_silent_complete_one(study_file) -> None:
    df = leaderboard(_stage(study_file, "crash_after_2", trials=6, epochs=5, params=HALF_CRASH), None)
    assert len(df[df.state == "FAIL"]) and (df[df.state == "FAIL"]["epochs"] == 2).all()
    assert (df[df.state == "COMPLETE"]["epochs"] == 5).all()
    silent = leaderboard(_stage(study_file, "silent", trials=3, epochs=4), None)
    assert list(silent["epochs"]) == [4, 4, 4]  # reported nothing, completed: the stage setting


def test_leaderboard_epochs_of_a_killed_trial_count_the_reports_the_coordinator_heard(study_file) -> None:
    # A worker killed by its timeout sends no curves (dispatch/pool.py): the coordinator's count stands.
    spec = load_spec(study_file(workload=f"{WORKLOADS}:by_lr", coarse="trials = 1\nepochs = 8", params=LR_ONLY))
    store = Store(spec.name)
    run = Coordinator(store, start_coarse(store, spec, {}))
    job = _next_job(run)
    for epoch in range(3):
        assert run.report(job, epoch, {"val_accuracy": 0.5, "train_loss": 0.5}) is None
    run.finish(job, TrialOutcome("fail", reason="timed out after 60 s", duration_s=time.perf_counter() - job.started))
    run.close()
    [trial] = store.trials(store.stage(None))
    assert trial.state == TrialState.FAIL and epochs_run(trial, 8) == 3
    assert list(leaderboard(store, None)["epochs"]) == [3]
