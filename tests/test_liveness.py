"""Dead trials are noticed on every storage: by their host:pid, by having no owner, by their heartbeat."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta

from optuna.trial import TrialState

from hpsearch.search.liveness import OWNERLESS_GRACE_S, fail_dead_trials
from hpsearch.search.stages import start_coarse
from hpsearch.spec import load_spec
from hpsearch.store import optuna_compat as compat
from hpsearch.store.storage import Store


def _study(study_file, tmp_path, monkeypatch, url: str | None = None):
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_GRACE", "60")
    spec = load_spec(study_file())
    store = Store(spec.name, url=url)
    info = start_coarse(store, spec, {})
    return store, store.study(info)


def test_liveness_dead_local_owner_fails_at_once_even_with_a_heartbeat(study_file, tmp_path, monkeypatch) -> None:
    _store, study = _study(study_file, tmp_path, monkeypatch, url=f"sqlite:///{tmp_path / 'hb.db'}")
    dead = compat.new_trial(study)
    dead.set_user_attr("owner", f"{socket.gethostname()}:999999999")
    compat.record_heartbeat(study, dead)  # a fresh heartbeat: the grace period (60 s) has not passed
    alive = compat.new_trial(study)
    alive.set_user_attr("owner", f"{socket.gethostname()}:{__import__('os').getpid()}")
    failed = fail_dead_trials(study, heartbeat=True, ours=set())
    assert [t.number for t in failed] == [dead.number] and failed[0].user_attrs["reason"] == "interrupted"
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == TrialState.RUNNING


def test_liveness_ownerless_trial_is_stale_after_its_grace(study_file, tmp_path, monkeypatch) -> None:
    _store, study = _study(study_file, tmp_path, monkeypatch)
    young = compat.new_trial(study)  # its coordinator is between creating it and tagging it
    assert fail_dead_trials(study, heartbeat=False, ours=set()) == []
    import hpsearch.search.liveness as liveness

    later = datetime.now() + timedelta(seconds=OWNERLESS_GRACE_S + 1)
    monkeypatch.setattr(liveness, "datetime", type("Clock", (), {"now": staticmethod(lambda: later)}))
    [failed] = fail_dead_trials(study, heartbeat=False, ours=set())
    assert failed.number == young.number and failed.user_attrs["reason"] == "interrupted"
