"""Refine: the next stage's space, derived from the top trials of its parent. Pure functions.

Each parameter is narrowed around the values the top-k completed trials
used, and widened past a border the best values sit on (the recipe: the
optimum may lie outside the range searched). See `derive_space` for the
rule; the CLI prints each parameter's old and new range with the why.

Nothing leaves a param's domain (`Range.domain()` / `Choice.domain()` in
space.py: its `limits`, else the natural bounds inferred from it) or its
type: int ranges and int value sets stay Python ints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from optuna.trial import FrozenTrial

from hpsearch.border import BorderFlag, check_borders
from hpsearch.repeats import ranked_configs
from hpsearch.space import Bound, Choice, Domain, Param, Range, Space, Value, fmt
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

    The param's domain is never crossed: a widening that would cross a bound
    the range may touch (`limits`, 0 of a non-negative range or fraction, 1
    of an int range) stops at it, one it may not touch (1 of a fraction that
    excludes 1, 0 of a log range) halfway to it; a value set's new value goes
    halfway to the bound when its step would reach or cross it. A flagged
    side already at its bound is not widened ("at its limit" in the why).
    Returns the new space and one note per param.
    """
    flagged = {(f.param, f.side) for f in flags}
    params: list[Param] = []
    changes: list[dict[str, str]] = []
    new: Param
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


_WAY = {"low": "below", "high": "above"}
_TOWARD = {"low": "downward", "high": "upward"}


def stage_flags(info: Any, trials: Sequence[FrozenTrial]) -> list[BorderFlag]:
    """A stage's border flags (info: a storage.StageInfo): its own space and top_k, over its
    configurations ranked best first (a configuration and its re-runs count once: repeats.ranked_configs,
    the ranking refine narrows by), each saying what refine will do on that side (plan_widening)."""
    ranked = ranked_configs(trials, info.spec.direction)
    return plan_widening(info.space, check_borders(info.space, [c.params for c in ranked], info.settings.top_k))


def plan_widening(space: Space, flags: Sequence[BorderFlag]) -> list[BorderFlag]:
    """The flags with what refine truly does on each flagged side (BorderFlag.plan), worked out by the
    rule derive_space applies: the new end of a range, the value a set gains, or why neither happens."""
    return [replace(f, plan=_widening(space[f.param], f.side)) if f.param in space.names else f for f in flags]


def _widening(p: Param, side: str) -> str:
    way = _TOWARD[side]
    if isinstance(p, Range):
        new, _why = _narrow_range(p, [p.low if side == "low" else p.high], {side}, Strategy.random)
        old, end = (p.low, new.low) if side == "low" else (p.high, new.high)
        if end == old:
            return f"refine cannot widen it {way}"
        _end, held = _widened_end(p, side)  # the domain's say, as refine's why gives it
        return f"refine will widen it {way} to {fmt(end)}" + (f" ({held})" if held else "")
    if isinstance(p, Choice) and p.numeric:
        extended, _why = _narrow_choice(p, [p.ordered[0] if side == "low" else p.ordered[-1]], {side})
        added = [v for v in extended.values if v not in p.values]
        if added:
            return f"refine will add {fmt(added[0])} to the set" + (
                f" (between 0 and {fmt(p.ordered[1])})" if p.at_limit(side) else ""
            )
        return f"refine cannot extend it {way}"
    return ""


def _narrow_range(p: Range, values: list[Any], sides: set[str], parent_strategy: Strategy) -> tuple[Range, str]:
    if not values:
        return p, "kept: no top trial has a value"
    domain = p.domain()
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
    # Narrowed sides stay inside the old range; clipped ones keep the old bound exactly (no log round trip).
    ends = {
        "low": p.low if a - margin <= lo else p.unscale(a - margin),
        "high": p.high if b + margin >= hi else p.unscale(b + margin),
    }
    widened: set[str] = set()
    how = "a decade" if p.log else "by half the width"
    for side in ("low", "high"):
        if side not in sides:
            continue
        bound = domain.bound(side)
        if p.at_limit(side):
            why.append(f"cannot widen {_WAY[side]}: at its limit {bound.note()}")  # type: ignore[union-attr]  # at_limit: a bound
            continue
        why.append(f"widened {how} {_WAY[side]}: best on the {side.upper()} border")
        ends[side], note = _widened_end(p, side)
        if note:
            why.append(note)
        widened.add(side)
    low, high = _finish_range(p, domain, ends["low"], ends["high"], widened)
    return replace(p, low=low, high=high, origin=p.span()), "; ".join(why)


