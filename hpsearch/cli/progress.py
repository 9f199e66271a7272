"""Live progress of a running stage on stderr (the coordinator's TrialEvents)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpsearch.search.coordinator import TrialEvent
from hpsearch.space import fmt
from hpsearch.store.storage import StageInfo
from hpsearch.workloads.api import TrialStatus

SLOW_ITERATION_S = 0.5  # the recipe: above ~500 ms per iteration things get dicey
RUNNING_ROWS = 8  # running trials listed under the bar; more would push the bar off a small terminal


@dataclass
class _Running:
    """What the display knows about one running trial."""

    started: float
    epochs: int
    epoch: int | None = None
    epoch_seconds: float | None = None
    iterations: int | None = None


class ProgressDisplay:
    """Live progress of a stage on stderr: a bar and the running trials on a terminal, one line per
    finished trial otherwise (CI logs), nothing with `quiet` except the slow-iteration warning.

    Shows trials done / running / failed of the stage's target, the best
    metric so far with its params, each running trial's time per iteration
    (per epoch when its workload does not pass `iterations=` to
    trial.report), and an ETA from this run's pace. Warns once when a
    trial's iterations take longer than 500 ms.
    """

    def __init__(self, console: Console, info: StageInfo, quiet: bool = False) -> None:
        self.console = console
        self.info = info
        self.metric = info.spec.metric
        self.quiet = quiet
        self.live: Live | None = None
        self.started = time.perf_counter()
        self.running: dict[int, _Running] = {}
        self.done = self.failed = self.target = 0
        self.done_at_start: int | None = None
        self.best: Any = None
        self.warned = False

    def __enter__(self) -> ProgressDisplay:
        if not self.quiet and self.console.is_terminal:
            self.live = Live(self, console=self.console, transient=True, refresh_per_second=4)
            self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.stop()

    def __call__(self, event: TrialEvent) -> None:
        if self.done_at_start is None:
            self.done_at_start = event.done
        self.done, self.target, self.failed = event.done, event.target, event.failed
        number = event.job.number
        if event.kind == "start":
            self.running[number] = _Running(time.perf_counter(), event.job.epochs)
        elif event.kind == "report":
            trial = self.running.setdefault(number, _Running(time.perf_counter(), event.job.epochs))
            trial.epoch, trial.epoch_seconds, trial.iterations = event.epoch, event.epoch_seconds, event.iterations
            self._check_speed(number, trial)
        elif event.kind == "finish" and event.outcome is not None:
            self.running.pop(number, None)
            self.best = event.best
            if not self.quiet and self.live is None:
                self._print_finished(event)

    def __rich__(self) -> Group:
        done_now = self.done - (self.done_at_start or 0)
        elapsed = time.perf_counter() - self.started
        eta = "?"
        if done_now > 0 and self.target > self.done:
            eta = _clock(elapsed / done_now * (self.target - self.done))
        elif self.target and self.done >= self.target:
            eta = "0:00:00"
        head = Table.grid(padding=(0, 1))
        head.add_row(
            Text(self.info.name, style="bold"),
            ProgressBar(total=max(self.target, 1), completed=self.done, width=20),
            Text(
                f"{self.done}/{self.target} done · {len(self.running)} running · {self.failed} failed · "
                f"{_clock(elapsed)} · eta {eta}"
            ),
        )
        lines: list[Any] = [head]
        if self.best is not None and self.best.value is not None:
            params = " ".join(f"{k}={fmt(v)}" for k, v in self.best.params.items())
            lines.append(Text(f"best {self.metric} {self.best.value:.4f} (trial {self.best.number}: {params})"))
        for number, trial in sorted(self.running.items())[:RUNNING_ROWS]:
            lines.append(Text(f"  trial {number}: {_epoch_text(trial)} · {_speed_text(trial)}", style="dim"))
        if len(self.running) > RUNNING_ROWS:
            lines.append(Text(f"  ... and {len(self.running) - RUNNING_ROWS} more running", style="dim"))
        return Group(*lines)

    def _check_speed(self, number: int, trial: _Running) -> None:
        if self.warned or not trial.iterations or trial.epoch_seconds is None:
            return
        per_iteration = trial.epoch_seconds / trial.iterations
        if per_iteration > SLOW_ITERATION_S:
            self.warned = True
            self.console.print(
                f"[yellow]warning:[/yellow] trial {number} takes {per_iteration * 1000:.0f} ms per iteration; "
                f"above ~{SLOW_ITERATION_S * 1000:.0f} ms things get dicey (the recipe): estimate the total time, "
                "or make trials cheaper (smaller model or data) before searching",
                soft_wrap=True,
                highlight=False,
            )

    def _print_finished(self, event: TrialEvent) -> None:
        best = ""
        if event.best is not None:
            best = f"best {self.metric} {event.best.value:.4f} (trial {event.best.number})"
        o = event.outcome
        assert o is not None  # checked by the caller
        params = " ".join(f"{k}={fmt(v)}" for k, v in event.job.params.items())
        value = o.metrics.get(self.metric)
        what = f"{self.metric}={value:.4f}" if value is not None and o.state == TrialStatus.COMPLETE else o.reason
        self.console.print(
            f"[{self.info.name}] trial {event.job.number} {o.state} {what} {params} ({o.duration_s:.1f}s)"
            f" · {event.done}/{event.target} done, {event.running} running, {event.failed} failed"
            f"{', ' + best if best else ''}",
            soft_wrap=True,
            highlight=False,
            markup=False,
        )


def _epoch_text(trial: _Running) -> str:
    if trial.epoch is None:
        return f"starting, {time.perf_counter() - trial.started:.1f}s"
    return f"epoch {trial.epoch + 1}/{trial.epochs}"


def _speed_text(trial: _Running) -> str:
    if trial.epoch_seconds is None:
        return "no epoch reported yet"
    if trial.iterations:
        return f"{trial.epoch_seconds / trial.iterations * 1000:.1f} ms/iteration"
    return f"{trial.epoch_seconds:.2f} s/epoch (iterations not reported)"


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
