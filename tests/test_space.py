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
    space = Space(
        (Range("lr", 1e-3, 1e-1, log=True, grid_points=3), Choice("m", (0.9, 0.99)), Choice("act", ("relu", "tanh")))
    )
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


def test_space_domain_infers_natural_bounds_with_a_reason() -> None:
    cases = {
        Range("dropout", 0.0, 0.5): ("[0, 1)", "a fraction: inside [0, 1]"),
        Range("keep", 0.5, 1.0): ("[0, 1]", "a fraction: inside [0, 1]"),
        Range("lr", 1e-5, 0.1, log=True): ("(0, inf)", "log: > 0"),
        Range("scale", 2.0, 10.0): ("[0, inf)", "non-negative"),
        Range("hidden", 8, 256, log=True, type="int"): ("[1, inf)", "int >= 1"),
        Range("shift", -1.0, 1.0): ("(-inf, inf)", ""),
        Choice("momentum", (0.5, 0.9, 0.95, 0.99)): ("[0, 1)", "a fraction: inside [0, 1]"),
        Choice("batch_size", (16, 32, 64)): ("[1, inf)", "int >= 1"),
        Choice("wd", (0, 1e-5, 1e-4)): ("[0, inf)", "non-negative"),  # log-spaced: never a fraction
        Choice("lr", (1e-3, 1e-2, 1e-1)): ("(0, inf)", "log: > 0"),
        Choice("act", ("relu", "tanh")): ("(-inf, inf)", ""),
    }
    for param, (text, why) in cases.items():
        domain = param.domain()
        assert (domain.describe(), domain.why) == (text, why), param


def test_space_explicit_limits_decide_their_side_but_log_stays_positive() -> None:
    domain = Range("m", 0.5, 0.99, limits=(0.0, 1.0)).domain()
    assert domain.describe() == "[0, 1]" and domain.why == "limits [0, 1]" and domain.low.explicit
    log = Range("lr", 1e-4, 1.0, log=True, limits=(0.0, 10.0)).domain()
    assert not log.contains(0.0) and log.contains(10.0)


def test_space_at_limit_when_an_end_is_on_its_domain_bound() -> None:
    assert Range("dropout", 0.0, 0.5).at_limit("low") and not Range("dropout", 0.0, 0.5).at_limit("high")
    assert Range("keep", 0.5, 1.0).at_limit("high")
    assert Choice("layers", (1, 2, 3)).at_limit("low") and not Choice("bs", (16, 32)).at_limit("low")
    assert not Range("lr", 1e-4, 1.0, log=True).at_limit("low")
    assert not Choice("act", ("relu", "tanh")).at_limit("low")


def test_space_int_range_bounds_are_python_ints() -> None:
    r = Range("n", 2.0, 16.0, log=True, type="int")
    assert type(r.low) is int and type(r.high) is int and all(type(v) is int for v in r.grid())