def _widened_end(p: Range, side: str) -> tuple[float, str]:
    """Where a flagged side of a range moves (WIDEN_LOG decades, or WIDEN_LINEAR of its width, past its
    end, kept inside its domain: _stop_inside), before rounding; with the note when the domain held it."""
    lo, hi = p.scale(p.low), p.scale(p.high)
    widen = WIDEN_LOG if p.log else WIDEN_LINEAR * (hi - lo)
    old, target = (p.low, p.unscale(lo - widen)) if side == "low" else (p.high, p.unscale(hi + widen))
    return _stop_inside(old, target, p.domain().bound(side), side)


def _stop_inside(old: float, target: float, bound: Bound | None, side: str) -> tuple[float, str]:
    """A range's widened end: `target` when inside the domain, else the bound (when the range may touch
    it) or halfway from the old end to it (when it may not)."""
    if bound is None:
        return target, ""
    crosses = target < bound.value if side == "low" else target > bound.value
    if not crosses and (target != bound.value or bound.closed):
        return target, ""
    if bound.closed:
        return bound.value, f"held at its limit {bound.note()}"
    return (old + bound.value) / 2, f"stopped halfway to its limit {bound.note()}"


def _finish_range(p: Range, domain: Domain, low: float, high: float, widened: set[str]) -> tuple[float, float]:
    """Round the new ends outward (ints to ints, floats to a few digits) without leaving the domain, nor
    the old range on a side that was not widened."""

    def ok_low(x: float) -> bool:
        return domain.allows("low", x) and ("low" in widened or x >= p.low)

    def ok_high(x: float) -> bool:
        return domain.allows("high", x) and ("high" in widened or x <= p.high)

    if not p.is_int:
        return _round_out(low, "down", ok_low), _round_out(high, "up", ok_high)
    int_low, int_high = math.floor(low + 1e-9), math.ceil(high - 1e-9)
    if not ok_low(int_low):
        int_low = math.ceil(low - 1e-9)
    if not ok_high(int_high):
        int_high = math.floor(high + 1e-9)
    if int_high <= int_low:  # an int range keeps two values at least
        if ok_high(int_low + 1):
            int_high = int_low + 1
        elif ok_low(int_high - 1):
            int_low = int_high - 1
    return int(int_low), int(int_high)


def _round_sig(x: float, way: str, digits: int = 3) -> float:
    """Round outward to a few significant digits, so ranges print and read cleanly."""
    if x == 0:
        return 0.0
    scale = 10 ** (math.floor(math.log10(abs(x))) - digits + 1)
    units = x / scale
    # A hair of tolerance so 0.6000000000000001 stays 0.6 rather than rounding out to 0.601.
    units = math.floor(units + 1e-9) if way == "down" else math.ceil(units - 1e-9)
    return float(f"{units * scale:.{digits}g}")


def _round_out(x: float, way: str, ok: Any) -> float:
    """`_round_sig` with as few digits as keep the result acceptable to `ok` (inside the domain)."""
    for digits in range(3, 16):
        rounded = _round_sig(x, way, digits)
        if ok(rounded):
            return rounded
    return float(x)


