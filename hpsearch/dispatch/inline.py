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
from typing import TYPE_CHECKING

from hpsearch.dispatch.plan import AUTO, no_population_notice, visible_gpus
from hpsearch.dispatch.runner import TrialRunner
from hpsearch.limits import LimitOverrides
from hpsearch.procs import InterruptSignals
from hpsearch.workloads.api import EpochTiming, ReportHook, ReportsHook

if TYPE_CHECKING:
    from hpsearch.dispatch.source import Job, TrialSource


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
        self.overrides = overrides  # the log bound given for this run (no stall is watched for here): run_stage's
        self.notices: list[str] = []

    def run(self, source: TrialSource) -> None:
        from hpsearch.dispatch.source import Stop, Wait

        runner = TrialRunner(source.workload)
        runner.device = pick_device(self.device, command=source.workload.kind == "command")
        k = self.population
        if k != 1 and runner.entry is None:
            self.notices.append(no_population_notice(source.workload))
            k = 1
        if k == AUTO:  # (no entry point: k is 1 by now)
            k = runner.choose_k(source.space.midpoint()).k
            self.notices.append(f"population: K = {k} (measured)")
        with InterruptSignals(list):  # SIGTERM, SIGHUP and SIGUSR1 (preemption) end it as Ctrl-C does
            while True:
                jobs = source.next(int(k))
                if isinstance(jobs, Stop):
                    return
                if isinstance(jobs, Wait):
                    time.sleep(jobs.seconds)  # other machines' trials may fail and need replacing
                    continue
                by_number = {job.number: job for job in jobs}
                records = [job.record for job in jobs]
                batch = self._batch(source, by_number) if int(k) > 1 else None  # K > 1: through the population entry
                outcomes = runner.run(records, lambda record: self._on_report(source, by_number[record.number]), batch)  # noqa: B023 - called now
                source.finish_many(list(zip(jobs, outcomes)))

    @staticmethod
    def _on_report(source: TrialSource, job: Job) -> ReportHook:
        def on_report(epoch: int, metrics: dict[str, float], timing: EpochTiming) -> str | None:
            return source.report(job, epoch, metrics, timing.seconds, timing.iterations)

        return on_report

    @staticmethod
    def _batch(source: TrialSource, by_number: dict[int, Job]) -> ReportsHook:
        """The population's shared hook: every member's report of an epoch to the coordinator at once."""

        def on_reports(entries: list[tuple[int, int, dict[str, float], EpochTiming]]) -> list[str | None]:
            return source.report_many([(by_number[n], epoch, m, t.seconds, t.iterations) for n, epoch, m, t in entries])

        return on_reports
