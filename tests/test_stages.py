"""Stage logic: refine derivation (narrowing, widening past flagged borders), running, resuming."""

from __future__ import annotations

import math

import pytest
from optuna.trial import TrialState

from hpsearch.border import check_borders
from hpsearch.errors import SpecError, StageFailed
from hpsearch.refine import derive_space
from hpsearch.search.stages import plan_refine, run_stage, start_coarse
from hpsearch.space import Choice, Range, Space
from hpsearch.spec import Strategy, load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import trial_attr

LR = Range("lr", 1e-4, 1.0, log=True)


def _derive(param, values, top_k=None, strategy=Strategy.random):
    space = Space((param,))
    top = [{param.name: v} for v in values]
    flags = check_borders(space, top, top_k or len(top))
    new, changes = derive_space(space, top, flags, strategy)
    return new[param.name], changes[0]


# ---------------------------------------------------------------- derivation


def test_stages_log_range_narrows_around_top_values_with_margin():
    new, change = _derive(LR, [1e-2, 3e-3, 2e-2])
    lo, hi = math.log10(3e-3), math.log10(2e-2)
    margin = max(0.25 * (hi - lo), 0.1)
    assert math.isclose(math.log10(new.low), lo - margin, abs_tol=0.01)
    assert math.isclose(math.log10(new.high), hi + margin, abs_tol=0.01)
    assert new.log and LR.low < new.low < 3e-3 and 2e-2 < new.high < LR.high
    assert "top-3 span" in change["why"] and change["old"] == LR.describe() and change["new"] == new.describe()


def test_stages_single_top_value_gets_at_least_a_tenth_of_a_decade():
    new, _ = _derive(LR, [1e-2])
    assert math.log10(new.high) - math.log10(new.low) >= 0.2 - 1e-9


def test_stages_grid_parent_pads_by_half_a_grid_step():
    grid_lr = Range("lr", 1e-4, 1.0, log=True, grid_points=5)  # one decade between points
    new, _ = _derive(grid_lr, [1e-2], strategy=Strategy.grid)
    assert math.isclose(math.log10(new.low), -2.5, abs_tol=0.01)
    assert math.isclose(math.log10(new.high), -1.5, abs_tol=0.01)


def test_stages_flagged_high_border_widens_a_decade_above_old_bound():
    new, change = _derive(LR, [0.9, 0.8, 0.5])
    assert new.high == pytest.approx(10.0)
    assert new.low > LR.low  # the other side still narrows
    assert "HIGH border" in change["why"]


def test_stages_flagged_low_border_widens_a_decade_below():
    new, _ = _derive(LR, [1.2e-4, 2e-4, 1.1e-4])
    assert new.low == pytest.approx(1e-5)
    assert new.high < LR.high


def test_stages_widening_stops_at_limits():
    bounded = Range("momentum", 0.5, 0.99, limits=(0.0, 1.0))
    new, change = _derive(bounded, [0.985, 0.98])
    assert new.high == 1.0 and "limit" in change["why"]


def test_stages_linear_range_widens_by_half_its_width():
    new, _ = _derive(Range("dropout", 0.0, 0.4), [0.39, 0.38])
    assert new.high == pytest.approx(0.6)


def test_stages_int_range_stays_int_and_nonempty():
    new, _ = _derive(Range("hidden", 16, 512, log=True, type="int"), [128, 128])
    assert isinstance(new.low, int) and isinstance(new.high, int) and new.low < 128 < new.high


def test_stages_value_set_keeps_used_values_and_neighbours():
    wd = Choice("wd", (0, 1e-5, 1e-4, 1e-3, 1e-2))
    new, _ = _derive(wd, [1e-4, 1e-4], top_k=2)
    assert new.values == (1e-5, 1e-4, 1e-3)


def test_stages_value_set_extends_past_flagged_high_end_geometrically():
    wd = Choice("wd", (0, 1e-5, 1e-4, 1e-3))
    new, change = _derive(wd, [1e-3])
    assert new.values == (1e-4, 1e-3, 1e-2)
    assert "added 0.01 above" in change["why"]


