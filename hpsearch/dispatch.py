"""Dispatch: who runs the trials a stage's coordinator hands out.

`PoolExecutor` (what the CLI uses) keeps long-lived worker processes, one or
more per device, started once per stage: torch import, CUDA context and
dataset loading happen once per worker, so a short trial costs its training
time plus a few milliseconds. The calling process stays the coordinator
(stages.StageRun): the only one that talks to the storage, which keeps grid
stages free of duplicates and avoids storage locks between workers. Workers
send each epoch's report and get back go on / stop (divergence, pruning);
their outcomes come back as TrialOutcome.

Faults are data: a worker that dies mid-trial (segfault, OOM kill,
os._exit) fails its trial with `worker died (signal N)` / `worker died (exit
code N)` and is replaced; a trial past --trial-timeout has its worker killed
and replaced, reason `timeout`. SIGINT/SIGTERM stop every worker before the
stage records its running trials as interrupted; a second signal during that
clean-up exits at once, workers killed first.

`InlineExecutor` runs trials one after another in this process (--workers 0,
and the library default): simplest, used by tests of the search logic.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import TYPE_CHECKING, Any

from hpsearch.errors import DispatchError, WorkloadError
from hpsearch.workload import TrialContext, TrialOutcome, load_workload, run_trial

if TYPE_CHECKING:
    from hpsearch.stages import Job, StageRun

TIMEOUT_REASON = "timeout"
AUTO = "auto"
NVIDIA_SMI_TIMEOUT_S = 10.0  # nvidia-smi can be slow on a busy multi-GPU box; a hang must not block the CLI
EXIT_WAIT_S = 1.0  # an idle worker asked to exit gets this long before SIGKILL: it holds no pending work
DEATH_WAIT_S = 5.0  # a worker whose connection broke gets this long to be reaped before SIGKILL
IDLE_POLL_S = 1.0  # longest wait for a message when no deadline is near: keeps signals and deaths prompt


# ----------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class DispatchConfig:
    """How trials are spread over the machine, as given on the command line (None = default)."""

    devices: str = "auto"  # auto: every visible CUDA GPU, else the CPU
    per_device: int | None = None  # trials at once per GPU; default 1: a GPU runs one small trial well
    workers: int | None = None  # CPU worker processes; default one per core; 0 = in this process
    trial_timeout: float | None = None  # seconds; None = no limit
    # Trials trained together per worker (population mode); "auto" measures the best K; None = 1.
    population: int | str | None = None


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process to start: where it trains and how many threads torch may use there."""

    device: str  # what trial.device says: "cpu" or "cuda:0" (the only GPU the worker sees)
    visible: str | None  # CUDA_VISIBLE_DEVICES for the worker (a physical GPU id or UUID); None on CPU
    threads: int  # torch intra-op threads: the cores split between workers, so none are oversubscribed
    label: str  # for messages: "cpu", "cuda:2"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """Ids of the CUDA GPUs this process may use, found WITHOUT importing torch.

    CUDA_VISIBLE_DEVICES when it is set (its entries: ids or UUIDs; empty or
    -1 hides every GPU), else one id per line of `nvidia-smi -L`; no
    nvidia-smi means no GPU.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [s.strip() for s in env.split(",") if s.strip()]
        # CUDA stops at the first invalid entry; -1 is the usual way to hide every GPU.
        return [] if not ids or ids[0] == "-1" else ids
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(l for l in listing.stdout.splitlines() if l.startswith("GPU "))]


