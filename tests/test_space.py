"""Search-space mechanics: grid points, log positions, the cartesian grid without duplicates."""

from __future__ import annotations

import math

import pytest

from hpsearch.space import Choice, Range, Space, fmt


def test_space_log_grid_points_are_log_spaced():
    points = Range("lr", 1e-4, 1.0, log=True, grid_points=5).grid()
    assert points[0] == 1e-4 and points[-1] == 1.0
    assert [round(math.log10(p), 9) for p in points] == [-4, -3, -2, -1, 0]


def test_space_linear_and_int_grid_points():
    assert Range("m", 0.0, 1.0, grid_points=3).grid() == [0.0, 0.5, 1.0]
    # Rounded ints collapse: 5 log-spaced points over [1, 4] give only 1..4, each once.
    ints = Range("layers", 1, 4, log=True, type="int", grid_points=5).grid()
    assert ints == sorted(set(ints)) and ints[0] == 1 and ints[-1] == 4


def test_space_cartesian_grid_has_every_point_once():
    space = Space((Range("lr", 1e-3, 1e-1, log=True, grid_points=3), Choice("m", (0.9, 0.99)), Choice("act", ("relu", "tanh"))))
    grid = space.grid()
    assert len(grid) == 3 * 2 * 2
    assert len({tuple(sorted(p.items())) for p in grid}) == len(grid)


def test_space_position_is_measured_in_log_space():
    lr = Range("lr", 1e-4, 1.0, log=True)
    assert math.isclose(lr.position(1e-2), 0.5)
    assert math.isclose(Range("x", 0, 10).position(2.5), 0.25)


def test_space_round_trips_through_dict():
    space = Space((Range("lr", 1e-4, 1.0, log=True, limits=(None, 10.0)), Choice("m", (0.5, 0.9), limits=(0.0, 1.0))))
    assert Space.from_dict(space.to_dict()) == space


def test_space_fmt_reads_like_a_person_writes():
    assert fmt(0.0032) == "3.2e-03"
    assert fmt(0.9) == "0.9"
    assert fmt(0) == "0"
    assert fmt(64) == "64"
    assert fmt("relu") == "relu"


def test_space_midpoint_is_one_rule_and_sorts_value_sets() -> None:
    space = Space((Range("lr", 1e-4, 1.0, log=True), Range("n", 1, 9, type="int"), Choice("m", (0.99, 0.5, 0.9))))
    mid = space.midpoint()
    assert mid["lr"] == pytest.approx(1e-2) and mid["n"] == 5 and isinstance(mid["n"], int)
    assert mid["m"] == 0.9  # the middle of the sorted set, not of the order written


def test_space_log_spaced_value_sets() -> None:
    assert Choice("wd", (0, 1e-5, 1e-4)).log_spaced
    assert Choice("bs", (16, 32, 64, 128, 256)).log_spaced
    assert Choice("lr", (1e-1, 1e-3, 1e-2)).log_spaced
    assert not Choice("momentum", (0.5, 0.9, 0.95, 0.99)).log_spaced
    assert not Choice("n", (1, 2, 3, 4)).log_spaced
    assert not Choice("act", ("relu", "tanh")).log_spaced
