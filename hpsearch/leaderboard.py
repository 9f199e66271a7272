"""Leaderboards: every trial of one stage (or all) as a ranked pandas DataFrame, and its files.

One row per trial, in trials.display_order: completed trials first, best
first (trials.ranked_trials, the one ranking), ranked 1..n; then pruned,
failed and running ones, unranked, with their reason. Columns: rank, trial, stage, state, reason, <metric>, <each
param>, epochs (that it ran: trials.epochs_run), duration_s, border, then any other metric the workload returned,
then the diagnostics (see diagnostics.py): update_ratio (the last per-epoch
update:weight ratio, when the workload calls trial.watch), lr_hint ('lr too
low?' below 1e-4; 'lr too high?' above 1e-2 only when the loss curve shows it too) and notes (loss-curve shape tags).
The border column is the flags' text, for files; the flags themselves travel as data beside it (border_sides).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hpsearch.border import row_sides, sides_text
from hpsearch.direction import Direction
from hpsearch.errors import HpsearchError
from hpsearch.instruments.diagnostics import curve_notes, last_ratio, ratio_hint
from hpsearch.repeats import ranked_configs
from hpsearch.space import Range
from hpsearch.store.storage import StageInfo, Store, study_names
from hpsearch.trials import (
    CURVES_ATTR,
    DURATION_ATTR,
    METRICS_ATTR,
    OWNER_ATTR,
    REASON_ATTR,
    WARM_START_ATTR,
    attempt,
    continued_runs,
    display_order,
    first_attempt,
    reached,
    trial_attr,
)

ALL = "all"


def select_stages(store: Store, stage: str | None) -> list[StageInfo]:
    """The stages a leaderboard covers: one by name, the latest (None), or every one ('all')."""
    if stage == ALL:
        stages = store.stages()
        return stages or [store.stage(None)]  # the latter raises StudyNotFound
    return [store.stage(stage)]


def leaderboard(store: Store, stage: str | None = None, top: int | None = None, runs: bool = False) -> pd.DataFrame:
    """The ranked trials of `stage` (None: the latest stage; 'all': every stage); `runs`: with the earlier
    runs of resumed trials."""
    stages = select_stages(store, stage)
    return frame(stages, [store.trials(s) for s in stages], top, runs)


OWN_COLUMNS = (
    "rank",
    "trial",
    "stage",
    "state",
    "reason",
    "epochs",
    "duration_s",
    "border",
    "update_ratio",
    "lr_hint",
    "notes",
)
DIAGNOSTIC_COLUMNS = ("update_ratio", "lr_hint", "notes")
OWN_PREFIX = "hpsearch_"  # the leaderboard's own column, moved aside for a param or metric of the same name
METRIC_PREFIX = "metric_"  # a returned metric named like a param


def own_columns(user_names: Sequence[str]) -> dict[str, str]:
    """The leaderboard's own columns -> their names in this leaderboard.

    Params and metrics keep their names; an own column whose name a param or
    metric uses (a LoRA `rank`, a `state`, an `epochs` param) becomes
    `hpsearch_<name>`. The mapping is in `df.attrs["columns"]` of every frame.
    """
    taken = set(user_names)
    return {c: OWN_PREFIX + c if c in taken else c for c in OWN_COLUMNS}


def frame(
    stages: Sequence[StageInfo], trials: Sequence[Sequence[FrozenTrial]], top: int | None = None, runs: bool = False
) -> pd.DataFrame:
    """Build the leaderboard from stages and their trials (no storage access: easy to test). A resumed
    trial is one row, its latest run's; `runs` adds its earlier runs (each linked by `attempt_of`)."""
    spec = stages[0].spec
    metric = spec.metric
    param_names: list[str] = []
    for s in stages:
        param_names += [n for n in s.space.names if n not in param_names]
    stage_of = {id(t): info for info, stage_trials in zip(stages, trials) for t in stage_trials}
    hidden: set[int] = set()  # earlier runs of resumed trials, unless asked for
    for stage_trials in [] if runs else trials:
        later = continued_runs(stage_trials)
        hidden |= {id(t) for t in stage_trials if t.number in later}
    every = [t for stage_trials in trials for t in stage_trials if id(t) not in hidden]
    resumed = any(attempt(t) > 1 for t in every)  # the attempt columns, only where a trial was resumed
    warm = any(WARM_START_ATTR in t.user_attrs for t in every)  # the warm_start column, only where a stage has some
    extra: list[str] = []  # other metrics the workload returned, as named in the frame
    for t in every:
        for m in trial_attr(t, METRICS_ATTR, {}):
            name = _metric_column(m, param_names)
            if m != metric and name not in extra:
                extra.append(name)
    col = own_columns([metric, *param_names, *extra])
    repeats = _repeats(stages, trials, spec.direction)
    rows: list[dict[str, object]] = []
    flags = RowSides()  # by the row's index label: the frame's RangeIndex, the rows' order
    for rank, t in display_order(every, spec.direction):
        info = stage_of[id(t)]
        metrics = trial_attr(t, METRICS_ATTR, {})
        value = t.value if t.value is not None else metrics.get(metric)
        duration = trial_attr(t, DURATION_ATTR)
        if duration is None and t.duration is not None:
            duration = t.duration.total_seconds()
        row: dict[str, object] = {
            col["rank"]: rank,
            col["trial"]: t.number,
            col["stage"]: info.name,
            col["state"]: t.state.name,
            col["reason"]: t.user_attrs.get(REASON_ATTR, ""),
            metric: value,
        }
        row.update({n: t.params.get(n) for n in param_names})
        row[col["epochs"]] = reached(t, info.settings.epochs)
        row[col["duration_s"]] = round(duration, 3) if duration is not None else None
        sides = flags[len(rows)] = row_sides(info.space, t.params)
        row[col["border"]] = sides_text(sides)
        if repeats:
            row.update(dict(zip(REPEAT_COLUMNS, repeats.get(id(t), (None, None, None)))))
        if resumed:
            row.update(dict(zip(ATTEMPT_COLUMNS, (attempt(t), first_attempt(t)))))
        if warm:
            row[WARM_COLUMN] = t.user_attrs.get(WARM_START_ATTR, "")
        row.update({_metric_column(m, param_names): v for m, v in metrics.items() if m != metric})
        row.update({col[k]: v for k, v in _diagnostics(trial_attr(t, CURVES_ATTR) or {}).items()})
        rows.append(row)
    head = [col[c] for c in ("rank", "trial", "stage", "state", "reason")]
    columns = [
        *head,
        metric,
        *param_names,
        col["epochs"],
        col["duration_s"],
        col["border"],
        *(REPEAT_COLUMNS if repeats else ()),
        *(ATTEMPT_COLUMNS if resumed else ()),
        *((WARM_COLUMN,) if warm else ()),
        *extra,
    ]
    columns += [col[c] for c in DIAGNOSTIC_COLUMNS]
    df = pd.DataFrame(rows, columns=columns) if rows else pd.DataFrame(columns=columns)
    df[col["rank"]] = df[col["rank"]].astype("Int64")
    for name in param_names:
        if all(_int_param(s, name) for s in stages if name in s.space.names):
            df[name] = df[name].astype("Int64")  # ints stay ints, also beside the empty cells of failed trials
    df.attrs["columns"] = col
    df.attrs[FLAGS_ATTR] = flags
    return df.head(top) if top else df


