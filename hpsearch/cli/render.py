"""Rendering for the CLI: Rich tables and border warnings (live progress: progress.py).

Data (leaderboards, derived ranges) go to stdout; progress, warnings and
logs to stderr, so output pipes cleanly. Nothing here decides anything.
"""

from __future__ import annotations

import math
import numbers
import re
import sys
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hpsearch.border import BorderFlag
from hpsearch.leaderboard import border_sides
from hpsearch.search.coordinator import StageResult
from hpsearch.space import fmt
from hpsearch.store.storage import StageInfo


def make_console(stderr: bool = False, width: int | None = None) -> Console:
    """A console for data or messages: no colours or cursor tricks when piped.

    Its width is `width`, else $COLUMNS, else the terminal's (of any standard
    stream, so `hpsearch leaderboard x | less` still fits the screen), else 80.
    Bound to the stream of the moment it is made, so a trial that redirects
    sys.stdout/sys.stderr into its log (--workers 0) never swallows the live view.
    """
    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, width=width)


# The leaderboard's look: no vertical rules, a rule under each header; `gap` spaces between columns.
_RULED = box.Box("    \n    \n ─  \n    \n    \n ─  \n    \n    \n")
MARKS = {"high": "↑", "low": "↓"}  # a param value on the border of its searched range (border.py)
OWN_COLUMNS = ("rank", "trial", "stage", "state", "reason", "epochs", "duration_s", "border", "update_ratio", "lr_hint", "notes")
STATE, HINTS = "<state>", "<hints>"  # the keys of columns made of several frame columns
_WRAP_FLOOR, _WRAP_WANT, _WORD_CAP, _WIDE_TEXT = 12, 30, 24, 40  # widths (chars) of the columns whose text wraps


@dataclass
class _Col:
    """One column of a leaderboard: its header and cells already as text."""

    key: str
    header: str
    cells: list[str]
    justify: JustifyMethod = "right"
    wrap: bool = False  # long text (reasons, hints): wraps at spaces instead of widening the table
    note: str = ""  # what its abbreviations stand for: "wd = weight_decay"

    @property
    def natural(self) -> int:
        lines = [line for text in (self.header, *self.cells) for line in text.splitlines()]
        return max((cell_len(line) for line in lines), default=0)

    def least(self, floor: int) -> int:
        """The narrowest this column may get: `floor` for wrapping text, else its natural width."""
        return min(self.natural, floor) if self.wrap else self.natural


