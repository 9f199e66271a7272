"""Refine stays inside each param's domain and type: inferred natural bounds, int sets and ranges, at-limit borders."""

from __future__ import annotations

import pytest

from hpsearch.border import check_borders
from hpsearch.direction import Direction
from hpsearch.refine import derive_space
from hpsearch.space import Choice, Range, Space
from hpsearch.strategy import Strategy


def _derive(param, values, strategy=Strategy.random):
    space = Space((param,))
    top = [{param.name: v} for v in values]
    flags = check_borders(space, top, len(top))
    new, changes = derive_space(space, top, flags, strategy)
    return new[param.name], changes[0], flags


def _ends(p):
    return (p.low, p.high) if isinstance(p, Range) else (p.ordered[0], p.ordered[-1])


# ---------------------------------------------------------------- fractions


def test_refine_momentum_set_without_limits_stays_below_1():
    new, change, _ = _derive(Choice("momentum", (0.5, 0.9, 0.95, 0.99)), [0.99])
    assert new.values == (0.95, 0.99, 0.995)  # halfway to 1, never 1.03
    assert "a fraction" in change["why"] and "inferred" in change["why"]


def test_refine_linear_fraction_range_widens_only_halfway_to_1():
    new, change, _ = _derive(Range("momentum", 0.5, 0.99), [0.985, 0.98])
    assert 0.99 < new.high < 1.0 and new.high == pytest.approx(0.995)
    assert "halfway" in change["why"] and "a fraction" in change["why"]


def test_refine_fraction_range_that_includes_1_is_at_its_limit_there():
    new, change, flags = _derive(Range("keep", 0.5, 1.0), [0.99])
    assert new.high == 1.0
    assert flags[0].at_limit and "at its limit" in change["why"] and "widened" not in change["why"]


def test_refine_dropout_at_0_is_at_its_limit_and_never_negative():
    new, change, flags = _derive(Range("dropout", 0.0, 0.5), [0.0, 0.01])
    [flag] = flags
    assert flag.side == "low" and flag.at_limit
    assert new.low == 0.0 and new.high < 0.5  # not -0.25; the other side still narrows
    assert "cannot widen below: at its limit 0" in change["why"] and "widened" not in change["why"]


def test_refine_fraction_range_widening_below_holds_at_0():
    new, change, flags = _derive(Range("dropout", 0.1, 0.5), [0.11, 0.12])
    assert not flags[0].at_limit
    assert new.low == 0.0  # widened by half the width would be -0.1
    assert "held at its limit 0" in change["why"]


def test_refine_log_range_inside_0_1_is_no_fraction():
    new, change, _ = _derive(Range("lr", 1e-5, 0.1, log=True), [0.09, 0.08])
    assert new.high == pytest.approx(1.0)  # a decade past 0.1
    assert "fraction" not in change["why"]


def test_refine_non_negative_range_never_goes_below_0():
    new, change, _ = _derive(Range("scale", 2.0, 10.0), [2.1])
    assert new.low == 0.0  # half the width below would be -2
    assert "non-negative" in change["why"]


def test_refine_range_with_negative_values_is_unbounded():
    new, _, _ = _derive(Range("shift", -1.0, 1.0), [-0.99])
    assert new.low == pytest.approx(-2.0)


# ---------------------------------------------------------------- ints


def test_refine_int_value_set_widens_to_ints_by_its_spacing():
    bs = Choice("batch_size", (16, 32, 64, 128, 256))
    high, _, _ = _derive(bs, [256])
    low, _, _ = _derive(bs, [16])
    assert high.values == (128, 256, 512) and low.values == (8, 16, 32)
    assert all(type(v) is int for v in high.values + low.values)


def test_refine_arithmetic_int_set_stays_int_and_at_least_1():
    new, _, _ = _derive(Choice("layers", (2, 4, 6)), [2])
    assert new.values == (1, 2, 4) and all(type(v) is int for v in new.values)  # 2 - 2 = 0 would cross 1
    new, change, flags = _derive(Choice("layers", (1, 2, 3, 4)), [1])
    assert flags[0].at_limit and new.values == (1, 2) and "at its limit 1" in change["why"]


def test_refine_int_log_range_inside_keeps_its_exact_bounds():
    p = Range("hidden", 8, 256, log=True, type="int")
    new, _, flags = _derive(p, [13, 150])  # neither in the border zone: narrowing clips at the old bounds
    assert not flags
    assert (new.low, new.high) == (8, 256) and type(new.low) is int and type(new.high) is int  # not [7, 256]


