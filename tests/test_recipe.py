"""The whole recipe (recipe.py): budget accounting, re-runs, carry, the stop rule, resume, timeout."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsearch.durations import parse_duration
from hpsearch.errors import HpsearchError, SpecError
from hpsearch.repeats import ranked_configs
from hpsearch.search.plan import (
    MAX_COARSE_TRIALS,
    MAX_REFINE_TRIALS,
    MIN_COARSE_TRIALS,
    MIN_REFINE_TRIALS,
    default_budget,
    plan_stages,
)
from hpsearch.search.recipe import (
    EXPLORE_ATTR,
    search,
    spent,
    spread_points,
    stands_out,
)
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.space import Choice, Range, Space
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import CARRIED_ATTR, REPEAT_ATTR, spent_epochs

RECIPE = Path(__file__).parent / "workloads" / "recipe.py"
LINE = re.compile(
    r"^(coarse|refine-\d+): best (-?\d\.\d{4}|-?\d\.\d{4} → -?\d\.\d{4}) \((noise ±\d\.\d{4}|noise not measured)\), "
    r"budget \d+/\d+ epochs left: (refine|refine again|stop \(.+\))$"
)


def _study(
    study_file, workload="noisy_peak", coarse="trials = 10\nepochs = 1\nseed = 0", refine="trials = 10\nepochs = 3"
):
    return load_spec(study_file(workload=f"{RECIPE}:{workload}", coarse=coarse, refine=refine))


def test_search_default_budget_is_coarse_plus_two_refines(study_file, tmp_path: Path) -> None:
    spec = _study(study_file)
    assert default_budget(spec) == (10 + 5) * 1 + 2 * 10 * 3
    lines: list[str] = []
    store = Store(spec.name, tmp_path / "r")
    result = search(store, spec, say=lines.append)
    assert [s.name for s in result.stages] == ["coarse", "refine-1", "refine-2"]
    assert lines[0].startswith("search plans its stages from the budget:")  # the plan replaced the file's stages
    assert all(LINE.match(line) for line in lines[1:]), lines
    assert lines[-1].endswith("stop (budget spent)")
    assert spent(store) <= default_budget(spec)


def test_search_never_spends_more_than_the_budget_and_sizes_the_last_stage(study_file, tmp_path: Path) -> None:
    spec = _study(study_file)
    store = Store(spec.name, tmp_path / "r")
    result = search(store, spec, budget=60, say=lambda line: None)
    assert spent(store) <= 60
    last = result.stages[-1]
    assert last.name == "refine-2"
    assert last.settings.budget == 60 - spent(store, 1)  # what was left after refine-1
    assert last.settings.budget < 10 * 3  # smaller than a full refine stage


def test_search_pruned_and_failed_trials_count_the_epochs_they_ran(study_file, tmp_path: Path) -> None:
    spec = load_spec(
        study_file(workload=f"{RECIPE.parent / 'issue16.py'}:crash_after_2", coarse="trials = 6\nepochs = 4\nseed = 0")
    )
    store = Store(spec.name, tmp_path / "r")
    info = start_coarse(store, spec, {"budget": 14, "trials": 50})
    run_stage(store, info)
    trials = store.trials(info)
    assert spent_epochs(trials, 4) <= 14
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert all(t.user_attrs["result"]["epochs_run"] == 2 for t in failed)


def test_search_reruns_the_top_configurations_and_carries_them_into_refine(study_file, tmp_path: Path) -> None:
    spec = _study(study_file)
    store = Store(spec.name, tmp_path / "r")
    search(store, spec, say=lambda line: None)
    coarse, refine1 = store.stage("coarse"), store.stage("refine-1")
    repeats = [t for t in store.trials(coarse) if REPEAT_ATTR in t.user_attrs]
    assert len(repeats) == 5
    configs = ranked_configs(store.trials(coarse), "maximize")
    assert configs[0].n == 2  # the best was re-run: its mean, not one lucky run, ranks it
    carried = [t for t in store.trials(refine1) if t.user_attrs.get(CARRIED_ATTR)]
    assert carried and carried[0].number == 0
    assert carried[0].params == configs[0].params  # the coarse best, re-run at the new length


def test_search_stops_when_the_best_moves_less_than_the_noise(study_file, tmp_path: Path) -> None:
    spec = _study(study_file, workload="flat")
    lines: list[str] = []
    result = search(Store(spec.name, tmp_path / "r"), spec, budget=10_000, say=lines.append)
    assert lines[-1].endswith("stop (the best moved less than the noise)")
    assert result.stages[-1].name == "refine-2"  # refine-1 is at a new length: always compared again


def test_search_resumes_after_an_interrupt(study_file, tmp_path: Path) -> None:
    spec = _study(study_file)
    store = Store(spec.name, tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):
        search(store, spec, listener=_interrupt_at("refine-1", 3), say=lambda line: None)
    assert store.stage(None).name == "refine-1"
    lines: list[str] = []
    result = search(store, spec, say=lines.append)
    assert [s.name for s in store.stages()] == ["coarse", "refine-1", "refine-2"]
    assert (
        lines[0].startswith("search plans") and lines[1].startswith("coarse: ") and lines[-1].startswith("refine-2: ")
    )
    assert spent(store) <= default_budget(spec)
    done = [t for t in store.trials(store.stage("refine-1")) if t.state == TrialState.COMPLETE]
    assert len(done) == store.stage("refine-1").settings.trials
    assert result.best is not None


def test_search_timeout_ends_a_stage_that_the_same_call_continues(study_file, tmp_path: Path) -> None:
    spec = _study(study_file)
    store = Store(spec.name, tmp_path / "r")
    result = search(store, spec, deadline=time.monotonic() - 1, say=lambda line: None)
    assert result.timed_out and [s.name for s in store.stages()] == ["coarse"]
    assert store.trials(store.stage("coarse")) == []
    result = search(store, spec, say=lambda line: None)
    assert not result.timed_out and result.stages[-1].name == "refine-2"


def test_metric_epoch_best_takes_the_best_epoch(study_file, tmp_path: Path) -> None:
    path = study_file(workload=f"{RECIPE}:rises_then_falls", coarse="trials = 2\nepochs = 4\nseed = 0")
    last = load_spec(path)
    path.write_text(path.read_text().replace('direction = "maximize"', 'direction = "maximize"\nmetric_epoch = "best"'))
    best = load_spec(path)
    assert best.metric_epoch == "best" and last.metric_epoch == "last"
    for spec, want in ((last, 0.6), (best, 0.9)):
        store = Store(spec.name + spec.metric_epoch, tmp_path / "r")
        trials = run_stage(store, start_coarse(store, spec, {})).trials
        assert [t.value for t in trials] == [want, want]


def test_spec_budget_and_metric_epoch_are_validated(study_file) -> None:
    path = study_file()
    text = path.read_text()
    path.write_text(text.replace('direction = "maximize"', 'direction = "maximize"\nbudget = 120'))
    assert load_spec(path).budget == 120
    for bad in ("budget = 0", 'metric_epoch = "first"'):
        path.write_text(text.replace('direction = "maximize"', f'direction = "maximize"\n{bad}'))
        with pytest.raises(SpecError):
            load_spec(path)


def test_parse_duration() -> None:
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("1h30m") == 5400
    for bad in ("", "soon", "0s", "1h30"):
        with pytest.raises(HpsearchError):
            parse_duration(bad)


def _interrupt_at(stage: str, finished: int):
    """A search listener that raises KeyboardInterrupt (Ctrl-C) when `stage` has finished that many trials."""
    seen = {"n": 0}

    def listener(info):
        def hear(event):
            if event.kind == "finish" and info.name == stage:
                seen["n"] += 1
                if seen["n"] == finished:
                    raise KeyboardInterrupt

        return hear

    return listener


def _planned(study_file, refine="epochs = 10", coarse="seed = 3", extra=""):
    path = study_file(workload=f"{RECIPE}:noisy_peak", coarse=coarse, refine=refine)
    if extra:
        path.write_text(path.read_text().replace('direction = "maximize"', f'direction = "maximize"\n{extra}'))
    return load_spec(path)


def test_plan_stages_coarse_is_tpe_at_a_third_of_refine_and_half_the_budget(study_file) -> None:
    spec = _planned(study_file)
    plan = plan_stages(spec, 400)
    assert plan.coarse.strategy.value == "tpe" and plan.coarse.epochs == 3
    coarse_cost = (plan.coarse.trials + 5) * 3  # its trials and the re-runs of its top 5
    assert 190 <= coarse_cost <= 200  # about half the budget
    assert plan.refine.epochs == 10 and plan.refine.trials == 12  # 60% of the 202 epochs left, at 10 each
    assert plan.coarse.seed == 3 and plan.refine.top_k == spec.refine.top_k  # kept from the study file
    assert plan_stages(_planned(study_file, refine="epochs = 15"), 400).coarse.epochs == 5
    assert plan_stages(_planned(study_file, refine="epochs = 2"), 400).coarse.epochs == 1


def test_plan_stages_scales_with_the_budget_within_bounds(study_file) -> None:
    spec = _planned(study_file)
    small, large = plan_stages(spec, 30), plan_stages(spec, 1_000_000)
    assert small.coarse.trials == MIN_COARSE_TRIALS and small.refine.trials == MIN_REFINE_TRIALS
    assert large.coarse.trials == MAX_COARSE_TRIALS and large.refine.trials == MAX_REFINE_TRIALS
    trials = [plan_stages(spec, b).coarse.trials for b in (100, 200, 400, 800)]
    assert trials == sorted(trials) and len(set(trials)) == 4


def test_plan_stages_flags_win_over_the_plan(study_file) -> None:
    spec = _planned(study_file)
    assert plan_stages(spec, 400, {"trials": 40}).coarse.trials == 40
    by_epochs = plan_stages(spec, 400, {"epochs": 2})
    assert by_epochs.coarse.epochs == 2 and (by_epochs.coarse.trials + 5) * 2 <= 200 < (by_epochs.coarse.trials + 6) * 2
    assert plan_stages(spec, 400, {"strategy": "random"}).coarse.strategy.value == "random"
    assert plan_stages(spec, 400, {"seed": 9, "trials": None}).coarse.seed == 9


def test_search_plan_study_keeps_the_study_files_stages(study_file) -> None:
    pinned = _planned(
        study_file, coarse="trials = 7\nepochs = 2", refine="trials = 4\nepochs = 6", extra='search_plan = "study"'
    )
    plan = plan_stages(pinned, 400)
    assert (plan.coarse.strategy.value, plan.coarse.trials, plan.coarse.epochs) == ("random", 7, 2)
    assert (plan.refine.trials, plan.refine.epochs) == (4, 6)
    assert plan_stages(pinned, 400, {"epochs": 3}).coarse.epochs == 3  # a flag still sets coarse
    with pytest.raises(SpecError, match="search_plan"):
        _planned(study_file, extra='search_plan = "mine"')


def test_search_runs_the_planned_stages_within_the_budget(study_file, tmp_path: Path) -> None:
    spec = _planned(study_file, refine="epochs = 3")
    store = Store(spec.name, tmp_path / "r")
    result = search(store, spec, budget=90, say=lambda line: None)
    coarse = store.stage("coarse")
    assert coarse.settings.strategy.value == "tpe" and coarse.settings.epochs == 1
    assert coarse.settings.trials >= plan_stages(spec, 90).coarse.trials
    assert result.stages[1].settings.epochs == 3 and spent(store) <= 90


def test_coarse_explores_more_only_when_its_best_does_not_stand_out(study_file, tmp_path: Path) -> None:
    for workload, more in (("noisy_peak", False), ("flat", True)):
        spec = _study(study_file, workload=workload)
        store = Store(spec.name, tmp_path / workload)
        lines: list[str] = []
        search(store, spec, say=lines.append)
        coarse = store.stage("coarse")
        plan = store.study(coarse).user_attrs["recipe"]
        spread = [t for t in store.trials(coarse) if t.user_attrs.get(EXPLORE_ATTR)]
        assert (plan["extra"] > 0) is more and len(spread) == plan["extra"]
        said = f"{plan['extra']} more trials spread over the space (the best did not stand out from the noise)"
        assert lines[1].startswith("coarse:") and (said in lines[1]) is more, lines[1]  # the decision line says so
        assert all("spread over the space" not in line for line in lines[2:])
        assert plan["extra"] <= plan["explore"] - plan["extra"]  # at most as many as coarse had
        assert spent(store) <= default_budget(spec)
        configs = ranked_configs(store.trials(coarse), "maximize")
        assert stands_out(configs, "maximize") is not more


def test_explore_more_is_decided_once_and_survives_an_interrupt(study_file, tmp_path: Path) -> None:
    spec = _study(study_file, workload="flat")
    store = Store(spec.name, tmp_path / "r")
    with pytest.raises(KeyboardInterrupt):  # 40: inside the spread points (32 planned trials + 5 re-runs before them)
        search(store, spec, listener=_interrupt_at("coarse", 40), say=lambda line: None)
    plan = store.study(store.stage("coarse")).user_attrs["recipe"]
    assert plan["extra"] > 0
    search(store, spec, say=lambda line: None)
    coarse = store.stage("coarse")
    assert store.study(coarse).user_attrs["recipe"] == plan
    trials = store.trials(coarse)
    assert sum(bool(t.user_attrs.get(EXPLORE_ATTR)) for t in trials) == plan["extra"]
    assert sum(t.state == TrialState.COMPLETE for t in trials) == plan["explore"] + plan["repeats"]


def test_spread_points_fill_the_space_away_from_the_trials_seen() -> None:
    spec_space = Space((Range("lr", 1e-4, 1.0, log=True), Range("wd", 0.0, 1.0), Choice("m", (0.5, 0.9))))
    seen = [{"lr": 1e-4 * 1.5**i, "wd": 0.01 * i, "m": 0.9} for i in range(10)]  # all in one corner
    points = spread_points(spec_space, seen, 8, seed=1)
    assert points == spread_points(spec_space, seen, 8, seed=1) and len(points) == 8
    assert all(1e-4 <= p["lr"] <= 1.0 and 0.0 <= p["wd"] <= 1.0 and p["m"] in (0.5, 0.9) for p in points)
    far = [
        min(
            abs(spec_space["lr"].position(p["lr"]) - spec_space["lr"].position(s["lr"])) + abs(p["wd"] - s["wd"])
            for s in seen
        )
        for p in points
    ]
    assert min(far) > 0.2  # none lands in the corner already tried


def test_search_plan_is_stored_with_the_spec(study_file) -> None:
    from hpsearch.spec import StudySpec

    pinned = _planned(study_file, extra='search_plan = "study"')
    assert pinned.search_plan == "study" and _planned(study_file).search_plan == "auto"
    assert StudySpec.from_dict(pinned.to_dict()).search_plan == "study"
    stored = pinned.to_dict()
    del stored["search_plan"]  # a spec stored before the key: the automatic plan
    assert StudySpec.from_dict(stored).search_plan == "auto"


def test_search_command_keeps_its_workers_from_one_stage_to_the_next(study_file, run_cli, tmp_path: Path) -> None:
    """Each stage of `hpsearch search` starts no workers of its own: the same two processes train every
    stage's trials (torch, the data and the first calls load once per command), and none outlives it."""
    from hpsearch.trials import METRICS_ATTR, trial_attr
    from tests.test_dispatch import worker_children

    path = study_file(
        workload=f"{RECIPE}:noisy_peak_pid",
        coarse="trials = 10\nepochs = 1\nseed = 0",
        refine="trials = 10\nepochs = 3",
    )
    code, _, err = run_cli("search", path, "--budget", "80", "--workers", "2", "--dir", tmp_path / "r", "-q")
    assert code == 0, err
    store = Store("fake", tmp_path / "r", create=False)
    stages = [info.name for info in store.stages()]
    pids = {
        name: {trial_attr(t, METRICS_ATTR)["worker_pid"] for t in store.trials(store.stage(name))} for name in stages
    }
    assert len(stages) >= 2 and all(pids.values()), pids
    assert len(set().union(*pids.values())) <= 2, pids  # one pair of workers for the whole search
    assert not worker_children()


