"""Warm starts (warm_start.py, search/warm_starts.py): a file, another study's best and the study file's
good values run first, count toward the stage's trials, show in the leaderboard; bad input is refused
with one line before any trial."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpsearch.leaderboard import WARM_COLUMN, leaderboard
from hpsearch.search.retry import requeue
from hpsearch.space import Choice, Range, Space
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store, results_dir
from hpsearch.trials import WARM_START_ATTR
from hpsearch.warm_start import GOOD_SOURCE, NEAR_SOURCE, WarmStartError, fit, near, read_file, value_problem

GOOD_PARAMS = textwrap.dedent(
    """
    [params.lr]
    low = 1e-4
    high = 1.0
    log = true
    good = 0.01

    [params.momentum]
    values = [0.5, 0.9, 0.95, 0.99]
    good = 0.9

    [params.dropout]
    low = 0.0
    high = 0.5
    """
)


def _trials(name: str = "fake") -> list[optuna.trial.FrozenTrial]:
    store = Store(name, create=False)
    return store.trials(store.stage("coarse"))


def _started_first(trials: list[optuna.trial.FrozenTrial], numbers: list[int]) -> bool:
    """Whether the trials `numbers` started before every other trial of the stage."""
    first = max(t.datetime_start for t in trials if t.number in numbers)
    return all(t.datetime_start > first for t in trials if t.number not in numbers)


def _no_trial(name: str = "fake") -> bool:
    """The storage holds no trial of the study (its folder may not even exist)."""
    if not (results_dir() / name / "optuna.journal").is_file():
        return True
    store = Store(name, create=False)
    return all(not store.trials(s) for s in store.stages())


def test_start_with_runs_the_files_configs_first_and_counts_them(study_file, run_cli, tmp_path: Path) -> None:
    spec = study_file(coarse="trials = 60\nepochs = 1\nseed = 0")  # over 50: the journal's counts are read lazily
    starts = tmp_path / "starts.toml"
    starts.write_text(
        "[[configs]]\nlr = 0.3\nmomentum = 0.99\n\n[[configs]]\nlr = 0.002\nmomentum = 0.5\n\n"
        "[[configs]]\nlr = 0.05\nmomentum = 0.9\n"
    )
    code, _out, err = run_cli("coarse", spec, "--start-with", starts, "--workers", "0", "-q")
    assert code == 0, err
    trials = _trials()
    assert len(trials) == 60  # the warm starts are three of the stage's 60 trials, not 60 more
    by_number = {t.number: t for t in trials}
    expected = [(0.3, 0.99), (0.002, 0.5), (0.05, 0.9)]
    for n, (lr, momentum) in enumerate(expected):
        assert by_number[n].params == {"lr": lr, "momentum": momentum}
        assert by_number[n].user_attrs[WARM_START_ATTR] == f"file:{starts}#{n}"
    assert _started_first(trials, [0, 1, 2])
    assert not any(WARM_START_ATTR in t.user_attrs for t in trials if t.number > 2)
    df = leaderboard(Store("fake", create=False), "coarse")
    marked = dict(zip(df["trial"], df[WARM_COLUMN]))
    assert marked[0] == f"file:{starts}#0" and marked[59] == ""


def test_start_with_takes_the_best_toml_that_final_writes(study_file, run_cli, tmp_path: Path) -> None:
    old = study_file(name="old", coarse="trials = 4\nepochs = 1\nseed = 0")
    assert run_cli("coarse", old, "--workers", "0", "-q")[0] == 0
    code, _out, err = run_cli("final", "old", "--seeds", "1", "--workers", "0")
    assert code == 0, err
    best_toml = results_dir() / "old" / "best.toml"
    best = json.loads((results_dir() / "old" / "best.json").read_text())
    new = study_file(name="fake", coarse="trials = 3\nepochs = 1\nseed = 1")
    code, _out, err = run_cli("coarse", new, "--start-with", best_toml, "--workers", "0", "-q")
    assert code == 0, err
    trials = _trials()
    assert trials[0].params == best and trials[0].user_attrs[WARM_START_ATTR] == f"file:{best_toml}"
    assert len(trials) == 3


def test_start_with_fills_a_missing_param_with_its_midpoint(study_file, run_cli, tmp_path: Path) -> None:
    spec = study_file(coarse="trials = 3\nepochs = 1\nseed = 0")
    starts = tmp_path / "best.json"
    starts.write_text(json.dumps({"lr": 0.02}))
    code, _out, err = run_cli("coarse", spec, "--start-with", starts, "--workers", "0", "-q")
    assert code == 0, err
    assert "lack momentum: its midpoint 0.95 is used" in err
    assert _trials()[0].params == {"lr": 0.02, "momentum": 0.95}


def test_from_runs_another_studys_top_configurations_first(study_file, run_cli) -> None:
    old = study_file(name="old", coarse="trials = 8\nepochs = 1\nseed = 0")
    assert run_cli("coarse", old, "--workers", "0", "-q")[0] == 0
    from hpsearch.repeats import ranked_configs

    store = Store("old", create=False)
    top = ranked_configs(store.trials(store.stage("coarse")), "maximize")[:2]
    new = study_file(name="fake", coarse="trials = 5\nepochs = 1\nseed = 3")
    code, _out, err = run_cli("coarse", new, "--from", "old:coarse", "--from-top", "2", "--workers", "0", "-q")
    assert code == 0, err
    trials = _trials()
    assert len(trials) == 5
    for n, config in enumerate(top):
        assert trials[n].params == config.params
        assert trials[n].user_attrs[WARM_START_ATTR] == f"study:old/coarse#{config.trials[0].number}"
    assert _started_first(trials, [0, 1])
    df = leaderboard(Store("fake", create=False), "coarse")
    assert sorted(v for v in df[WARM_COLUMN] if v) == sorted(f"study:old/coarse#{c.trials[0].number}" for c in top)


def test_from_clips_values_outside_this_studys_space_and_says_so(study_file, run_cli) -> None:
    old = study_file(name="old", coarse="trials = 6\nepochs = 1\nseed = 0")  # peak_above: the best lr is high
    assert run_cli("coarse", old, "--workers", "0", "-q")[0] == 0
    narrow = "[params.lr]\nlow = 1e-4\nhigh = 1e-3\nlog = true\n\n[params.momentum]\nvalues = [0.5, 0.9]\n"
    new = study_file(name="fake", coarse="trials = 3\nepochs = 1\nseed = 0", params=narrow)
    code, _out, err = run_cli("coarse", new, "--from", "old", "--from-top", "1", "--workers", "0", "-q")
    assert code == 0, err
    assert "is not in [1.0e-04, 1.0e-03] (log): 1.0e-03 instead" in err
    first = _trials()[0]
    assert first.params["lr"] == 1e-3 and first.params["momentum"] in (0.5, 0.9)


def test_good_values_run_first_and_centre_a_quarter_of_the_trials(study_file, run_cli) -> None:
    spec = study_file(coarse="trials = 12\nepochs = 1\nseed = 0", params=GOOD_PARAMS)
    code, _out, err = run_cli("coarse", spec, "--workers", "0", "-q")
    assert code == 0, err
    trials = _trials()
    assert len(trials) == 12
    assert trials[0].params == {"lr": 0.01, "momentum": 0.9, "dropout": 0.25}  # dropout: no good value, its midpoint
    assert trials[0].user_attrs[WARM_START_ATTR] == GOOD_SOURCE
    near_ones = [t for t in trials if t.user_attrs.get(WARM_START_ATTR) == NEAR_SOURCE]
    assert [t.number for t in near_ones] == [1, 2, 3]  # 12 // 4, right after the good point
    space = load_spec(spec).space
    lr, momentum = near(space["lr"], 0.01), near(space["momentum"], 0.9)
    assert (lr.low, lr.high) == (0.01 / 3, 0.03) and set(momentum.values) == {0.5, 0.9, 0.95}
    for t in near_ones:
        assert value_problem(lr, t.params["lr"]) is None and value_problem(momentum, t.params["momentum"]) is None
    assert len({t.params["dropout"] for t in near_ones}) == 3  # no good value: drawn by the sampler over its range
    assert _started_first(trials, [0, 1, 2, 3])
    df = leaderboard(Store("fake", create=False), "coarse")
    assert dict(zip(df["trial"], df[WARM_COLUMN]))[0] == GOOD_SOURCE


def test_good_value_trial_counts_toward_the_budget(study_file, run_cli) -> None:
    spec = study_file(coarse="trials = 8\nepochs = 2\nseed = 0", params=GOOD_PARAMS)
    code, _out, err = run_cli("coarse", spec, "--budget", "6", "--workers", "0", "-q")
    assert code == 0, err
    trials = _trials()
    assert len(trials) == 3  # 6 trial-epochs: three trials of 2 epochs, the good point's among them
    assert trials[0].user_attrs[WARM_START_ATTR] == GOOD_SOURCE


def test_the_same_command_again_queues_no_warm_start_twice(study_file, run_cli, tmp_path: Path) -> None:
    spec = study_file(coarse="trials = 4\nepochs = 1\nseed = 0", params=GOOD_PARAMS)
    starts = tmp_path / "best.toml"
    starts.write_text("lr = 0.5\nmomentum = 0.99\ndropout = 0.1\n")
    assert run_cli("coarse", spec, "--start-with", starts, "--workers", "0", "-q")[0] == 0
    code, _out, err = run_cli("coarse", spec, "--start-with", starts, "--trials", "6", "--workers", "0", "-q")
    assert code == 0, err
    trials = _trials()
    assert len(trials) == 6
    assert [t.user_attrs.get(WARM_START_ATTR) for t in trials[:3]] == [GOOD_SOURCE, f"file:{starts}", NEAR_SOURCE]
    assert sum(WARM_START_ATTR in t.user_attrs for t in trials) == 3


def test_a_tpe_stage_runs_warm_starts_first(study_file, run_cli, tmp_path: Path) -> None:
    spec = study_file(coarse='strategy = "tpe"\ntrials = 4\nepochs = 1\nseed = 0')
    starts = tmp_path / "best.toml"
    starts.write_text("lr = 0.5\nmomentum = 0.9\n")
    assert run_cli("coarse", spec, "--start-with", starts, "--workers", "0", "-q")[0] == 0
    trials = _trials()
    assert trials[0].params == {"lr": 0.5, "momentum": 0.9} and _started_first(trials, [0])


BAD_FILES = [
    ("[[configs]]\nlr = 0.1\n\n[[configs]]\nlr = 0.2\n\n[[configs]]\nlr = 5.0\n", "configs[2].lr = 5.0 is outside"),
    ("lr = 0.1\nmomentm = 0.9\n", "momentm: no such param in the study"),
    ("lr = 0.1\nmomentum = 0.7\n", "momentum = 0.7 is not in {0.5, 0.9, 0.95, 0.99}"),
    ("lr = 'high'\n", "lr = 'high' is not a number"),
    ("lr = [0.1\n", "not valid TOML"),
    ("", "holds no configuration"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_a_bad_warm_start_file_is_one_line_and_exit_2_before_any_trial(
    study_file, run_cli, tmp_path: Path, text: str, expected: str
) -> None:
    starts = tmp_path / "starts.toml"
    starts.write_text(text)
    code, out, err = run_cli("coarse", study_file(), "--start-with", starts, "--workers", "0")
    assert code == 2 and out == ""
    assert err.startswith(f"Error: {starts}: ") and expected in err and len(err.strip().splitlines()) == 1, err
    assert _no_trial()


def test_a_missing_warm_start_file_is_one_line(study_file, run_cli, tmp_path: Path) -> None:
    code, _out, err = run_cli("coarse", study_file(), "--start-with", tmp_path / "nope.toml", "--workers", "0")
    assert code == 2 and "nope.toml: no such file; give --start-with" in err and len(err.strip().splitlines()) == 1
    assert _no_trial()


def test_from_a_study_that_does_not_exist_is_one_line(study_file, run_cli) -> None:
    code, _out, err = run_cli("coarse", study_file(), "--from", "nowhere", "--workers", "0")
    assert code == 2 and err.startswith("Error: --from nowhere: no study 'nowhere'"), err
    assert len(err.strip().splitlines()) == 1 and _no_trial()


def test_from_a_stage_that_does_not_exist_is_one_line(study_file, run_cli) -> None:
    assert run_cli("coarse", study_file(name="old", coarse="trials = 2\nepochs = 1"), "--workers", "0", "-q")[0] == 0
    code, _out, err = run_cli("coarse", study_file(), "--from", "old:refine-3", "--workers", "0")
    assert code == 2 and "--from old:refine-3: study 'old' has no stage 'refine-3'; its stages: coarse" in err
    assert len(err.strip().splitlines()) == 1 and _no_trial()


@pytest.mark.parametrize(
    ("good", "expected"),
    [
        ("[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\ngood = 3.0\n", "params.lr.good: 3.0 is outside"),
        ('[params.act]\nvalues = ["relu", "tanh"]\ngood = "gelu"\n', "params.act.good: 'gelu' is not in {relu, tanh}"),
        ('[params.n]\nlow = 1\nhigh = 8\ntype = "int"\ngood = 2.5\n', "params.n.good: 2.5 is not a whole number"),
    ],
)
def test_a_bad_good_value_is_a_spec_error(study_file, run_cli, good: str, expected: str) -> None:
    code, _out, err = run_cli("coarse", study_file(params=good), "--workers", "0")
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert _no_trial()


def test_a_grid_stage_refuses_warm_starts_and_leaves_good_values_out(study_file, run_cli, tmp_path: Path) -> None:
    starts = tmp_path / "best.toml"
    starts.write_text("lr = 0.5\nmomentum = 0.9\n")
    grid = 'strategy = "grid"\ntrials = 4\nepochs = 1'
    code, _out, err = run_cli("coarse", study_file(coarse=grid), "--start-with", starts, "--workers", "0")
    assert code == 2 and "a grid stage runs its grid points" in err and "--strategy random or tpe" in err
    assert _no_trial()
    code, _out, err = run_cli("coarse", study_file(coarse=grid, params=GOOD_PARAMS), "--workers", "0", "-q")
    assert code == 0 and "the good values of lr, momentum are not used" in err
    assert not any(WARM_START_ATTR in t.user_attrs for t in _trials())


def test_from_top_without_from_is_a_usage_error(study_file, run_cli) -> None:
    code, _out, err = run_cli("coarse", study_file(), "--from-top", "3", "--workers", "0")
    assert code == 2 and "--from-top needs --from" in err


def test_read_file_takes_a_json_list_and_names_each_config(tmp_path: Path) -> None:
    space = Space((Range("lr", 1e-4, 1.0, log=True), Choice("bs", (16, 32, 64))))
    path = tmp_path / "starts.json"
    path.write_text(json.dumps([{"lr": 0.1, "bs": 32.0}, {"lr": 1e-3, "bs": 64}]))
    starts, notes = read_file(path, space)
    assert [s.params for s in starts] == [{"lr": 0.1, "bs": 32}, {"lr": 1e-3, "bs": 64}]
    assert isinstance(starts[0].params["bs"], int) and notes == []
    assert [s.source for s in starts] == [f"file:{path}#0", f"file:{path}#1"]
    path.write_text(json.dumps([{"lr": 0.1, "bs": 48}]))
    with pytest.raises(WarmStartError, match=r"configs\[0\]\.bs = 48 is not in \{16, 32, 64\}"):
        read_file(path, space)


def test_fit_clips_ranges_and_takes_the_nearest_set_value() -> None:
    space = Space(
        (
            Range("lr", 1e-4, 1e-2, log=True),
            Range("layers", 1, 4, type="int"),
            Choice("wd", (1e-5, 1e-4, 1e-3)),
            Choice("act", ("relu", "tanh")),
        )
    )
    params, notes = fit(space, {"lr": 0.5, "layers": 9, "wd": 4e-4, "act": "gelu", "extra": 1}, "study:x/coarse#3")
    assert params == {"lr": 1e-2, "layers": 4, "wd": 1e-3, "act": "tanh"}  # wd: nearest in log space
    assert len(notes) == 5 and all(n.startswith("study:x/coarse#3: ") for n in notes)
    assert notes[-1].endswith("extra left out (not a param of this study)")


def test_near_keeps_a_good_value_at_the_border_inside_the_range() -> None:
    lr = near(Range("lr", 1e-4, 1.0, log=True), 1.0)
    assert math.isclose(lr.low, 1 / 3) and lr.high == 1.0
    drop = near(Range("dropout", 0.0, 0.5), 0.0)
    assert (drop.low, drop.high) == (0.0, 0.05)
    n = near(Range("n", 1, 100, type="int"), 50)
    assert (n.low, n.high) == (41, 59) and isinstance(n.low, int)
    assert near(Choice("m", (0.5, 0.9, 0.99)), 0.99).values == (0.9, 0.99)


def test_a_retried_warm_start_stays_marked() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0}, user_attrs={WARM_START_ATTR: "file:best.toml"})
    trial = study.ask({"x": FloatDistribution(0.0, 2.0)})
    study.tell(trial, state=TrialState.FAIL)
    requeue(study, study.trials[0], {"x": 1.0})
    assert study.trials[1].user_attrs[WARM_START_ATTR] == "file:best.toml"


def test_the_good_key_is_stored_with_the_spec(study_file) -> None:
    from hpsearch.spec import StudySpec

    spec = load_spec(study_file(params=GOOD_PARAMS))
    assert spec.good == {"lr": 0.01, "momentum": 0.9}
    assert StudySpec.from_dict(spec.to_dict()).good == spec.good
    assert hash(spec) == hash(StudySpec.from_dict(spec.to_dict()))  # a spec stays hashable with its good values
