"""Processes hpsearch starts: each in its own process group, ended as a group. The one place for it.

A worker process (dispatch/pool.py) is started as the leader of a new session
and process group, so a terminal's Ctrl-C reaches only the coordinator (which
stops its workers itself), and everything a trial starts (a data-loader
child, a launcher) belongs to that group: `end_group` ends them all, never
leaving an orphan under PID 1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any, Sequence

KILL_POLL_S = 0.01  # how often end_group looks whether the group left after SIGTERM


def spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
    """Start `args` as the leader of its own session and process group (other Popen arguments pass through)."""
    return subprocess.Popen(list(args), start_new_session=True, **popen)


def signal_group(proc: subprocess.Popen[Any], sig: int) -> None:
    """Send `sig` to every process of `proc`'s group (gone already: nothing to do). Does not wait."""
    try:
        os.killpg(proc.pid, sig)  # the leader's pid is the group's id
    except (ProcessLookupError, PermissionError):
        pass


def end_group(proc: subprocess.Popen[Any], grace: float = 0.0) -> int:
    """End `proc` and every process of its group: SIGTERM, up to `grace` seconds, then SIGKILL.

    grace=0 sends SIGKILL at once (the trial is abandoned anyway). Reaps
    `proc` and returns its exit code (negative: the signal that ended it).
    """
    if grace > 0 and proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(KILL_POLL_S)
    # Children may outlive their leader: the group is killed even when proc itself has exited.
    signal_group(proc, signal.SIGKILL)
    return proc.wait()
