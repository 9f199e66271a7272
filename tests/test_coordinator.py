"""The coordinator's heartbeat (it survives database hiccups, never hides a programming error), and
grid points re-queued after a retryable failure, with other coordinators reading in between."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import sqlalchemy.exc
from optuna.trial import TrialState

from hpsearch.dispatch.source import TrialSource
from hpsearch.search.coordinator import Coordinator
from hpsearch.search.jobs import Job, Stop, Wait
from hpsearch.search.retry import ORPHAN_GRACE_S, requeue
from hpsearch.search.stages import start_coarse
from hpsearch.spec import load_spec
from hpsearch.store import optuna_compat as compat
from hpsearch.store.storage import Store
from hpsearch.trials import INTERRUPTED, REASON_ATTR, RETRY_OF_ATTR, trial_params
from hpsearch.workloads.api import TrialOutcome, TrialStatus

POLL_S = 0.05


def _next_job(coordinator: Coordinator) -> Job | None:
    """The coordinator's next trial, or None when it answers Wait or Stop."""
    answer = coordinator.next()
    return answer[0] if isinstance(answer, list) else None


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
    job = _next_job(coordinator)
    assert job is not None
    calls: list[int] = []
    original = compat.record_heartbeat

    def flaky(study, trial) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("UPDATE trial_heartbeats", {}, ConnectionError("connection lost"))
        original(study, trial)

    monkeypatch.setattr(compat, "record_heartbeat", flaky)
    with caplog.at_level(logging.WARNING, logger="hpsearch.search.coordinator"):
        _until(lambda: len(calls) >= 3)
    assert "heartbeat not recorded (OperationalError" in caplog.text
    assert "heartbeat recorded again" in caplog.text
    assert coordinator.heartbeat is not None and coordinator.heartbeat.error is None
    assert _next_job(coordinator) is not None  # the stage goes on
    coordinator.close()


def test_coordinator_heartbeat_programming_error_is_raised_on_the_main_thread(
    study_file, tmp_path, monkeypatch
) -> None:
    coordinator = _coordinator(study_file, tmp_path, monkeypatch)
    assert _next_job(coordinator) is not None

    def broken(study, trial) -> None:
        raise AttributeError("'_CachedStorage' object has no attribute 'record_heartbeat'")

    monkeypatch.setattr(compat, "record_heartbeat", broken)
    assert coordinator.heartbeat is not None
    heart = coordinator.heartbeat
    _until(lambda: heart.error is not None)
    with pytest.raises(RuntimeError, match="heartbeat thread stopped: AttributeError"):
        _next_job(coordinator)
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
    job = _next_job(victim)
    assert job is not None
    assert compat.fail_trial(victim.study, compat.trial_id(job.trial), REASON_ATTR, INTERRUPTED) is not None
    victim.running.clear()
    victim.close()
    return store, info, job.number


