"""Best-on-border: is the best value of a parameter at the edge of the range searched?

The recipe's warning: if the best value lies on the border of its range, the
optimum may lie outside it, so widen the range in that direction before
narrowing. A numeric parameter is flagged when the best trial's value, or the
majority of the top-k trials' values, lies in the outer 10% of its range
(measured in log space for log ranges), or is the first/last value of a
numeric value set (or grid). Sets of strings have no order and no border.

A flag on a side where the range already ends at its domain's bound (dropout
best at 0 in [0, 0.5]: a fraction cannot go below 0; see `Range.domain()` in
space.py) is still a flag - the leaderboard's border column shows it - but it
is `at_limit`: its message says so, and refine does not widen that way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hpsearch.space import Choice, Param, Range, Space, fmt

BORDER_ZONE = 0.10  # the outer 10% of a range, at each end


@dataclass(frozen=True)
class BorderFlag:
    """A parameter whose best values crowd one end of its range."""

    param: str
    side: str  # "low" | "high"
    best_value: Any
    best_on_border: bool  # the single best trial is in the border zone
    top_count: int  # how many of the top-k trials are in the border zone on this side
    top_k: int
    range_text: str
    at_limit: bool = False  # the range ends at its domain's bound on this side: it cannot widen that way
    limit_text: str = ""  # that bound, as '0 (inferred: a fraction: inside [0, 1])'
    # What refine does on this side, in words ('refine will widen it upward to 10'): refine.plan_widening
    # fills it in from the very rule refine applies; "" says it generically.
    plan: str = ""

    def message(self) -> str:
        direction = "above" if self.side == "high" else "below"
        way = "upward" if self.side == "high" else "downward"
        configs = "configuration" if self.top_k == 1 else "configurations"
        if self.best_on_border:
            what = f"best value {fmt(self.best_value)} is at the {self.side.upper()} border of {self.range_text}"
            if self.top_count > 1:
                what += f" (with {self.top_count} of the top {self.top_k} {configs})"
        else:
            what = (
                f"{self.top_count} of the top {self.top_k} {configs} are at the {self.side.upper()} border of "
                f"{self.range_text}"
            )
        if self.at_limit:
            limit = f" {self.limit_text}" if self.limit_text else ""
            return (
                f"{self.param}: {what} — the range is at its limit{limit}; "
                f"{self.plan or f'refine cannot widen it {way}'}"
            )
        return (
            f"{self.param}: {what} — the optimum may lie {direction}; "
            f"{self.plan or f'refine will widen the range {way}'}"
        )


def border_side(param: Param, value: Any) -> str | None:
    """'low' or 'high' when `value` is in the border zone of `param`, else None."""
    if isinstance(param, Range):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        if param.log and value <= 0:
            return "low"
        pos = param.position(value)
        if pos <= BORDER_ZONE:
            return "low"
        if pos >= 1 - BORDER_ZONE:
            return "high"
        return None
    if isinstance(param, Choice) and param.numeric and len(param.values) >= 2:
        ordered = param.ordered
        if value == ordered[0]:
            return "low"
        if value == ordered[-1]:
            return "high"
    return None


def row_sides(space: Space, params: dict[str, Any]) -> dict[str, str]:
    """One trial's values in the border zone of their range, as data: {param: 'low' | 'high'}, in the space's order."""
    sides = {}
    for p in space:
        if p.name in params:
            side = border_side(p, params[p.name])
            if side:
                sides[p.name] = side
    return sides


def sides_text(sides: dict[str, str]) -> str:
    """The leaderboard's border column as written (CSV, tables): 'lr:high, momentum:low'. Never parsed back:
    a param's name may hold ':' or ', '."""
    return ", ".join(f"{name}:{side}" for name, side in sides.items())


def row_flags(space: Space, params: dict[str, Any]) -> list[str]:
    """One trial's border flags as text, one each: ['lr:high', 'momentum:low'] (row_sides: as data)."""
    return [sides_text({name: side}) for name, side in row_sides(space, params).items()]


def check_borders(space: Space, ranked_params: Sequence[dict[str, Any]], top_k: int) -> list[BorderFlag]:
    """Flag each numeric parameter whose best value, or the majority of the top-k, is on a border.

    `ranked_params` are the params of the stage's configurations, best first (repeats.ranked_configs:
    a configuration re-run with other seeds counts once, by its mean).
    """
    if not ranked_params:
        return []
    top = list(ranked_params[:top_k])
    best = top[0]
    flags = []
    for p in space:
        if p.name not in best:
            continue
        best_side = border_side(p, best[p.name])
        counts = {"low": 0, "high": 0}
        for params in top:
            side = border_side(p, params.get(p.name))
            if side:
                counts[side] += 1
        for side in ("low", "high"):
            majority = len(top) >= 2 and counts[side] > len(top) / 2
            if best_side == side or majority:
                bound = p.domain().bound(side)
                at_limit = p.at_limit(side)
                flags.append(
                    BorderFlag(
                        param=p.name,
                        side=side,
                        best_value=best[p.name],
                        best_on_border=best_side == side,
                        top_count=counts[side],
                        top_k=len(top),
                        range_text=_range_text(p),
                        at_limit=at_limit,
                        limit_text=bound.note() if at_limit and bound is not None else "",
                    )
                )
    return flags


def _range_text(p: Param) -> str:
    if isinstance(p, Range):
        return f"[{fmt(p.low)}, {fmt(p.high)}]"
    return p.describe()
