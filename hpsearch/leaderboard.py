"""Leaderboards: every trial of one stage (or all) as a ranked pandas DataFrame.

One row per trial; completed trials first, best first (by the study's
direction), ranked 1..n; then pruned, failed and running ones, unranked, with
their reason. Columns: rank, trial, stage, state, reason, <metric>, <each
param>, epochs, duration_s, border, then any other metric the workload returned,
then the diagnostics (see diagnostics.py): update_ratio (the last per-epoch
update:weight ratio, when the workload calls trial.watch), lr_hint ('lr too
low?' below 1e-4, 'lr too high?' above 1e-2) and notes (loss-curve shape tags).
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from hpsearch.border import row_flags
from hpsearch.diagnostics import curve_notes, last_ratio, ratio_hint
from hpsearch.storage import StageInfo, Store

STATE_ORDER = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1, TrialState.FAIL: 2, TrialState.RUNNING: 3}
ALL = "all"


def select_stages(store: Store, stage: str | None) -> list[StageInfo]:
    """The stages a leaderboard covers: one by name, the latest (None), or every one ('all')."""
    if stage == ALL:
        stages = store.stages()
        return stages or [store.stage(None)]  # the latter raises StudyNotFound
    return [store.stage(stage)]


def leaderboard(store: Store, stage: str | None = None, top: int | None = None) -> pd.DataFrame:
    """The ranked trials of `stage` (None: the latest stage; 'all': every stage)."""
    stages = select_stages(store, stage)
    return frame(stages, [store.trials(s) for s in stages], top)


def frame(stages: Sequence[StageInfo], trials: Sequence[Sequence[FrozenTrial]], top: int | None = None) -> pd.DataFrame:
    """Build the leaderboard from stages and their trials (no storage access: easy to test)."""
    spec = stages[0].spec
    metric, maximize = spec.metric, spec.direction.value == "maximize"
    param_names: list[str] = []
    for s in stages:
        param_names += [n for n in s.space.names if n not in param_names]
    rows, extra_metrics = [], []
    for info, stage_trials in zip(stages, trials):
        for t in stage_trials:
            if t.state not in STATE_ORDER:
                continue  # WAITING grid points have not run yet
            metrics = t.user_attrs.get("metrics", {})
            extra_metrics += [m for m in metrics if m != metric and m not in extra_metrics]
            value = t.value if t.value is not None else metrics.get(metric)
            duration = t.user_attrs.get("duration_s")
            if duration is None and t.duration is not None:
                duration = t.duration.total_seconds()
            row = {
                "trial": t.number,
                "stage": info.name,
                "state": t.state.name,
                "reason": t.user_attrs.get("reason", ""),
                metric: value,
                **{n: t.params.get(n) for n in param_names},
                "epochs": t.user_attrs.get("epochs", info.settings.epochs),
                "duration_s": round(duration, 3) if duration is not None else None,
                "border": ", ".join(row_flags(info.space, t.params)),
                **{m: v for m, v in metrics.items() if m != metric},
                **_diagnostics(t.user_attrs.get("curves") or {}),
                "_order": STATE_ORDER[t.state],
                "_key": _sort_key(value, maximize),
            }
            rows.append(row)
    columns = ["rank", "trial", "stage", "state", "reason", metric, *param_names, "epochs", "duration_s", "border"]
    columns += [m for m in extra_metrics if m not in columns]
    columns += [c for c in DIAGNOSTIC_COLUMNS if c not in columns]
    if not rows:
        return pd.DataFrame(columns=columns)
    df = pd.DataFrame(rows).sort_values(["_order", "_key", "stage", "trial"], kind="stable").reset_index(drop=True)
    completed = df["_order"] == 0
    df["rank"] = pd.array([i + 1 if c else None for i, c in enumerate(completed)], dtype="Int64")
    df = df.reindex(columns=columns)
    return df.head(top) if top else df


DIAGNOSTIC_COLUMNS = ("update_ratio", "lr_hint", "notes")


def _diagnostics(curves: dict[str, list[float]]) -> dict[str, object]:
    ratio = last_ratio(curves)
    return {
        "update_ratio": ratio,
        "lr_hint": ratio_hint(ratio),
        "notes": ", ".join(curve_notes(curves)),
    }


def _sort_key(value: float | None, maximize: bool) -> float:
    if value is None or not math.isfinite(value):
        return math.inf
    return -value if maximize else value


def to_text(df: pd.DataFrame, fmt: str) -> str:
    """The leaderboard as csv, json (records) or markdown text."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", indent=2) + "\n"
    if fmt == "markdown":
        return df.to_markdown(index=False) + "\n"
    raise ValueError(f"unknown format {fmt!r}")
