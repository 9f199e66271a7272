"""Direction: the one place that knows whether bigger is better."""

from __future__ import annotations

from hpsearch.direction import Direction
from hpsearch.spec import Direction as SpecDirection


def test_direction_sign_better_gain_best_ranked() -> None:
    up, down = Direction.maximize, Direction("minimize")
    assert (up.sign, down.sign) == (1, -1)
    assert up.better(2.0, 1.0) and not up.better(1.0, 1.0) and down.better(1.0, 2.0) and not down.better(2.0, 1.0)
    assert up.gain(3.0, 1.0) == 2.0 and down.gain(3.0, 1.0) == -2.0
    assert up.best([1.0, 3.0, 2.0]) == 3.0 and down.best([1.0, 3.0, 2.0]) == 1.0
    rows = [("a", 1.0), ("b", 3.0), ("c", 1.0)]
    assert up.best(rows, key=lambda r: r[1]) == ("b", 3.0) and down.best(rows, key=lambda r: r[1]) == ("a", 1.0)
    assert [n for n, _ in up.ranked(rows, key=lambda r: r[1])] == ["b", "a", "c"]  # ties keep their order
    assert [n for n, _ in down.ranked(rows, key=lambda r: r[1])] == ["a", "c", "b"]


def test_direction_is_its_value_and_importable_from_spec() -> None:
    assert (
        SpecDirection is Direction
        and Direction.maximize == "maximize"
        and Direction(Direction.minimize) is Direction.minimize
    )
