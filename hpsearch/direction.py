"""Direction: whether a bigger metric is better -- the one place that knows.

Every "best", "better" and ranking asks the study's `Direction`: its `sign`
(+1 maximize, -1 minimize), `better(a, b)`, `gain(a, b)` (how far a is
better than b), `best(values)` and `ranked(items, key)`. Nothing else
compares a direction with "maximize" or computes a sign of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")


class Direction(str, Enum):
    """The study's direction; a str (its value) as study files, Optuna and stored specs spell it."""

    maximize = "maximize"
    minimize = "minimize"

    @property
    def sign(self) -> int:
        """+1 when bigger is better, -1 when smaller is: sign * value grows as the value gets better."""
        return 1 if self is Direction.maximize else -1

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b`."""
        return a > b if self is Direction.maximize else a < b

    def gain(self, a: float, b: float) -> float:
        """How far `a` is better than `b` (negative: worse), in the metric's units."""
        return self.sign * (a - b)

    def best(self, values: Iterable[T], key: Callable[[T], Any] | None = None) -> T:
        """The best of `values` (the first of equals), by `key` if given; `values` must not be empty."""
        pick = max if self is Direction.maximize else min
        return pick(values, key=key) if key is not None else pick(values)  # type: ignore[type-var]  # T: comparable

    def ranked(self, items: Iterable[T], key: Callable[[T], Any]) -> list[T]:
        """`items` best first by `key`; equals keep their order (a stable sort)."""
        return sorted(items, key=key, reverse=self is Direction.maximize)
