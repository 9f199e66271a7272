"""The behaviour of Optuna that hpsearch relies on, pinned through optuna_compat against the installed Optuna.

CI runs this (with the whole suite) on the newest Optuna and on the oldest
release pyproject.toml allows: a release that changes any of it fails here,
not on a user's machine.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from hpsearch.store import optuna_compat as compat

DISTRIBUTIONS = {"lr": FloatDistribution(1e-4, 1.0, log=True), "m": CategoricalDistribution([0.5, 0.9])}


@pytest.fixture(params=["journal", "sqlite"])
def storage(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "journal":
        return JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    return RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")


def _two_views(storage) -> tuple[optuna.Study, optuna.Study]:
    """One study seen by two coordinators (two Study objects on one storage)."""
    optuna.create_study(storage=storage, study_name="s")
    return optuna.load_study(study_name="s", storage=storage), optuna.load_study(study_name="s", storage=storage)


def test_compat_pop_waiting_hands_each_queued_trial_out_once_with_its_params(storage) -> None:
    a, b = _two_views(storage)
    for lr in (0.1, 0.01):
        a.enqueue_trial({"lr": lr, "m": 0.9})
    first = compat.pop_waiting(a)
    second = compat.pop_waiting(b)
    assert first is not None and second is not None
    compat.suggest(first, DISTRIBUTIONS)
    compat.suggest(second, DISTRIBUTIONS)
    assert {first.params["lr"], second.params["lr"]} == {0.1, 0.01}
    assert first.params["m"] == 0.9
    assert compat.pop_waiting(a) is None  # the queue is empty: no trial is made
    assert compat.pop_waiting(b) is None
    assert len(a.get_trials()) == 2
    a.tell(first, 0.5)
    assert {t.state for t in b.get_trials()} == {TrialState.COMPLETE, TrialState.RUNNING}


def test_compat_new_trial_samples_the_distributions_without_a_warning(storage) -> None:
    a, _ = _two_views(storage)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        trial = compat.new_trial(a)
        compat.suggest(trial, DISTRIBUTIONS)
    assert not [w for w in seen if "Heartbeat" in str(w.message)]
    assert 1e-4 <= trial.params["lr"] <= 1.0 and trial.params["m"] in (0.5, 0.9)
    assert compat.trial_id(trial) == compat.trial_id(a.get_trials()[0])


def test_compat_fail_trial_sets_the_reason_and_exactly_one_caller_wins(storage) -> None:
    a, b = _two_views(storage)
    trial = compat.new_trial(a)
    won = compat.fail_trial(a, compat.trial_id(trial), "reason", "interrupted")
    lost = compat.fail_trial(b, compat.trial_id(trial), "reason", "worker died (heartbeat lost)")
    assert won is not None and won.state == TrialState.FAIL and won.user_attrs["reason"] == "interrupted"
    assert lost is None
    [stored] = b.get_trials()
    assert stored.state == TrialState.FAIL and stored.user_attrs["reason"] == "interrupted"


def test_compat_state_counts_match_the_trials(storage) -> None:
    a, _ = _two_views(storage)
    for value in (0.1, 0.2):
        a.tell(compat.new_trial(a), value)
    a.tell(compat.new_trial(a), state=TrialState.PRUNED)
    compat.new_trial(a)  # still running
    a.enqueue_trial({"lr": 0.1, "m": 0.5})
    counts = compat.state_counts(a, storage)
    assert counts == {TrialState.COMPLETE: 2, TrialState.PRUNED: 1, TrialState.RUNNING: 1, TrialState.WAITING: 1}
    assert compat.study_id(a) == storage.get_study_id_from_name("s")


def test_compat_stale_trial_ids_after_the_grace_period(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = RDBStorage(f"sqlite:///{tmp_path / 'hb.db'}", heartbeat_interval=1, grace_period=2)
    a, _ = _two_views(storage)
    alive, dead = compat.new_trial(a), compat.new_trial(a)
    compat.record_heartbeat(a, alive)
    compat.record_heartbeat(a, dead)
    assert compat.stale_trial_ids(a) == []
    time.sleep(3.5)  # past the grace period, with a second to spare: the heartbeat table keeps whole seconds
    compat.record_heartbeat(a, alive)
    assert compat.stale_trial_ids(a) == [compat.trial_id(dead)]


def test_compat_journal_operation_numbers_are_the_ones_fsync_policy_assumes() -> None:
    from optuna.storages.journal import _storage  # private: pinned here, used only through optuna_compat

    ops = _storage.JournalOperation
    durable = {
        ops.CREATE_STUDY,
        ops.DELETE_STUDY,
        ops.SET_STUDY_USER_ATTR,
        ops.SET_STUDY_SYSTEM_ATTR,
        ops.SET_TRIAL_STATE_VALUES,
    }
    assert {int(op) for op in durable} <= compat.DURABLE_JOURNAL_OPS
    lazy = {
        ops.CREATE_TRIAL,
        ops.SET_TRIAL_PARAM,
        ops.SET_TRIAL_INTERMEDIATE_VALUE,
        ops.SET_TRIAL_USER_ATTR,
        ops.SET_TRIAL_SYSTEM_ATTR,
    }
    assert not {int(op) for op in lazy} & compat.DURABLE_JOURNAL_OPS
    assert compat.journal_record_is_durable({"op_code": int(ops.SET_TRIAL_STATE_VALUES)})


class _Counting(JournalFileBackend):
    """A journal file backend that counts its appends."""

    appends = 0

    def append_logs(self, logs):  # type: ignore[no-untyped-def]
        self.appends += 1
        super().append_logs(logs)


def test_compat_batched_writes_hold_a_populations_writes_for_one_append(tmp_path: Path) -> None:
    backend = _Counting(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(storage=JournalStorage(backend), study_name="s", direction="maximize")
    before = backend.appends
    with compat.batched_writes(study) as late:
        trials = [compat.new_trial(study) for _ in range(4)]  # creations go through: Optuna reads their ids back
        assert backend.appends == before + 4
        for t in trials:
            t.set_user_attr("owner", "me")
            compat.suggest(t, DISTRIBUTIONS)
            t.report(0.5, 0)
            study.tell(t, 0.25)
        assert backend.appends == before + 4  # held: 4 x (owner, 2 params, report, state) not yet written
        assert all(compat.latest(t).state == TrialState.RUNNING for t in trials)  # reads: as before the block
    assert backend.appends == before + 5 and not late
    fresh = optuna.load_study(
        study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    )
    assert [(t.state, t.value, t.user_attrs, t.intermediate_values, set(t.params)) for t in fresh.trials] == [
        (TrialState.COMPLETE, 0.25, {"owner": "me"}, {0: 0.5}, {"lr", "m"})
    ] * 4


def test_compat_batched_writes_name_trials_another_coordinator_finished_first(tmp_path: Path) -> None:
    path = str(tmp_path / "optuna.journal")
    ours = optuna.create_study(storage=JournalStorage(JournalFileBackend(path)), study_name="s")
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))  # another process
    trial = compat.new_trial(ours)
    with compat.batched_writes(ours) as late:
        ours.tell(trial, 1.0)
        compat.fail_trial(other, compat.trial_id(trial), "reason", "stale")  # between the tell and its write
    assert late == {compat.trial_id(trial)}
    assert compat.latest(trial).state == TrialState.FAIL  # the other's verdict stands


def test_compat_batched_writes_on_a_database_write_each_at_once(tmp_path: Path) -> None:
    study = optuna.create_study(storage=RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}"), study_name="s")
    with compat.batched_writes(study) as late:
        trial = compat.new_trial(study)
        study.tell(trial, 2.0)
        assert compat.latest(trial).state == TrialState.COMPLETE
    assert not late


def test_compat_tell_records_like_study_tell_and_returns_the_stored_trial(storage) -> None:
    study = optuna.create_study(storage=storage, study_name="s")
    done, pruned = compat.new_trial(study), compat.new_trial(study)
    pruned.report(0.7, 3)
    assert compat.tell(study, done, 0.5).value == 0.5
    assert compat.tell(study, pruned, state=TrialState.PRUNED).state == TrialState.PRUNED
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 0.5), (TrialState.PRUNED, 0.7)]
    with pytest.raises(ValueError):  # a finished trial is refused, as by Study.tell
        compat.tell(study, done, 0.1)


def test_compat_fail_trial_inside_batched_writes_is_written_and_decided_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "optuna.journal")
    ours = optuna.create_study(storage=JournalStorage(JournalFileBackend(path)), study_name="s")
    other = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    dead = compat.new_trial(other)
    with compat.batched_writes(ours):
        assert compat.fail_trial(ours, compat.trial_id(dead), "reason", "interrupted") is not None  # this call won
        assert compat.fail_trial(other, compat.trial_id(dead), "reason", "again") is None  # and others see it now
        fresh = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
        assert [(t.state, t.user_attrs) for t in fresh.trials] == [(TrialState.FAIL, {"reason": "interrupted"})]
