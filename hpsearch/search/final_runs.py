"""The seed runs of `final`: each one trial on the test split, in this process or in worker processes.

`run_seeds` runs them where the machine has room (`plan_processes`): on the
CPU, up to min(runs, cores) processes (or `workers` of them), torch's threads
split between them as dispatch/plan.py splits them between a search's
workers; with GPUs, one process per GPU, each seeing only its own. With one
process (workers 0 or 1, a single run, a single core or GPU) the runs go one
after another in this process. Either way each run is `run_one`: the same
record (params, epochs, seed, split = "test") in the same order, so the
results are the same; only the clock differs.

Worker processes are started with the spawn method (no torch state copied
from here), load the workload once, and send back each run's SeedResult,
with a model workload's TestRun (predictions and weights, workloads/model.py)
pickled into bytes: plain pickling copies the tensors, where a Connection's
own pickler would hand them over in shared memory. A run that crashes is a
failed run with its reason; a process that dies fails its run and is
replaced; the other runs go on.

The split a run evaluated on is checked wherever the workload says it:
`trial.report(..., split="val")` or a returned dict with a "split" entry (a
function), a JSON line with "split" (a command, workloads/command.py): any
split but "test" fails the run (api.wrong_split says why).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsearch.errors import DispatchError, TrialFailed, WorkloadError
from hpsearch.workloads.api import SPLIT_LABEL, TrialContext, TrialRecord, TrialStatus, wrong_split

if TYPE_CHECKING:
    from hpsearch.dispatch.plan import WorkerSlot
    from hpsearch.workloads.spec import Workload

THIS_PROCESS = "this process"


@dataclass(frozen=True)
class SeedRun:
    """One run to do: configuration `rank` (1 = the best), its `index`-th seed, as the trial record."""

    rank: int
    index: int
    record: TrialRecord


@dataclass
class SeedResult:
    """How a run ended (its TrialStatus), with a model workload's TestRun in `kept`."""

    run: SeedRun
    state: TrialStatus
    metrics: dict[str, float]
    reason: str
    duration_s: float
    log: str = ""
    kept: Any = field(default=None, repr=False)


@dataclass(frozen=True)
class RunsPlanned:
    """Progress: `runs` runs of the top `configs` configurations, on `slots`' processes (none: one after
    another in this process), each writing its log in the folder `logs`."""

    runs: int
    configs: int
    slots: list[WorkerSlot]
    logs: Path


@dataclass(frozen=True)
class RunStarted:
    """Progress: `run` was handed to a process (`where`: "this process", "cpu", "cuda:1")."""

    run: SeedRun
    total: int
    where: str


@dataclass(frozen=True)
class RunEnded:
    """Progress: a run ended, how (its result)."""

    result: SeedResult
    total: int


Progress = RunsPlanned | RunStarted | RunEnded


