"""The search space: named numeric ranges and value sets, and how each maps onto Optuna.

A space is plain data. It knows how to become Optuna distributions (for
sampling), grid points (for grid stages), and where a value sits inside a
range (for the border check), always measured in log space for log params.

Every numeric param has a domain (`Range.domain()` / `Choice.domain()`): the
bounds a refine stage never crosses, decided here once for border.py and
refine.py. A side of `limits`, when given, is that side's bound. A side left
out is inferred:

- a log range is > 0 (always, whatever the limits say);
- a float linear range, or a value set that is not log-spaced, inside [0, 1]
  is a fraction: never below 0, never 1 or above unless it includes 1;
- a log-spaced value set (1e-4, 1e-3, 1e-2) is > 0 like a log range, never a
  fraction (>= 0 when it holds 0, weight decay {0, 1e-5, 1e-4});
- a range or set that starts at 0 or above is non-negative;
- an int range or int set that starts at 1 or above stays >= 1.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: reading a study file needs neither (0.3 s before workers start)
    from optuna.distributions import BaseDistribution

Value = int | float | str | bool
LOG_SPACED_RATIO = 2.0  # consecutive values at least this far apart: a geometric set
FRACTION, NON_NEGATIVE, INT_MIN_1, LOG_POSITIVE = "a fraction: inside [0, 1]", "non-negative", "int >= 1", "log: > 0"


@dataclass(frozen=True)
class Bound:
    """One end of a domain: `value`, and whether the value itself belongs to it (`closed`)."""

    value: float
    closed: bool
    why: str  # "limits [0, 1]", "a fraction: inside [0, 1]", "non-negative", "int >= 1", "log: > 0"
    explicit: bool = False  # from the study's `limits`, not inferred

    def note(self) -> str:
        """'0 (inferred: non-negative)' or '1 (limits [0, 1])': the bound as refine and border print it."""
        return f"{fmt(self.value)} ({self.why if self.explicit else 'inferred: ' + self.why})"


@dataclass(frozen=True)
class Domain:
    """Where a param's values may go: `low`/`high` are None where unbounded."""

    low: Bound | None = None
    high: Bound | None = None

    def bound(self, side: str) -> Bound | None:
        return self.low if side == "low" else self.high

    def allows(self, side: str, x: float) -> bool:
        """True when `x` is on the inside of the bound on `side` (or on it, for a closed bound)."""
        bound = self.bound(side)
        if bound is None:
            return True
        if x == bound.value:
            return bound.closed
        return x > bound.value if side == "low" else x < bound.value

    def contains(self, x: float) -> bool:
        return self.allows("low", x) and self.allows("high", x)

    @property
    def why(self) -> str:
        """How the bounds were decided, each reason once: 'a fraction: inside [0, 1]'."""
        return "; ".join(dict.fromkeys(b.why for b in (self.low, self.high) if b is not None))

    def describe(self) -> str:
        lo = "(-inf" if self.low is None else ("[" if self.low.closed else "(") + fmt(self.low.value)
        hi = "inf)" if self.high is None else fmt(self.high.value) + ("]" if self.high.closed else ")")
        return f"{lo}, {hi}"


def _tightest(side: str, bounds: list[Bound | None]) -> Bound | None:
    """The bound that allows least on `side` (an open bound beats a closed one at the same value)."""
    found = [b for b in bounds if b is not None]
    if not found:
        return None
    sign = 1 if side == "low" else -1
    return max(found, key=lambda b: (sign * b.value, not b.closed))


def _make_domain(
    limits: tuple[float | None, float | None], lowest: float, highest: float, *, log: bool, is_int: bool, fraction: bool
) -> Domain:
    """The one rule (module docstring): explicit limits per side, else the natural bounds; log > 0 always."""
    text = f"limits [{', '.join('-' if v is None else fmt(v) for v in limits)}]"
    sides: dict[str, Bound | None] = {}
    for i, side in enumerate(("low", "high")):
        if (limit := limits[i]) is not None:
            candidates: list[Bound | None] = [Bound(float(limit), True, text, explicit=True)]
        elif side == "low":
            candidates = [
                Bound(0.0, True, FRACTION) if fraction else None,
                Bound(0.0, True, NON_NEGATIVE) if lowest >= 0 else None,
                Bound(1.0, True, INT_MIN_1) if is_int and lowest >= 1 else None,
            ]
        else:
            candidates = [Bound(1.0, highest >= 1, FRACTION) if fraction else None]
        if side == "low" and log:
            candidates.append(Bound(0.0, False, LOG_POSITIVE))
        sides[side] = _tightest(side, candidates)
    return Domain(sides["low"], sides["high"])


