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

Short trials, one by one, get their successor queued behind them (handout.py). Such a trial's start
time in the storage is when it was drawn (at most QUEUE_BELOW_S early: its duration is measured in the
worker), and the progress line's "running" counts it. A holder that had started a queued trial in the
instant it was taken back says so (`Started`): it is ended and replaced, and only the new owner's run
is recorded. Messages between the pool and a worker are messages.py's; the processes, crew.py's.

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

import time
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any, Self

from hpsearch.dispatch import messages as msg
from hpsearch.dispatch.crew import Crew
from hpsearch.dispatch.handle import WorkerHandle
from hpsearch.dispatch.handout import Handout
from hpsearch.dispatch.plan import AUTO, WorkerSlot, no_population_notice
from hpsearch.dispatch.stalls import StallWatch
from hpsearch.errors import DispatchError, WorkloadError
from hpsearch.limits import LimitOverrides, TrialLimits
from hpsearch.workloads.api import TrialOutcome, TrialStatus
from hpsearch.workloads.capture import log_fields

if TYPE_CHECKING:
    from hpsearch.dispatch.source import TrialSource

TAKEN_BACK = "started a trial given to another worker"  # why a worker is replaced that fails no trial
IDLE_POLL_S = 1.0  # longest wait for a message when no deadline is near: keeps signals and deaths prompt


