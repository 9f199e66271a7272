"""The workload API: what a user's training code receives, and how a trial's ending is told.

A workload is a plain function `train(trial)`; it needs no import of hpsearch.
It reads `trial.params`, `trial.epochs`, `trial.device`, `trial.seed`, calls
`trial.report(epoch, **metrics)` once per epoch and returns a dict of metrics
(or one float, the study's metric). Optionally it calls
`trial.watch(model, optimizer, loss_fn)` once and honours `trial.subset`: that
is all the instruments (sanity checks, LR range test, update:weight ratios)
need; see docs/instruments.md.

One `TrialRecord` describes a trial from the coordinator to the workload: it
is made once, when the coordinator asks Optuna for the trial, travels as is
(pickled) to whichever process trains it, and `TrialContext.open` turns it
into the object the workload sees. The ending comes back as a TrialOutcome.
"""

from __future__ import annotations

import enum
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hpsearch.divergence import DIVERGED, final_value_diverged
from hpsearch.errors import TrialStopped
from hpsearch.limits import LOG_LIMIT
from hpsearch.workloads import checkpoint

# A report's or a returned dict's "split" entry names the split evaluated on (a text label, not a
# metric): `final` checks it (final_runs.py), every other run leaves it out of the metrics.
SPLIT_LABEL = "split"


def wrong_split(reported: Any, asked: str) -> str | None:
    """Why a run asked for the test split does not count: it reported another split (None: it did
    not say, said "test", or was not asked for the test split). For every workload kind (final_runs.py, command.py)."""
    if asked != "test" or reported is None or reported == "test":
        return None
    evaluated = "validation" if reported in ("val", "valid", "validation") else "another split"
    return f'the workload reported split "{reported}", not "test": it evaluated on {evaluated}'


class EpochTiming(NamedTuple):
    """How long a reported epoch took, measured in the trial's process (feeds the progress display)."""

    seconds: float | None
    iterations: int | None  # optimiser steps in the epoch, when the workload says


# Called by trial.report with (epoch, metrics, timing): returns None to go on, or the reason to stop.
ReportHook = Callable[[int, dict[str, float], EpochTiming], "str | None"]
# Called once for several trials' reports of one epoch (a population's): with [(trial number, epoch,
# metrics, timing)], returns one reason (or None) per entry. Shared by the contexts of one population.
ReportsHook = Callable[[list[tuple[int, int, dict[str, float], EpochTiming]]], "list[str | None]"]


@dataclass(frozen=True)
class TrialRecord:
    """One trial, as the coordinator hands it out: everything a workload needs to run it."""

    number: int
    params: dict[str, Any]
    epochs: int
    seed: int
    stage: str = "coarse"
    study: str = ""
    metric: str = ""  # the study's metric: what a bare float returned by the workload stands for
    # "search" for trials of a stage; "sanity" and "lr_find" when an instrument
    # runs the workload. Workloads may ignore it: the instruments steer through watch().
    mode: str = "search"
    # When set, train on only the first `subset` training examples (the sanity
    # check's overfit-a-tiny-subset); None means all of them.
    subset: int | None = None
    # Where the trial's stdout and stderr go (absolute path on the machine that runs it); "" = not captured.
    log_path: str = ""
    # The folder the trial runs in (its study file's, absolute); "" = wherever the process is.
    workdir: str = ""
    # The split the workload evaluates on: "val" in every stage; "test" only when the final run tests.
    split: str = "val"
    # Bytes of its output the log keeps: the first and the last half, one line between (0: all; limits.py).
    log_limit: int = LOG_LIMIT
    # The trial's own folder for checkpoints, the same on every run of the trial ("" = none: no resume).
    checkpoint_dir: str = ""
    # Which run of the trial this is: 1, or 2 and more when it is resumed (from its last checkpoint).
    attempt: int = 1
    # A resumed run's first training loss of the trial's first run: the divergence rule's baseline.
    first_loss: float | None = None


class RecordFields:
    """A TrialRecord's fields, read through `self.record` (the trial object and the coordinator's job)."""

    record: TrialRecord

    @property
    def number(self) -> int:
        return self.record.number

    @property
    def params(self) -> dict[str, Any]:
        return self.record.params

    @property
    def epochs(self) -> int:
        return self.record.epochs

    @property
    def seed(self) -> int:
        return self.record.seed

    @property
    def stage(self) -> str:
        return self.record.stage

    @property
    def study(self) -> str:
        return self.record.study

    @property
    def metric(self) -> str:
        return self.record.metric

    @property
    def mode(self) -> str:
        return self.record.mode

    @property
    def subset(self) -> int | None:
        return self.record.subset

    @property
    def split(self) -> str:
        return self.record.split