@dataclass(frozen=True)
class Range:
    """A numeric interval, sampled uniformly or log-uniformly.

    `limits` are hard bounds that a refine stage never widens past (e.g.
    momentum below 1); None means unbounded (log ranges stay above 0 anyway).
    """

    name: str
    low: float
    high: float
    log: bool = False
    type: str = "float"  # "float" | "int"
    grid_points: int = 5  # five points per range is the classic lecture grid
    limits: tuple[float | None, float | None] = (None, None)
    # The study file's span (lowest, highest, geometric) this param was derived from by refine: its
    # domain is inferred from that, so narrowing never turns a [0.1, 5] range into a "fraction".
    origin: tuple[float, float, bool] | None = None

    def __post_init__(self) -> None:
        # An int range holds Python ints, so every value derived from it (grid, refine, CSV) stays an int.
        if self.is_int:
            for bound in ("low", "high"):
                value = getattr(self, bound)
                if not isinstance(value, int) or isinstance(value, bool):
                    if float(value) != int(float(value)):
                        raise ValueError(f"{self.name}: an int range needs whole-number bounds, got {bound} = {value!r}")
                    object.__setattr__(self, bound, int(float(value)))

    @property
    def is_int(self) -> bool:
        return self.type == "int"

    def domain(self) -> Domain:
        """The bounds refine never crosses (see the module docstring): `limits`, else inferred."""
        lowest, highest, _ = self.span()
        fraction = not self.is_int and not self.log and lowest >= 0 and highest <= 1
        return _make_domain(self.limits, lowest, highest, log=self.log, is_int=self.is_int, fraction=fraction)

    def span(self) -> tuple[float, float, bool]:
        """(lowest, highest, geometric) of the study file's range: what the domain is inferred from."""
        return self.origin or (float(self.low), float(self.high), self.log)

    def at_limit(self, side: str) -> bool:
        """True when the range already ends at its domain's bound on `side`: it cannot widen that way."""
        return _at_limit(self.domain().bound(side), self.low if side == "low" else self.high, side)

    @property
    def numeric(self) -> bool:
        return True

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import FloatDistribution, IntDistribution

        if self.is_int:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def grid(self) -> list[Value]:
        """Evenly spaced points, in log space for log ranges; ints rounded and de-duplicated."""
        import numpy as np

        if self.log:
            points = np.geomspace(self.low, self.high, self.grid_points)
        else:
            points = np.linspace(self.low, self.high, self.grid_points)
        if self.is_int:
            return sorted({int(round(p)) for p in points})
        # geomspace/linspace hit the end points exactly; keep them exact for Optuna's bounds check.
        values: list[Value] = [float(p) for p in points]
        values[0], values[-1] = float(self.low), float(self.high)
        return values

    def scale(self, value: float) -> float:
        """The coordinate in which the range is uniform: log10 for log ranges."""
        return math.log10(value) if self.log else float(value)

    def unscale(self, x: float) -> float:
        return 10.0**x if self.log else x

    def position(self, value: float) -> float:
        """Where `value` sits in the range: 0 at low, 1 at high (in log space for log ranges)."""
        lo, hi = self.scale(self.low), self.scale(self.high)
        return (self.scale(value) - lo) / (hi - lo)

    def midpoint(self) -> Value:
        """The middle of the range (in log space for log ranges), an int for int ranges."""
        value = self.unscale((self.scale(self.low) + self.scale(self.high)) / 2)
        return int(round(value)) if self.is_int else value

    def lowest(self) -> Value:
        return self.low

    def describe(self) -> str:
        scale = "log" if self.log else "linear"
        kind = ", int" if self.is_int else ""
        return f"[{fmt(self.low)}, {fmt(self.high)}] ({scale}{kind})"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"low": self.low, "high": self.high, "log": self.log}
        if self.is_int:
            d["type"] = "int"
        d["grid_points"] = self.grid_points
        if self.limits != (None, None):
            d["limits"] = list(self.limits)
        if self.origin is not None:
            d["origin"] = list(self.origin)
        return d