def test_stages_value_set_extends_halfway_to_limit():
    momentum = Choice("momentum", (0.5, 0.9, 0.95, 0.99), limits=(0.0, 1.0))
    new, _ = _derive(momentum, [0.99])
    assert new.values == (0.95, 0.99, 0.995)


def test_stages_value_set_starting_at_zero_gains_a_value_between():
    wd = Choice("wd", (0, 1e-5, 1e-4, 1e-3))
    new, _ = _derive(wd, [0])
    assert new.values == (0, 1e-6, 1e-5)


def test_stages_string_set_keeps_values_used():
    act = Choice("act", ("relu", "tanh", "gelu"))
    new, _ = _derive(act, ["gelu", "relu"])
    assert set(new.values) == {"relu", "gelu"}


# ---------------------------------------------------------------- running


def _coarse(study_file, **kwargs):
    spec = load_spec(study_file(**kwargs))
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    return store, info


def test_stages_random_stage_samples_lr_log_uniformly(study_file):
    store, info = _coarse(study_file, workload="peak_inside", coarse="trials = 40\nepochs = 1")
    result = run_stage(store, info)
    lrs = [t.params["lr"] for t in result.trials]
    assert len(lrs) == 40
    decades = [sum(10.0**d <= lr < 10.0 ** (d + 1) for lr in lrs) for d in range(-4, 0)]
    # Log-uniform puts ~10 per decade; a linear draw would put ~36 in the top decade.
    assert all(n >= 4 for n in decades), decades


def test_stages_grid_stage_runs_each_point_once(study_file):
    params = (
        "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\ngrid_points = 5\n\n[params.momentum]\nvalues = [0.9, 0.99]\n"
    )
    store, info = _coarse(
        study_file, workload="peak_inside", coarse='strategy = "grid"\ntrials = 100\nepochs = 1', params=params
    )
    result = run_stage(store, info)
    points = [(round(math.log10(t.params["lr"]), 6), t.params["momentum"]) for t in result.trials]
    assert len(points) == 10 and len(set(points)) == 10
    assert {p[0] for p in points} == {-4.0, -3.0, -2.0, -1.0, 0.0}


def test_stages_crashing_trials_are_recorded_and_search_goes_on(study_file):
    store, info = _coarse(study_file, workload="crash_high_lr", coarse="trials = 10\nepochs = 1")
    result = run_stage(store, info)
    completed = [t for t in result.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in result.trials if t.state == TrialState.FAIL]
    assert len(completed) == 10  # failures do not count toward the target
    assert failed and all("ValueError: lr" in t.user_attrs["reason"] for t in failed)
    assert all(t.params["lr"] > 0.1 for t in failed)


def test_stages_every_trial_failing_raises_stage_failed(study_file):
    store, info = _coarse(study_file, workload="always_fails")
    with pytest.raises(StageFailed, match="out of memory") as error:
        run_stage(store, info)
    assert error.value.exit_code == 1


def test_stages_exploding_loss_is_pruned_as_diverged(study_file):
    store, info = _coarse(study_file, workload="explodes", coarse="trials = 12\nepochs = 3")
    result = run_stage(store, info)
    pruned = [t for t in result.trials if t.state == TrialState.PRUNED]
    assert pruned and all(t.user_attrs["reason"] == "diverged" and t.params["lr"] > 0.1 for t in pruned)
    # Stopped at the epoch where the loss passed 3x its first value, not trained to the end.
    assert all(len(trial_attr(t, "curves")["train_loss"]) == 2 for t in pruned)


def test_stages_nan_loss_is_diverged(study_file):
    store, info = _coarse(study_file, workload="nan_loss", coarse="trials = 2\nepochs = 1")
    result = run_stage(store, info)
    assert {t.user_attrs["reason"] for t in result.trials} == {"diverged"}


def test_stages_metric_never_returned_is_a_spec_error(study_file):
    store, info = _coarse(study_file, workload="wrong_metric")
    with pytest.raises(SpecError, match=r"metric: the workload never returns 'val_accuracy' \(it returned: accuracy\)"):
        run_stage(store, info)


def test_stages_per_epoch_curves_are_stored(study_file):
    store, info = _coarse(study_file, coarse="trials = 2\nepochs = 3")
    trial = run_stage(store, info).trials[0]
    assert set(trial_attr(trial, "curves")) == {"train_loss", "val_loss", "val_accuracy"}
    assert len(trial_attr(trial, "curves")["train_loss"]) == 3
    assert sorted(trial.intermediate_values) == [0, 1, 2]