def plan_workers(config: DispatchConfig, gpus: list[str] | None = None, cores: int | None = None) -> list[WorkerSlot]:
    """The worker processes for `config`: per GPU, --per-device of them; on CPU, --workers of them.

    `gpus` and `cores` default to what this machine has (visible_gpus(),
    cpu_cores()). Raises DispatchError for options the machine cannot meet.
    """
    gpus = visible_gpus() if gpus is None else gpus
    cores = cpu_cores() if cores is None else cores
    chosen = _choose_gpus(config.devices, gpus)
    if chosen:
        if config.workers not in (None, 0):
            raise DispatchError("--workers sets CPU workers; on GPUs use --per-device (or --devices cpu)")
        per_device = config.per_device or 1
        threads = max(cores // (len(chosen) * per_device), 1)
        return [
            WorkerSlot("cuda:0", gpus[index], threads, f"cuda:{index}") for index in chosen for _ in range(per_device)
        ]
    if config.per_device is not None:
        raise DispatchError("--per-device counts trials per GPU and no GPU is in use; on CPU use --workers N")
    workers = cores if config.workers is None else config.workers
    threads = max(cores // max(workers, 1), 1)
    return [WorkerSlot("cpu", None, threads, "cpu") for _ in range(workers)]


def _choose_gpus(devices: str, gpus: list[str]) -> list[int]:
    """Indices (into the visible GPUs) that `--devices` selects; [] means the CPU."""
    devices = devices.strip().lower()
    if devices == "cpu":
        return []
    if devices == "auto":
        return list(range(len(gpus)))
    if not gpus:
        raise DispatchError(f"--devices {devices}: no CUDA GPU is visible (nvidia-smi finds none); use --devices cpu")
    if devices == "cuda":
        return list(range(len(gpus)))
    chosen: list[int] = []
    for item in devices.split(","):
        name, _, index = item.strip().partition(":")
        if name != "cuda" or not index.isdigit():
            raise DispatchError(f"--devices {devices}: {item.strip()!r} is not cuda:N; use auto, cpu, cuda or cuda:0,cuda:2")
        if int(index) >= len(gpus):
            raise DispatchError(
                f"--devices {devices}: cuda:{index} does not exist; {len(gpus)} GPU(s) visible: cuda:0..cuda:{len(gpus) - 1}"
            )
        if int(index) not in chosen:
            chosen.append(int(index))
    return chosen


def make_executor(config: DispatchConfig) -> InlineExecutor | PoolExecutor:
    """The executor for `config`: a worker pool, or InlineExecutor for --workers 0."""
    if config.trial_timeout is not None and config.trial_timeout <= 0:
        raise DispatchError("--trial-timeout must be a positive number of seconds")
    population = parse_population(config.population)
    if config.workers == 0 and config.per_device is None:
        if config.trial_timeout is not None:
            raise DispatchError("--trial-timeout needs worker processes; --workers 0 runs trials in this process")
        return InlineExecutor("cpu" if config.devices == "cpu" else "auto", population)
    return PoolExecutor(plan_workers(config), config.trial_timeout, population)


def parse_population(value: int | str | None) -> int | str:
    """--population: a positive K, or 'auto' (measured by a worker). None means 1."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AUTO
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise DispatchError(f"--population {value}: use a number of trials trained together (e.g. 32) or auto") from None
    if k < 1:
        raise DispatchError(f"--population {value}: must be 1 or more (1 = one trial per worker)")
    return k


def probe_params(space: Any) -> dict[str, Any]:
    """A middle point of the space: what auto-K probes train with (the log-midpoint of each range)."""
    params: dict[str, Any] = {}
    for p in space:
        if hasattr(p, "values"):
            params[p.name] = p.values[len(p.values) // 2]
        else:
            mid = p.unscale((p.scale(p.low) + p.scale(p.high)) / 2)
            params[p.name] = int(round(mid)) if p.is_int else mid
    return params


def no_population_notice(workload: str) -> str:
    return f"note: workload {workload} has no population entry point (fn.population); running one trial per worker"


# ----------------------------------------------------------------------------- in-process


def pick_device(requested: str = "auto") -> str:
    """'cuda:0' when a GPU is visible (and asked for), else 'cpu'.

    Call it after loading the workload: one that did not import torch trains
    on no accelerator, and torch is not imported just to ask.
    """
    if requested != "auto":
        return requested
    if "torch" not in sys.modules:
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class InlineExecutor:
    """Runs the stage's trials in the calling process: one after another, or K at a time as a population."""

    def __init__(self, device: str = "auto", population: int | str = 1) -> None:
        self.device = device
        self.population = population
        self.notices: list[str] = []

    def run(self, run: StageRun) -> None:
        from hpsearch.population import choose_population_size, population_entry, run_population

        fn = load_workload(run.info.spec.workload)
        device = pick_device(self.device)
        entry = population_entry(fn)
        k = self.population
        if k != 1 and entry is None:
            self.notices.append(no_population_notice(run.info.spec.workload))
            k = 1
        if k == AUTO:
            k = choose_population_size(entry, probe_params(run.info.space), device).k  # type: ignore[arg-type]
            self.notices.append(f"population: K = {k} (measured)")
        while True:
            jobs = []
            while len(jobs) < int(k) and (job := run.next_job()) is not None:
                jobs.append(job)
            if not jobs:
                if not run.waiting_on_others():
                    return
                time.sleep(IDLE_POLL_S)  # other machines' trials may fail and need replacing
                continue
            if entry is None or int(k) == 1:
                run.finish(jobs[0], run_trial(fn, self._context(run, jobs[0], device), jobs[0].metric))
                continue
            contexts = [self._context(run, job, device) for job in jobs]
            for job, outcome in zip(jobs, run_population(entry, contexts, run.metric)):
                run.finish(job, outcome)

    @staticmethod
    def _context(run: StageRun, job: Job, device: str) -> TrialContext:
        ctx = TrialContext(
            number=job.number,
            params=job.params,
            epochs=job.epochs,
            seed=job.seed,
            device=device,
            stage=job.stage,
            study=job.study,
        )
        ctx._on_report = lambda epoch, metrics: run.report(job, epoch, metrics, ctx.epoch_seconds, ctx.iterations)
        return ctx


# ----------------------------------------------------------------------------- worker pool


class _Worker:
    """The coordinator's handle on one worker process."""

    def __init__(self, slot: WorkerSlot, workload: str) -> None:
        self.slot = slot
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
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hpsearch.worker", *args],
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=2,  # a workload's prints must not mix with the data hpsearch writes to stdout
                # Own session: a terminal's Ctrl-C goes to the coordinator, which stops workers itself.
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False
        self.has_population = False  # told by the worker once its workload is loaded
        self.jobs: dict[int, Job] = {}  # trial number -> job: one, or a population of them
        self.deadline: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def give(self, jobs: list[Job], timeout: float | None) -> None:
        """Send one trial, or several to train together as a population (one deadline for all)."""
        self.jobs = {job.number: job for job in jobs}
        self.deadline = None if timeout is None else time.monotonic() + timeout
        payloads = [
            {
                "number": job.number,
                "params": job.params,
                "epochs": job.epochs,
                "seed": job.seed,
                "stage": job.stage,
                "study": job.study,
                "metric": job.metric,
            }
            for job in jobs
        ]
        if len(payloads) == 1:
            self.conn.send(("trial", payloads[0]))
        else:
            self.conn.send(("population", payloads))

    def kill(self) -> None:
        """SIGKILL and reap: used for timeouts and interrupts, when the trial is abandoned anyway."""
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        self.proc.wait()
        if not self.conn.closed:
            self.conn.close()

    def close(self, deadline: float) -> None:
        """Ask the worker to exit (by closing its connection); SIGKILL it if still there at `deadline`."""
        if not self.conn.closed:
            self.conn.close()
        try:
            self.proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            self.kill()

    def death_reason(self) -> str:
        """Why the worker is gone, once its connection closed: 'worker died (signal 9)'."""
        try:
            code = self.proc.wait(timeout=DEATH_WAIT_S)
        except subprocess.TimeoutExpired:  # connection broke but the process lingers: finish it
            self.proc.kill()
            code = self.proc.wait()
        self.conn.close()
        return f"worker died (signal {-code})" if code < 0 else f"worker died (exit code {code})"


class PoolExecutor:
    """Runs a stage's trials on long-lived worker processes, one trial per worker at a time.

    `slots` says which workers to start (see plan_workers); `trial_timeout`
    (seconds) kills and replaces a worker whose trial runs longer, recording
    the trial as FAIL `timeout`. Every worker is gone when `run` returns or
    raises.
    """

    def __init__(self, slots: list[WorkerSlot], trial_timeout: float | None = None, population: int | str = 1) -> None:
        if not slots:
            raise DispatchError("no worker to start; pass --workers 1 or more")
        self.slots = slots
        self.trial_timeout = trial_timeout
        self.population = population  # K trials per worker at once; AUTO until a worker measured it
        self.notices: list[str] = []
        self.workers: list[_Worker] = []
        self.workload = ""
        self.space: Any = None

    def run(self, run: StageRun) -> None:
        self.workload = run.info.spec.workload
        self.space = run.info.space
        with self._signals():
            try:
                self.workers = [_Worker(slot, self.workload) for slot in self.slots]
                self._loop(run)
            except BaseException:
                self._kill_all()
                raise
            else:
                # Close every connection first, so workers shut down in parallel.
                for w in self.workers:
                    w.conn.close()
                deadline = time.monotonic() + EXIT_WAIT_S
                for w in self.workers:
                    w.close(deadline)
            finally:
                self.workers = []

    # -- the event loop

    def _loop(self, run: StageRun) -> None:
        while True:
            self._hand_out(run)
            busy = [w for w in self.workers if w.jobs]
            starting = [w for w in self.workers if not w.ready]
            if not busy and not starting and not run.waiting_on_others():
                return  # every worker idle and the stage wants no more trials
            for conn in wait([w.conn for w in self.workers], timeout=self._wait_time()):
                worker = next(w for w in self.workers if w.conn is conn)
                self._receive(run, worker)
            self._enforce_timeouts(run)

    def _hand_out(self, run: StageRun) -> None:
        if self.population == AUTO:
            return  # waiting for the first ready worker's measurement
        for w in self.workers:
            if w.ready and not w.jobs:
                jobs: list[Job] = []
                while len(jobs) < int(self.population) and (job := run.next_job()) is not None:
                    jobs.append(job)
                if not jobs:
                    return
                try:
                    w.give(jobs, self.trial_timeout)
                except OSError:  # died while idle: its death is read from the connection next
                    pass

    def _on_ready(self, worker: _Worker, has_population: bool) -> None:
        """A worker loaded the workload: settle K (fall back to 1, or have this worker measure it)."""
        worker.ready, worker.has_population = True, has_population
        if self.population == 1:
            return
        if not has_population:
            self.notices.append(no_population_notice(self.workload))
            self.population = 1
        elif self.population == AUTO and not any(w.jobs for w in self.workers):
            worker.jobs = {-1: None}  # type: ignore[dict-item]  # busy measuring
            worker.conn.send(("choose_k", probe_params(self.space)))

    def _receive(self, run: StageRun, worker: _Worker) -> None:
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
        elif kind == "report" and message[1] in worker.jobs:
            _, number, epoch, metrics, seconds, iterations = message
            reason = run.report(worker.jobs[number], epoch, metrics, seconds, iterations)
            try:
                worker.conn.send(("reply", reason))
            except OSError:
                pass  # it died meanwhile: the next read says how
        elif kind == "done" and message[1] in worker.jobs:
            outcome: TrialOutcome = message[2]
            job = worker.jobs.pop(message[1])
            if not worker.jobs:
                worker.deadline = None
            run.finish(job, outcome)

    def _replace(self, run: StageRun, worker: _Worker, reason: str) -> None:
        """Fail the dead (or killed) worker's trial with `reason` and start a fresh worker in its place."""
        index = self.workers.index(worker)
        if not worker.ready:
            # Never got as far as loading the workload: a replacement would die the same way.
            raise WorkloadError(
                f"workload {self.workload}: the worker process {reason} while loading it; "
                "run with --workers 0 to see the error in this process"
            )
        self.workers[index] = _Worker(worker.slot, self.workload)
        for job in worker.jobs.values():
            if job is not None:  # None: it was measuring K, no trial of the stage
                run.finish(job, TrialOutcome("fail", reason=reason, duration_s=time.perf_counter() - job.started))

    def _enforce_timeouts(self, run: StageRun) -> None:
        now = time.monotonic()
        for w in list(self.workers):
            if w.jobs and w.deadline is not None and now >= w.deadline:
                w.kill()
                self._replace(run, w, TIMEOUT_REASON)

    def _wait_time(self) -> float:
        deadlines = [w.deadline for w in self.workers if w.jobs and w.deadline is not None]
        if not deadlines:
            return IDLE_POLL_S
        return min(max(min(deadlines) - time.monotonic(), 0.0), IDLE_POLL_S)

    # -- stopping

    def _kill_all(self) -> None:
        for w in self.workers:
            w.kill()

    def _signals(self) -> Any:
        return _InterruptSignals(self)


class _InterruptSignals:
    """While the pool runs: SIGTERM acts like Ctrl-C (KeyboardInterrupt, so clean-up runs), and once
    one arrived, another SIGINT/SIGTERM kills the workers and exits at once (exit code 130)."""

    def __init__(self, pool: PoolExecutor) -> None:
        self.pool = pool
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; the caller handles its own
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._first)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _first(self, signum: int, frame: FrameType | None) -> None:
        for sig in self.saved:
            signal.signal(sig, self._again)
        raise KeyboardInterrupt

    def _again(self, signum: int, frame: FrameType | None) -> None:
        for w in self.pool.workers:
            try:
                w.proc.kill()
            except OSError:
                pass
        os._exit(130)