def _run_out(coordinator: Coordinator) -> int:
    """Complete every trial `coordinator` hands out until it has none; how many it ran."""
    ran = 0
    while (job := _next_job(coordinator)) is not None:
        coordinator.finish(job, TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
        ran += 1
    return ran


def test_coordinator_grid_waits_for_a_failed_point_to_be_queued_again(study_file, tmp_path, monkeypatch) -> None:
    store, info, number = _grid_stage_with_a_failed_point(study_file, tmp_path, monkeypatch)
    reader = Coordinator(store, info, salt=1)  # reads the stage between X's two writes
    try:
        assert _run_out(reader) == 9
        # 9 complete, none running or waiting, the 10th point failed: not over, its re-queue is on its way.
        assert reader.ledger.done == 9 and reader.dealer.pending_retries == 1 and isinstance(reader.next(), Wait)
        [failed] = [t for t in store.trials(info) if t.number == number]
        requeue(reader.study, failed, trial_params(failed))  # X's second write
        assert _run_out(reader) == 1
        assert reader.ledger.done == 10 and not isinstance(reader.next(), Wait)
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
        r.dealer.orphans.clock = lambda: now[0]  # type: ignore[union-attr]
    try:
        assert _run_out(readers[0]) == 9 and _run_out(readers[1]) == 0
        assert all(isinstance(r.next(), Wait) for r in readers)  # within the grace: X may still write
        now[0] = ORPHAN_GRACE_S
        assert _run_out(readers[0]) == 1  # took it over: queued the point and ran it
        assert _run_out(readers[1]) == 0 and readers[1].dealer.pending_retries == 0  # sees the retry: no second one
        assert not any(isinstance(r.next(), Wait) for r in readers)
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
        while len(x_jobs) < 9 and (job := _next_job(x)) is not None:  # 9 of 10 points, finished
            x.finish(job, TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
            x_jobs.append(job)

        def x_first(study, waiting=None):  # X wins the last point in the instant after Y read it
            if study is y.study and not x.running:
                x_jobs.append(_next_job(x))
            return real_pop(study, waiting)

        monkeypatch.setattr(compat, "pop_waiting", x_first)
        assert _next_job(y) is None
        assert isinstance(y.next(), Wait)  # the point runs on X: not over
        monkeypatch.setattr(compat, "pop_waiting", real_pop)
        x.finish(x_jobs[-1], TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
        assert _next_job(y) is None and not isinstance(y.next(), Wait) and y.ledger.done == 10
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
    job = _next_job(coordinator)
    assert job is not None and not coordinator.answers_reports
    for epoch in range(3):
        assert coordinator.report(job, epoch, {"val_accuracy": 0.1 * (epoch + 1)}) is None
    assert _stored_reports(coordinator, job.number) == {}  # held: no write of their own
    coordinator.finish_many([(job, TrialOutcome("complete", metrics={"val_accuracy": 0.3}, duration_s=0.1))])
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})  # none lost


def test_coordinator_writes_held_reports_once_they_are_old_and_before_a_failure(study_file, monkeypatch) -> None:
    import hpsearch.search.jobs

    coordinator = _journal_coordinator(study_file)
    job = _next_job(coordinator)
    coordinator.report(job, 0, {"val_accuracy": 0.1})
    monkeypatch.setattr(hpsearch.search.jobs, "REPORT_HOLD_S", 0.0)  # a long epoch: past the hold
    coordinator.report(job, 1, {"val_accuracy": 0.2})
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1, 1: 0.2})
    monkeypatch.setattr(hpsearch.search.jobs, "REPORT_HOLD_S", 60.0)
    coordinator.report(job, 2, {"val_accuracy": 0.3})
    coordinator.finish(job, TrialOutcome("fail", reason="worker died (signal 9)", duration_s=1.0))  # no batch around it
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})


def test_coordinator_with_a_pruner_writes_each_report_at_once(study_file) -> None:
    coordinator = _journal_coordinator(study_file, pruner="median")
    job = _next_job(coordinator)
    assert coordinator.answers_reports
    coordinator.report(job, 0, {"val_accuracy": 0.1})
    assert _stored_reports(coordinator, job.number) == pytest.approx({0: 0.1})  # the pruner reads it there


def test_coordinator_answers_what_now_with_one_value(study_file) -> None:
    """next() is the one question an executor asks: jobs while there is room, then Stop saying why; a
    coordinator is the TrialSource dispatch/ is written against."""
    coordinator = _journal_coordinator(study_file)  # 4 trials of 3 epochs
    try:
        assert isinstance(coordinator, TrialSource)
        first = coordinator.next(3)
        assert isinstance(first, list) and len(first) == 3 and coordinator.left == 1
        rest = coordinator.next(3)
        assert isinstance(rest, list) and len(rest) == 1  # only one more fits the target
        assert coordinator.next() == Stop("nothing left to start")  # its own trials run: start no more
        for job in first + rest:
            coordinator.finish(job, TrialOutcome(TrialStatus.COMPLETE, {"val_accuracy": 0.5}, duration_s=0.0))
        assert coordinator.next() == Stop("done") and coordinator.ledger.done == 4
    finally:
        coordinator.close()


def test_coordinator_stops_at_the_budget_and_says_so(study_file) -> None:
    spec = load_spec(study_file(coarse="trials = 10\nepochs = 3\nbudget = 7"))
    store = Store(spec.name)
    coordinator = Coordinator(store, start_coarse(store, spec, {}))
    try:
        jobs = coordinator.next(5)
        assert isinstance(jobs, list) and len(jobs) == 2  # 2 x 3 epochs fit 7; a third could pass it
        assert coordinator.next() == Stop("budget")
        for job in jobs:  # each ran one epoch and was pruned: 2 epochs spent, room for 1 more trial of 3
            job.reports = 1
            coordinator.finish(job, TrialOutcome(TrialStatus.PRUNED, {}, duration_s=0.0))
        assert coordinator.ledger.spent == 2 and coordinator.ledger.room_for(1) and not coordinator.ledger.room_for(2)
    finally:
        coordinator.close()
