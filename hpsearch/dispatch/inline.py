"""In-process execution: the stage's trials one after another in the calling process (--workers 0).

Simplest, with no process boundary: used by the tests of the search logic
and by library callers that pass no executor. A workload with a population
entry point may train K trials at a time here too. Each trial runs in its
study's folder (the current folder is restored after it) and prints into its
log: sys.stdout, sys.stderr and fd 1 are redirected for the duration, fd 2
stays the live view's (workloads/capture.py). Processes a trial leaves
running are its own business here: only worker processes lead a process
group to end them with.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from hpsearch.dispatch.plan import AUTO, no_population_notice, visible_gpus
from hpsearch.limits import LimitOverrides
from hpsearch.workloads.api import EpochTiming, ReportHook, ReportsHook, TrialContext
from hpsearch.workloads.capture import run_captured
from hpsearch.workloads.function import run_trial
from hpsearch.workloads.loader import load_workload

if TYPE_CHECKING:
    from hpsearch.coordinator import Coordinator, Job

IDLE_POLL_S = 1.0  # how often a coordinator with nothing to start looks again while others run trials


def pick_device(requested: str = "auto", command: bool = False) -> str:
    """'cuda:0' when a GPU is visible (and asked for), else 'cpu'.

    Call it after loading the workload: a function workload that did not
    import torch trains on no accelerator, and torch is not imported just to
    ask. A command's script may use the GPU: for it, nvidia-smi is asked.
    """
    if requested != "auto":
        return requested
    if command:
        return "cuda:0" if visible_gpus() else "cpu"
    if "torch" not in sys.modules:
        return "cpu"
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


class InlineExecutor:
    """Runs the stage's trials in the calling process: one after another, or K at a time as a population."""

    def __init__(
        self, device: str = "auto", population: int | str = 1, overrides: LimitOverrides = LimitOverrides()
    ) -> None:
        self.device = device
        self.population = population
        self.overrides = overrides  # the log bound given for this run (no stall is watched for here)
        self.notices: list[str] = []

    def run(self, run: Coordinator) -> None:
        from hpsearch.workloads.population import choose_population_size, population_entry, run_population

        fn = load_workload(run.info.spec.workload)
        device = pick_device(self.device, command=run.info.spec.workload.kind == "command")
        entry = population_entry(fn)
        k = self.population
        if k != 1 and entry is None:
            self.notices.append(no_population_notice(run.info.spec.workload))
            k = 1
        if k == AUTO and entry is not None:  # (entry is None: k is 1 by now)
            k = choose_population_size(entry, run.info.space.midpoint(), device).k
            self.notices.append(f"population: K = {k} (measured)")
        log_limit = run.info.spec.limits.with_overrides(self.overrides).log_limit
        while True:
            jobs = run.next_jobs(int(k))
            if not jobs:
                if not run.waiting_on_others():
                    return
                time.sleep(IDLE_POLL_S)  # other machines' trials may fail and need replacing
                continue
            for job in jobs:
                job.record = replace(job.record, log_limit=log_limit)
            records = [job.record for job in jobs]
            together = entry if int(k) > 1 else None  # the population entry point, when K > 1
            batch = self._batch(run, jobs) if together is not None else None
            contexts = [
                TrialContext.open(job.record, device, self._on_report(run, job), on_reports=batch) for job in jobs
            ]
            if together is None:
                [outcome] = run_captured(records, False, lambda: [run_trial(fn, contexts[0], jobs[0].metric)])  # noqa: B023 - run_captured calls it now
                run.finish(jobs[0], outcome)
                continue
            outcomes = run_captured(records, False, lambda: run_population(together, contexts, run.metric))  # noqa: B023 - called now
            run.finish_many(list(zip(jobs, outcomes)))

    @staticmethod
    def _on_report(run: Coordinator, job: Job) -> ReportHook:
        def on_report(epoch: int, metrics: dict[str, float], timing: EpochTiming) -> str | None:
            return run.report(job, epoch, metrics, timing.seconds, timing.iterations)

        return on_report

    @staticmethod
    def _batch(run: Coordinator, jobs: list[Job]) -> ReportsHook:
        """The population's shared hook: every member's report of an epoch to the coordinator at once."""
        by_number = {job.number: job for job in jobs}

        def on_reports(entries: list[tuple[int, int, dict[str, float], EpochTiming]]) -> list[str | None]:
            return run.report_many([(by_number[n], epoch, m, t.seconds, t.iterations) for n, epoch, m, t in entries])

        return on_reports