FLAGS_ATTR = "border_flags"  # df.attrs: each row's border flags as data (border_sides reads them)


class RowSides(dict[Any, dict[str, str]]):
    """A frame's border flags, {index label: {param: 'low' | 'high'}}, in df.attrs[FLAGS_ATTR]: plain
    JSON, as pandas writes attrs (to_parquet). Made by frame() and not changed after."""

    def __deepcopy__(self, memo: dict[int, Any]) -> RowSides:
        return self  # pandas deep-copies attrs at every operation: a 10,000-trial CSV took 12x as long


def border_sides(df: pd.DataFrame) -> list[dict[str, str]]:
    """Each row's border flags as data, {param: 'low' | 'high'} in the space's order, in the frame's row
    order: what a table marks ↑/↓. The border column is their text, for files; it is never parsed back."""
    flags = df.attrs.get(FLAGS_ATTR) or {}
    return [dict(flags.get(label, {})) for label in df.index]


ATTEMPT_COLUMNS = ("attempt", "attempt_of")  # a resumed trial's run, and its trial's first run's number
REPEAT_COLUMNS = ("runs", "mean", "spread")  # of the trial's configuration, where a stage re-ran some (repeats.py)
WARM_COLUMN = "warm_start"  # where a configuration run first came from (search/warm_starts.py), where a stage has some