@dataclass
class TrialContext(RecordFields):
    """What a workload's `train(trial)` receives: its record's fields, the device, report and watch."""

    record: TrialRecord
    device: str = "cpu"
    _on_report: ReportHook | None = field(default=None, repr=False)
    _on_reports: ReportsHook | None = field(default=None, repr=False)
    _curves: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _last_report: float = field(default_factory=time.perf_counter, repr=False)
    _watcher: Any = field(default=None, repr=False)
    # Set by an instrument to steer the watcher it gets (learning rate, early stops).
    _on_watch: Callable[[Any], None] | None = field(default=None, repr=False)

    @classmethod
    def open(
        cls,
        record: TrialRecord,
        device: str,
        on_report: ReportHook | None = None,
        on_watch: Callable[[Any], None] | None = None,
        on_reports: ReportsHook | None = None,
    ) -> TrialContext:
        """The trial object for `record` on `device`: the one place a TrialContext is made for a run.

        `on_report(epoch, metrics)` hears each report and returns a reason to
        stop (or None); `on_watch(watcher)` lets an instrument steer the loop;
        `on_reports`, shared by a population's contexts, hears all their
        reports of an epoch at once (`report_together`).
        """
        return cls(record, device, _on_report=on_report, _on_reports=on_reports, _on_watch=on_watch)

    def watch(self, model: Any, optimizer: Any, loss_fn: Any = None) -> None:
        """Let hpsearch look inside the training loop; call once, after building them.

        `optimizer` must be a torch.optim.Optimizer; `loss_fn` the loss module the
        loop calls on (logits, targets), e.g. nn.CrossEntropyLoss() (optional,
        but the sanity checks and the LR range test need it). The trial then
        records the per-epoch update:weight ratio as the curve `update_ratio`.
        Calling it again replaces the previous hooks.
        """
        from hpsearch.workloads.watch import Watcher

        self.close()
        self._watcher = Watcher(model, optimizer, loss_fn)
        if self._on_watch is not None:
            self._on_watch(self._watcher)

    @property
    def checkpoint_dir(self) -> Path | None:
        """This trial's own folder for checkpoints, the same on every run of it (a resumed run finds there
        what the interrupted one saved); None outside a stage (sanity, lr-find: nothing to resume)."""
        return Path(self.record.checkpoint_dir) if self.record.checkpoint_dir else None

    @property
    def attempt(self) -> int:
        """Which run of this trial this is: 1, or 2 and more for a run that resumes it."""
        return self.record.attempt

    def save_checkpoint(self, state: Any, name: str = checkpoint.NAME) -> Path | None:
        """Save `state` (a dict of state_dicts, the epoch...) in the trial's folder, atomically: a kill while
        saving leaves the previous one whole. None when there is no folder or it cannot be written."""
        folder = self.checkpoint_dir
        return checkpoint.save(folder, state, name) if folder is not None else None

    def load_checkpoint(self, name: str = checkpoint.NAME) -> Any | None:
        """What the trial saved last (on an earlier run, when this one resumes it; tensors on the CPU), or
        None: nothing saved, no folder, or a file that cannot be read (said in the log: start over)."""
        folder = self.checkpoint_dir
        return checkpoint.load(folder, name) if folder is not None else None

    @property
    def watcher(self) -> Any:
        """The Watcher of the last `watch` call, or None when the workload never called it."""
        return self._watcher

    def close(self) -> None:
        """Remove the watcher's hooks (run_trial calls it when the trial ends)."""
        if self._watcher is not None:
            self._watcher.close()

    def report(self, epoch: int, iterations: int | None = None, **metrics: float) -> None:
        """Record this epoch's metrics (losses, accuracies). May end the trial early.

        `iterations`, optional, is how many optimiser steps the epoch took:
        with it, progress shows the time per iteration (and warns above the
        recipe's 500 ms); without it, only the time per epoch is known.
        When the loss diverges or a pruner gives up on the trial, this raises
        an exception that ends `train`; workloads need not catch it.
        """
        values, timing = self._note(iterations, metrics)
        if self._on_report is not None:
            reason = self._on_report(epoch, values, timing)
            if reason is not None:
                raise TrialStopped(reason)

    def _note(self, iterations: int | None, metrics: dict[str, Any]) -> tuple[dict[str, float], EpochTiming]:
        """This trial's own record of an epoch (its curves, its time); the values as numbers."""
        now = time.perf_counter()
        timing = EpochTiming(now - self._last_report, int(iterations) if iterations else None)
        self._last_report = now
        values = {k: as_number(v) for k, v in metrics.items() if k != SPLIT_LABEL}
        for k, v in values.items():
            self._curves.setdefault(k, []).append(v)
        if self._watcher is not None:
            ratio = self._watcher.end_epoch()
            if ratio is not None and "update_ratio" not in values:
                self._curves.setdefault("update_ratio", []).append(ratio)
        return values, timing

    @property
    def curves(self) -> dict[str, list[float]]:
        """Every metric reported so far, one value per report (per epoch)."""
        return self._curves


