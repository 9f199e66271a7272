"""Processes hpsearch starts: each in its own process group, ended as a group. The one place for it.

A worker process (dispatch/pool.py) is started as the leader of a new session
and process group, so a terminal's Ctrl-C reaches only the coordinator (which
stops its workers itself), and everything a trial starts (a data-loader
child, a launcher) belongs to that group. Ending a group is always the same
steps: SIGTERM to every member, a grace for them to leave, SIGKILL to the
rest, never leaving an orphan under PID 1. `end_groups` does it from outside
(the pool, for a worker and its trial's processes); `end_group_members` from
inside (a worker, after each trial, for the processes its trial left behind,
itself excluded).

Every group `spawn` starts is remembered until it is ended, so a process can
end what it started on its way out (`end_started`: a worker on SIGTERM ends
its command trial's group). `spawn(..., die_with_parent=True)` also has the
kernel SIGKILL the new leader if its parent dies first (Linux).
`InterruptSignals` holds SIGINT/SIGTERM/SIGHUP while a pool runs: the first is a
KeyboardInterrupt (clean-up runs), a second kills the groups and exits 130.
SIGHUP is a closed terminal or a dropped ssh session: it ends the command as
SIGTERM does, rather than by the default action (which would leave its
running trials RUNNING in the storage until they are found stale).

Membership is read from /proc (Linux). Elsewhere a group counts as gone once
its leader is, and `end_group_members` has nothing to go on and does nothing.
A zombie counts as gone: it has exited, and only its parent's wait is missing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from hpsearch.errors import Preempted

KILL_POLL_S = 0.01  # how often a wait looks whether the processes left
KILLED_WAIT_S = 1.0  # after SIGKILL, the longest wait for the kernel to finish them off
PROC = Path("/proc")
PR_SET_PDEATHSIG = 1  # prctl option: the signal the kernel sends a process when its parent dies
_STARTED: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()  # groups spawned and not yet ended


def spawn(args: Sequence[str], die_with_parent: bool = False, **popen: Any) -> subprocess.Popen[Any]:
    """Start `args` as the leader of its own session and process group (other Popen arguments pass through).

    die_with_parent: the kernel SIGKILLs the leader when the calling thread's
    process dies (Linux; elsewhere ignored), so a SIGKILLed parent leaves no orphan.
    """
    if die_with_parent and (prctl := _prctl()) is not None:
        popen["preexec_fn"] = functools.partial(prctl, PR_SET_PDEATHSIG, int(signal.SIGKILL))
    proc = subprocess.Popen(list(args), start_new_session=True, **popen)
    _STARTED.add(proc)
    return proc


def parent_death_signal(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux; elsewhere nothing)."""
    if (prctl := _prctl()) is not None:
        prctl(PR_SET_PDEATHSIG, int(sig))


def end_started(grace: float) -> None:
    """End every group this process spawned and has not ended yet (see end_groups)."""
    started = list(_STARTED)
    if started:
        end_groups(started, grace)


def signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Send `sig` to every process of `proc`'s group (gone already: nothing to do). Does not wait."""
    _killpg(proc.pid, sig)


