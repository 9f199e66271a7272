"""Where studies live: one Optuna study per stage, in an Optuna storage.

By default each hpsearch study gets a folder `studies/<name>/` (of the current
directory; `--dir` or HPSEARCH_DIR move it) holding an Optuna JournalStorage
file, `optuna.journal`: safe for several processes on one machine and about
10x cheaper per trial than SQLite. `--storage URL` uses any Optuna RDB URL
(sqlite:///..., postgresql://...) or a `.journal` file instead.

Each stage is an Optuna study named `<study>.<stage>` (digits_mlp.coarse,
digits_mlp.refine-1), so Optuna's own tools read it:
    optuna trials --storage studies/digits_mlp/optuna.journal \
        --storage-class JournalFileBackend --study-name digits_mlp.coarse
The stage's settings, space, parent and the whole study spec are kept in the
Optuna study's user attribute `hpsearch`, which is what makes the lineage.

The journal is written by journal.RepairingJournalBackend (Optuna's format):
a torn final record is set aside before the next write, a full disk is an
error naming the file with nothing half-written, and a damaged record in the
middle is reported by line (`hpsearch repair NAME` keeps the rest).

RDB URLs (postgresql://..., sqlite:///...) are opened with Optuna's heartbeat:
every coordinator records a heartbeat for its running trials every
HPSEARCH_HEARTBEAT_INTERVAL seconds (default 10), and a RUNNING trial whose
last heartbeat is older than HPSEARCH_HEARTBEAT_GRACE seconds (default 60) is
failed by whichever coordinator looks next, reason `worker died (heartbeat
lost)`. That is how a machine that dies mid-trial is noticed from another one.
The local journal keeps its own check instead: a RUNNING trial whose host:pid
owner on this machine is gone.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import StageNotFound, StorageError, StudyNotFound
from hpsearch.limits import TrialLimits
from hpsearch.space import Space
from hpsearch.spec import StageSpec, StudySpec
from hpsearch.store import optuna_compat as compat
from hpsearch.store.journal import RepairingJournalBackend
from hpsearch.store.passwords import mask_url
from hpsearch.strategy import Strategy
from hpsearch.trials import counts

JOURNAL_FILE = "optuna.journal"
LOGS_DIR = "logs"  # <results>/<study>/logs/<stage>/trial-<n>.log: each trial's stdout and stderr
CHECKPOINTS_DIR = "checkpoints"  # <results>/<study>/checkpoints/<stage>/trial-<N>/: a trial's own, every run of it
ATTR = "hpsearch"  # the Optuna study user attribute holding a stage's StageInfo
FINAL_STUDY = "final"  # `<name>.final`: the Optuna study holding final.py's result (no stage)
# Version of the StageInfo record. 1 (no "format" key): the study spec stored with its own copy of
# the space. 2: the space once, as the stage's; the spec read back carries the stage's space.
STAGE_FORMAT = 2
# Why 10 s / 60 s: a heartbeat is one UPDATE, so every 10 s costs the database nothing; 60 s of silence
# (six missed beats) survives a long GC pause or a short network blip, yet frees a dead machine's
# trial within a minute. Optuna wants whole seconds.
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 60
CREATE_TABLE_ATTEMPTS = 4
CREATE_WAIT_S = 10.0  # how long a command that lost a creation race waits for the winner's stage record


def transient_errors() -> tuple[type[BaseException], ...]:
    """What a storage raises when the database is briefly unreachable (not a bug): worth a retry.

    Read at the moment an error is matched (an `except` clause evaluates it then): SQLAlchemy's errors
    count once a database storage has imported it; the journal never imports SQLAlchemy (0.2 s of start-up).
    """
    from optuna.exceptions import StorageInternalError

    errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, StorageInternalError)
    sqlalchemy_errors = sys.modules.get("sqlalchemy.exc")
    return (*errors, sqlalchemy_errors.SQLAlchemyError) if sqlalchemy_errors is not None else errors


optuna.logging.set_verbosity(optuna.logging.WARNING)  # hpsearch prints its own progress


def results_dir(directory: str | Path | None = None) -> Path:
    """The folder holding one sub-folder per study: --dir, else HPSEARCH_DIR, else ./studies."""
    return Path(directory or os.environ.get("HPSEARCH_DIR") or "studies")


def heartbeat_settings() -> tuple[int, int]:
    """(interval, grace period) in whole seconds: HPSEARCH_HEARTBEAT_INTERVAL / _GRACE, else 10 / 60.

    Raises StorageError for a value that is not a positive whole number, or a
    grace period not longer than the interval (every live trial would look dead).
    """
    values = []
    for env, default in (
        ("HPSEARCH_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL_S),
        ("HPSEARCH_HEARTBEAT_GRACE", HEARTBEAT_GRACE_S),
    ):
        raw = os.environ.get(env, "").strip()
        if not raw:
            values.append(default)
            continue
        if not raw.isdigit() or int(raw) <= 0:
            raise StorageError(f"{env}={raw}: use a positive whole number of seconds")
        values.append(int(raw))
    interval, grace = values
    if grace <= interval:
        raise StorageError(
            f"HPSEARCH_HEARTBEAT_GRACE={grace} must be longer than HPSEARCH_HEARTBEAT_INTERVAL={interval} "
            "(several missed heartbeats before a trial counts as dead)"
        )
    return interval, grace


@dataclass(frozen=True)
class StageInfo:
    """One stage of a study, as recorded in the storage."""

    name: str  # "coarse", "refine-1", ...
    index: int  # 0 for coarse, n for refine-n
    parent: str | None
    settings: StageSpec
    space: Space
    spec: StudySpec
    changes: tuple[dict[str, str], ...] = field(default_factory=tuple)  # how refine derived the space

    @property
    def optuna_name(self) -> str:
        return f"{self.spec.name}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STAGE_FORMAT,
            "name": self.name,
            "index": self.index,
            "parent": self.parent,
            "settings": self.settings.to_dict(),
            "space": self.space.to_dict(),
            "spec": self.spec.to_dict(with_space=False),
            "changes": list(self.changes),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageInfo:
        """Read a stored stage, of any format version (see STAGE_FORMAT)."""
        version = d.get("format", 1)
        if version > STAGE_FORMAT:
            raise StorageError(
                f"stage {d.get('name')!r} was written by a newer hpsearch (stage format {version}); upgrade hpsearch"
            )
        space = Space.from_dict(d["space"])
        return cls(
            name=d["name"],
            index=d["index"],
            parent=d["parent"],
            settings=StageSpec.from_dict(d["settings"]),
            space=space,
            spec=StudySpec.from_dict(d["spec"], space),
            changes=tuple(d.get("changes", ())),
        )


def open_storage(
    name: str, directory: str | Path | None = None, url: str | None = None, create: bool = True
) -> tuple[BaseStorage, str]:
    """The Optuna storage for study `name`, and a printable (password-masked) location.

    With create=False a study folder that does not exist is StudyNotFound
    rather than made: reading a mistyped name leaves nothing behind.
    """
    url = url or os.environ.get("HPSEARCH_STORAGE") or None
    if url:
        return _storage_from_url(url), mask_url(url)
    folder = results_dir(directory) / name
    if not create and not (folder / JOURNAL_FILE).is_file():
        known = ", ".join(list_study_names(directory)) or "none"
        raise StudyNotFound(f"no study {name!r} in {results_dir(directory)} (studies there: {known})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        journal = folder / JOURNAL_FILE
        # Absolute: a trial may run in another folder (its study file's) while this process writes.
        backend = RepairingJournalBackend(journal.resolve(), shown=journal)
    except OSError as e:
        raise StorageError(
            f"cannot write the study folder {folder}: {e.strerror}; set $directory to a writable folder"
        ) from None
    return JournalStorage(backend), str(journal)


def _storage_from_url(url: str) -> BaseStorage:
    shown = mask_url(url)
    if "://" not in url:
        if not url.endswith(".journal"):
            raise StorageError(
                f"$storage {shown}: use an Optuna RDB URL (sqlite:///x.db, postgresql://...) or a .journal file"
            )
        try:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(RepairingJournalBackend(Path(url).resolve(), shown=url))
        except OSError as e:
            raise StorageError(f"$storage {shown}: cannot write it: {e.strerror}") from None
    interval, grace = heartbeat_settings()
    try:
        for attempt in range(CREATE_TABLE_ATTEMPTS):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ExperimentalWarning)  # heartbeat_interval: "experimental"
                    return RDBStorage(url, heartbeat_interval=interval, grace_period=grace)
            except Exception as e:
                # Machines starting together on a fresh database race to create Optuna's tables, and
                # PostgreSQL's CREATE TABLE is not idempotent under that race: the loser sees a
                # duplicate key or "already exists"; the tables are there now, so try again.
                text = str(e)
                if attempt + 1 == CREATE_TABLE_ATTEMPTS or not ("duplicate key" in text or "already exists" in text):
                    raise
                time.sleep(0.2 * (attempt + 1))
        raise AssertionError("unreachable")
    except Exception as e:  # driver missing, server unreachable, bad URL: all one message
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(f"$storage {shown}: cannot open it: {mask_url(reason)}") from None


class Store:
    """The stages of one hpsearch study inside an Optuna storage."""

    def __init__(
        self, name: str, directory: str | Path | None = None, url: str | None = None, create: bool = True
    ) -> None:
        self.name = name
        self.directory = directory
        self.url = url or os.environ.get("HPSEARCH_STORAGE") or None
        self.storage, self.location = open_storage(name, directory, url, create)

    def checkpoints_dir(self, info: StageInfo) -> Path:
        """Where the trials of a stage keep their checkpoints, one folder per trial (absolute):
        <results>/<study>/checkpoints/<stage>/. A trial resumed on another machine reads its folder
        there: on a cluster, the results folder must be on a filesystem every node shares."""
        return (results_dir(self.directory) / self.name / CHECKPOINTS_DIR / info.name).resolve()

    def logs_dir(self, info: StageInfo) -> Path:
        """Where this machine keeps the logs of the trials it runs of a stage (absolute):
        <results>/<study>/logs/<stage>/, whatever the storage (a shared database keeps only their paths)."""
        return (results_dir(self.directory) / self.name / LOGS_DIR / info.name).resolve()

    def stages(self) -> list[StageInfo]:
        """Every stage of the study, in the order they were created."""
        found = []
        # get_all_studies, not get_all_study_summaries: the summaries load (and deep-copy) every trial
        # of every study in the storage, seconds for a large study on PostgreSQL.
        for summary in self.storage.get_all_studies():
            attr = summary.user_attrs.get(ATTR)
            if attr and summary.study_name.startswith(self.name + "."):
                info = StageInfo.from_dict(attr)
                if info.spec.name == self.name:
                    found.append(info)
        return sorted(found, key=lambda s: s.index)

    def stage(self, name: str | None = None) -> StageInfo:
        """A stage by name, or the latest one when name is None."""
        return self.stages_from(name)[0] if name is not None else self.stages_from(None)[-1]

    def stages_from(self, name: str | None = None) -> list[StageInfo]:
        """Stage `name` and every later stage (None: every stage), in order. Raises StudyNotFound when
        the study has no stage, StageNotFound for an unknown name."""
        stages = self.stages()
        if not stages:
            raise StudyNotFound(f"no study {self.name!r} in {self.location}")
        if name is None:
            return stages
        for s in stages:
            if s.name == name:
                return [later for later in stages if later.index >= s.index]
        names = ", ".join(s.name for s in stages)
        raise StageNotFound(f"study {self.name!r} has no stage {name!r}; its stages: {names}")

    def create(self, info: StageInfo) -> StageInfo:
        """Create the stage's Optuna study; returns the stage as stored.

        Race-free: when another command creates the same stage at the same
        moment (two machines starting one study), the storage lets one create
        it; the other waits until the winner's record is readable and returns
        that one (its settings win), so both then run the same stage.
        """
        from optuna.exceptions import DuplicatedStudyError

        try:
            study = optuna.create_study(
                storage=self.storage, study_name=info.optuna_name, direction=info.spec.direction.value
            )
        except DuplicatedStudyError:
            return self._wait_for_record(info)
        study.set_user_attr(ATTR, info.to_dict())
        return info

    def _wait_for_record(self, info: StageInfo) -> StageInfo:
        deadline = time.monotonic() + CREATE_WAIT_S
        while True:
            for stored in self.stages():
                if stored.name == info.name:
                    return stored
            if time.monotonic() > deadline:
                raise StorageError(
                    f"stage {info.optuna_name} exists in {self.location} without an hpsearch record "
                    "(made by another tool, or its creator died at once); delete that Optuna study"
                )
            time.sleep(0.05)

    def delete(self, info: StageInfo) -> None:
        """Remove one stage (its Optuna study and every trial of it) from the storage."""
        optuna.delete_study(study_name=info.optuna_name, storage=self.storage)

    def delete_stages(self, gone: list[StageInfo]) -> list[str]:
        """Remove these stages (`stages_from`: a stage and every later one); returns their names.

        Works on any storage (journal, PostgreSQL, SQLite). When the whole
        study goes, its `<name>.final` study goes too and, from its default
        results folder, the folder (journal, logs, plots, report, best.*).
        """
        for info in reversed(gone):
            self.delete(info)
        whole, final, folder = not self.stages(), f"{self.name}.{FINAL_STUDY}", results_dir(self.directory) / self.name
        if whole and any(s.study_name == final for s in self.storage.get_all_studies()):
            optuna.delete_study(study_name=final, storage=self.storage)  # the whole study: its final result too
        if whole and self.url is None and (folder / JOURNAL_FILE).is_file():
            shutil.rmtree(folder, ignore_errors=True)
        return [s.name for s in gone]

    def update(self, info: StageInfo) -> None:
        """Store changed settings of an existing stage (a raised target)."""
        self.study(info).set_user_attr(ATTR, info.to_dict())

    def study(
        self,
        info: StageInfo,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> optuna.Study:
        return optuna.load_study(study_name=info.optuna_name, storage=self.storage, sampler=sampler, pruner=pruner)

    def trials(self, info: StageInfo, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
        return self.study(info).get_trials(deepcopy=False, states=states)

    @property
    def database(self) -> bool:
        """Whether the storage is a database (RDB URL), which answers counts and filters with queries."""
        return isinstance(self.storage, RDBStorage)

    @property
    def heartbeat(self) -> bool:
        """Whether this storage records heartbeats (RDB URLs), so other machines can spot dead trials."""
        return isinstance(self.storage, RDBStorage) and self.storage.get_heartbeat_interval() is not None


def journal_path(name: str, directory: str | Path | None = None, url: str | None = None) -> Path:
    """The journal file of study `name`: its results folder's, or a `.journal` storage URL.
    Raises StorageError for a database URL (it has no journal to repair)."""
    url = url or os.environ.get("HPSEARCH_STORAGE") or None
    if url and "://" in url:
        raise StorageError(f"$storage {mask_url(url)}: a database has no journal file to repair")
    path = Path(url) if url else results_dir(directory) / name / JOURNAL_FILE
    if not path.is_file():
        raise StudyNotFound(f"no journal {path}")
    return path


def list_study_names(directory: str | Path | None = None) -> list[str]:
    """The studies that have a results folder under the results directory."""
    root = results_dir(directory)
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob(f"*/{JOURNAL_FILE}"))


def study_names(directory: str | Path | None = None, url: str | None = None) -> list[str]:
    """Every hpsearch study: the results folders under `directory`, or the studies in the storage at `url`."""
    url = url or os.environ.get("HPSEARCH_STORAGE") or None
    if not url:
        return list_study_names(directory)
    storage, _ = open_storage("", directory, url)
    return sorted({s.study_name.rsplit(".", 1)[0] for s in storage.get_all_studies() if ATTR in s.user_attrs})


def storage_counts(
    study: optuna.Study, store: Store, grid: bool, limits: TrialLimits | None = None
) -> tuple[int, int, int]:
    """(finished trials that count toward the target, failed, running) of a stage, from the storage."""
    by_state = compat.state_counts(study, store.storage)
    finished = by_state.get(TrialState.COMPLETE, 0) + by_state.get(TrialState.PRUNED, 0)
    failed = by_state.get(TrialState.FAIL, 0)
    if grid and failed:
        failed_trials = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        finished += counts(failed_trials, Strategy.grid, limits or TrialLimits())[0]
    return finished, failed, by_state.get(TrialState.RUNNING, 0)
