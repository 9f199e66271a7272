"""Seeds (issue 16): trial seeds of different stage seeds do not overlap; refine inherits coarse's seed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hpsearch.search.stages import plan_refine, run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import SEED_ATTR, trial_attr

FAKE_COARSE = "trials = 10\nepochs = 1"


def _trial_seeds(store: Store, stage) -> list[int]:
    return [trial_attr(t, SEED_ATTR) for t in sorted(store.trials(stage), key=lambda t: t.number)]


def _coarse(study_file: Callable[..., Path], name: str, seed: int) -> tuple[Store, object]:
    spec = load_spec(study_file(name=name, workload="peak_inside", coarse=FAKE_COARSE))
    store = Store(spec.name)
    info = start_coarse(store, spec, {"seed": seed})
    run_stage(store, info)
    return store, info


def test_seeds_stage_seeds_1_and_2_share_no_trial_seed(study_file) -> None:
    one, info_one = _coarse(study_file, "one", 1)
    two, info_two = _coarse(study_file, "two", 2)
    seeds_one, seeds_two = _trial_seeds(one, info_one), _trial_seeds(two, info_two)
    assert len(set(seeds_one)) == len(set(seeds_two)) == 10  # distinct within a stage too
    assert not set(seeds_one) & set(seeds_two)  # was: seed + number, 9 of 10 shared


def test_seeds_are_deterministic_ints_that_fit_32_bits(study_file) -> None:
    first, info_first = _coarse(study_file, "first", 1)
    again, info_again = _coarse(study_file, "again", 1)
    seeds = _trial_seeds(first, info_first)
    assert seeds == _trial_seeds(again, info_again)  # same stage seed: the same trial seeds
    assert all(type(s) is int and 0 <= s < 2**31 for s in seeds)  # numpy, torch and int32 users take them


def test_seeds_refine_inherits_the_coarse_seed_and_differs_from_it(study_file) -> None:
    refine_seeds = {}
    for name, seed in (("seven", 7), ("seven_again", 7), ("eight", 8)):
        store, coarse = _coarse(study_file, name, seed)
        refined, _, _ = plan_refine(store, None, {"seed": None})
        refine_seeds[name] = refined.settings.seed
        assert refined.settings.seed != seed
        run_stage(store, refined)
        # refine trials never reuse coarse's trial seeds
        assert not set(_trial_seeds(store, refined)) & set(_trial_seeds(store, coarse))
    assert refine_seeds["seven"] == refine_seeds["seven_again"]  # derived, deterministic
    assert refine_seeds["seven"] != refine_seeds["eight"]  # was 0 (the study file's refine seed) for both


def test_seeds_refine_seed_flag_still_wins(study_file) -> None:
    store, _ = _coarse(study_file, "flag", 7)
    refined, _, _ = plan_refine(store, None, {"seed": 3})
    assert refined.settings.seed == 3


def test_seeds_refine_cli_inherits_coarse_seed(study_file, run_cli) -> None:
    path = study_file(workload="peak_inside", coarse=FAKE_COARSE, refine="trials = 3\nepochs = 1")
    assert run_cli("coarse", path, "--seed", "7", "-q")[0] == 0
    code, _, err = run_cli("refine", "fake", "-q")
    assert code == 0, err
    stages = {s.name: s for s in Store("fake").stages()}
    assert stages["coarse"].settings.seed == 7
    inherited = stages["refine-1"].settings.seed
    assert inherited != 7 and inherited != 0
    # refine-2 derives from refine-1 in turn: distinct again
    assert run_cli("refine", "fake", "-q")[0] == 0
    assert {s.name: s for s in Store("fake").stages()}["refine-2"].settings.seed not in (7, inherited)
