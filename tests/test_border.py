"""Border detection on constructed trial sets: both sides, log and linear, value sets."""

from __future__ import annotations

from hpsearch.border import check_borders, row_flags
from hpsearch.space import Choice, Range, Space

LR = Range("lr", 1e-4, 1.0, log=True)
SPACE = Space(
    (LR, Range("dropout", 0.0, 0.5), Choice("momentum", (0.5, 0.9, 0.95, 0.99)), Choice("act", ("relu", "tanh")))
)


def _trials(*lrs, dropout=0.25, momentum=0.9, act="relu"):
    return [{"lr": lr, "dropout": dropout, "momentum": momentum, "act": act} for lr in lrs]


def _sides(flags):
    return {(f.param, f.side) for f in flags}


def test_border_best_at_high_end_of_log_range_is_flagged():
    flags = check_borders(SPACE, _trials(0.87, 0.01, 0.003), top_k=3)
    assert _sides(flags) == {("lr", "high")}
    message = flags[0].message()
    assert "lr" in message and "border" in message and "HIGH" in message
    assert "0.87" in message and "above" in message and "widen the range upward" in message


def test_border_low_end_measured_in_log_space():
    # 1.5e-4 is 4% of the way up [1e-4, 1] in log space (but 0.005% linearly: both flag);
    # 3e-4 is 12% of the way in log space: not in the outer 10%.
    assert _sides(check_borders(SPACE, _trials(1.5e-4), top_k=1)) == {("lr", "low")}
    assert _sides(check_borders(SPACE, _trials(3e-4), top_k=1)) == set()


def test_border_linear_range_both_sides():
    assert _sides(check_borders(SPACE, _trials(0.01, dropout=0.48), top_k=1)) == {("dropout", "high")}
    assert _sides(check_borders(SPACE, _trials(0.01, dropout=0.02), top_k=1)) == {("dropout", "low")}
    assert _sides(check_borders(SPACE, _trials(0.01, dropout=0.3), top_k=1)) == set()


def test_border_value_set_first_and_last_value():
    assert ("momentum", "high") in _sides(check_borders(SPACE, _trials(0.01, momentum=0.99), top_k=1))
    assert ("momentum", "low") in _sides(check_borders(SPACE, _trials(0.01, momentum=0.5), top_k=1))
    assert not any(f.param == "momentum" for f in check_borders(SPACE, _trials(0.01, momentum=0.95), top_k=1))


def test_border_string_sets_have_no_border():
    assert not any(f.param == "act" for f in check_borders(SPACE, _trials(0.01, act="relu"), top_k=1))


def test_border_majority_of_top_k_flags_even_when_best_is_inside():
    ranked = _trials(0.01) + _trials(0.9, 0.95, 0.8)  # best inside, 3 of the top 4 at HIGH
    flags = check_borders(SPACE, ranked, top_k=4)
    [flag] = [f for f in flags if f.param == "lr"]
    assert flag.side == "high" and not flag.best_on_border and flag.top_count == 3
    assert "3 of the top 4" in flag.message() and "HIGH border" in flag.message()
    # A minority at the border is no flag.
    assert not check_borders(SPACE, _trials(0.01, 0.02, 0.9), top_k=3)


def test_border_row_flags_name_param_and_side():
    assert row_flags(SPACE, {"lr": 0.9, "dropout": 0.01, "momentum": 0.9, "act": "relu"}) == ["lr:high", "dropout:low"]
    assert row_flags(SPACE, {"lr": 0.01, "dropout": 0.2, "momentum": 0.9, "act": "relu"}) == []


def test_border_no_trials_no_flags():
    assert check_borders(SPACE, [], top_k=5) == []


def test_border_flag_at_a_domain_bound_says_at_its_limit_not_widen():
    # dropout [0, 0.5] is a fraction (inferred): best at 0 cannot go lower.
    flags = check_borders(SPACE, _trials(0.01, dropout=0.0), top_k=1)
    [flag] = [f for f in flags if f.param == "dropout"]
    assert flag.side == "low" and flag.at_limit
    message = flag.message()
    assert "at its limit 0" in message and "a fraction" in message and "cannot widen" in message
    assert "will widen" not in message
    # The leaderboard's border column keeps it.
    assert row_flags(SPACE, {"lr": 0.01, "dropout": 0.0, "momentum": 0.9, "act": "relu"}) == ["dropout:low"]


def test_border_flag_with_room_to_widen_is_not_at_limit():
    [flag] = [f for f in check_borders(SPACE, _trials(0.01, dropout=0.48), top_k=1) if f.param == "dropout"]
    assert not flag.at_limit and "will widen the range upward" in flag.message()
    # momentum {0.5, ..., 0.99} is a fraction below 1: 0.99 still has room (halfway to 1).
    [flag] = [f for f in check_borders(SPACE, _trials(0.01, momentum=0.99), top_k=1) if f.param == "momentum"]
    assert not flag.at_limit
    # int >= 1: a set starting at 1 is at its limit below.
    space = Space((Choice("layers", (1, 2, 3)),))
    [flag] = check_borders(space, [{"layers": 1}], top_k=1)
    assert flag.at_limit and "int >= 1" in flag.message()