def report_together(
    contexts: list[TrialContext], epoch: int, metrics: list[dict[str, float]]
) -> list[str | None] | None:
    """Report one epoch of several trials in one call of their shared `on_reports` hook (one message
    and one storage write for a population's epoch, not one per member); returns each trial's reason to
    stop (or None). None, reporting nothing, when they share no such hook: report each on its own."""
    hook = contexts[0]._on_reports if contexts else None
    if hook is None or any(c._on_reports is not hook for c in contexts):
        return None
    entries = []
    for ctx, values in zip(contexts, metrics):
        noted, timing = ctx._note(None, values)
        entries.append((ctx.number, epoch, noted, timing))
    return hook(entries)


class TrialStatus(enum.StrEnum):
    """How one trial ended, as its workload's run tells it (Optuna's TrialState is what storage keeps).
    A StrEnum: str() and f-strings give the value ('complete'), so messages and stored text read as before."""

    COMPLETE = "complete"
    PRUNED = "pruned"
    FAIL = "fail"


@dataclass
class TrialOutcome:
    """How one trial ended: its TrialStatus, with the metrics, or the reason it was pruned or failed."""

    state: TrialStatus
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)
    duration_s: float = 0.0
    log: str = ""  # "host:path" of the trial's captured output, when it was captured
    log_tail: str = ""  # its last lines, kept with the trial (shown for failed trials, also from other machines)


def result_outcome(result: Any, metric: str, curves: dict[str, list[float]], duration_s: float) -> TrialOutcome:
    """How a trial that returned `result` ended: complete, pruned ('diverged': non-finite metric) or
    fail (a result that is neither a dict of numbers nor a number)."""
    try:
        metrics = normalize_result(result, metric)
    except ValueError as e:
        return TrialOutcome(TrialStatus.FAIL, {}, str(e), curves, duration_s)
    if final_value_diverged(metrics.get(metric)):
        return TrialOutcome(TrialStatus.PRUNED, metrics, DIVERGED, curves, duration_s)
    return TrialOutcome(TrialStatus.COMPLETE, metrics, "", curves, duration_s)


def as_number(value: Any) -> float:
    """A reported or returned value as a float: Python and numpy numbers, 0-d tensors and arrays
    (anything with __float__, or a one-element .item()). Raises ValueError for anything else."""
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ValueError(f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        item = getattr(value, "item", None)
        if callable(item):
            try:
                return float(item())
            except (TypeError, ValueError, RuntimeError):
                pass
    raise ValueError(f"{type(value).__name__} {value!r} is not a number")


def normalize_result(result: Any, metric: str) -> dict[str, float]:
    """A workload returns a dict of metrics or a single number (= the study's metric): Python or
    numpy numbers, 0-d tensors."""
    if isinstance(result, dict):
        try:
            return {str(k): as_number(v) for k, v in result.items() if k != SPLIT_LABEL}
        except ValueError:
            raise ValueError(f"workload returned non-numeric metrics: {result!r}") from None
    try:
        return {metric: as_number(result)}
    except ValueError:
        raise ValueError(f"workload returned {type(result).__name__}; return a dict of metrics or a number") from None


def exception_reason(e: BaseException) -> str:
    """The exception's last line, as a trial's reason: 'ValueError: lr too large'."""
    text = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()
    return text[-1] if text else type(e).__name__
