"""The coordinator's handle on one worker process (dispatch/worker.py): starting it, sending it trials,
ending it, and reading why it died. The pool (pool.py) decides what each worker does.

A worker is started as the leader of its own session and process group (procs.spawn), with its
threads (OMP_NUM_THREADS) and its GPU (CUDA_VISIBLE_DEVICES) set in its environment before it
imports torch, and one end of a socket pair as its connection. Besides the trial (or population)
it trains, a worker may hold one `queued` trial: sent while the current one trains, started by the
worker the moment that one ends (pool.py decides when: short trials, one by one). The worker says
`Started` as it starts each trial; until then the pool may take a queued trial back
(`recall`) for a worker that fell idle.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from hpsearch.dispatch import messages as msg
from hpsearch.dispatch.plan import WorkerSlot
from hpsearch.procs import end_group, spawn

if TYPE_CHECKING:
    from hpsearch.dispatch.source import Job

TERM_GRACE_S = 2.0  # an ended worker's group gets this long between SIGTERM and SIGKILL
DEATH_WAIT_S = 5.0  # a worker whose connection broke gets this long to be reaped before SIGKILL


class WorkerHandle:
    """The coordinator's handle on one worker process."""

    def __init__(self, slot: WorkerSlot, workload: str) -> None:
        self.slot = slot
        self.arg = workload
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        # Set before the child starts, hence before torch is imported there.
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(slot.threads)
        if slot.visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.visible
        # The child finds what this process finds (tests' and users' workload packages).
        env["PYTHONPATH"] = os.pathsep.join(p or os.getcwd() for p in sys.path)
        args = [str(theirs.fileno()), workload, slot.device, str(slot.threads), str(os.getpid())]
        try:
            # Own session and group: a terminal's Ctrl-C goes to the coordinator, which stops workers itself.
            self.proc = spawn(
                [sys.executable, "-m", "hpsearch.dispatch.worker", *args],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=2,  # a workload's prints must not mix with the data hpsearch writes to stdout
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.has_population = False  # told by the worker once its workload is loaded
        self.jobs: dict[int, Job] = {}  # trial number -> job: one, or a population of them
        self.queued: Job | None = None  # the next trial, sent while `jobs` trains (None: none)
        self.unasked = False  # a trial started since the pool last tried to queue one: try once more
        self.last_s: float | None = None  # the last trial's duration, if it completed
        self.replies = True  # whether it waits for an answer to each report of its trials (give)
        self.deadline: float | None = None
        self.heard = time.monotonic()  # its trials' last report, or their start: how long they have been silent

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def idle(self) -> bool:
        """Loaded, and neither training nor about to start a queued trial: it may be given trials."""
        return self.ready and not self.jobs and self.queued is None

    def give(self, jobs: list[Job], timeout: float | None, together: bool = False, replies: bool = True) -> None:
        """Send one trial, or several to train together as a population (one deadline for all).
        together: a lone trial goes as a population of one too (population mode, through the workload's
        population entry). replies: whether the worker waits for an answer to each report (a pruner's)."""
        self._train(jobs, timeout)
        self.replies = replies
        records = [job.record for job in jobs]
        if len(records) == 1 and not (together and self.has_population):
            self.conn.send(msg.Trial(records[0], replies))
        else:
            self.conn.send(msg.Population(records, replies))

    def queue(self, job: Job, replies: bool) -> None:
        """Send the next trial while the current one trains: the worker starts it the moment that one
        ends (no round trip between two short trials); `promote` makes it current here."""
        self.queued = job
        self.conn.send(msg.Trial(job.record, replies))

    def promote(self, timeout: float | None) -> None:
        """It started its queued trial: that one is now the one training (its clock and deadline start)."""
        job, self.queued, self.deadline = self.queued, None, None
        if job is not None:
            self._train([job], timeout)

    def recall(self) -> Job:
        """Take back its queued trial, not started yet, for another worker: it is told to drop it (a worker
        that started it meanwhile says so, with `Started`: the pool then ends it, see pool.py)."""
        assert self.queued is not None
        job, self.queued = self.queued, None
        with contextlib.suppress(OSError):  # died: its death is read next, with nothing of this trial's
            self.conn.send(msg.Drop(job.number))
        return job

    def _train(self, jobs: list[Job], timeout: float | None) -> None:
        """`jobs` are now what it trains: their clocks and its deadline start, and the pool may queue
        the next trial behind them."""
        now = time.perf_counter()
        for job in jobs:
            job.started = now
        self.jobs = {job.number: job for job in jobs}
        self.unasked = True
        self.heard = time.monotonic()
        self.deadline = None if timeout is None else self.heard + timeout

    def kill(self) -> None:
        """End its whole process group (SIGTERM, grace, SIGKILL) and reap it: for timeouts, when the
        trial is abandoned anyway (whatever the trial started goes too)."""
        end_group(self.proc, TERM_GRACE_S)
        if not self.conn.closed:
            self.conn.close()

    def wait_exit(self, deadline: float) -> None:
        """Ask the worker to exit (by closing its connection) and give it until `deadline`."""
        if not self.conn.closed:
            self.conn.close()
        with contextlib.suppress(subprocess.TimeoutExpired):  # ended with its group by the caller
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0.0))

    def death_reason(self) -> str:
        """Why the worker is gone, once its connection closed: 'worker died (signal 9)'."""
        with contextlib.suppress(subprocess.TimeoutExpired):  # connection broke but the process lingers: finish it
            self.proc.wait(timeout=DEATH_WAIT_S)
        code = end_group(self.proc, TERM_GRACE_S)  # and whatever its trial started, which may outlive it
        self.conn.close()
        return f"worker died (signal {-code})" if code < 0 else f"worker died (exit code {code})"
