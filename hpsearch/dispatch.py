"""Dispatch: who runs the trials a stage's coordinator hands out.

`InlineExecutor` runs them one after another in this process: the simplest
dispatcher, used by default and by tests. An executor asks the coordinator
(stages.StageRun) for jobs until it has none, runs each through the workload
API, and hands back every epoch's report and the outcome.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from hpsearch.workload import TrialContext, load_workload, run_trial

if TYPE_CHECKING:
    from hpsearch.stages import Job, StageRun


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
    """Runs the stage's trials sequentially in the calling process."""

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def run(self, run: StageRun) -> None:
        fn = load_workload(run.info.spec.workload)
        device = pick_device(self.device)
        while (job := run.next_job()) is not None:
            run.finish(job, run_trial(fn, self._context(run, job, device), job.metric))

    @staticmethod
    def _context(run: StageRun, job: Job, device: str) -> TrialContext:
        return TrialContext(
            number=job.number,
            params=job.params,
            epochs=job.epochs,
            seed=job.seed,
            device=device,
            stage=job.stage,
            study=job.study,
            _on_report=lambda epoch, metrics: run.report(job, epoch, metrics),
        )
