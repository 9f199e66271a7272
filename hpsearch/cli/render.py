"""Rendering for the CLI: Rich tables and border warnings (live progress: progress.py).

Data (leaderboards, derived ranges) go to stdout; progress, warnings and
logs to stderr, so output pipes cleanly. Nothing here decides anything.
"""

from __future__ import annotations

import math
import shutil
import sys
from typing import Any, Sequence

import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpsearch.border import BorderFlag
from hpsearch.coordinator import StageResult
from hpsearch.space import fmt
from hpsearch.storage import StageInfo


def make_console(stderr: bool = False) -> Console:
    """A console that stays readable when piped: wide tables, no colours or cursor tricks.

    Bound to the stream of the moment it is made, so a trial that redirects
    sys.stdout/sys.stderr into its log (--workers 0) never swallows the live view.
    """
    stream = sys.stderr if stderr else sys.stdout
    console = Console(file=stream, highlight=False)
    if not console.is_terminal:
        console = Console(file=stream, highlight=False, width=max(140, shutil.get_terminal_size().columns))
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
    from hpsearch.divergence import loss_keys
    from hpsearch.report.plots import sparkline

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


def studies_table(rows: Sequence[Any]) -> Table:
    """`hpsearch studies`: one row per stage of each study (leaderboard.StageSummary)."""
    table = Table(header_style="bold")
    for col in ("study", "stage", "strategy", "trials", "complete", "failed", "best"):
        table.add_column(col)
    for r in rows:
        best = f"{r.metric} {r.best:.4f}" if r.best is not None else ""
        table.add_row(r.study, r.stage, r.strategy, str(r.trials), str(r.complete), str(r.failed), best)
    return table
