"""Liveness: which RUNNING trials are still alive. The heartbeat thread, and failing the dead ones.

A trial's process can die without a word (SIGKILL, a power cut, a machine
gone). Each coordinator looks before it starts a trial (coordinator._refresh)
and fails the dead ones, so the stage replaces them:
- on every storage: a trial whose `host:pid` owner on this machine is gone,
  or one that never got an owner (its coordinator died the moment it was
  created), reason `interrupted`;
- on RDB storages (many machines), also a trial whose heartbeat stopped
  for longer than the grace period, reason `worker died (heartbeat lost)`:
  `Heartbeat` records one per running trial every interval.
The storage lets exactly one coordinator fail each trial.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from hpsearch.store import optuna_compat as compat
from hpsearch.store.storage import heartbeat_settings, transient_errors
from hpsearch.trials import HEARTBEAT_LOST, INTERRUPTED, OWNER_ATTR, REASON_ATTR

OWNERLESS_GRACE_S = 10.0  # a RUNNING trial still without an owner after this long lost its coordinator at birth
log = logging.getLogger("hpsearch.search.coordinator")

# The coordinators alive in this process (their tokens): a trial owned by this very process whose
# coordinator is gone (a library caller's earlier run, an interrupted command in a notebook) is stale.
LIVE_COORDINATORS: set[str] = set()


def owner_tag(coordinator: str = "") -> str:
    """Identifies the process (and coordinator) running a trial: "host:pid", or "host:pid#token", and
    " slurm:JOB_TASK" after it inside a SLURM task (where `studies` says a trial runs)."""
    tag = f"{socket.gethostname()}:{os.getpid()}"
    tag = f"{tag}#{coordinator}" if coordinator else tag
    return f"{tag} slurm:{task}" if (task := slurm_task()) else tag


def slurm_task() -> str:
    """This process's SLURM task: "JOB_TASK" in a job array, "JOB" in a plain job, "" outside SLURM."""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job


def where(owner: str) -> str:
    """Where a trial runs, as `studies` says it: "host", or "host (slurm 123_4)"."""
    process, _, rest = owner.partition(" ")
    host = process.partition("#")[0].rpartition(":")[0] or process
    task = rest.removeprefix("slurm:")
    return f"{host} (slurm {task})" if task else host


def is_stale(owner: str) -> bool:
    """Whether the owner of a trial ("host:pid[#token]") is provably gone: on this host, no such pid, or
    this very process with that coordinator no longer alive in it."""
    process, _, token = owner.split(" ")[0].partition("#")
    host, _, pid = process.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return bool(token) and token not in LIVE_COORDINATORS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Heartbeat:
    """Records a heartbeat for each running trial every interval (RDB storages), in a thread.

    Database hiccups (a dropped connection, a timeout) are logged once and retried at the
    next beat (the grace period allows several missed beats). Any other exception is a bug:
    the thread stops and keeps it; the coordinator raises it at its next call (`check`).
    """

    def __init__(self, study: optuna.Study, running: Callable[[], list[optuna.Trial]]) -> None:
        self.study = study
        self.running = running
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="hpsearch-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval, _ = heartbeat_settings()
        while not self._stop.wait(interval):
            try:
                for trial in self.running():
                    compat.record_heartbeat(self.study, trial)
            except transient_errors() as e:
                if not self._failing:
                    log.warning("heartbeat not recorded (%s: %s); retrying every %s s", type(e).__name__, e, interval)
                self._failing = True
                continue
            except BaseException as e:  # a programming error: never hidden
                self.error = e
                return
            if self._failing:
                log.warning("heartbeat recorded again")
                self._failing = False

    def check(self) -> None:
        """Raise, on the caller's thread, the error that stopped the heartbeat thread, if any."""
        if self.error is not None:
            error, self.error = self.error, None
            raise RuntimeError(f"the heartbeat thread stopped: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


def fail_dead_trials(
    study: optuna.Study, heartbeat: bool, ours: set[int], running: list[FrozenTrial] | None = None
) -> list[FrozenTrial]:
    """Fail the RUNNING trials whose process is gone; returns those THIS call failed (one caller wins each).

    On every storage: trials (not among `ours`, the numbers this coordinator
    runs) whose host:pid owner on this machine is gone (SIGKILL, power loss),
    and trials that never got an owner within OWNERLESS_GRACE_S of their
    start (their coordinator died at once), reason `interrupted`. With a
    heartbeat (RDB storages, which see other machines too) also the trials
    whose heartbeat stopped, reason `worker died (heartbeat lost)`.
    """
    won = []
    if heartbeat:
        stale = compat.stale_trial_ids(study)
        won += [t for t in (compat.fail_trial(study, i, REASON_ATTR, HEARTBEAT_LOST) for i in stale) if t]
    now = datetime.now()
    if running is None:  # the caller may pass the RUNNING trials it has just read
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for t in running:
        if t.number in ours:
            continue
        owner = t.user_attrs.get(OWNER_ATTR)
        ownerless = (
            owner is None
            and t.datetime_start is not None
            and (now - t.datetime_start).total_seconds() > OWNERLESS_GRACE_S
        )
        if ownerless or (owner is not None and is_stale(owner)):
            failed = compat.fail_trial(study, t, REASON_ATTR, INTERRUPTED)
            if failed is not None:
                won.append(failed)
    return won