def group_members(pgid: int) -> list[int] | None:
    """The pids of the live (not zombie) processes of group `pgid`; None where /proc is unavailable."""
    if not PROC.is_dir():
        return None
    found = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            state, _, pgrp = stat
            if pgrp == pgid and state not in "ZX":
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a live process: not a zombie, not gone (needs /proc; elsewhere asks the kernel)."""
    if PROC.is_dir():
        stat = _stat(pid)
        return stat is not None and stat[0] not in "ZX"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def end_groups(procs: Iterable[subprocess.Popen[Any]], grace: float = 0.0) -> list[int]:
    """End each of `procs` with every process of its group: SIGTERM, up to `grace` seconds for the
    groups to leave, then SIGKILL to what is left (grace=0: SIGKILL at once).

    The groups are signalled together, so ending N of them costs one grace,
    not N. Works when the leader has exited already (its trial's children may
    outlive it). Reaps each leader and returns their exit codes (negative:
    the signal that ended it).
    """
    procs = list(procs)
    for p in procs:
        _STARTED.discard(p)
    if grace > 0:
        live = [p for p in procs if _group_alive(p)]
        for p in live:
            signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while live and time.monotonic() < deadline:
            time.sleep(KILL_POLL_S)
            live = [p for p in live if _group_alive(p)]
    for p in procs:  # cheap, and a member that slipped in since the last look goes too
        signal_group(p, signal.SIGKILL)
    codes = [p.wait() for p in procs]
    deadline = time.monotonic() + KILLED_WAIT_S  # SIGKILL is asynchronous: wait until they are gone
    while any(_group_alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(KILL_POLL_S)
    return codes


def end_group(proc: subprocess.Popen[Any], grace: float = 0.0) -> int:
    """End `proc` and every process of its group (see end_groups); returns its exit code."""
    return end_groups([proc], grace)[0]


def end_group_members(grace: float, spare: Collection[int] = ()) -> list[int]:
    """From a group leader: end every other process of its own group, except the pids in `spare`.

    SIGTERM, up to `grace` seconds, SIGKILL; then reaps those that were its
    own children. Returns the pids it signalled (none: it cost one scan of
    /proc). The caller survives; in a process that does not lead its group
    (the group is someone else's), or where /proc is unavailable, nothing happens.
    """
    me = os.getpid()
    if os.getpgrp() != me:
        return []
    members = group_members(me)
    if not members:
        return []
    targets = [pid for pid in members if pid != me and pid not in spare]
    for pid in targets:
        _kill(pid, signal.SIGTERM)
    live = _wait_gone(targets, grace)
    for pid in live:
        _kill(pid, signal.SIGKILL)
    _wait_gone(live, KILLED_WAIT_S)
    for pid in targets:  # our own children would stay zombies until the workload's Popen looked
        with contextlib.suppress(ChildProcessError):  # not ours (a grandchild, reaped by its parent or by init)
            os.waitpid(pid, os.WNOHANG)
    return targets


def _group_alive(proc: subprocess.Popen[Any]) -> bool:
    members = group_members(proc.pid)  # the leader's pid is the group's id
    if members is None:
        return proc.poll() is None
    return bool(members)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait up to `timeout` seconds for `pids` to exit; returns those still running."""
    deadline = time.monotonic() + timeout
    live = [pid for pid in pids if running(pid)]
    while live and time.monotonic() < deadline:
        time.sleep(KILL_POLL_S)
        live = [pid for pid in live if running(pid)]
    return live


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of `pid` from /proc/<pid>/stat, or None when it is gone."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data.rsplit(b")", 1)[1].split(maxsplit=3)  # the command name, in parentheses, may hold spaces
    return fields[0].decode(), int(fields[1]), int(fields[2])


@functools.cache
def _prctl() -> Any:
    """libc's prctl, looked up before forking (the child must only call it), or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


# Ctrl-C, kill, a closed terminal or ssh session; a cluster's preemption warning (SLURM's --signal:
# USR1, or USR2 as submitit asks for it)
PREEMPTIONS = (signal.SIGUSR1, signal.SIGUSR2)
INTERRUPTS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, *PREEMPTIONS)


class InterruptSignals:
    """While a stage runs: SIGTERM and SIGHUP act like Ctrl-C (KeyboardInterrupt, so clean-up runs), SIGUSR1
    and SIGUSR2 too (as Preempted: its trials are resumed later), and once one arrived, another of them kills the groups
    of `processes()` and exits at once (exit code 130)."""

    def __init__(self, processes: Callable[[], Iterable[subprocess.Popen[Any]]]) -> None:
        self.processes = processes
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the caller handles its own
        for sig in INTERRUPTS:
            self.saved[sig] = signal.signal(sig, self._first)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _first(self, signum: int, frame: FrameType | None) -> None:
        for sig in self.saved:
            signal.signal(sig, self._again)
        raise Preempted if signum in PREEMPTIONS else KeyboardInterrupt

    def _again(self, signum: int, frame: FrameType | None) -> None:
        for proc in self.processes():
            signal_group(proc, signal.SIGKILL)
        os._exit(130)
