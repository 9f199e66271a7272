"""Probes: running a study's workload once outside a search, for the instruments.

`hpsearch sanity` and `hpsearch lr-find` call the same `train(trial)` a
search calls, with `trial.mode` set ("sanity", "lr_find"), hand-picked
params, and hooks on the watcher the workload gives them through
`trial.watch(model, optimizer, loss_fn)`. Nothing else is asked of a workload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import SpecError, WorkloadError
from hpsearch.space import Param, Range, Space
from hpsearch.spec import StudySpec
from hpsearch.workloads.api import ReportHook, TrialContext, TrialOutcome, TrialRecord, TrialStatus
from hpsearch.workloads.function import run_trial
from hpsearch.workloads.loader import load_workload

LR_NAMES = ("lr", "learning_rate")  # the parameter the instruments steer
DECAY_NAMES = ("weight_decay", "wd", "l2", "decay")  # parameters the instruments switch off (or down)
WATCH_HINT = (
    "call trial.watch(model, optimizer, loss_fn) once in the workload, with loss_fn the loss module "
    "(e.g. nn.CrossEntropyLoss()) the loop calls on (logits, targets)"
)


@dataclass(frozen=True)
class ProbeResult:
    """How a probe run ended, and the watcher the workload handed over (None if it never called watch)."""

    outcome: TrialOutcome
    watcher: Any


def lr_param(spec: StudySpec) -> Param:
    """The study's learning-rate parameter (named lr or learning_rate)."""
    for name in LR_NAMES:
        if name in spec.space.names:
            return spec.space[name]
    raise SpecError(
        spec.path, "params", f"no learning-rate parameter; the instruments steer one named {' or '.join(LR_NAMES)}"
    )


def lr_bounds(param: Param) -> tuple[float, float]:
    """(lowest, highest) learning rate the study searches."""
    if isinstance(param, Range):
        return float(param.low), float(param.high)
    numbers = sorted(
        float(v) for v in param.values if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
    )
    if not numbers:
        raise SpecError("study", f"params.{param.name}", "needs positive numeric values for the instruments")
    return numbers[0], numbers[-1]


def base_params(space: Space, decay: str = "zero") -> dict[str, Any]:
    """One plausible point of the space (Space.midpoint), with weight decay 0 (decay="zero") or its
    smallest value ("low")."""
    params = space.midpoint()
    for p in space:
        if p.name in DECAY_NAMES:
            params[p.name] = 0.0 if decay == "zero" else p.lowest()
    return params


def require_training_loop(spec: StudySpec) -> None:
    """The instruments look inside the training loop (trial.watch): a command's script gives them no way in."""
    if spec.workload.kind == "command":
        raise SpecError(
            spec.path,
            "workload",
            "the sanity checks and the LR range test look inside the training loop, which a "
            'command workload hides; use a function workload (workload = "train.py:train") that calls trial.watch(...)',
        )


def run_probe(
    spec: StudySpec,
    params: dict[str, Any],
    epochs: int,
    mode: str,
    subset: int | None = None,
    on_watch: Callable[[Any], None] | None = None,
    on_report: ReportHook | None = None,
    seed: int = 0,
    device: str = "cpu",
    allow_fail: bool = False,
) -> ProbeResult:
    """Run the study's workload once with `params`; a stop raised by a hook ends it as 'pruned'.

    Raises WorkloadError when the workload crashed (its own bug, not a
    finding), unless `allow_fail` (the caller judges what was recorded).
    """
    require_training_loop(spec)
    fn = load_workload(spec.workload)
    record = TrialRecord(
        0, dict(params), epochs, seed, stage=mode, study=spec.name, metric=spec.metric, mode=mode, subset=subset
    )
    ctx = TrialContext.open(record, device, on_report, on_watch)
    outcome = run_trial(fn, ctx, spec.metric)
    if outcome.state == TrialStatus.FAIL and not allow_fail:
        raise WorkloadError(f"workload {spec.workload} crashed in {mode} mode: {outcome.reason}")
    return ProbeResult(outcome, ctx.watcher)