def _narrow_choice(p: Choice, values: list[Any], sides: set[str]) -> tuple[Choice, str]:
    used = [v for v in p.values if v in values]
    if not used:
        return p, "kept: no top trial has a value"
    if not p.numeric:
        return replace(p, values=tuple(used)), f"the values the top-{len(values)} used"
    domain = p.domain()
    ordered = list(p.ordered)
    idx = [ordered.index(v) for v in used]
    keep = ordered[max(min(idx) - 1, 0) : max(idx) + 2]
    why = [f"values the top-{len(values)} used, with their neighbours"]
    for side in ("high", "low"):
        if side not in sides:
            continue
        bound = domain.bound(side)
        if p.at_limit(side):
            why.append(f"cannot extend {_WAY[side]}: at its limit {bound.note()}")  # type: ignore[union-attr]  # at_limit: a bound
            extra = _between_zero(ordered, p.log_spaced, p.is_int) if side == "low" and ordered[0] == 0 else None
            if extra is not None:
                keep.append(extra)
                why.append(f"added {fmt(extra)} between 0 and {fmt(ordered[1])}")
            continue
        extra, note = _extend(ordered, side, domain, p.log_spaced, p.is_int)
        if extra is None:
            room = f"no room before its limit {bound.note()}" if bound is not None else "too few values to continue"
            why.append(f"cannot extend {_WAY[side]}: {room}")
            continue
        keep.append(extra)
        why.append(f"added {fmt(extra)} {_WAY[side]}: best on the {side.upper()} border")
        if note:
            why.append(note)
    return replace(p, values=tuple(sorted(dict.fromkeys(keep))), origin=p.span()), "; ".join(why)


def _extend(
    ordered: list[Value], side: str, domain: Domain, geometric: bool, is_int: bool = False
) -> tuple[Value | None, str]:
    """One more value past the end of a numeric set, continuing its spacing, and a note when the domain
    moved it.

    Geometric when the set is log-spaced (Choice.log_spaced, e.g. 1e-4 -> 1e-3,
    256 -> 512), arithmetic otherwise; an int set gains an int. A float step
    that would reach or cross the domain's bound goes halfway to it instead
    (momentum 0.99 in a fraction, or with limits [0, 1] -> 0.995); an int step
    may reach a bound, one that crosses goes halfway (rounded toward the bound).
    None when no value fits between the end and the bound.
    """
    if len(ordered) < 2:
        return None, ""
    if side == "high":
        a, b = float(ordered[-2]), float(ordered[-1])
        step = b * (b / a) if geometric and a > 0 else b + (b - a)
    else:
        b, a = float(ordered[0]), float(ordered[1])  # b: the end, a: its neighbour
        step = b / (a / b) if geometric and b > 0 else b - (a - b)
    end = b
    bound = domain.bound(side)

    def beyond(x: float, y: float) -> bool:
        """x lies further out than y on `side`."""
        return x > y if side == "high" else x < y

    if is_int:
        value = round(step)
        if bound is not None and (beyond(value, bound.value) or (value == bound.value and not bound.closed)):
            half = (end + bound.value) / 2
            value = math.ceil(half) if side == "high" else math.floor(half)
            if not domain.contains(value):
                value = value - 1 if side == "high" else value + 1
            note = f"stopped halfway to its limit {bound.note()}"
        else:
            note = ""
        return (value, note) if beyond(value, end) and domain.contains(value) else (None, "")
    note = ""
    if bound is not None and not beyond(bound.value, step):  # the step reaches or crosses the bound
        step = (end + bound.value) / 2
        note = f"stopped halfway to its limit {bound.note()}"
    short = _short(step, lambda x: beyond(x, end) and domain.contains(x) and (bound is None or x != bound.value))
    return (short, note) if short is not None else (None, "")


def _between_zero(ordered: list[Value], geometric: bool, is_int: bool) -> Value | None:
    """Below a set that starts at 0, its natural floor: a value between 0 and the next one
    (weight decay {0, 1e-5, 1e-4} best at 0 -> 1e-6), continuing the set's spacing."""
    if len(ordered) < 2:
        return None
    b = float(ordered[1])
    c = float(ordered[2]) if len(ordered) > 2 else None
    step = b / (c / b) if geometric and c and b > 0 else b / 2
    if is_int:
        value = round(step)
        return value if 0 < value < b else None
    return _short(step, lambda x: 0 < x < b)


def _short(x: float, ok: Any) -> float | None:
    """`x` with as few significant digits (6 at least) as keep it acceptable to `ok`; None if none does."""
    for digits in range(6, 18):
        value = float(f"{x:.{digits}g}")
        if ok(value):
            return value
    return None
