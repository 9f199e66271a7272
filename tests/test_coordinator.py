"""The coordinator's heartbeat: it survives database hiccups and never hides a programming error."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import sqlalchemy.exc

from hpsearch import optuna_compat as compat
from hpsearch.coordinator import Coordinator
from hpsearch.spec import load_spec
from hpsearch.stages import start_coarse
from hpsearch.storage import Store

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


def test_coordinator_heartbeat_programming_error_is_raised_on_the_main_thread(study_file, tmp_path, monkeypatch) -> None:
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