class PoolExecutor:
    """Runs a stage's trials on long-lived worker processes, one trial (or K) per worker at a time.

    `slots` says which workers to start (see plan_workers); `trial_timeout` (seconds) kills and replaces a
    worker whose trial runs longer (the trial fails `timeout`). Every worker is gone when `run` returns or
    raises, unless `keep_workers` is set: then a run that ends well leaves its idle workers to the next run
    of the same workload, and `close` ends them. `start` may start the workers before the stage is set up.
    """

    workload: Any  # the stage's Workload and Space: set by run
    space: Any

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
        self.crew = Crew(slots)  # the worker processes: started, adopted, kept, ended
        self.keep_workers = False  # a run that ends well leaves its idle workers to the next one
        self.handout = Handout()  # what each idle worker trains next, and the trials queued behind short ones
        self.stalls = StallWatch(TrialLimits())  # the stage's limits (`overrides` applied), its epochs: set by run

    @property
    def workers(self) -> list[WorkerHandle]:
        return self.crew.workers

    def start(self, workload: Any, limit: int | None = None) -> None:
        """Start (up to `limit` of) the workers before the stage is set up: their imports overlap the caller's
        own start-up. `run` adopts them for the same workload; call `close` when no run follows."""
        self.crew.start(workload, limit)

    def close(self) -> None:
        """End the workers that `start` started and no `run` adopted (nothing to do after a run)."""
        self.crew.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, source: TrialSource) -> None:
        self.workload, self.space = source.workload, source.space
        self.stalls = StallWatch(source.limits)
        self.handout = Handout()
        # Never more workers than trials left to start: each costs a process and its start-up.
        left = max(source.left, 1)
        slots = self.slots[:left]
        if len(slots) < len(self.slots):
            self.notices.append(
                f"note: started {len(slots)} of {len(self.slots)} workers: the stage has {left} trial(s) left"
            )
        with self.crew.signals():
            try:
                self.crew.adopt(slots, self.workload.to_arg())
                self._loop(source)
            except BaseException:
                self.crew.kill_all()
                raise
            else:
                self.crew.end_run(keep=self.keep_workers)
            finally:
                self.crew.after_run()

    # -- the event loop

    def _loop(self, source: TrialSource) -> None:
        while True:
            self._hand_out(source)
            busy = [w for w in self.workers if w.jobs or w.queued is not None]
            starting = [w for w in self.workers if not w.ready]
            if not busy and not starting and not self.handout.pending and self.handout.stopped:
                return  # every worker idle and the stage wants no more trials (a Wait: look again)
            for conn in wait([w.conn for w in self.workers], timeout=self.stalls.wait_time(self.workers, IDLE_POLL_S)):
                worker = next(w for w in self.workers if w.conn is conn)
                self._receive(source, worker)
            self._enforce_limits(source)

    def _hand_out(self, source: TrialSource) -> None:
        self.handout.run(source, self.workers, self.population, self.trial_timeout)

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
            worker.conn.send(msg.ChooseK(self.space.midpoint()))

    def _receive(self, source: TrialSource, worker: WorkerHandle) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(source, worker, worker.death_reason())
            return
        match message:
            case msg.Ready(_, has_population):
                self._on_ready(worker, has_population)
            case msg.LoadFailed(text):
                raise WorkloadError(text)
            case msg.Chosen(k, measured):
                worker.jobs = {}
                self.population = max(k, 1)
                self.notices.append(f"population: K = {self.population} (measured: {measured})")
            case msg.Started(number):
                self._on_started(source, worker, number)
            case msg.Report(number, epoch, metrics, seconds, iterations) if number in worker.jobs:
                self.stalls.heard(worker)
                reason = source.report(worker.jobs[number], epoch, metrics, seconds, iterations)
                self._answer(worker, msg.Reply(reason), {number: reason})
            case msg.Reports(reports):  # a population's epoch: one message, one reply, one storage write
                known = [
                    (worker.jobs[r.number], r.epoch, r.metrics, r.seconds, r.iterations)
                    for r in reports
                    if r.number in worker.jobs
                ]
                if known:
                    self.stalls.heard(worker)
                reasons = dict(zip((entry[0].number for entry in known), source.report_many(known)))
                self._answer(worker, msg.Replies([reasons.get(r.number) for r in reports]), reasons)
            case msg.DoneAll(done):
                ended = [(worker.jobs.pop(d.number), d.outcome) for d in done if d.number in worker.jobs]
                if not worker.jobs:
                    worker.deadline = None
                source.finish_many(ended)
            case msg.Done(number, outcome) if number in worker.jobs:
                job = worker.jobs.pop(number)
                worker.last_s = outcome.duration_s if outcome.state == TrialStatus.COMPLETE else None
                if worker.last_s is not None:
                    self.stalls.completed(worker.last_s)
                if not worker.jobs:
                    worker.deadline = None  # a queued trial's clock starts with its Started
                source.finish_many([(job, outcome)])  # its held reports and its outcome: one write

    def _on_started(self, source: TrialSource, worker: WorkerHandle, number: int) -> None:
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
        self.handout.pending.extend(unstarted)
        worker.kill()
        self._replace(source, worker, TAKEN_BACK)  # fails no trial: it holds none now

    @staticmethod
    def _answer(worker: WorkerHandle, reply: msg.Reply | msg.Replies, reasons: dict[int, str | None]) -> None:
        """The reply a waiting worker needs; to one that does not wait, only the reasons to stop (it
        applies the divergence rule itself: a stop from here is a trial failed elsewhere, or the same)."""
        stops = {number: reason for number, reason in reasons.items() if reason is not None}
        try:
            if worker.replies:
                worker.conn.send(reply)
            elif stops:
                worker.conn.send(msg.Stops(stops))
        except OSError:
            pass  # it died meanwhile: the next read says how

    def _replace(self, source: TrialSource, worker: WorkerHandle, reason: str) -> None:
        """Fail the dead (or killed) worker's trial with `reason` and start a fresh worker in its place."""
        if not worker.ready:
            # Never got as far as loading the workload: a replacement would die the same way.
            raise WorkloadError(
                f"workload {self.workload}: the worker process {reason} while loading it; "
                "run with $workers 0 to see the error in this process"
            )
        self.crew.replace(worker)
        if worker.queued is not None:
            self.handout.pending.appendleft(worker.queued)  # never started: the first worker free runs it
        jobs = [job for job in worker.jobs.values() if job is not None]  # None: it was measuring K
        log, tail = log_fields([job.record for job in jobs])  # what it printed until then
        for job in jobs:
            outcome = TrialOutcome(TrialStatus.FAIL, reason=reason, duration_s=time.perf_counter() - job.started)
            outcome.log, outcome.log_tail = log, tail
            source.finish(job, outcome)

    def _enforce_limits(self, source: TrialSource) -> None:
        """End and replace the workers whose trials ran past the trial timeout, or went silent past the stall
        rule: their trials fail `timeout` / `stalled: ...`."""
        for w, reason in self.stalls.overdue(self.workers):
            w.kill()
            self._replace(source, w, reason)