class Leaderboard:
    """A leaderboard as a Rich renderable that lays itself out for the width it is printed at.

    Default: the columns that fit (params, then the metric, then state; more
    as room allows), param values marked ↑/↓ on a border, long names
    abbreviated, and a legend line saying what was abbreviated or left out.
    `wide`: every column, full names. `columns`: rank, trial and these frame
    columns. Nothing is cut with '…': text wraps at spaces, and when the
    columns need more than the width the table is wider (print with crop=False).
    """

    def __init__(
        self, df: pd.DataFrame, metric: str, param_names: Sequence[str], title: str,
        wide: bool = False, columns: Sequence[str] | None = None,
    ) -> None:
        self.df, self.metric, self.params, self.title = df, metric, list(param_names), title
        self.wide, self.columns = wide, list(columns) if columns else None
        # The leaderboard's own columns as this frame names them (a param may take `rank`: leaderboard.own_columns).
        self.own = {c: c for c in OWN_COLUMNS}
        self.own.update(df.attrs.get("columns", {}))
        self.rows = df.astype(object).where(df.notna(), None).to_dict("records") if len(df) else []
        self.marks = [{p: MARKS[side] for p, side in sides.items()} for sides in border_sides(df)]  # flags as data

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        legend: list[str] = []
        gap = 2
        if self.columns is not None:
            head = self._head()
            cols = [*head, *(self._generic(c) for c in self.columns if c not in {h.key for h in head})]
        elif self.wide:
            cols = self._wide()
        else:
            cols, gap, legend = self._fit(width)
        gaps = gap * (len(cols) - 1)
        room = width - gaps
        if self.wide:  # wider than the console anyway: text columns up to 40 wide, not squeezed to their words
            room = max(room, sum(min(c.natural, _WIDE_TEXT) if c.wrap else c.natural for c in cols))
        widths = _widths(cols, room, fold=self.columns is None and not self.wide)
        table = Table(box=_RULED, show_edge=False, pad_edge=False, padding=(0, gap - 1, 0, 0), header_style="bold")
        for c, w in zip(cols, widths):
            table.add_column(c.header, justify=c.justify, width=w, no_wrap=not c.wrap, overflow="fold")
        for i, row in enumerate(self.rows):
            table.add_row(*(c.cells[i] for c in cols), style=None if row[self.own["state"]] == "COMPLETE" else "dim")
        yield Text(self.title, style="bold")
        yield from console.render(table, options.update(width=max(width, sum(widths) + gaps)))
        sizes = self.df.get("population") if "population" not in self.params else None  # run_population's record
        if sizes is not None and bool((pd.to_numeric(sizes, errors="coerce") > 1).any()):
            legend.append("population = trials trained together (--population): each step is the solo trial's math up to float "
                          "rounding (another summation order), which chaotic runs (high lr, near divergence) amplify over "
                          "epochs: their results can depend on K; stable ones match their solo runs to ~1e-5")
        for line in legend:
            yield Text(line, style="dim")

    # -- the column sets

    def _fit(self, width: int) -> tuple[list[_Col], int, list[str]]:
        """The columns that fit `width`: full names if they fit, else abbreviated, else fewer params."""
        for gap, short in ((2, False), (1, False), (2, True), (1, True)):
            cols = self._core(short)
            if _fits(cols, gap, width, _WRAP_FLOOR):
                break
        while not _fits(cols, gap, width, _WRAP_FLOOR) and any(c.key in self.params for c in cols):
            cols.remove([c for c in cols if c.key in self.params][-1])  # the last params first
        for extra in self._optional():  # before state (numbers) or after it (text)
            if _fits([*cols, extra], gap, width, _WRAP_WANT):
                cols.insert(len(cols) if extra.wrap else [c.key for c in cols].index(STATE), extra)
        shown = {c.key for c in cols}
        marked = any(m in cell for c in cols if c.key in self.params for cell in c.cells for m in MARKS.values())
        legend = ["↑ ↓ = at the high / low border of the searched range"] if marked else []
        notes = [c.note for c in cols if c.note]
        legend += [", ".join(notes)] if notes else []
        conveyed = {STATE, self.own["border"], self.own["rank"], self.own["trial"]}  # by the marks and the state column
        hidden = [c.header for c in self._wide() if c.key not in shown | conveyed]
        if hidden:
            legend.append(f"not shown: {', '.join(hidden)} (hpsearch leaderboard --wide or --columns)")
        return cols, gap, legend

    def _core(self, short: bool) -> list[_Col]:
        """rank, trial, (stage), params marked ↑/↓, metric, state; `short`: abbreviated names and stages."""
        cols = [_Col(self.own["rank"], "#", self._cells("rank")), _Col(self.own["trial"], "trial", self._cells("trial"))]
        if self._multi_stage():
            stages, note = self._cells("stage"), ""
            if short:
                abbr = {s: s[:1] + s.partition("-")[2] for s in dict.fromkeys(stages)}  # refine-2 -> r2
                stages = [abbr[s] for s in stages]
                note = ", ".join(f"{a} = {s}" for s, a in abbr.items() if a != s)
            cols.append(_Col(self.own["stage"], "stage", stages, "left", note=note))
        taken = {"#", "trial", "stage", "state", *self.params, self.metric}
        for name in [*self.params, self.metric]:
            if name == self.metric:
                cells = [_metric_cell(row.get(name)) for row in self.rows]
            else:
                cells = [_param_cell(row.get(name)) + m.get(name, "") for row, m in zip(self.rows, self.marks)]
            header = name
            if short and cell_len(name) > max(map(cell_len, cells), default=0):
                header = _abbreviation(name, taken)
                taken.add(header)
            cols.append(_Col(name, header, cells, note=f"{header} = {name}" if header != name else ""))
        cols.append(_Col(STATE, "state", [self._state(row, first_line=True) for row in self.rows], "left", wrap=True))
        return cols

    def _optional(self) -> list[_Col]:
        """What the default table adds when there is room, most useful first."""
        wanted = (self.own["epochs"], self.own["duration_s"], self.own["update_ratio"], HINTS)
        return [c for c in self._wide() if c.key in wanted]

    def _wide(self) -> list[_Col]:
        """Every column: rank, trial, (stage), metric, params, other metrics, epochs, time, border, state, diagnostics."""
        cols = self._head()
        if self._multi_stage():
            cols.append(_Col(self.own["stage"], "stage", self._cells("stage"), "left"))
        cols.append(_Col(self.metric, self.metric, [_metric_cell(row.get(self.metric)) for row in self.rows]))
        cols += [_Col(n, n, [_param_cell(row.get(n)) for row in self.rows]) for n in self.params]
        cols += [self._generic(m) for m in self._other_metrics()]
        cols.append(_Col(self.own["epochs"], "epochs", self._cells("epochs")))
        cols.append(_Col(self.own["duration_s"], "time", [_seconds(row.get(self.own["duration_s"])) for row in self.rows]))
        cols.append(_Col(self.own["border"], "border", self._cells("border"), "left", wrap=True))
        cols.append(_Col(STATE, "state / reason", [self._state(row) for row in self.rows], "left", wrap=True))
        diagnostics = [self.own[c] for c in ("update_ratio", "lr_hint", "notes")]
        if any(_has(self.df, c) for c in diagnostics):
            ratio, *texts = diagnostics
            cols.append(_Col(ratio, "upd:w", [_ratio(row.get(ratio)) for row in self.rows]))
            hints = [", ".join(str(row[c]) for c in texts if row.get(c)) for row in self.rows]
            cols.append(_Col(HINTS, "hints", hints, "left", wrap=True))
        return cols

    def _head(self) -> list[_Col]:
        return [_Col(self.own["rank"], "rank", self._cells("rank")), _Col(self.own["trial"], "trial", self._cells("trial"))]

    def _generic(self, name: str) -> _Col:
        """A frame column by its frame name (`--columns`): numbers right-aligned, text wrapping at spaces."""
        values = [row.get(name) for row in self.rows]
        if name == self.metric:
            cells = [_metric_cell(v) for v in values]
        elif name == self.own["duration_s"]:
            cells = [_seconds(v) for v in values]
        elif name == self.own["update_ratio"]:
            cells = [_ratio(v) for v in values]
        else:
            cells = [_param_cell(v) for v in values]
        text = any(isinstance(v, str) for v in values)
        return _Col(name, name, cells, "left" if text else "right", wrap=text and any(" " in c for c in cells))

    # -- cells

    def _cells(self, own: str) -> list[str]:
        return [_param_cell(row.get(self.own[own])) for row in self.rows]

    def _multi_stage(self) -> bool:
        return len({row[self.own["stage"]] for row in self.rows}) > 1

    def _other_metrics(self) -> list[str]:
        known = {self.metric, *self.params, *self.own.values()}
        return [c for c in self.df.columns if c not in known and _has(self.df, c)]

    def _state(self, row: dict[Hashable, Any], first_line: bool = False) -> str:
        state = row[self.own["state"]]
        if state == "COMPLETE":
            return ""
        reason = str(row.get(self.own["reason"]) or "").strip()
        if first_line and reason:
            reason = reason.splitlines()[0]
        return f"{state}: {reason}" if reason else str(state)