def _repeats(
    stages: Sequence[StageInfo], trials: Sequence[Sequence[FrozenTrial]], direction: Direction
) -> dict[int, tuple]:
    """id(trial) -> (runs, mean, spread) of its configuration in its stage; empty when no stage has repeats."""
    from hpsearch.repeats import group_configs

    found = {}
    for stage_trials in trials:
        for c in group_configs(stage_trials):
            found.update({id(t): (c.n, c.mean, c.spread) for t in c.trials})
    return found if any(runs > 1 for runs, _, _ in found.values()) else {}


def _metric_column(name: str, param_names: Sequence[str]) -> str:
    return METRIC_PREFIX + name if name in param_names else name


def _int_param(info: StageInfo, name: str) -> bool:
    p = info.space[name]
    if isinstance(p, Range):
        return p.is_int
    return p.numeric and all(isinstance(v, int) and not isinstance(v, bool) for v in p.values)


def _diagnostics(curves: dict[str, list[float]]) -> dict[str, object]:
    ratio = last_ratio(curves)
    return {
        "update_ratio": ratio,
        "lr_hint": ratio_hint(ratio, curves),
        "notes": ", ".join(curve_notes(curves)),
    }


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as a formula (OWASP: CSV injection)


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot run as spreadsheet formulas: a string that starts with
    = + - @ tab or CR gets a leading ' (OWASP's advice). Numbers stay numbers: a negative loss is
    a float column, untouched, and reads back as a float."""
    out = df.copy()
    for name in out.columns:
        if out[name].dtype == object or pd.api.types.is_string_dtype(out[name]):
            out[name] = out[name].map(lambda v: "'" + v if isinstance(v, str) and v.startswith(FORMULA_START) else v)
    return out


def to_text(df: pd.DataFrame, fmt: str) -> str:
    """The leaderboard as csv (spreadsheet-safe), json (records) or markdown text ('|' escaped)."""
    if fmt == "csv":
        return spreadsheet_safe(df).to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=2) + "\n"
    if fmt == "markdown":
        escaped = df.map(lambda v: v.replace("|", "\\|") if isinstance(v, str) else v)
        escaped.columns = [str(c).replace("|", "\\|") for c in df.columns]
        return escaped.to_markdown(index=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def write_csv(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the leaderboard as spreadsheet-safe CSV to `path` (its folder made); raises HpsearchError
    naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        spreadsheet_safe(df).to_csv(path, index=False)
    except OSError as e:
        raise HpsearchError(f"{path}: cannot write the CSV: {e.strerror}") from None
    return path


@dataclass(frozen=True)
class StageSummary:
    """One stage of one study, as `hpsearch studies` lists it."""

    study: str
    stage: str
    parent: str | None  # the stage it was derived from (the lineage); None for coarse
    strategy: str
    epochs: int
    trials: int
    complete: int
    failed: int
    metric: str
    best: float | None  # the mean of the stage's best configuration (repeats.ranked_configs)
    running_on: tuple[str, ...] = ()  # where its RUNNING trials run: "host", "host (slurm 123_4)"; each once


def running_on(trials: Sequence[FrozenTrial]) -> tuple[str, ...]:
    """Where the RUNNING trials run (search/liveness.where of their owner), each place once, with a count."""
    from hpsearch.search.liveness import where

    places = Counter(where(t.user_attrs.get(OWNER_ATTR, "?")) for t in trials if t.state == TrialState.RUNNING)
    return tuple(f"{place} ×{n}" if n > 1 else place for place, n in places.items())


def study_summaries(directory: str | Path | None = None, url: str | None = None) -> list[StageSummary]:
    """Every stage of every study under `directory` (or in the storage at `url`), with counts and best."""
    out = []
    for name in study_names(directory, url):
        store = Store(name, directory, url, create=False)
        for info in store.stages():
            trials = store.trials(info)
            ranked = ranked_configs(trials, info.spec.direction)  # THE best: a configuration's mean over its runs
            out.append(
                StageSummary(
                    name,
                    info.name,
                    info.parent,
                    info.settings.strategy.value,
                    info.settings.epochs,
                    len(trials),
                    sum(t.state == TrialState.COMPLETE for t in trials),
                    sum(t.state == TrialState.FAIL for t in trials),
                    info.spec.metric,
                    ranked[0].mean if ranked else None,
                    running_on(trials),
                )
            )
    return out
