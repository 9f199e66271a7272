"""Rendering for the CLI: Rich tables, border warnings, live progress.

Data (leaderboards, derived ranges) go to stdout; progress, warnings and
logs to stderr, so output pipes cleanly. Nothing here decides anything.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from hpsearch.border import BorderFlag
from hpsearch.space import fmt
from hpsearch.stages import StageResult, TrialEvent
from hpsearch.storage import StageInfo


def make_console(stderr: bool = False) -> Console:
    """A console that stays readable when piped: wide tables, no colours or cursor tricks."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        console = Console(stderr=stderr, highlight=False, width=max(140, shutil.get_terminal_size().columns))
    return console


def leaderboard_table(df: pd.DataFrame, metric: str, param_names: Sequence[str], title: str) -> Table:
    multi_stage = df["stage"].nunique() > 1 if len(df) else False
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("rank", justify="right")
    table.add_column("trial", justify="right")
    if multi_stage:
        table.add_column("stage")
    table.add_column(metric, justify="right", style="bold")
    for name in param_names:
        table.add_column(name, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("time", justify="right")
    table.add_column("border")
    table.add_column("state / reason")
    # The diagnostics (update:weight ratio, lr hint, curve notes) only when some trial has them.
    diagnose = any(_has(df, c) for c in ("update_ratio", "lr_hint", "notes"))
    if diagnose:
        table.add_column("upd:w", justify="right")
        table.add_column("hints")
    for _, row in df.iterrows():
        value = row[metric]
        cells = [
            "" if pd.isna(row["rank"]) else str(row["rank"]),
            str(row["trial"]),
            *([str(row["stage"])] if multi_stage else []),
            "" if value is None or pd.isna(value) else f"{value:.4f}",
            *[_param_cell(row.get(n)) for n in param_names],
            str(row["epochs"]),
            "" if pd.isna(row["duration_s"]) else f"{row['duration_s']:.1f}s",
            str(row["border"]),
            "" if row["state"] == "COMPLETE" else f"{row['state']}: {row['reason']}".rstrip(": "),
        ]
        if diagnose:
            ratio = row.get("update_ratio")
            cells.append("" if ratio is None or pd.isna(ratio) else f"{ratio:.1e}")
            cells.append(", ".join(str(row.get(c) or "") for c in ("lr_hint", "notes") if row.get(c)))
        table.add_row(*cells, style=None if row["state"] == "COMPLETE" else "dim")
    return table


def _has(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and bool(df[column].replace("", None).notna().any())


def _param_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt(value)


def print_flags(console: Console, flags: Sequence[BorderFlag], stage: str = "") -> None:
    for f in flags:
        prefix = escape(f"[{stage}] ") if stage else ""
        console.print(f"[yellow]warning:[/yellow] {prefix}{escape(f.message())}", soft_wrap=True)


def changes_table(info: StageInfo) -> Table:
    """How a refine stage's space was derived from its parent: old range -> new range, and why."""
    table = Table(
        title=f"{info.name}: space narrowed around the top {info.settings.top_k} of {info.parent}",
        title_justify="left",
        header_style="bold",
    )
    for col in ("param", "old range", "", "new range", "why"):
        table.add_column(col)
    for c in info.changes:
        table.add_row(c["param"], c["old"], "→", c["new"], c["why"])
    return table


def stage_summary(result: StageResult, seconds: float) -> str:
    states: dict[str, int] = {}
    for t in result.trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in states.items() if s != "waiting")
    return f"stage {result.stage.name}: ran {result.ran} trials in {seconds:.1f}s; now {counts}"


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
        what = f"{self.metric}={value:.4f}" if value is not None and o.state == "complete" else o.reason
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


# ----------------------------------------------------------------------------- instruments


def sanity_table(report: Any) -> Table:
    """The sanity checks: one row per check, with expected vs measured and what to check."""
    colours = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "yellow"}
    table = Table(title=f"{report.study}: sanity checks", title_justify="left", header_style="bold")
    for col in ("check", "result", "expected", "measured", "what to check"):
        table.add_column(col)
    for c in report.checks:
        table.add_row(c.name, f"[{colours[c.status]}]{c.status}[/]", escape(c.expected), escape(c.measured), escape(c.advice))
    return table


def curves_text(trials: Sequence[Any], width: int = 40) -> list[str]:
    """One line per trial and loss: its per-epoch shape as a sparkline, on one log scale for all.

    So people without a display see the shapes: falling fast then flat is a
    good lr; almost linear is too low; rising or ragged is too high.
    """
    from hpsearch.plots import loss_keys, sparkline

    series: list[tuple[str, str, list[float]]] = []
    for t in trials:
        train, val = loss_keys(t.curves)
        for kind, key in (("train", train), ("val", val)):
            if key:
                series.append((t.label if kind == "train" or not train else "", kind, t.curves[key][-width:]))
    values = [v for _, _, ys in series for v in ys if math.isfinite(v) and v > 0]
    if not values:
        return []
    low, high = min(values), max(values)
    lines = []
    for label, kind, ys in series:
        finite = [v for v in ys if math.isfinite(v)]
        ends = f"{finite[0]:.3g} → {finite[-1]:.3g}" if finite else "not finite"
        if label:
            lines.append(label)
        lines.append(f"  {kind:<5} {sparkline(ys, low, high)}  {ends}")
    return lines
