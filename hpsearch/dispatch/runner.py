"""The one trial runner: a workload loaded once, and its trials run - one at a time, or K together
through its population entry point - in their study's folder with their output in their logs
(workloads/capture.py). The inline executor (inline.py) and the worker process (worker.py) both run
trials with it; they differ only in where a trial's reports go (the coordinator itself, or the
connection to it) and in how output is captured (Python's streams, or file descriptors too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hpsearch.workloads.api import ReportHook, ReportsHook, TrialContext, TrialOutcome, TrialRecord
from hpsearch.workloads.capture import run_captured
from hpsearch.workloads.function import run_trial
from hpsearch.workloads.loader import load_workload

if TYPE_CHECKING:
    from hpsearch.workloads.population import PopulationChoice
    from hpsearch.workloads.spec import Workload


class TrialRunner:
    """Loads `workload` (raises WorkloadError when it cannot) and runs its trials on `device`."""

    def __init__(self, workload: Workload | str, device: str = "cpu") -> None:
        from hpsearch.workloads.population import population_entry

        self.fn = load_workload(workload)
        self.entry = population_entry(self.fn)  # None: no population entry point, one trial at a time
        self.device = device

    def choose_k(self, params: Mapping[str, Any]) -> PopulationChoice:
        """Measure the population size that trains the most trials per second here (population "auto")."""
        from hpsearch.workloads.population import choose_population_size

        assert self.entry is not None, "choose_k needs a population entry point"
        return choose_population_size(self.entry, params, self.device)

    def run(
        self,
        records: Sequence[TrialRecord],
        on_report: Callable[[TrialRecord], ReportHook],
        on_reports: ReportsHook | None = None,
        fd_level: bool = False,
        after: Callable[[], object] | None = None,
    ) -> list[TrialOutcome]:
        """Run `records`' trials and classify how each ended. `on_report(record)` is the hook for that
        trial's reports; with `on_reports` (the population's shared hook) they train together as one
        population. `fd_level`: capture file descriptors 1 and 2 too (a worker process owns them).
        `after` runs once they ended, inside the capture (what it ends says its last words to the log)."""
        contexts = [TrialContext.open(r, self.device, on_report(r), on_reports=on_reports) for r in records]

        def body() -> list[TrialOutcome]:
            if on_reports is not None and self.entry is not None:
                from hpsearch.workloads.population import run_population

                outcomes = run_population(self.entry, contexts, records[0].metric)
            else:
                outcomes = [run_trial(self.fn, ctx, ctx.record.metric) for ctx in contexts]
            if after is not None:
                after()
            return outcomes

        return run_captured(records, fd_level, body)