@dataclass(frozen=True)
class Choice:
    """A fixed set of values (numbers or strings), e.g. momentum in {0.5, 0.9, 0.95, 0.99}.

    Numeric sets are ordered, so a best value can sit on their border; sets
    containing strings are unordered and never flagged.
    """

    name: str
    values: tuple[Value, ...]
    limits: tuple[float | None, float | None] = (None, None)
    # The study file's span (lowest, highest, geometric) this param was derived from by refine: its
    # domain is inferred from that, so narrowing never turns a [0.1, 5] range into a "fraction".
    origin: tuple[float, float, bool] | None = None

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    @property
    def ordered(self) -> tuple[Value, ...]:
        return tuple(sorted(self.values)) if self.numeric else self.values

    @property
    def log_spaced(self) -> bool:
        """True for a numeric set whose positive values grow by a factor of 2 or more at every step
        (1e-4, 1e-3, 1e-2 or 16, 32, 64), so it extends and plots geometrically; 0 is left out
        (weight decay {0, 1e-5, 1e-4}). Momentum {0.5, 0.9, 0.95, 0.99} is not."""
        if not self.numeric:
            return False
        positive = [float(v) for v in self.ordered if float(v) > 0]
        return len(positive) >= 2 and all(b / a >= LOG_SPACED_RATIO for a, b in itertools.pairwise(positive))

    @property
    def is_int(self) -> bool:
        """A numeric set of Python ints only (batch sizes): it widens to ints."""
        return self.numeric and all(isinstance(v, int) for v in self.values)

    def domain(self) -> Domain:
        """The bounds refine never crosses (see the module docstring); unbounded for string sets."""
        if not self.numeric or not self.values:
            return Domain()
        lowest, highest, geometric = self.span()
        fraction = not self.is_int and not geometric and lowest >= 0 and highest <= 1
        return _make_domain(
            self.limits, lowest, highest, log=geometric and lowest > 0, is_int=self.is_int, fraction=fraction
        )

    def span(self) -> tuple[float, float, bool]:
        """(lowest, highest, geometric) of the study file's set: what the domain is inferred from."""
        if self.origin is not None:
            return self.origin
        ordered = [float(v) for v in self.ordered]
        return ordered[0], ordered[-1], self.log_spaced

    def at_limit(self, side: str) -> bool:
        """True when the set's end value on `side` is its domain's bound: it cannot widen that way."""
        if not self.numeric or len(self.values) < 2:
            return False
        return _at_limit(self.domain().bound(side), self.ordered[0 if side == "low" else -1], side)  # type: ignore[arg-type]  # numeric: checked above

    def midpoint(self) -> Value:
        """The middle value: of the sorted values for a numeric set, of the listed order otherwise."""
        ordered = self.ordered
        return ordered[len(ordered) // 2]

    def lowest(self) -> Value:
        return self.ordered[0]

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.values))

    def grid(self) -> list[Value]:
        return list(self.values)

    def describe(self) -> str:
        return "{" + ", ".join(fmt(v) for v in self.values) + "}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"values": list(self.values)}
        if self.limits != (None, None):
            d["limits"] = list(self.limits)
        if self.origin is not None:
            d["origin"] = list(self.origin)
        return d


Param = Range | Choice


def _at_limit(bound: Bound | None, end: float, side: str) -> bool:
    if bound is None:
        return False
    return end <= bound.value if side == "low" else end >= bound.value


@dataclass(frozen=True)
class Space:
    """An ordered collection of params, in the order the study file lists them."""

    params: tuple[Param, ...] = field(default_factory=tuple)

    def __iter__(self):  # type: ignore[no-untyped-def]  # -> Iterator[Param]: its import would be line 401
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def midpoint(self) -> dict[str, Value]:
        """One plausible point: every param's midpoint (what probes and instruments train with)."""
        return {p.name: p.midpoint() for p in self.params}

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution() for p in self.params}

    def grid(self) -> list[dict[str, Value]]:
        """The cartesian product of every param's grid points, without duplicates."""
        points: list[dict[str, Value]] = [{}]
        for p in self.params:
            points = [{**pt, p.name: v} for pt in points for v in dict.fromkeys(p.grid())]
        return points

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.to_dict() for p in self.params}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> Space:
        """Rebuild a space stored in a study (already validated when it was written)."""
        params: list[Param] = []
        for name, d in data.items():
            limits = tuple(d.get("limits", (None, None)))
            origin = tuple(d["origin"]) if "origin" in d else None
            if "values" in d:
                params.append(Choice(name, tuple(d["values"]), limits, origin=origin))
            else:
                params.append(
                    Range(
                        name,
                        d["low"],
                        d["high"],
                        log=bool(d.get("log", False)),
                        type=d.get("type", "float"),
                        grid_points=int(d.get("grid_points", 5)),
                        limits=limits,
                        origin=origin,
                    )
                )
        return cls(tuple(params))


def fmt(value: object) -> str:
    """A parameter value as people read it: 3.2e-03, 0.9, 64, relu."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1e4 or magnitude < 1e-2:
        return f"{value:.1e}"
    return f"{value:.3g}"
