"""The search space: named numeric ranges and value sets, and how each maps onto Optuna.

A space is plain data. It knows how to become Optuna distributions (for
sampling), grid points (for grid stages), and where a value sits inside a
range (for the border check), always measured in log space for log params.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

Value = Union[int, float, str, bool]
LOG_SPACED_RATIO = 2.0  # consecutive values at least this far apart: a geometric set


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

    @property
    def is_int(self) -> bool:
        return self.type == "int"

    @property
    def numeric(self) -> bool:
        return True

    def distribution(self) -> BaseDistribution:
        if self.is_int:
            return IntDistribution(int(self.low), int(self.high), log=self.log)
        return FloatDistribution(float(self.low), float(self.high), log=self.log)

    def grid(self) -> list[Value]:
        """Evenly spaced points, in log space for log ranges; ints rounded and de-duplicated."""
        if self.log:
            points = np.geomspace(self.low, self.high, self.grid_points)
        else:
            points = np.linspace(self.low, self.high, self.grid_points)
        if self.is_int:
            return sorted({int(round(p)) for p in points})
        # geomspace/linspace hit the end points exactly; keep them exact for Optuna's bounds check.
        values = [float(p) for p in points]
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

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    @property
    def ordered(self) -> tuple[Value, ...]:
        return tuple(sorted(self.values)) if self.numeric else self.values  # type: ignore[type-var]

    @property
    def log_spaced(self) -> bool:
        """True for a numeric set whose positive values grow by a factor of 2 or more at every step
        (1e-4, 1e-3, 1e-2 or 16, 32, 64), so it extends and plots geometrically; 0 is left out
        (weight decay {0, 1e-5, 1e-4}). Momentum {0.5, 0.9, 0.95, 0.99} is not."""
        if not self.numeric:
            return False
        positive = [float(v) for v in self.ordered if float(v) > 0]  # type: ignore[arg-type]
        return len(positive) >= 2 and all(b / a >= LOG_SPACED_RATIO for a, b in zip(positive, positive[1:]))

    def midpoint(self) -> Value:
        """The middle value: of the sorted values for a numeric set, of the listed order otherwise."""
        ordered = self.ordered
        return ordered[len(ordered) // 2]

    def lowest(self) -> Value:
        return self.ordered[0]

    def distribution(self) -> BaseDistribution:
        return CategoricalDistribution(list(self.values))

    def grid(self) -> list[Value]:
        return list(self.values)

    def describe(self) -> str:
        return "{" + ", ".join(fmt(v) for v in self.values) + "}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"values": list(self.values)}
        if self.limits != (None, None):
            d["limits"] = list(self.limits)
        return d


Param = Union[Range, Choice]


@dataclass(frozen=True)
class Space:
    """An ordered collection of params, in the order the study file lists them."""

    params: tuple[Param, ...] = field(default_factory=tuple)

    def __iter__(self):  # type: ignore[no-untyped-def]
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
            if "values" in d:
                params.append(Choice(name, tuple(d["values"]), limits))  # type: ignore[arg-type]
            else:
                params.append(
                    Range(
                        name,
                        d["low"],
                        d["high"],
                        log=bool(d.get("log", False)),
                        type=d.get("type", "float"),
                        grid_points=int(d.get("grid_points", 5)),
                        limits=limits,  # type: ignore[arg-type]
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