def test_refine_int_range_widening_below_stops_at_1():
    new, change, _ = _derive(Range("hidden", 8, 256, log=True, type="int"), [8, 9])
    assert new.low == 1 and type(new.low) is int and "int >= 1" in change["why"]
    new, _, _ = _derive(Range("layers", 2, 8, type="int"), [2, 2])
    assert new.low == 1  # not -1


def test_refine_int_range_holds_python_ints_even_from_floats():
    p = Range("hidden", 8.0, 256.0, type="int")
    assert type(p.low) is int and type(p.high) is int
    assert type(Space.from_dict({"n": {"low": 4.0, "high": 16.0, "type": "int"}})["n"].low) is int
    with pytest.raises(ValueError):
        Range("hidden", 8.5, 256, type="int")


# ---------------------------------------------------------------- value sets at 0, explicit limits


def test_refine_weight_decay_best_at_0_is_at_limit_and_gains_a_smaller_value():
    new, change, flags = _derive(Choice("wd", (0, 1e-5, 1e-4, 1e-3)), [0])
    assert flags[0].at_limit
    assert new.values == (0, 1e-6, 1e-5)
    assert "at its limit 0" in change["why"] and "between 0 and" in change["why"]


def test_refine_geometric_set_is_no_fraction():
    new, _, _ = _derive(Choice("lr", (1e-3, 1e-2, 1e-1)), [1e-1])
    assert new.values == (1e-2, 1e-1, 1.0)


def test_refine_explicit_limits_still_win():
    new, change, _ = _derive(Range("m", 0.5, 0.99, limits=(0.0, 1.0)), [0.985, 0.98])
    assert new.high == 1.0 and "limits [0, 1]" in change["why"]
    new, _, _ = _derive(Range("scale", 2.0, 10.0, limits=(-5.0, None)), [2.1])
    assert new.low == pytest.approx(-2.0)  # the explicit limit replaces the inferred non-negative bound


def test_refine_every_new_value_is_inside_the_domain():
    params = [
        Choice("momentum", (0.5, 0.9, 0.95, 0.99)),
        Range("dropout", 0.0, 0.5),
        Range("m", 0.9, 0.9999),
        Choice("bs", (16, 32, 64)),
        Range("n", 1, 4, type="int"),
        Choice("f", (0.1, 0.2, 0.3)),
    ]
    for p in params:
        lo, hi = _ends(p)
        for values in ([lo], [hi]):
            new, _, _ = _derive(p, values)
            domain = p.domain()
            assert all(domain.contains(v) for v in _ends(new)), (p, new)


def test_refine_domain_is_inferred_from_the_study_files_range_not_the_narrowed_one():
    """[0.1, 5] is non-negative, not a fraction: narrowed to inside [0, 1], a later refine may still cross 1."""
    narrowed, _, _ = _derive(Range("scale", 0.1, 5.0), [0.3, 0.35, 0.4])
    assert narrowed.high < 1 and narrowed.origin == (0.1, 5.0, False)  # refine-1 remembers the study file's span
    inside = Range("scale", 0.6, 0.9, origin=(0.1, 5.0, False))  # a refine-1 range, best on its HIGH border
    again, _, _ = _derive(inside, [0.9] * 3)
    assert again.high > 1.0  # widened by half its width, 1.05: not held below 1 as a "fraction"
    fresh, _, _ = _derive(Range("scale", 0.6, 0.9), [0.9] * 3)  # the same range straight from a study file
    assert fresh.high < 1.0
    from hpsearch.space import Space

    assert Space.from_dict(Space((again,)).to_dict())["scale"] == again  # the origin is stored with the stage


# ---------------------------------------------------------------- momentum through stored stages (issue 16)

MOMENTUM_WORKLOAD = f"{__import__('pathlib').Path(__file__).parent / 'workloads' / 'issue16.py'}:momentum_high"


