"""The one door to Optuna's internals: every private Optuna call and every raw SQL query of hpsearch.

Everything else in hpsearch uses Optuna's public API (create/load/tell/
enqueue_trial, get_trials, set_user_attr, the samplers, pruners and storage
classes). What is here has no public equivalent that does the job:

- `pop_waiting`: take one queued (WAITING) trial, or none. `Study.ask` pops
  one too, but when the queue is empty it makes a fresh trial instead, and a
  grid stage must never run a point that is not on its grid (another
  coordinator may win the last queued point at any moment).
- `new_trial`: a trial without `Study.ask`'s scan of the whole queue.
- `record_heartbeat`, `stale_trial_ids`: Optuna's heartbeat is built for
  `Study.optimize`, which hpsearch does not use (it asks and tells from its
  own loop and runs trials in other processes).
- `fail_trial`: set a trial's reason, then move it to FAIL, on a trial this
  process may not own (a dead process's, a dead machine's). Optuna's
  `fail_stale_trials` cannot record the reason: attributes are refused once
  a trial is finished, so the reason must be written first.
- `journal_record_is_durable`: which journal records must reach the disk
  before the append returns (Optuna's journal format numbers its
  operations; the numbers are private): study changes and trial state
  changes are fsynced; a trial's params, attributes and reports ride on the
  next fsync (at the latest its final state's), so a finished trial is on
  disk with everything it recorded, at one fsync per trial, not per write.
- `tell`: `Study.tell` without the deep copy of the trial it returns.
- `batched_writes`: many writes of one coordinator in one journal append
  (a population's K reports of an epoch, its K outcomes, its K trials'
  owners and params): Optuna's JournalStorage appends each write on its own
  (lock, write, read back), K times where one would do.
- `state_counts`: how many trials of a study are in each state, as one COUNT
  query on RDB storages (Optuna's `get_n_trials` loads every trial, seconds
  for a large study on PostgreSQL, and the coordinator asks before each trial).

tests/test_optuna_compat.py pins the behaviour relied on here against the
installed Optuna (CI runs it on the newest and on the oldest release that
pyproject.toml allows), and tests/test_architecture.py fails if a private
Optuna name appears in any other module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState


def new_trial(study: optuna.Study) -> optuna.Trial:
    """A new RUNNING trial, no params yet, without looking at the queue. `Study.ask` first scans every
    trial of the study for a WAITING one, O(trials) per trial on the journal: quadratic over a stage.
    The coordinator pops queued trials itself (`pop_waiting`) when it knows there are some."""
    return optuna.Trial(study, study._storage.create_new_trial(study._study_id))


def suggest(trial: optuna.Trial, distributions: dict[str, BaseDistribution]) -> None:
    """Draw (or, for a popped queued trial, take) every param from its distribution, as Study.ask does."""
    for name, distribution in distributions.items():
        trial._suggest(name, distribution)


def tell(
    study: optuna.Study, trial: optuna.Trial, value: float | None = None, state: TrialState | None = None
) -> FrozenTrial:
    """`Study.tell` (the same checks, the sampler's after_trial, the same write), returning the trial
    as the storage holds it: Study.tell deep-copies it for its return, attributes, curves and all,
    the largest single cost of recording a short trial."""
    from optuna.study._tell import _tell_with_warning

    _tell_with_warning(study, trial, value, state)
    return latest(trial)


def latest(trial: optuna.Trial) -> FrozenTrial:
    """The trial as the storage holds it now (Trial caches what it wrote itself, not its state)."""
    return trial.storage.get_trial(trial._trial_id)


def study_id(study: optuna.Study) -> int:
    """The storage's id of a study."""
    return study._study_id


def trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    """The storage's id of a trial (not its number, which counts within the study)."""
    return trial._trial_id


def pop_waiting(study: optuna.Study, waiting: list[FrozenTrial] | None = None) -> optuna.Trial | None:
    """Take one WAITING trial of the study and return it RUNNING (its params: `suggest`), or None.

    The storage lets exactly one caller move a trial from WAITING to RUNNING
    (a row lock on PostgreSQL, the journal's lock), so two coordinators
    never pop the same trial. Unlike `Study.ask`, never creates a trial.
    `waiting`: the WAITING trials when the caller has just read them (saves a read).
    """
    storage = study._storage
    if waiting is None:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    for queued in waiting:
        try:
            if storage.set_trial_state_values(queued._trial_id, state=TrialState.RUNNING):
                return optuna.Trial(study, queued._trial_id)
        except UpdateFinishedTrialError:
            continue  # another coordinator popped and finished it meanwhile
    return None


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record that `trial` is alive now (RDB storages opened with a heartbeat interval)."""
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]  # Optuna's private _storage


def stale_trial_ids(study: optuna.Study) -> list[int]:
    """Ids of the study's RUNNING trials whose last heartbeat is older than the storage's grace period."""
    return list(study._storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]  # private, as above


def fail_trial(study: optuna.Study, trial: int | FrozenTrial, key: str, reason: str) -> FrozenTrial | None:
    """Record `reason` under user attribute `key`, then move the trial to FAIL.

    Returns the failed trial when THIS call moved it to FAIL, None when it was
    already finished (its owner finished it after all, or another coordinator
    failed it first): the storage lets exactly one caller succeed, so a caller
    that re-queues what it failed never duplicates it. Writes through the
    study's own storage wrapper, whose cache would otherwise go stale.
    """
    storage: Any = study._storage
    ident = trial if isinstance(trial, int) else trial._trial_id
    try:
        with _through(storage):  # which caller won is read back: never held by batched_writes
            storage.set_trial_user_attr(ident, key, reason)
            if storage.set_trial_state_values(ident, state=TrialState.FAIL):
                return storage.get_trial(ident)
    except UpdateFinishedTrialError:
        pass
    return None


# Optuna's JournalOperation numbers (optuna/storages/journal/_storage.py): 0-3 study create/delete/attrs,
# 6 a trial's state (and values), 10 discard. Params (5), reports (7), trial attrs (8, 9) and a trial's
# creation (4) are made durable by the state change that follows them.
DURABLE_JOURNAL_OPS = frozenset({0, 1, 2, 3, 6, 10})


def journal_record_is_durable(record: dict[str, Any]) -> bool:
    """Whether appending this journal record must be followed by an fsync (see the module docstring)."""
    return record.get("op_code") in DURABLE_JOURNAL_OPS


def state_counts(study: optuna.Study, storage: Any) -> dict[TrialState, int]:
    """How many of the study's trials are in each state; one COUNT query when `storage` is an RDBStorage."""
    if isinstance(storage, RDBStorage):
        import sqlalchemy

        query = sqlalchemy.text("SELECT state, COUNT(*) FROM trials WHERE study_id = :study GROUP BY state")
        with storage.engine.connect() as conn:
            rows = conn.execute(query, {"study": study._study_id}).all()
        return {TrialState[str(getattr(state, "name", state))]: int(n) for state, n in rows}
    found: dict[TrialState, int] = {}
    for t in study.get_trials(deepcopy=False):
        found[t.state] = found.get(t.state, 0) + 1
    return found


def _read_back(record: dict[str, Any]) -> bool:
    """Whether Optuna reads this record back to answer the call that wrote it: a study's or a trial's
    creation (their ids), a move to RUNNING (whether this process won a queued trial)."""
    op = record.get("op_code")
    return op in (0, 4) or (op == 6 and record.get("state") == TrialState.RUNNING)


class _HeldWrites(BaseJournalBackend):
    """A journal backend that keeps appended records back (reads, and records read back, go through)."""

    def __init__(self, backend: BaseJournalBackend) -> None:
        self.backend = backend
        self.logs: list[dict[str, Any]] = []
        self.wrote = False  # a record went through since the last read: the next read must see it

    def read_logs(self, log_number_from: int) -> Any:
        # Every Optuna call reads the file's new records; inside the block only what went through is
        # needed (reads otherwise see the storage as it was): one read per creation, not per write.
        if not self.wrote:
            return iter(())
        self.wrote = False
        return self.backend.read_logs(log_number_from)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        if any(_read_back(record) for record in logs):
            self.backend.append_logs(logs)
            self.wrote = True
        else:
            self.logs.extend(logs)


@contextmanager
def _through(storage: Any) -> Iterator[None]:
    """Inside a batched_writes block, write straight to the journal (and read it back) for a moment."""
    held = getattr(storage, "_backend", None)
    if not isinstance(held, _HeldWrites):
        yield
        return
    storage._backend = held.backend
    try:
        yield
    finally:
        storage._backend = held
        held.wrote = True


@contextmanager
def batched_writes(study: optuna.Study) -> Iterator[set[int]]:
    """Hold the study's journal writes made inside the block, then append them in one write at its end.

    Inside, writes (trial params, attributes, reports, final states) are held:
    reads see the storage without them, so only writes that nothing inside
    reads again belong there (not a report a pruner must see). The writes
    Optuna reads back at once (a trial's creation, a move to RUNNING) go
    through as they come, and so do `fail_trial`'s (its caller acts on
    whether its move to FAIL won). At the end the records are appended in
    one locked write (one fsync) and read back. Yields a set that, after the
    block, holds the ids of trials whose held writes came too late (another
    coordinator finished the trial meanwhile: its verdict stands). On other
    storages the writes go through one by one, as without the block.
    """
    late: set[int] = set()
    storage: Any = study._storage
    if not isinstance(storage, JournalStorage) or isinstance(storage._backend, _HeldWrites):
        yield late  # a database writes each, as before; nested blocks join the outer one
        return
    held = _HeldWrites(storage._backend)
    storage._backend = held
    try:
        yield late
    finally:
        storage._backend = held.backend
        if held.logs:
            held.backend.append_logs(held.logs)
        while True:
            try:
                with storage._thread_lock:
                    storage._sync_with_backend()
                break
            except UpdateFinishedTrialError:
                pass  # the replay skips that record and goes on with the next read
        late.update(_refused(storage, held.logs))


def _refused(storage: Any, logs: list[dict[str, Any]]) -> set[int]:
    """Trials among `logs` whose final state is not the one this block wrote (finished by another first)."""
    refused = set()
    for record in logs:
        if record.get("op_code") == 6 and record.get("state") is not None:
            trial = storage.get_trial(record["trial_id"])
            if trial.state != TrialState(record["state"]):
                refused.add(record["trial_id"])
    return refused