def leaderboard_table(
    df: pd.DataFrame, metric: str, param_names: Sequence[str], title: str,
    wide: bool = False, columns: Sequence[str] | None = None,
) -> Leaderboard:
    """The leaderboard (frame() rows) as a table that fits the console it is printed on.

    wide: every column at full width; columns: rank, trial and these frame
    columns. Either may be wider than the console: print it with crop=False.
    """
    return Leaderboard(df, metric, param_names, title, wide=wide, columns=columns)


def _fits(cols: Sequence[_Col], gap: int, width: int, floor: int) -> bool:
    return sum(c.least(floor) for c in cols) + gap * (len(cols) - 1) <= width


def _widths(cols: Sequence[_Col], room: int, fold: bool = False) -> list[int]:
    """Each column's width: numbers at their natural width; wrapping text shares what `room` leaves
    (fold: down to 12 wide, folding longer words, rather than overflow `room`)."""
    widths = [c.natural for c in cols]
    flexible = [i for i, c in enumerate(cols) if c.wrap]
    if not flexible or sum(widths) <= room:
        return widths
    # 1. Each text column down to its longest word (24 at most): words stay whole.
    for i in flexible:
        widths[i] = min(cols[i].natural, _longest_word(cols[i]))
    # 2. Still too wide: down to 12; longer words fold onto the next line (nothing is cut).
    for i in flexible if fold else []:
        over = sum(widths) - room
        if over > 0:
            widths[i] -= min(over, max(widths[i] - min(cols[i].natural, _WRAP_FLOOR), 0))
    # 3. What is left goes evenly to the columns that want more, the least hungry first.
    spare = room - sum(widths)
    wanting = sorted(flexible, key=lambda i: cols[i].natural - widths[i])
    for k, i in enumerate(wanting):
        grant = min(cols[i].natural - widths[i], max(spare, 0) // (len(wanting) - k))
        widths[i] += grant
        spare -= grant
    return widths


def _longest_word(col: _Col) -> int:
    words = [w for text in (col.header, *col.cells) for w in text.split()]
    return min(max((cell_len(w) for w in words), default=1), _WORD_CAP)


def _abbreviation(name: str, taken: set[str]) -> str:
    """A short header for a long name: initials of its parts (weight_decay -> wd), else its first
    letters (momentum -> mom), longer until it is not `taken`."""
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", name) if p]
    candidates = ["".join(p[0] for p in parts)] if len(parts) > 1 else []
    candidates += [name[:k] for k in range(3, len(name))]
    return next((c for c in candidates if c not in taken), name)


def _metric_cell(value: Any) -> str:
    if not _is_number(value):
        return ""
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.3e}"


def _seconds(value: Any) -> str:
    return f"{value:.1f}s" if _is_number(value) else ""


def _ratio(value: Any) -> str:  # ratios compare by decade
    return f"{value:.1e}" if _is_number(value) else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _has(df: pd.DataFrame, column: str) -> bool:
    return column in df.columns and bool(df[column].replace("", None).notna().any())


def _param_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return fmt(value)


def print_flags(console: Console, flags: Sequence[BorderFlag], stage: str = "", most: int = 12) -> None:
    """One warning per border flag, widenable ones first; past `most`, one line counts the rest."""
    prefix = escape(f"[{stage}] ") if stage else ""
    ordered = sorted(flags, key=lambda f: f.at_limit)  # stable: the study file's order within each kind
    for f in ordered[:most]:
        console.print(f"[yellow]warning:[/yellow] {prefix}{escape(f.message())}", soft_wrap=True)
    if len(ordered) > most:
        console.print(f"[yellow]warning:[/yellow] {prefix}... and {len(ordered) - most} more border flags (the leaderboard's border column has them all)", soft_wrap=True)


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
    colours = {"PASS": "green", "N/A": "green", "WARN": "yellow", "FAIL": "red", "SKIP": "yellow"}
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
