"""The worker process: loads a workload once, then runs the trials the coordinator sends it.

Started by dispatch.PoolExecutor as `python -m hpsearch.dispatch.worker FD WORKLOAD
DEVICE THREADS PARENT_PID`, with CUDA_VISIBLE_DEVICES already in its
environment (so torch, imported here by the workload, sees only its GPU).
It never touches the storage: per-epoch reports go to the coordinator over
the connection on FD, and each trial's TrialOutcome goes back the same way.
When a pruner decides, the worker waits for the answer to each report (go
on or stop); without one it applies the divergence rule itself
(divergence.py, as the coordinator does) and trains on at once, reading any
stop the coordinator sent meanwhile (a trial failed elsewhere) at its next
report: a short trial pays no round trip per epoch.

Messages: every kind, both directions, is a dataclass in messages.py. A `Trial` may come while the
one before still trains (short trials: the pool queues the next one, so no round trip separates them);
it waits in the Inbox until that one is done. Before it starts a trial the worker reads every message
that has arrived, so a `Drop` sent before then is never missed; it says `Started` as it starts each.
Trials run with the one runner (runner.py) that the inline executor uses too.
The worker exits when the connection closes (skipping the interpreter's slow
teardown of torch: see _exit).

Each trial (or population) runs in its study's folder (record.workdir) with
file descriptors 1 and 2 pointing at its log (record.log_path; see
workloads/capture.py), so its outcome comes back with `log` and `log_tail`.
The worker leads its own process group, which everything the trial starts
joins: when the trial ends, however it ends, the worker ends every other
process of its group (procs.end_group_members) and stays, ready for the next.
Processes the workload started while it was imported are spared, and so
is the log keeper the worker forks first (workloads/logbound.py: it writes
each trial's log within record.log_limit). On SIGTERM (sent by the
coordinator on a timeout, a stall or an interrupt, and by the kernel when
the coordinator dies) the worker ends the trial's processes, the keeper
too (which saves the log's head and latest tail), before it dies.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TypeVar

from hpsearch.dispatch import messages as msg
from hpsearch.dispatch.runner import TrialRunner
from hpsearch.divergence import DivergenceCheck
from hpsearch.errors import WorkloadError
from hpsearch.procs import end_group_members, end_started, group_members, parent_death_signal
from hpsearch.workloads import logbound
from hpsearch.workloads.api import EpochTiming, ReportHook, ReportsHook, TrialRecord

R = TypeVar("R", msg.Reply, msg.Replies)  # an answer the worker waits for
PARENT_POLL_S = 1.0  # how soon a worker notices its coordinator vanished, where prctl is unavailable
CHILD_GRACE_S = 1.0  # after a trial, what it started gets this long between SIGTERM and SIGKILL


def main(argv: list[str] | None = None) -> int:
    fd, workload, device, threads, parent = (argv or sys.argv[1:])[:5]
    # Ctrl-C reaches the whole process group, a cluster's preemption warning every process of the job:
    # the coordinator alone decides when workers stop (what a trial starts inherits the ignoring).
    for ignored in (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(ignored, signal.SIG_IGN)
    logbound.start_keeper(fork=True)  # forked while this process has one thread and no workload
    _die_with_parent(int(parent))
    conn = Inbox(Connection(int(fd)))
    try:
        runner = TrialRunner(workload, device)
    except WorkloadError as e:
        conn.send(msg.LoadFailed(e.template))  # the coordinator renders its settings
        return 2
    if "torch" in sys.modules:  # OMP_NUM_THREADS covers a workload that imports torch later
        sys.modules["torch"].set_num_threads(int(threads))
    own = set(group_members(os.getpid()) or ())  # processes the workload started on import stay
    conn.send(msg.Ready(os.getpid(), runner.entry is not None))
    # Nothing a trial started outlives it (inside the capture: their last words go to its log).
    after = functools.partial(end_group_members, CHILD_GRACE_S, spare=own)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return 0
        match message:
            case msg.ChooseK(params) if runner.entry is not None:
                choice = runner.choose_k(params)
                rates = ", ".join(f"{k}: {rate:.1f}/s" for k, rate in choice.throughput.items())
                conn.send(msg.Chosen(choice.k, f"{rates}; {choice.stopped_because}"))
            case msg.Trial(record, replies):
                try:
                    conn.send(msg.Started(record.number))
                except OSError:
                    return 0
                [outcome] = runner.run([record], _hook(conn, replies), after=after, fd_level=True)
                if not _send(conn, msg.Done(record.number, outcome)):
                    return 0
            case msg.Population(records, replies):
                batch = _batch(conn, replies)
                outcomes = runner.run(records, _hook(conn, replies), batch, fd_level=True, after=after)
                ended = [msg.Done(r.number, outcome) for r, outcome in zip(records, outcomes)]
                if not _send(conn, msg.DoneAll(ended)):  # a population's endings in one message (one write)
                    return 0


def _send(conn: Inbox, message: msg.FromWorker) -> bool:
    """Send; False when the coordinator is gone."""
    try:
        conn.send(message)
    except OSError:
        return False
    return True


class Inbox:
    """The worker's connection to its coordinator. Messages read early (a trial queued behind the running
    one, met while looking for a reply or for stops) are kept, in order, for the next `recv`; a drop takes
    a kept trial back out."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.kept: deque[msg.ToWorker] = deque()

    def send(self, message: msg.FromWorker) -> None:
        self.conn.send(message)

    def recv(self) -> msg.ToWorker:
        """The main loop's next message (a trial, a population, choose_k), kept or new; every message that
        has arrived is read first, so a trial dropped before this call is never returned."""
        while True:
            while self.conn.poll():
                self.set_aside(self.conn.recv())
            if self.kept:
                return self.kept.popleft()
            self.set_aside(self.conn.recv())

    def arrived(self, wait: bool = False) -> msg.ToWorker | None:
        """The next message from the connection itself (not one kept); None if none is waiting, unless `wait`."""
        return self.conn.recv() if wait or self.conn.poll() else None

    def set_aside(self, message: msg.ToWorker) -> None:
        """A message met while looking for another kind: a trial (queued behind the running one) is kept
        for the next `recv`; a drop removes the kept trial it names; anything else (a stray stop or reply)
        is dropped."""
        match message:
            case msg.Trial() | msg.Population() | msg.ChooseK():
                self.kept.append(message)
            case msg.Drop(number):
                self.kept = deque(m for m in self.kept if not (isinstance(m, msg.Trial) and m.record.number == number))


