"""The pool's worker processes as a group: started early (before the stage is set up, so their
imports overlap the caller's own start-up) or by a run, adopted by a run, kept for the next run of
the same workload (a search's stages), and always ended with their process groups (SIGTERM, grace,
SIGKILL: procs.end_groups), so no process a stage started outlives it. What each worker does is the
pool's business (pool.py); this module only starts and ends them.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from hpsearch.dispatch.handle import TERM_GRACE_S, WorkerHandle
from hpsearch.dispatch.plan import WorkerSlot
from hpsearch.procs import InterruptSignals, end_groups, signal_group

EXIT_WAIT_S = 1.0  # an idle worker asked to exit gets this long before its group is ended: it holds no pending work


class Crew:
    """The worker processes for `slots`: `workers` (a run's), `early` (started, no run adopted them yet)
    and `leaving` (told to go, reaped at the end of the run or by close)."""

    def __init__(self, slots: list[WorkerSlot]) -> None:
        self.slots = slots
        self.workers: list[WorkerHandle] = []
        self.early: list[WorkerHandle] = []
        self.leaving: list[WorkerHandle] = []

    def start(self, workload: Any, limit: int | None = None) -> None:
        """Start (up to `limit` of) the workers now for `workload` (a Workload); a run adopts them. Workers
        started earlier for another workload (a guess) are ended, and these started instead."""
        arg = workload.to_arg()
        if self.workers or (self.early and self.early[0].arg == arg):
            return
        self.retire(self.early)
        self.early = []
        for slot in self.slots[: max(limit, 1)] if limit is not None else self.slots:
            self.early.append(WorkerHandle(slot, arg))  # one by one: close() ends those started

    def adopt(self, slots: list[WorkerSlot], arg: str) -> list[WorkerHandle]:
        """The workers for `slots`: those started early for workload `arg` (the first slots, in order),
        then new ones. Early ones that are surplus (fewer trials left than thought) or for another
        workload get SIGTERM now, without waiting: reaped at the end of the run."""
        early, self.early = self.early, []
        kept = [w for w in early if w.arg == arg][: len(slots)]
        self.retire([w for w in early if w not in kept])
        self.workers = kept
        for slot in slots[len(kept) :]:
            self.workers.append(WorkerHandle(slot, arg))  # one by one: if a start fails, those started are ended
        return self.workers

    def replace(self, worker: WorkerHandle) -> WorkerHandle:
        """A fresh worker in `worker`'s place (it is dead, or was ended), on the same slot and workload."""
        fresh = WorkerHandle(worker.slot, worker.arg)
        self.workers[self.workers.index(worker)] = fresh
        return fresh

    def end_run(self, keep: bool) -> None:
        """A run ended well: its idle workers stay for the next run (`keep`), or are ended - every
        connection closed first, so they shut down in parallel, then what is left of their groups."""
        if keep:  # idle and ready: adopted by the next run (or ended by close)
            self.early, self.workers = self.workers, []
        for w in self.workers:
            w.conn.close()
        deadline = time.monotonic() + EXIT_WAIT_S
        for w in self.workers:
            w.wait_exit(deadline)
        # Whatever is left in their groups (a straggler, a workload's own process) goes with them.
        end_groups([w.proc for w in self.workers], TERM_GRACE_S)

    def after_run(self) -> None:
        """However a run ended: forget its workers, and reap the early ones it did not need."""
        self.workers = []
        end_groups([w.proc for w in self.leaving], TERM_GRACE_S)
        self.leaving = []

    def kill_all(self) -> None:
        """End every worker's group at once (one grace for all), for interrupts and errors."""
        end_groups([w.proc for w in self.workers], TERM_GRACE_S)
        for w in self.workers:
            if not w.conn.closed:
                w.conn.close()

    def retire(self, workers: list[WorkerHandle]) -> None:
        """Tell idle workers to go (SIGTERM to their groups) without waiting."""
        for w in workers:
            w.conn.close()
            signal_group(w.proc, signal.SIGTERM)
        self.leaving += workers

    def close(self) -> None:
        """End the workers that `start` started and no run adopted, with their groups; none holds a trial."""
        ending, self.early, self.leaving = self.early + self.leaving, [], []
        for w in ending:
            if not w.conn.closed:
                w.conn.close()
        end_groups([w.proc for w in ending], TERM_GRACE_S)

    def signals(self) -> InterruptSignals:
        """SIGINT/SIGTERM/SIGHUP stop every worker (these, early and leaving ones) before the run records
        its running trials as interrupted."""
        return InterruptSignals(lambda: [w.proc for w in self.workers + self.early + self.leaving])
