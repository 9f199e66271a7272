"""The coordinator's heartbeat (it survives database hiccups, never hides a programming error), and
grid points re-queued after a retryable failure, with other coordinators reading in between."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from hpsearch import optuna_compat as compat
from hpsearch.coordinator import Coordinator
from hpsearch.retry import ORPHAN_GRACE_S, requeue
from hpsearch.spec import load_spec
from hpsearch.stages import start_coarse
from hpsearch.storage import Store
from hpsearch.trials import INTERRUPTED, REASON_ATTR, RETRY_OF_ATTR, trial_params
from hpsearch.workloads.api import TrialOutcome

POLL_S = 0.05


def _coordinator(study_file, tmp_path: Path, monkeypatch) -> Coordinator:
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_GRACE", "30")
    spec = load_spec(study_file())
    store = Store(spec.name, url=f"sqlite:///{tmp_path / 'hb.db'}")
    return Coordinator(store, start_coarse(store, spec, {}))


def _until(condition, limit_s: float = 20.0) -> None:
    """Poll until `condition()` holds (the heartbeat thread beats once a second)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the heartbeat thread never got there"
        time.sleep(POLL_S)


def test_coordinator_heartbeat_logs_and_survives_a_database_hiccup(study_file, tmp_path, monkeypatch, caplog) -> None:
    coordinator = _coordinator(study_file, tmp_path, monkeypatch)
    job = coordinator.next_job()
    assert job is not None
    calls: list[int] = []
    original = compat.record_heartbeat

    def flaky(study, trial) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, ConnectionError("connection lost"))
        original(study, trial)

    monkeypatch.setattr(compat, "record_heartbeat", flaky)
    with caplog.at_level(logging.WARNING, logger="hpsearch.coordinator"):
        _until(lambda: len(calls) >= 3)
    assert "heartbeat not recorded (OperationalError" in caplog.text
    assert "heartbeat recorded again" in caplog.text
    assert coordinator.heartbeat is not None and coordinator.heartbeat.error is None
    assert coordinator.next_job() is not None  # the stage goes on
    coordinator.close()


def test_coordinator_heartbeat_programming_error_is_raised_on_the_main_thread(
    study_file, tmp_path, monkeypatch
) -> None:
    coordinator = _coordinator(study_file, tmp_path, monkeypatch)
    assert coordinator.next_job() is not None

    def broken(study, trial) -> None:
        raise AttributeError("'_CachedStorage' object has no attribute 'record_heartbeat'")

    monkeypatch.setattr(compat, "record_heartbeat", broken)
    assert coordinator.heartbeat is not None
    heart = coordinator.heartbeat
    _until(lambda: heart.error is not None)
    with pytest.raises(RuntimeError, match="heartbeat thread stopped: AttributeError"):
        coordinator.next_job()
    coordinator.close()


# ----------------------------------------------------------------------------- a grid point between FAIL and re-queue

GRID = "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\ngrid_points = 5\n\n[params.momentum]\nvalues = [0.9, 0.99]\n"


def _grid_stage_with_a_failed_point(study_file, tmp_path: Path, monkeypatch):
    """A 10-point grid stage on a database, one point's trial failed `interrupted` by some coordinator X
    that has NOT re-queued it yet (the first of its two writes; the second is `requeue`)."""
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_GRACE", "30")
    spec = load_spec(study_file("peak_inside", coarse='strategy = "grid"\ntrials = 100\nepochs = 1', params=GRID))
    store = Store(spec.name, url=f"sqlite:///{tmp_path / 'grid.db'}")
    info = start_coarse(store, spec, {})
    victim = Coordinator(store, info)
    job = victim.next_job()
    assert job is not None
    assert compat.fail_trial(victim.study, compat.trial_id(job.trial), REASON_ATTR, INTERRUPTED) is not None
    victim.running.clear()
    victim.close()
    return store, info, job.number