@pytest.mark.parametrize(
    "momentum",
    ["[params.momentum]\nlow = 0.5\nhigh = 0.99\n", "[params.momentum]\nvalues = [0.5, 0.9, 0.95, 0.99]\n"],
    ids=["range", "set"],
)
def test_refine_best_momentum_at_0_99_border_never_widens_past_1(study_file, momentum) -> None:
    """No limits given: the domain [0, 1] is inferred from the study file's [0.5, 0.99], in every refine."""
    from hpsearch.search.stages import plan_refine, run_stage, start_coarse
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store

    params = "[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n\n" + momentum
    spec = load_spec(
        study_file(
            workload=MOMENTUM_WORKLOAD,
            coarse="trials = 16\nepochs = 1",
            refine="trials = 8\nepochs = 1\ntop_k = 4",
            params=params,
        )
    )
    store = Store(spec.name)
    run_stage(store, start_coarse(store, spec, {}))
    for stage in ("refine-1", "refine-2"):
        refined, flags, _ = plan_refine(store, None, {})
        assert refined.name == stage
        if stage == "refine-1":
            assert ("momentum", "high") in {(f.param, f.side) for f in flags}  # the best crowd 0.99
        assert 0.99 <= _ends(refined.space["momentum"])[1] < 1.0, refined.space["momentum"]
        run_stage(store, refined)
        assert all(t.params["momentum"] < 1.0 for t in store.trials(refined))


def _stage(space: Space, top_k: int = 5):
    from types import SimpleNamespace

    return SimpleNamespace(
        space=space,
        spec=SimpleNamespace(direction=Direction.maximize),
        settings=SimpleNamespace(top_k=top_k),
    )


def _trials(rows: list[tuple[dict, float]]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import create_trial

    dists = {"lr": FloatDistribution(1e-4, 1.0, log=True), "weight_decay": CategoricalDistribution([1e-5, 1e-4, 1e-3])}
    return [create_trial(params=p, distributions=dists, value=v) for p, v in rows]


SPACE = Space((Range("lr", 1e-4, 1.0, log=True), Choice("weight_decay", (1e-5, 1e-4, 1e-3))))


def test_stage_flags_count_configurations_not_runs() -> None:
    """A lucky run at the border whose re-run fell behind: its configuration ranks by its mean, so the
    border warning neither fires on the lucky run nor counts it and its re-run as two of the top."""
    from hpsearch.refine import stage_flags

    a, b, c = {"lr": 0.01, "weight_decay": 1e-3}, {"lr": 0.02, "weight_decay": 1e-4}, {"lr": 0.03, "weight_decay": 1e-5}
    trials = _trials([(a, 0.90), (a, 0.80), (b, 0.88), (b, 0.87), (c, 0.5)])
    assert [f.param for f in stage_flags(_stage(SPACE), trials)] == []
    # At the border by its mean, with its re-run: one configuration of the top 3, not "2 of the top 5".
    flags = stage_flags(_stage(SPACE), _trials([(a, 0.90), (a, 0.89), (b, 0.88), (b, 0.87), (c, 0.5)]))
    [flag] = [f for f in flags if f.param == "weight_decay"]
    assert "of the top 3" not in flag.message() and flag.top_k == 3 and flag.top_count == 1


def test_border_warning_says_what_refine_then_does() -> None:
    """The warning's promise is the rule refine applies: the value a set gains, a range's new end."""
    from hpsearch.refine import stage_flags
    from hpsearch.space import fmt

    best = {"lr": 1.0, "weight_decay": 1e-3}
    trials = _trials([(best, 0.9), ({"lr": 0.01, "weight_decay": 1e-4}, 0.5)])
    flags = stage_flags(_stage(SPACE), trials)
    by_param = {f.param: f for f in flags}
    space, _ = derive_space(SPACE, [best], flags, Strategy.random)
    assert f"refine will add {fmt(1e-2)} to the set" in by_param["weight_decay"].message()
    assert 1e-2 in space["weight_decay"].values
    assert f"refine will widen it upward to {fmt(space['lr'].high)}" in by_param["lr"].message()
    assert space["lr"].high == pytest.approx(10.0)


def test_border_warning_at_a_limit_says_what_refine_adds_below_zero() -> None:
    from hpsearch.refine import plan_widening

    space = Space((Choice("weight_decay", (0.0, 1e-5, 1e-4)),))
    [flag] = plan_widening(space, check_borders(space, [{"weight_decay": 0.0}], 5))
    new, _ = derive_space(space, [{"weight_decay": 0.0}], [flag], Strategy.random)
    added = [v for v in new["weight_decay"].values if v not in space["weight_decay"].values]
    assert flag.at_limit and added and "refine will add" in flag.message() and "between 0 and" in flag.message()
