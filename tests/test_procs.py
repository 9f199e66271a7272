"""Process groups (hpsearch/procs.py): ending a group from outside, and a leader's leftovers from inside.

Real processes, small and torch-free; no test asserts on wall-clock time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hpsearch.procs import end_group, group_members, running, spawn

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="group membership is read from /proc")

# A child that writes its pid to argv[1], and 'term' to argv[1] + '.term' when SIGTERM reaches it.
CHILD = (
    "import os, signal, sys, time\n"
    "def term(*_):\n"
    "    open(sys.argv[1] + '.term', 'w').write('term'); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, term)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(str(os.getpid())); os.replace(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(300)\n"
)


def leader(tmp_path: Path, then: str) -> tuple[subprocess.Popen[str], int]:
    """A group leader that starts CHILD, waits until it runs, then executes `then`; returns it and the child's pid."""
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time, os\n"
        f"subprocess.Popen([sys.executable, '-c', {CHILD!r}, {str(pid_file)!r}])\n"
        f"while not os.path.exists({str(pid_file)!r}): time.sleep(0.01)\n"
        "print('ready', flush=True)\n" + then
    )
    proc = spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    return proc, int(pid_file.read_text())


def test_end_group_sends_sigterm_first_then_reaps(tmp_path: Path) -> None:
    proc, child = leader(tmp_path, "time.sleep(300)\n")
    assert sorted(group_members(proc.pid) or []) == sorted([proc.pid, child])
    assert end_group(proc, grace=30) == -15  # the leader died of SIGTERM
    assert (tmp_path / "child.pid.term").read_text() == "term"  # the child was asked first, and had its say
    assert not running(child) and group_members(proc.pid) == []


def test_end_group_without_grace_kills_at_once(tmp_path: Path) -> None:
    proc, child = leader(tmp_path, "time.sleep(300)\n")
    assert end_group(proc) == -9
    assert not (tmp_path / "child.pid.term").exists() and not running(child)


def test_end_group_ends_children_that_outlive_their_leader(tmp_path: Path) -> None:
    proc, child = leader(tmp_path, "")  # the leader exits at once, its child lives on
    assert proc.wait(timeout=60) == 0
    assert running(child)
    end_group(proc, grace=30)
    assert (tmp_path / "child.pid.term").exists() and not running(child)


def test_end_group_members_spares_the_leader_and_ends_children_and_grandchildren(tmp_path: Path) -> None:
    then = (
        "from hpsearch.procs import end_group_members, running\n"
        "sleeper = subprocess.Popen(['sleep', '300'])\n"
        "grandchild = int(subprocess.run(['sh', '-c', 'sleep 300 >/dev/null 2>&1 & echo $!'], "
        "capture_output=True, text=True).stdout)\n"
        "ended = end_group_members(30)\n"
        "print(sorted(ended), running(sleeper.pid), running(grandchild), sleeper.pid, grandchild, flush=True)\n"
        "time.sleep(300)\n"
    )
    proc, child = leader(tmp_path, then)
    try:
        assert proc.stdout is not None
        ended, sleeper_runs, grandchild_runs, sleeper, grandchild = _parse(proc.stdout.readline())
        assert sorted(ended) == sorted([child, sleeper, grandchild])
        assert (sleeper_runs, grandchild_runs) == (False, False) and not running(child)
        assert (tmp_path / "child.pid.term").exists()
        assert proc.poll() is None  # the leader itself goes on
    finally:
        end_group(proc)


def _parse(line: str) -> tuple[list[int], bool, bool, int, int]:
    listed, rest = line.split("]", 1)
    ended = [int(p) for p in listed.strip("[ ").split(",") if p.strip()]
    sleeper_runs, grandchild_runs, sleeper, grandchild = rest.split()
    return ended, sleeper_runs == "True", grandchild_runs == "True", int(sleeper), int(grandchild)


def test_end_group_members_does_nothing_outside_its_own_group() -> None:
    """A process that does not lead its group (like the CLI in a shell's job) must not end its siblings."""
    code = (
        "import os\n"
        "from hpsearch.procs import end_group_members\n"
        "assert os.getpgrp() != os.getpid()\n"
        "print(end_group_members(1.0))\n"
    )
    sibling = subprocess.Popen(["sleep", "300"])  # in this test's group, like the non-leader below
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == "[]", done.stderr
        assert sibling.poll() is None
    finally:
        sibling.kill()
        sibling.wait()


def test_procs_end_started_ends_every_group_spawned_and_not_yet_ended(tmp_path: Path) -> None:
    from hpsearch.procs import end_started

    proc, child = leader(tmp_path, "time.sleep(300)\n")
    end_started(grace=5.0)
    assert proc.poll() is not None and not running(child)
    assert (tmp_path / "child.pid.term").read_text() == "term"  # SIGTERM first


def test_procs_die_with_parent_leaves_no_orphan_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    """A middle process spawns a grandchild with die_with_parent, then is SIGKILLed: the kernel ends the grandchild."""
    import os
    import signal
    import time

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import sys, time, os\n"
        "from hpsearch.procs import spawn\n"
        f"p = spawn([sys.executable, '-c', 'import time; time.sleep(300)'], die_with_parent=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    middle = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        for _ in range(300):  # a bound, not a timing assertion
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        assert running(grandchild)
        middle.send_signal(signal.SIGKILL)
        middle.wait()
        for _ in range(200):
            if not running(grandchild):
                break
            time.sleep(0.05)
        assert not running(grandchild)
    finally:
        if middle.poll() is None:
            middle.kill()