def _run_out(coordinator: Coordinator) -> int:
    """Complete every trial `coordinator` hands out until it has none; how many it ran."""
    ran = 0
    while (job := coordinator.next_job()) is not None:
        coordinator.finish(job, TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
        ran += 1
    return ran


def test_coordinator_grid_waits_for_a_failed_point_to_be_queued_again(study_file, tmp_path, monkeypatch) -> None:
    store, info, number = _grid_stage_with_a_failed_point(study_file, tmp_path, monkeypatch)
    reader = Coordinator(store, info, salt=1)  # reads the stage between X's two writes
    try:
        assert _run_out(reader) == 9
        # 9 complete, none running or waiting, the 10th point failed: not over, its re-queue is on its way.
        assert reader.done == 9 and reader.pending_retries == 1 and reader.waiting_on_others()
        [failed] = [t for t in store.trials(info) if t.number == number]
        requeue(reader.study, number, trial_params(failed))  # X's second write
        assert _run_out(reader) == 1
        assert reader.done == 10 and not reader.waiting_on_others()
    finally:
        reader.close()
    trials = store.trials(info)
    assert len(trials) == 11 and sum(t.state == TrialState.COMPLETE for t in trials) == 10
    assert [t.user_attrs.get(RETRY_OF_ATTR) for t in trials].count(number) == 1


def test_coordinator_grid_takes_over_the_requeue_of_a_coordinator_that_died(study_file, tmp_path, monkeypatch) -> None:
    store, info, number = _grid_stage_with_a_failed_point(study_file, tmp_path, monkeypatch)  # X died after FAIL
    now = [0.0]
    readers = [Coordinator(store, info, salt=s) for s in (1, 2)]
    for r in readers:
        r.orphans.clock = lambda: now[0]  # type: ignore[union-attr]
    try:
        assert _run_out(readers[0]) == 9 and _run_out(readers[1]) == 0
        assert all(r.waiting_on_others() for r in readers)  # within the grace: X may still write
        now[0] = ORPHAN_GRACE_S
        assert _run_out(readers[0]) == 1  # took it over: queued the point and ran it
        assert _run_out(readers[1]) == 0 and readers[1].pending_retries == 0  # sees the retry: no second one
        assert not any(r.waiting_on_others() for r in readers)
    finally:
        for r in readers:
            r.close()
    trials = store.trials(info)
    assert len(trials) == 11 and sum(t.state == TrialState.COMPLETE for t in trials) == 10
    assert [t.user_attrs.get(RETRY_OF_ATTR) for t in trials].count(number) == 1


def test_coordinator_grid_that_loses_the_last_point_to_another_waits_for_it(study_file, tmp_path, monkeypatch) -> None:
    """Y reads a queued point, X pops it first: Y must count it as running elsewhere, not end the stage."""
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_GRACE", "30")
    spec = load_spec(study_file("peak_inside", coarse='strategy = "grid"\ntrials = 100\nepochs = 1', params=GRID))
    store = Store(spec.name, url=f"sqlite:///{tmp_path / 'grid.db'}")
    info = start_coarse(store, spec, {})
    x, y = Coordinator(store, info), Coordinator(store, info, salt=1)
    x_jobs = []
    real_pop = compat.pop_waiting
    try:
        while len(x_jobs) < 9 and (job := x.next_job()) is not None:  # 9 of 10 points, finished
            x.finish(job, TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
            x_jobs.append(job)

        def x_first(study, waiting=None):  # X wins the last point in the instant after Y read it
            if study is y.study and not x.running:
                x_jobs.append(x.next_job())
            return real_pop(study, waiting)

        monkeypatch.setattr(compat, "pop_waiting", x_first)
        assert y.next_job() is None
        assert y.waiting_on_others()  # the point runs on X: not over
        monkeypatch.setattr(compat, "pop_waiting", real_pop)
        x.finish(x_jobs[-1], TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
        assert y.next_job() is None and not y.waiting_on_others() and y.done == 10
    finally:
        x.close()
        y.close()


def _journal_coordinator(study_file, pruner: str = "none") -> Coordinator:
    spec = load_spec(study_file(coarse="trials = 4\nepochs = 3"))
    store = Store(spec.name)  # the journal, in the test's results folder
    return Coordinator(store, start_coarse(store, spec, {}), pruner=pruner)


def _stored_reports(coordinator: Coordinator, number: int) -> dict[int, float]:
    """The trial's intermediate values as another process would read them (a fresh look at the journal)."""
    store = Store(coordinator.info.spec.name, create=False)
    [trial] = [t for t in store.trials(store.stage("coarse")) if t.number == number]
    return trial.intermediate_values


def test_coordinator_without_a_pruner_holds_a_short_trials_reports_until_its_outcome(study_file) -> None:
    coordinator = _journal_coordinator(study_file)
    job = coordinator.next_job()
    assert job is not None and not coordinator.answers_reports
    for epoch in range(3):
        assert coordinator.report(job, epoch, {"val_accuracy": 0.1 * (epoch + 1)}) is None
    assert _stored_reports(coordinator, job.number) == {}  # held: no write of their own
    coordinator.finish_many([(job, TrialOutcome("complete", metrics={"val_accuracy": 0.3}, duration_s=0.1))])
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})  # none lost


def test_coordinator_writes_held_reports_once_they_are_old_and_before_a_failure(study_file, monkeypatch) -> None:
    import hpsearch.jobs

    coordinator = _journal_coordinator(study_file)
    job = coordinator.next_job()
    coordinator.report(job, 0, {"val_accuracy": 0.1})
    monkeypatch.setattr(hpsearch.jobs, "REPORT_HOLD_S", 0.0)  # a long epoch: past the hold
    coordinator.report(job, 1, {"val_accuracy": 0.2})
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1, 1: 0.2})
    monkeypatch.setattr(hpsearch.jobs, "REPORT_HOLD_S", 60.0)
    coordinator.report(job, 2, {"val_accuracy": 0.3})
    coordinator.finish(job, TrialOutcome("fail", reason="worker died (signal 9)", duration_s=1.0))  # no batch around it
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})


def test_coordinator_with_a_pruner_writes_each_report_at_once(study_file) -> None:
    coordinator = _journal_coordinator(study_file, pruner="median")
    job = coordinator.next_job()
    assert coordinator.answers_reports
    coordinator.report(job, 0, {"val_accuracy": 0.1})
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1})  # the pruner reads it there
