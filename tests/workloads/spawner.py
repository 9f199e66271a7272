"""Torch-free workloads that start processes, for the process-group tests. No hpsearch import.

HPSEARCH_TEST_MARKERS names a folder: a child writes `child-<trial>.pid`
there (its pid) once it runs, and `term-<trial>` when SIGTERM reaches it.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

# A child that sleeps 5 minutes, says when SIGTERM reaches it, and only then exits.
CHILD = """
import os, signal, sys, time
from pathlib import Path
folder, trial = Path(sys.argv[1]), sys.argv[2]
def term(*_):
    (folder / f"term-{trial}").write_text("SIGTERM")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
(folder / f"child-{trial}.tmp").write_text(str(os.getpid()))
os.replace(folder / f"child-{trial}.tmp", folder / f"child-{trial}.pid")
time.sleep(300)
"""


def _markers():
    return Path(os.environ["HPSEARCH_TEST_MARKERS"])


def running(pid):
    """Whether pid is a live process (a zombie has exited: it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in "ZX"


def spawns_and_returns(trial):
    """Leaves a `sleep 300` child behind and returns; says how many earlier trials' children still run."""
    folder = _markers()
    stale = sum(running(int(p.read_text())) for p in folder.glob("child-*.pid"))
    child = subprocess.Popen(["sleep", "300"])
    (folder / f"child-{trial.number}.pid").write_text(str(child.pid))
    trial.report(0, train_loss=0.5, val_accuracy=0.5)
    return {"val_accuracy": 0.5, "pid": float(os.getpid()), "stale_children": float(stale)}


def spawns_and_hangs_on_1(trial):
    """Trial 1 starts a child (one that handles SIGTERM), waits until it runs, then hangs for a minute."""
    if trial.number == 1:
        folder = _markers()
        subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(trial.number)])
        pid_file = folder / f"child-{trial.number}.pid"
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if pid_file.exists():
                print(f"child {pid_file.read_text()} runs", flush=True)
                pid_file = folder / "never"
            time.sleep(0.02)
    trial.report(0, train_loss=0.5, val_accuracy=0.5)
    return {"val_accuracy": 0.5}
