"""The worker process: loads a workload once, then runs the trials the coordinator sends it.

Started by dispatch.PoolExecutor as `python -m hpsearch.dispatch.worker FD WORKLOAD
DEVICE THREADS PARENT_PID`, with CUDA_VISIBLE_DEVICES already in its
environment (so torch, imported here by the workload, sees only its GPU).
It never touches the storage: per-epoch reports go to the coordinator over
the connection on FD, which answers go on or stop, and each trial's
TrialOutcome goes back the same way.

Messages (pickled tuples), coordinator -> worker:
    ("trial", TrialRecord)               one trial to run
    ("population", [TrialRecord, ...])   K trials to train together (the workload's fn.population)
    ("choose_k", params)                 measure the best population size (--population auto)
    ("reply", reason | None)             answer to a report
worker -> coordinator:
    ("ready", pid, has_population)       workload loaded, waiting for trials
    ("load_failed", message)             the workload cannot be imported
    ("k", K, "1: 12.0/s, 2: 20.1/s, ...")  the measured population size
    ("report", number, epoch, metrics, epoch_seconds, iterations)   one per member and epoch
    ("done", number, TrialOutcome)       one per member
The worker exits when the connection closes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from hpsearch.errors import WorkloadError
from hpsearch.workloads.api import EpochTiming, TrialContext, TrialRecord
from hpsearch.workloads.function import run_trial
from hpsearch.workloads.loader import load_workload

PARENT_POLL_S = 1.0  # how soon a worker notices its coordinator vanished, where prctl is unavailable


def main(argv: list[str] | None = None) -> int:
    fd, workload, device, threads, parent = (argv or sys.argv[1:])[:5]
    # Ctrl-C reaches the whole process group: the coordinator alone decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(int(parent))
    conn = Connection(int(fd))
    try:
        fn = load_workload(workload)
    except WorkloadError as e:
        conn.send(("load_failed", e.template))  # the coordinator renders its settings
        return 2
    if "torch" in sys.modules:  # OMP_NUM_THREADS covers a workload that imports torch later
        sys.modules["torch"].set_num_threads(int(threads))
    from hpsearch.workloads.population import choose_population_size, population_entry, run_population

    entry = population_entry(fn)
    conn.send(("ready", os.getpid(), entry is not None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        kind = message[0]
        if kind == "choose_k" and entry is not None:
            choice = choose_population_size(entry, message[1], device)
            rates = ", ".join(f"{k}: {rate:.1f}/s" for k, rate in choice.throughput.items())
            conn.send(("k", choice.k, f"{rates}; {choice.stopped_because}"))
            continue
        if kind not in ("trial", "population"):
            continue
        records: list[TrialRecord] = [message[1]] if kind == "trial" else message[1]
        contexts = [_context(conn, record, device) for record in records]
        if kind == "trial" or entry is None:
            outcomes = [run_trial(fn, ctx, ctx.record.metric) for ctx in contexts]
        else:
            outcomes = run_population(entry, contexts, records[0].metric)
        try:
            for ctx, outcome in zip(contexts, outcomes):
                conn.send(("done", ctx.number, outcome))
        except OSError:
            return 0


def _context(conn: Connection, record: TrialRecord, device: str) -> TrialContext:
    """The trial object a workload sees; its reports travel to the coordinator, which answers go on/stop."""

    def on_report(epoch: int, metrics: dict[str, float], timing: EpochTiming) -> str | None:
        conn.send(("report", record.number, epoch, metrics, timing.seconds, timing.iterations))
        reply = conn.recv()
        return reply[1]

    return TrialContext.open(record, device, on_report)


def _die_with_parent(parent: int) -> None:
    """End this worker when its coordinator dies, however it dies (even SIGKILL): no orphans."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the coordinator died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="hpsearch-parent-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
