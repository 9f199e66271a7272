"""The worker pool: a stage's trials on long-lived worker processes (what the CLI uses).

`PoolExecutor` keeps worker processes, one or more per device (plan.py), started once per stage
(or once per `search`: keep_workers):
torch import, CUDA context and dataset loading happen once per worker, so a short trial costs its
training time plus a few milliseconds. The calling process stays the coordinator: the only one that
talks to the storage, which keeps grid stages free of duplicates and avoids storage locks between
workers. Workers send each epoch's report; with a pruner they wait for go on / stop, without one
they apply the divergence rule themselves and go on (a stop, rare, comes later). Their outcomes come
back as TrialOutcome. The CLI starts the workers (`start`) as soon as it has read the study file, so
their imports overlap its own start-up; the stage's `run` adopts them.

Short trials, one by one, get their successor queued (`_queues`): once a worker's last trial
completed in under QUEUE_BELOW_S, its next trial is drawn and sent while the current one trains, so
the worker goes from one to the next with no round trip to here. Not for TPE, which would draw it one
result short. Such a trial's start time in the storage is when it was drawn (at most QUEUE_BELOW_S
early: its duration is measured in the worker), and the progress line's "running" counts it. A
queued trial never waits behind a running one while a worker is free (`_next_for`): a worker that
falls idle takes it back (the holder is told to drop it) when the holder's trial has run past
QUEUE_BELOW_S, or when the stage has no new trial for it. A holder that had started it in that
instant says so ("started"): it is ended and replaced, and only the new owner's run is recorded.

Faults are data: a worker that dies mid-trial (segfault, OOM kill, os._exit) fails its trial with
`worker died (signal N)` / `worker died (exit code N)` and is replaced; a trial past the trial
timeout has its worker's process group ended and the worker replaced, reason `timeout`; so has a
trial silent past the stall rule (limits.py, stalls.py), reason `stalled: no report for 61 s (...)`.
SIGINT/SIGTERM/SIGHUP stop every worker before the stage records its running trials as interrupted;
a second signal during that clean-up exits at once, workers killed first.

Processes: each worker leads its own process group, which is the trial's (everything it starts
joins it). Ending a worker always ends its group: SIGTERM, TERM_GRACE_S for them to leave, then
SIGKILL (procs.end_groups), on a timeout, an interrupt, a death, and at the end of the stage, so no
process a stage started outlives it. A trial that ends by itself keeps its worker: the worker ends
what the trial left behind (see worker.py).

A trial's stdout and stderr go to its log file (record.log_path), written by the worker; a trial
failed here (timeout, worker died) still points at it.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections import deque
from dataclasses import replace
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Self

from hpsearch.dispatch.handle import TERM_GRACE_S, WorkerHandle
from hpsearch.dispatch.plan import AUTO, WorkerSlot, no_population_notice
from hpsearch.dispatch.stalls import StallWatch
from hpsearch.errors import DispatchError, WorkloadError
from hpsearch.limits import LimitOverrides, TrialLimits
from hpsearch.procs import InterruptSignals, end_groups, signal_group
from hpsearch.workloads.api import TrialOutcome
from hpsearch.workloads.capture import log_fields

if TYPE_CHECKING:
    from hpsearch.coordinator import Coordinator, Job

TIMEOUT_REASON = "timeout"
TAKEN_BACK = "started a trial given to another worker"  # why a worker is replaced that fails no trial
EXIT_WAIT_S = 1.0  # an idle worker asked to exit gets this long before its group is ended: it holds no pending work
IDLE_POLL_S = 1.0  # longest wait for a message when no deadline is near: keeps signals and deaths prompt
QUEUE_BELOW_S = 1.0  # a worker whose last trial completed in less gets its next one queued behind the current


class PoolExecutor:
    """Runs a stage's trials on long-lived worker processes, one trial per worker at a time.

    `slots` says which workers to start (see plan_workers); `trial_timeout`
    (seconds) kills and replaces a worker whose trial runs longer, recording
    the trial as FAIL `timeout`. Every worker is gone when `run` returns or
    raises, unless `keep_workers` is set: then a run that ends well leaves its
    idle workers for the next run of the same workload (a search's stages: no
    torch import, data load or first-call cost again), and `close` ends them.
    `start` may start the workers earlier, before the stage is set up
    (the CLI does: their imports then overlap its own start-up); `run` adopts
    them, and `close` (or leaving `with pool:`) ends any that no run adopted.
    """

    def __init__(
        self,
        slots: list[WorkerSlot],
        trial_timeout: float | None = None,
        population: int | str = 1,
        overrides: LimitOverrides = LimitOverrides(),
    ) -> None:
        if not slots:
            raise DispatchError("no worker to start; set $workers to 1 or more")
        self.slots = slots
        self.trial_timeout = trial_timeout
        self.overrides = overrides  # the stall rule's and the log bound's settings given for this run
        self.population = population  # K trials per worker at once; AUTO until a worker measured it
        self.notices: list[str] = []
        self.workers: list[WorkerHandle] = []
        self.early: list[WorkerHandle] = []  # started by start(), not yet adopted by run()
        self.leaving: list[WorkerHandle] = []  # early ones no run adopts, told to go: reaped at the end
        self.keep_workers = False  # a run that ends well leaves its idle workers to the next one
        self.workload: Any = None  # the stage's Workload, once run
        self.space: Any = None
        self.pending: deque[Job] = deque()  # drawn, started nowhere: queued on a worker that died, or taken back
        # The stage's limits (its study file's, `overrides` applied) and its measures of epochs: set by run.
        self.stalls = StallWatch(TrialLimits())

    def start(self, workload: Any, limit: int | None = None) -> None:
        """Start (up to `limit` of) the workers now, before the stage is set up: their imports (torch,
        the data) overlap the caller's own start-up (Optuna, the storage). `run` adopts them when its
        stage has the same workload; call `close` when no run follows (a failed set-up). Workers
        started earlier for another workload (a guess) are ended, and these started instead."""
        arg = workload.to_arg()
        if self.workers or (self.early and self.early[0].arg == arg):
            return
        self._retire(self.early)
        self.early = []
        for slot in self.slots[: max(limit, 1)] if limit is not None else self.slots:
            self.early.append(WorkerHandle(slot, arg))  # one by one: close() ends those started

    def close(self) -> None:
        """End the workers that `start` started and no `run` adopted, with their groups (SIGTERM,
        grace, SIGKILL); none holds a trial. Nothing to do after a run."""
        ending, self.early, self.leaving = self.early + self.leaving, [], []
        for w in ending:
            if not w.conn.closed:
                w.conn.close()
        end_groups([w.proc for w in ending], TERM_GRACE_S)

    def _retire(self, workers: list[WorkerHandle]) -> None:
        """Tell idle workers to go (SIGTERM to their groups) without waiting: reaped at the end of the
        run, or by close."""
        for w in workers:
            w.conn.close()
            signal_group(w.proc, signal.SIGTERM)
        self.leaving += workers

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, run: Coordinator) -> None:
        self.workload = run.info.spec.workload
        self.space = run.info.space
        self.stalls = StallWatch(run.info.spec.limits.with_overrides(self.overrides))
        self.pending.clear()
        # Never more workers than trials left to start: each costs a process and its start-up.
        left = max(run.target - run.done - run.running_total, 1)
        slots = self.slots[:left]
        if len(slots) < len(self.slots):
            self.notices.append(
                f"note: started {len(slots)} of {len(self.slots)} workers: the stage has {left} trial(s) left"
            )
        with self._signals():
            try:
                self.workers = self._adopt(slots)
                self._loop(run)
            except BaseException:
                self._kill_all()
                raise
            else:
                if self.keep_workers:  # idle and ready: adopted by the next run (or ended by close)
                    self.early, self.workers = self.workers, []
                # Close every connection first, so workers shut down in parallel.
                for w in self.workers:
                    w.conn.close()
                deadline = time.monotonic() + EXIT_WAIT_S
                for w in self.workers:
                    w.wait_exit(deadline)
                # Whatever is left in their groups (a straggler, a workload's own process) goes with them.
                end_groups([w.proc for w in self.workers], TERM_GRACE_S)
            finally:
                self.workers = []
                # Early workers this run did not need: told to go when it began, reaped now.
                end_groups([w.proc for w in self.leaving], TERM_GRACE_S)
                self.leaving = []

    def _adopt(self, slots: list[WorkerSlot]) -> list[WorkerHandle]:
        """The workers for `slots`: those started early for this workload (the first slots, in order),
        then new ones. Early ones that are surplus (fewer trials left than thought) or for another
        workload get SIGTERM now, without waiting: `run` reaps them at its end."""
        arg = self.workload.to_arg()
        early, self.early = self.early, []
        kept = [w for w in early if w.arg == arg][: len(slots)]
        self._retire([w for w in early if w not in kept])
        self.workers = kept
        for slot in slots[len(kept) :]:
            self.workers.append(WorkerHandle(slot, arg))  # one by one: if a start fails, those started are ended
        return self.workers

    # -- the event loop

    def _loop(self, run: Coordinator) -> None:
        while True:
            self._hand_out(run)
            busy = [w for w in self.workers if w.jobs or w.queued is not None]
            starting = [w for w in self.workers if not w.ready]
            if not busy and not starting and not self.pending and not run.waiting_on_others():
                return  # every worker idle and the stage wants no more trials
            for conn in wait([w.conn for w in self.workers], timeout=self._wait_time()):
                worker = next(w for w in self.workers if w.conn is conn)
                self._receive(run, worker)
            self._enforce_limits(run)

    def _hand_out(self, run: Coordinator) -> None:
        for w in self.workers:
            if w.idle:
                # While one worker measures K (auto), the others train trials one by one meanwhile.
                k = 1 if self.population == AUTO else self._share(run, int(self.population))
                if not (jobs := self._next_for(run, k)):
                    return
                with contextlib.suppress(OSError):  # died while idle: its death is read from the connection next
                    w.give(jobs, self.trial_timeout, together=self.population != 1, replies=run.answers_reports)
        for w in self.workers:  # then the next trial behind each short one: asked once per trial it starts
            if w.jobs and w.queued is None and w.unasked and self._queues(run, w):
                w.unasked = False
                if not (jobs := run.next_jobs(1)):
                    continue
                with contextlib.suppress(OSError):  # died: _replace hands the queued trial to its successor
                    w.queue(self._bounded(jobs)[0], replies=run.answers_reports)

    def _next_for(self, run: Coordinator, k: int) -> list[Job]:
        """What an idle worker trains next: a trial drawn earlier that no worker started (its worker died, or
        it was taken back), a trial queued behind one that has run past QUEUE_BELOW_S (the queue's premise,
        a short trial, no longer holds), a new trial, or any trial still queued: a queued trial never waits
        behind a running one while a worker is free."""
        if self.pending:
            return [self.pending.popleft()]
        now = time.perf_counter()
        holders = [w for w in self.workers if w.queued is not None and w.jobs]  # no jobs: starting it right now
        overdue = [
            w for w in holders if any(j is not None and now - j.started > QUEUE_BELOW_S for j in w.jobs.values())
        ]
        if overdue:
            return [overdue[0].recall()]
        if jobs := run.next_jobs(k):
            return self._bounded(jobs)
        return [holders[0].recall()] if holders else []

    def _bounded(self, jobs: list[Job]) -> list[Job]:
        """New trials, their records carrying this run's log bound (the study file's, or the one given)."""
        for job in jobs:
            job.record = replace(job.record, log_limit=self.stalls.limits.log_limit)
        return jobs

    def _queues(self, run: Coordinator, worker: WorkerHandle) -> bool:
        """Whether `worker` gets its next trial now, behind the one it trains: one by one, its last trial
        completed in under QUEUE_BELOW_S, and a sampler that learns nothing from results (random, grid:
        TPE would draw it one result short)."""
        short = worker.last_s is not None and worker.last_s < QUEUE_BELOW_S
        return short and self.population == 1 and not run.info.settings.strategy.learns

    def _share(self, run: Coordinator, k: int) -> int:
        """K, or less near the stage's end: the trials left to start, shared by the workers without
        trials (still starting ones too): 30 trials left and K = 32 would give one worker all of them."""
        idle = sum(1 for w in self.workers if not w.jobs)
        left = run.target - run.done - run.running_total
        return max(1, min(k, -(-left // max(idle, 1))))

    def _on_ready(self, worker: WorkerHandle, has_population: bool) -> None:
        """A worker loaded the workload: settle K (fall back to 1, or have this worker measure it)."""
        worker.ready, worker.has_population = True, has_population
        if self.population == 1:
            return
        if not has_population:
            self.notices.append(no_population_notice(self.workload))
            self.population = 1
        elif self.population == AUTO and not any(w.jobs for w in self.workers):
            worker.jobs = {-1: None}  # type: ignore[dict-item]  # busy measuring: a marker, no Job
            worker.conn.send(("choose_k", self.space.midpoint()))

    def _receive(self, run: Coordinator, worker: WorkerHandle) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(run, worker, worker.death_reason())
            return
        kind = message[0]
        if kind == "ready":
            self._on_ready(worker, bool(message[2]) if len(message) > 2 else False)
        elif kind == "load_failed":
            raise WorkloadError(message[1])
        elif kind == "k":
            worker.jobs = {}
            self.population = max(int(message[1]), 1)
            self.notices.append(f"population: K = {self.population} (measured: {message[2]})")
        elif kind == "started":
            self._on_started(run, worker, message[1])
        elif kind == "report" and message[1] in worker.jobs:
            _, number, epoch, metrics, seconds, iterations = message
            self.stalls.heard(worker)
            reason = run.report(worker.jobs[number], epoch, metrics, seconds, iterations)
            self._answer(worker, ("reply", reason), {number: reason})
        elif kind == "reports":  # a population's epoch: one message, one reply, one storage write
            known = [
                (worker.jobs[n], epoch, metrics, seconds, its)
                for n, epoch, metrics, seconds, its in message[1]
                if n in worker.jobs
            ]
            if known:
                self.stalls.heard(worker)
            reasons = dict(zip((entry[0].number for entry in known), run.report_many(known)))
            self._answer(worker, ("replies", [reasons.get(n) for n, *_ in message[1]]), reasons)
        elif kind == "done_all":
            ended = [(worker.jobs.pop(n), outcome) for n, outcome in message[1] if n in worker.jobs]
            if not worker.jobs:
                worker.deadline = None
            run.finish_many(ended)
        elif kind == "done" and message[1] in worker.jobs:
            outcome: TrialOutcome = message[2]
            job = worker.jobs.pop(message[1])
            worker.last_s = outcome.duration_s if outcome.state == "complete" else None
            if worker.last_s is not None:
                self.stalls.completed(worker.last_s)
            if not worker.jobs:
                worker.deadline = None  # a queued trial's clock starts with its "started"
            run.finish_many([(job, outcome)])  # its held reports and its outcome: one write

    def _on_started(self, run: Coordinator, worker: WorkerHandle, number: int) -> None:
        """The worker started trial `number`: given to it (nothing to do), its queued one (now current), or
        one taken back from it a moment too late (it ran no drop before starting it): that copy must not
        count, so the worker is ended and replaced; what it was given since, never started, is handed out
        again, and nothing is recorded for it."""
        if number in worker.jobs:
            return
        if worker.queued is not None and worker.queued.number == number:
            worker.promote(self.trial_timeout)
            return
        unstarted = [job for job in worker.jobs.values() if job is not None]
        worker.jobs = {}
        self.pending.extend(unstarted)
        worker.kill()
        self._replace(run, worker, TAKEN_BACK)  # fails no trial: it holds none now

    @staticmethod
    def _answer(worker: WorkerHandle, reply: tuple[str, Any], reasons: dict[int, str | None]) -> None:
        """The reply a waiting worker needs; to one that does not wait, only the reasons to stop (it
        applies the divergence rule itself: a stop from here is a trial failed elsewhere, or the same)."""
        stops = {number: reason for number, reason in reasons.items() if reason is not None}
        try:
            if worker.replies:
                worker.conn.send(reply)
            elif stops:
                worker.conn.send(("stops", stops))
        except OSError:
            pass  # it died meanwhile: the next read says how

    def _replace(self, run: Coordinator, worker: WorkerHandle, reason: str) -> None:
        """Fail the dead (or killed) worker's trial with `reason` and start a fresh worker in its place."""
        index = self.workers.index(worker)
        if not worker.ready:
            # Never got as far as loading the workload: a replacement would die the same way.
            raise WorkloadError(
                f"workload {self.workload}: the worker process {reason} while loading it; "
                "run with $workers 0 to see the error in this process"
            )
        self.workers[index] = WorkerHandle(worker.slot, self.workload.to_arg())
        if worker.queued is not None:
            self.pending.appendleft(worker.queued)  # never started: the first worker free runs it
        jobs = [job for job in worker.jobs.values() if job is not None]  # None: it was measuring K
        log, tail = log_fields([job.record for job in jobs])  # what it printed until then
        for job in jobs:
            outcome = TrialOutcome("fail", reason=reason, duration_s=time.perf_counter() - job.started)
            outcome.log, outcome.log_tail = log, tail
            run.finish(job, outcome)

    def _enforce_limits(self, run: Coordinator) -> None:
        """End and replace the workers whose trials ran past the trial timeout, or went silent past the stall
        rule: their trials fail `timeout` / `stalled: ...`."""
        now = time.monotonic()
        for w in list(self.workers):
            if not w.jobs or None in w.jobs.values():  # idle, or measuring K (it reports nothing meanwhile)
                continue
            timed_out = w.deadline is not None and now >= w.deadline
            if (reason := TIMEOUT_REASON if timed_out else self.stalls.reason(w, now)) is not None:
                w.kill()
                self._replace(run, w, reason)

    def _wait_time(self) -> float:
        deadlines = [w.deadline for w in self.workers if w.jobs and w.deadline is not None]
        if not deadlines:
            return IDLE_POLL_S
        return min(max(min(deadlines) - time.monotonic(), 0.0), IDLE_POLL_S)

    # -- stopping

    def _kill_all(self) -> None:
        """End every worker's group at once (one grace for all), for interrupts and errors."""
        end_groups([w.proc for w in self.workers], TERM_GRACE_S)
        for w in self.workers:
            if not w.conn.closed:
                w.conn.close()

    def _signals(self) -> InterruptSignals:
        return InterruptSignals(lambda: [w.proc for w in self.workers + self.early + self.leaving])