def plan_processes(workers: int | None, runs: int, device: str) -> list[WorkerSlot]:
    """The processes to run `runs` runs on (dispatch's slots); [] = one after another in this process.

    workers None = as many as the machine has room for (cores on the CPU, GPUs with a GPU); 0 or 1 =
    this process. `device` is final's: auto (every GPU, else the CPU), cpu, cuda, cuda:0,cuda:2...
    """
    from hpsearch.dispatch.plan import DispatchConfig, cpu_cores, plan_workers, visible_gpus

    if runs <= 1 or (workers is not None and workers <= 1):
        return []
    cores = cpu_cores()
    gpus = [] if device == "cpu" else visible_gpus()
    if gpus:
        try:
            slots = plan_workers(DispatchConfig(devices="cuda" if device == "auto" else device), gpus, cores)
        except DispatchError:  # a GPU this machine lacks: the runs say so, in this process, as before
            return []
        slots = slots[: min(runs, workers or runs)]
        slots = [replace(s, threads=max(cores // len(slots), 1)) for s in slots]  # fewer processes, more threads
    elif device.startswith("cuda"):
        return []
    else:
        slots = plan_workers(DispatchConfig(devices="cpu", workers=min(runs, workers or cores)), [], cores)
    return slots if len(slots) > 1 else []


def run_seeds(
    workload: Workload,
    runs: list[SeedRun],
    slots: list[WorkerSlot],
    device: str,
    progress: Callable[[Progress], None] = lambda event: None,
    fn: Callable[..., Any] | None = None,
) -> list[SeedResult]:
    """Every run's result, in the order of `runs`: on `slots`' processes, or here when there are none
    (`fn`, the workload loaded here, or loaded now; `device` as final's, resolved by pick_device)."""
    if not slots:
        from hpsearch.dispatch.inline import pick_device
        from hpsearch.workloads.loader import load_workload

        fn = fn or load_workload(workload)
        here = pick_device(device, command=workload.kind == "command")
        results = []
        for run in runs:
            progress(RunStarted(run, len(runs), THIS_PROCESS))
            results.append(run_one(fn, run, here))
            progress(RunEnded(results[-1], len(runs)))
        return results
    return _Pool(workload, slots, len(runs), progress).run(runs)


def run_one(fn: Callable[..., Any], run: SeedRun, device: str, fd_level: bool = False) -> SeedResult:
    """One run in this process, its output in its log (record.log_path; fd_level as run_captured's),
    its reported split checked."""
    from hpsearch.workloads.capture import run_captured
    from hpsearch.workloads.function import run_trial

    if hasattr(fn, "kept"):
        fn.kept = None
    ctx = _TestContext.open(run.record, device)
    [outcome] = run_captured([run.record], fd_level, lambda: [run_trial(_split_checked(fn), ctx, run.record.metric)])
    kept = getattr(fn, "kept", None) if outcome.state == TrialStatus.COMPLETE else None
    return SeedResult(run, outcome.state, outcome.metrics, outcome.reason, outcome.duration_s, outcome.log, kept)


@dataclass
class _TestContext(TrialContext):
    """The trial object of a test run: a `split` in a report is the split evaluated on, not a metric."""

    def report(self, epoch: int, iterations: int | None = None, **metrics: Any) -> None:
        _check_split(metrics.pop(SPLIT_LABEL, None), self.split)
        super().report(epoch, iterations, **metrics)


def _split_checked(fn: Callable[..., Any]) -> Callable[[TrialContext], Any]:
    """`fn`, its returned dict's "split" entry (if any) checked and taken out of the metrics."""

    def call(ctx: TrialContext) -> Any:
        result = fn(ctx)
        if isinstance(result, dict) and SPLIT_LABEL in result:
            result = dict(result)
            _check_split(result.pop(SPLIT_LABEL), ctx.split)
        return result

    return call


def _check_split(reported: Any, asked: str) -> None:
    if (reason := wrong_split(reported, asked)) is not None:
        raise TrialFailed(reason)


@dataclass(frozen=True)
class _LoadFailed:
    """Worker -> pool: the workload cannot be loaded (the error's template: the CLI renders its settings)."""

    template: str


class _Pool:
    """Worker processes (spawned), one run each at a time; a dead one fails its run and is replaced."""

    def __init__(self, workload: Workload, slots: list[WorkerSlot], total: int, progress: Callable[..., None]) -> None:
        import multiprocessing

        self.context = multiprocessing.get_context("spawn")
        self.arg, self.slots, self.total, self.progress = workload.to_arg(), slots, total, progress
        self.opened = 0  # processes started: names them in the progress lines

    def run(self, runs: list[SeedRun]) -> list[SeedResult]:
        pending, results = list(runs), {}  # results: (rank, index) -> result
        workers = [self._start(slot) for slot in self.slots]
        try:
            while pending or any(w.run is not None for w in workers):
                for w in workers:
                    if w.run is None and pending:
                        given = pending.pop(0)
                        w.give(given)
                        self.progress(RunStarted(given, self.total, w.name))
                for conn in wait([w.conn for w in workers if w.run is not None]):
                    i = next(i for i, w in enumerate(workers) if w.conn is conn)
                    result = workers[i].receive()
                    if result is None:  # it died: its run failed; a fresh process takes its place
                        result = workers[i].died()
                        workers[i] = self._start(workers[i].slot) if pending else workers[i]
                    results[result.run.rank, result.run.index] = result
                    self.progress(RunEnded(result, self.total))
        finally:
            for w in workers:
                w.stop()
        return [results[run.rank, run.index] for run in runs]

    def _start(self, slot: WorkerSlot) -> _Worker:
        self.opened += 1
        return _Worker(self.context, slot, self.arg, f"worker {self.opened} on {slot.label}")


class _Worker:
    """One worker process of the pool and the run it holds."""

    def __init__(self, context: Any, slot: WorkerSlot, arg: str, name: str) -> None:
        self.slot, self.name, self.started = slot, name, 0.0
        self.run: SeedRun | None = None
        self.conn, theirs = context.Pipe()
        self.proc = context.Process(
            target=_serve, args=(theirs, arg, slot.device, slot.visible, slot.threads), daemon=True
        )
        self.proc.start()
        theirs.close()

    def give(self, run: SeedRun) -> None:
        self.run, self.started = run, time.perf_counter()
        self.conn.send(run)

    def receive(self) -> SeedResult | None:
        """The result of its run (kept unpickled here), or None when it died."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            return None
        if isinstance(message, _LoadFailed):
            raise WorkloadError(message.template)
        result, self.run = message, None
        if result.kept is not None:
            result.kept = pickle.loads(result.kept)
        return result

    def died(self) -> SeedResult:
        """Its run, failed with how the process ended."""
        self.proc.join(5.0)
        code = self.proc.exitcode
        how = "did not exit" if code is None else f"signal {-code}" if code < 0 else f"exit code {code}"
        run, self.run = self.run, None
        assert run is not None
        self.conn.close()
        return SeedResult(run, TrialStatus.FAIL, {}, f"its process died ({how})", time.perf_counter() - self.started)

    def stop(self) -> None:
        """Close its connection (it exits) and make sure it is gone."""
        if not self.conn.closed:
            self.conn.close()
        self.proc.join(1.0 if self.run is None else 0.0)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(2.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def _serve(conn: Connection, arg: str, device: str, visible: str | None, threads: int) -> None:
    """A worker process: its GPU and threads set before torch loads, the workload loaded once, then
    one run per message until the connection closes."""
    from hpsearch.procs import parent_death_signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent ends workers
    parent_death_signal(signal.SIGTERM)  # a parent killed outright leaves no worker training on
    os.dup2(2, 1)  # what the workload prints outside a run must not mix with the data on stdout
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    from hpsearch.workloads import logbound
    from hpsearch.workloads.loader import load_workload

    logbound.start_keeper(
        fork=True
    )  # the log's keeper, forked before any thread or workload import (as a search's worker)

    try:
        fn = load_workload(arg)
    except WorkloadError as e:
        conn.send(_LoadFailed(e.template))
        return
    if "torch" in sys.modules:  # OMP_NUM_THREADS covers a workload that imports torch later
        sys.modules["torch"].set_num_threads(threads)
    while True:
        try:
            run = conn.recv()
        except (EOFError, OSError):
            return
        result = run_one(fn, run, device, fd_level=True)
        if result.kept is not None:
            result.kept = pickle.dumps(result.kept)  # plain pickle: the tensors' bytes, not shared memory
        try:
            conn.send(result)
        except OSError:  # the parent is gone
            return