def test_search_says_what_its_stages_say_when_run_alone(study_file, run_cli, tmp_path: Path) -> None:
    """Inside `search`, each stage says what `coarse` and `refine` say (the notices even with -q, the
    border warnings, refine's derived space), and one line says the plan overrides the study file."""
    path = study_file(coarse='strategy = "random"\ntrials = 10\nepochs = 1\nseed = 0', refine="trials = 6\nepochs = 2")
    code, out, err = run_cli(
        "search", path, "--budget", "60", "--population", "2", "--workers", "1", "--dir", tmp_path / "r", "-q"
    )
    assert code == 0, err
    assert "has no population entry point" in err
    assert "warning: [coarse] lr: best value" in err and "HIGH border" in err
    assert "refine will widen it upward to 10" in err  # peak_above's best crowds lr's high end, 1.0
    assert "refine-1: space narrowed around the top" in out and "10] (log)" in out  # its table: old -> new
    assert "search plans its stages from the budget: coarse tpe" in out and "(the study file: random, 10 x 1)" in out


def test_search_plan_note_is_silent_when_the_plan_is_the_study_files(study_file) -> None:
    from hpsearch.search.plan import plan_note, plan_stages

    spec = load_spec(study_file())
    planned = plan_stages(spec, 100)
    assert plan_note(spec, planned) is not None
    assert plan_note(spec, spec) is None
