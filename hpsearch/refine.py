"""Refine: the next stage's space, derived from the top trials of its parent. Pure functions.

Each parameter is narrowed around the values the top-k completed trials
used, and widened past a border the best values sit on (the recipe: the
optimum may lie outside the range searched). See `derive_space` for the
rule; the CLI prints each parameter's old and new range with the why.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Sequence

from hpsearch.border import BorderFlag
from hpsearch.space import Choice, Param, Range, Space, Value, fmt
from hpsearch.strategy import Strategy

LOG_MARGIN_MIN = 0.1  # decades of padding around the top-k, at least
MARGIN_FRACTION = 0.25  # padding on each side, as a fraction of the top-k span
LINEAR_MARGIN_MIN = 0.05  # fraction of the old width, for linear ranges
WIDEN_LOG = 1.0  # decades added past a flagged border of a log range
WIDEN_LINEAR = 0.5  # fraction of the old width added past a flagged border of a linear range


def derive_space(
    space: Space, top: Sequence[dict[str, Any]], flags: Sequence[BorderFlag], parent_strategy: Strategy
) -> tuple[Space, list[dict[str, str]]]:
    """Narrow each parameter around the top trials' values, widening past flagged borders.

    Log ranges: the span of the top values in log space, padded on each side
    by a quarter of the span (at least 0.1 decade, and at least half a grid
    step when the parent was a grid), clipped to the old range - except on a
    flagged side, which moves one decade past the old bound. Linear ranges
    likewise, in units of the old width. Value sets keep the values the top
    trials used plus their neighbours, and gain one value beyond a flagged end.
    `limits` are never crossed. Returns the new space and one note per param.
    """
    flagged = {(f.param, f.side) for f in flags}
    params: list[Param] = []
    changes: list[dict[str, str]] = []
    for p in space:
        values = [t[p.name] for t in top if p.name in t]
        sides = {side for side in ("low", "high") if (p.name, side) in flagged}
        if isinstance(p, Range):
            new, why = _narrow_range(p, values, sides, parent_strategy)
        else:
            new, why = _narrow_choice(p, values, sides)
        params.append(new)
        changes.append({"param": p.name, "old": p.describe(), "new": new.describe(), "why": why})
    return Space(tuple(params)), changes


def _narrow_range(p: Range, values: list[Any], sides: set[str], parent_strategy: Strategy) -> tuple[Range, str]:
    if not values:
        return p, "kept: no top trial has a value"
    xs = [p.scale(v) for v in values]
    lo, hi = p.scale(p.low), p.scale(p.high)
    a, b = min(xs), max(xs)
    width = hi - lo
    min_margin = LOG_MARGIN_MIN if p.log else LINEAR_MARGIN_MIN * width
    if parent_strategy == Strategy.grid:
        min_margin = max(min_margin, width / (p.grid_points - 1) / 2)
    margin = max(MARGIN_FRACTION * (b - a), min_margin)
    unit = "decade" if p.log else ""
    why = [f"top-{len(values)} span [{fmt(p.unscale(a))}, {fmt(p.unscale(b))}] padded by {margin:.2g} {unit}".rstrip()]
    new_lo, new_hi = max(a - margin, lo), min(b + margin, hi)
    widen = WIDEN_LOG if p.log else WIDEN_LINEAR * width
    if "low" in sides:
        new_lo = lo - widen
        why.append(f"widened {'a decade' if p.log else 'by half the width'} below: best on the LOW border")
    if "high" in sides:
        new_hi = hi + widen
        why.append(f"widened {'a decade' if p.log else 'by half the width'} above: best on the HIGH border")
    low, high = p.unscale(new_lo), p.unscale(new_hi)
    lim_lo, lim_hi = p.limits
    if lim_lo is not None and low < lim_lo:
        low = lim_lo
        why.append(f"held at the limit {fmt(lim_lo)}")
    if lim_hi is not None and high > lim_hi:
        high = lim_hi
        why.append(f"held at the limit {fmt(lim_hi)}")
    if p.is_int:
        low, high = math.floor(low), math.ceil(high)
        if p.log:
            low = max(low, 1)
        if low >= high:
            high = low + 1
    else:
        low, high = _round_sig(low, "down"), _round_sig(high, "up")
    return replace(p, low=low, high=high), "; ".join(why)


def _round_sig(x: float, way: str, digits: int = 3) -> float:
    """Round outward to a few significant digits, so ranges print and read cleanly."""
    if x == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(x))) - digits + 1)
    units = x / scale
    # A hair of tolerance so 0.6000000000000001 stays 0.6 rather than rounding out to 0.601.
    units = math.floor(units + 1e-9) if way == "down" else math.ceil(units - 1e-9)
    return float(f"{units * scale:.{digits}g}")


def _narrow_choice(p: Choice, values: list[Any], sides: set[str]) -> tuple[Choice, str]:
    used = [v for v in p.values if v in values]
    if not used:
        return p, "kept: no top trial has a value"
    if not p.numeric:
        return replace(p, values=tuple(used)), f"the values the top-{len(values)} used"
    ordered = list(p.ordered)
    idx = [ordered.index(v) for v in used]
    keep = ordered[max(min(idx) - 1, 0) : max(idx) + 2]
    why = [f"values the top-{len(values)} used, with their neighbours"]
    if "high" in sides:
        extra = _extend(ordered, "high", p.limits, p.log_spaced)
        if extra is not None:
            keep.append(extra)
            why.append(f"added {fmt(extra)} above: best on the HIGH border")
        else:
            why.append("cannot extend above: at its limit")
    if "low" in sides:
        extra = _extend(ordered, "low", p.limits, p.log_spaced)
        if extra is not None:
            keep.append(extra)
            why.append(f"added {fmt(extra)} below: best on the LOW border")
        else:
            why.append("cannot extend below: at its limit")
    return replace(p, values=tuple(sorted(keep))), "; ".join(why)


def _extend(
    ordered: list[Value], side: str, limits: tuple[float | None, float | None], geometric: bool
) -> Value | None:
    """One more value past the end of a numeric set, continuing its spacing.

    Geometric when the set is log-spaced (Choice.log_spaced, e.g. 1e-4 -> 1e-3),
    arithmetic otherwise; halfway to a limit when the step would cross it
    (momentum 0.99 with limits [0, 1] -> 0.995). Below a set that starts at
    0, the natural floor, adds a value between 0 and the next one instead.
    """
    if len(ordered) < 2:
        return None
    if side == "high":
        a, b = float(ordered[-2]), float(ordered[-1])
        step = b * (b / a) if geometric and a > 0 else b + (b - a)
        limit = limits[1]
        if limit is not None and step >= limit:
            step = (b + limit) / 2 if b < limit else None  # type: ignore[assignment]
        return None if step is None else float(f"{step:.6g}")
    a, b = float(ordered[0]), float(ordered[1])
    if a == 0:
        c = float(ordered[2]) if len(ordered) > 2 else None
        step = b / (c / b) if geometric and c and b > 0 else b / 2
    else:
        step = a / (b / a) if geometric and a > 0 else a - (b - a)
    limit = limits[0]
    if limit is not None and step <= limit:
        step = (a + limit) / 2 if a > limit else None  # type: ignore[assignment]
    return None if step is None else float(f"{step:.6g}")