def test_stages_interrupted_stage_resumes_without_redoing(study_file, monkeypatch):
    import tests.workloads.fake as fake

    store, info = _coarse(study_file, coarse="trials = 8\nepochs = 1")
    calls = {"n": 0}
    original = fake.peak_above

    def interrupt_on_fifth(trial):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(trial)

    from hpsearch.dispatch import runner

    monkeypatch.setattr(runner, "load_workload", lambda path: interrupt_on_fifth)
    with pytest.raises(KeyboardInterrupt):
        run_stage(store, info)
    trials = store.trials(info)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    [interrupted] = [t for t in trials if t.state == TrialState.FAIL]
    assert interrupted.user_attrs["reason"] == "interrupted"

    monkeypatch.setattr(runner, "load_workload", lambda path: original)
    before = {t.number: t.params for t in trials if t.state == TrialState.COMPLETE}
    result = run_stage(store, info)
    complete = {t.number: t.params for t in result.trials if t.state == TrialState.COMPLETE}
    assert len(complete) == 8 and result.ran == 4  # only the missing four ran
    assert all(complete[n] == p for n, p in before.items())  # the first four kept, not redone


def test_stages_rerun_of_finished_stage_runs_nothing(study_file):
    store, info = _coarse(study_file, coarse="trials = 3\nepochs = 1")
    run_stage(store, info)
    assert run_stage(store, info).ran == 0


def test_stages_coarse_resume_with_changed_space_is_refused(study_file):
    store, info = _coarse(study_file, coarse="trials = 2\nepochs = 1")
    run_stage(store, info)  # with completed trials the stored stage may no longer change under them
    spec = load_spec(study_file(params="[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n"))
    with pytest.raises(SpecError, match="params: differs from the coarse stage already stored"):
        start_coarse(store, spec, {})


def test_stages_stale_running_trial_of_dead_process_becomes_interrupted(study_file):
    store, info = _coarse(study_file, coarse="trials = 2\nepochs = 1")
    study = store.study(info)
    ghost = study.ask(info.space.distributions())
    ghost.set_user_attr("owner", f"{__import__('socket').gethostname()}:999999999")
    result = run_stage(store, info)
    [stale] = [t for t in result.trials if t.number == ghost.number]
    assert stale.state == TrialState.FAIL and stale.user_attrs["reason"] == "interrupted"


def test_stages_refine_from_border_extends_range_above(study_file):
    # 40 draws: some land in lr's top 10% for all but 1.5% of seeds (with 20, 12% of seeds drew none there)
    store, info = _coarse(study_file, workload="peak_above", coarse="trials = 40\nepochs = 1")
    run_stage(store, info)
    refined, flags, resumed = plan_refine(store, None, {})
    assert not resumed and refined.name == "refine-1" and refined.parent == "coarse"
    assert ("lr", "high") in {(f.param, f.side) for f in flags}
    assert refined.space["lr"].high > 1.0
    assert refined.settings.epochs == 3 and refined.settings.trials == 6
    result = run_stage(store, refined)
    assert max(t.params["lr"] for t in result.trials) > 1.0
    # refine can repeat: refine-2 from refine-1
    assert plan_refine(store, None, {})[0].name == "refine-2"
    assert [s.name for s in store.stages()] == ["coarse", "refine-1", "refine-2"]


def test_stages_unfinished_refine_is_continued_not_duplicated(study_file):
    store, info = _coarse(study_file, workload="peak_inside", coarse="trials = 6\nepochs = 1")
    run_stage(store, info)
    first, _, _ = plan_refine(store, None, {})
    again, _, resumed = plan_refine(store, None, {})
    assert resumed and again.name == first.name == "refine-1"


def test_stages_refine_from_stage_without_completed_trials_is_an_error(study_file):
    store, info = _coarse(study_file, workload="always_fails")
    with pytest.raises(StageFailed):
        run_stage(store, info)
    from hpsearch.errors import HpsearchError

    with pytest.raises(HpsearchError, match="no completed trials to refine from"):
        plan_refine(store, None, {})