def _hook(conn: Inbox, replies: bool) -> Callable[[TrialRecord], ReportHook]:
    """Each trial's report hook: its reports travel to the coordinator. replies: wait for its answer (go
    on / stop) to each; else decide by the divergence rule here and read stops sent meanwhile."""

    def for_record(record: TrialRecord) -> ReportHook:
        check = DivergenceCheck(record.first_loss)

        def on_report(epoch: int, metrics: dict[str, float], timing: EpochTiming) -> str | None:
            conn.send(msg.Report(record.number, epoch, metrics, timing.seconds, timing.iterations))
            if replies:
                return _reply(conn, msg.Reply).reason
            return check(metrics) or _stops(conn).get(record.number)

        return on_report

    return for_record


def _batch(conn: Inbox, replies: bool) -> ReportsHook:
    """A population's reports of one epoch as one message; the coordinator replies with every reason
    (or, when it does not reply, each member's divergence is decided here, as in _hook)."""
    checks: dict[int, DivergenceCheck] = {}

    def on_reports(entries: list[tuple[int, int, dict[str, float], EpochTiming]]) -> list[str | None]:
        conn.send(
            msg.Reports([msg.Report(n, epoch, metrics, t.seconds, t.iterations) for n, epoch, metrics, t in entries])
        )
        if replies:
            return list(_reply(conn, msg.Replies).reasons)
        stops = _stops(conn)
        return [
            checks.setdefault(number, DivergenceCheck())(metrics) or stops.get(number)
            for number, _, metrics, _ in entries
        ]

    return on_reports


def _reply(conn: Inbox, kind: type[R]) -> R:
    """The coordinator's answer to the report just sent (a trial queued meanwhile is kept; stray stops,
    none expected, skipped)."""
    while True:
        message = conn.arrived(wait=True)
        if isinstance(message, kind):
            return message
        if message is not None:
            conn.set_aside(message)


def _stops(conn: Inbox) -> dict[int, str]:
    """The stops the coordinator sent since the last look, without waiting: trial number -> reason
    (ones for a trial that already ended, which decided the same itself, are dropped by the caller).
    A trial that arrived (the next one, queued) is kept for the main loop."""
    stops: dict[int, str] = {}
    while (message := conn.arrived()) is not None:
        if isinstance(message, msg.Stops):
            stops.update(message.reasons)
        else:
            conn.set_aside(message)
    return stops


def _die_with_parent(parent: int) -> None:
    """End this worker when its coordinator dies, however it dies (even SIGKILL), and what its trial
    started with it: no orphans. The kernel sends SIGTERM (prctl), which ends the group first."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:  # the coordinator died before prctl took effect
        _leave()

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                _leave()

    threading.Thread(target=watch, name="hpsearch-parent-watch", daemon=True).start()


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a timeout, an interrupt, the coordinator's death): end the trial's processes, then die
    of the signal as the default action would (the coordinator reads 'signal 15')."""
    end_started(CHILD_GRACE_S)  # a command trial's own group
    end_group_members(CHILD_GRACE_S)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _leave() -> None:
    end_started(CHILD_GRACE_S)
    end_group_members(CHILD_GRACE_S)
    os._exit(1)


def _exit(code: int) -> None:
    """Exit without the interpreter's teardown of every module: after torch and scikit-learn that
    takes about a second, which the coordinator would wait for at the end of each stage. The
    workload's atexit handlers still run and the streams are flushed (as a normal exit does)."""
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    _exit(main())
