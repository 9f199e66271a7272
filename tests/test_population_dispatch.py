"""Population mode through the executors: K trials per worker, fallback, faults."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from optuna.trial import TrialState

from hpsearch.dispatch import AUTO, DispatchConfig, InlineExecutor, PoolExecutor, make_executor, parse_population
from hpsearch.errors import DispatchError, StageFailed
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.space import Choice, Range, Space
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import trial_attr
from tests.conftest import TESTS

POP = TESTS / "workloads" / "population_fake.py"


def _stage(study_file, workload: str, trials: int = 10, name: str = "pop"):
    spec = load_spec(study_file(workload=f"{POP}:{workload}", name=name, coarse=f"trials = {trials}\nepochs = 2"))
    store = Store(spec.name)
    return store, start_coarse(store, spec, {})


def test_population_parse_values():
    assert parse_population(None) == 1
    assert parse_population("8") == 8
    assert parse_population("auto") == AUTO
    for bad in ("0", "-2", "many"):
        with pytest.raises(DispatchError, match=r"^population"):  # the CLI spells it --population
            parse_population(bad)


def test_population_probe_params_take_middle_of_space():
    space = Space((Range("lr", 1e-4, 1.0, log=True), Range("n", 1, 9, type="int"), Choice("m", (0.5, 0.9, 0.99))))
    params = space.midpoint()
    assert params["lr"] == pytest.approx(1e-2) and params["n"] == 5 and params["m"] == 0.9


def test_population_inline_trains_k_at_a_time_and_masks_diverged(study_file):
    store, info = _stage(study_file, "score", trials=12)
    result = run_stage(store, info, InlineExecutor("cpu", population=4))
    complete = [t for t in result.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in result.trials if t.state == TrialState.PRUNED]
    assert len(complete) + len(pruned) == 12
    # Trained together: every completed member saw a population of more than one.
    assert all(trial_attr(t, "metrics")["population_size"] > 1 for t in complete)
    assert all(t.params["lr"] > 0.5 and t.user_attrs["reason"] == "diverged" for t in pruned)
    assert all(t.params["lr"] <= 0.5 for t in complete)


def test_population_pool_results_equal_one_by_one(study_file):
    store, info = _stage(study_file, "score", trials=8, name="pool")
    pooled = run_stage(store, info, make_executor(DispatchConfig("cpu", None, 2, None, 4)))
    store2, info2 = _stage(study_file, "score", trials=8, name="solo")
    solo = run_stage(store2, info2, InlineExecutor("cpu"))
    by_params = {t.params["lr"]: t.value for t in solo.trials if t.state == TrialState.COMPLETE}
    pooled_complete = [t for t in pooled.trials if t.state == TrialState.COMPLETE]
    assert pooled_complete and all(by_params[t.params["lr"]] == pytest.approx(t.value) for t in pooled_complete)
    assert any(trial_attr(t, "metrics").get("population_size", 1) > 1 for t in pooled_complete)


def test_population_without_entry_point_falls_back_with_notice(study_file):
    spec = load_spec(study_file(workload="peak_inside", coarse="trials = 3\nepochs = 1"))
    store = Store(spec.name)
    executor = InlineExecutor("cpu", population=8)
    result = run_stage(store, start_coarse(store, spec, {}), executor)
    assert sum(t.state == TrialState.COMPLETE for t in result.trials) == 3
    assert any("no population entry point" in n and "one trial per worker" in n for n in executor.notices)


def test_population_worker_death_fails_every_member_and_stage_goes_on(study_file):
    store, info = _stage(study_file, "score_dies", trials=4)
    executor = PoolExecutor(make_executor(DispatchConfig("cpu", None, 1, None, 2)).slots, population=2)
    with pytest.raises(StageFailed):
        # Every population dies: the stage fails as a whole (exit 1), having recorded each member.
        run_stage(store, info, executor)
    failed = [t for t in store.trials(info) if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["reason"] == "worker died (signal 9)" for t in failed)
    assert len(failed) % 2 == 0  # whole populations of 2, never half of one


@pytest.mark.torch
def test_population_cli_digits_matches_sequential(run_cli, tmp_path):
    from tests.test_cli import ROOT

    spec = ROOT / "studies" / "digits_mlp.toml"
    args = ["--trials", "6", "--epochs", "1", "-q", "--workers", "1"]
    assert run_cli("coarse", spec, *args, "--population", "3", "--dir", tmp_path / "a")[0] == 0
    assert run_cli("coarse", spec, *args, "--dir", tmp_path / "b")[0] == 0
    boards = []
    for folder in ("a", "b"):
        _, out, _ = run_cli("leaderboard", "digits_mlp", "--csv", "-", "--dir", tmp_path / folder)
        boards.append(pd.read_csv(io.StringIO(out)).sort_values("trial").reset_index(drop=True))
    together, alone = boards
    assert list(together["lr"]) == list(alone["lr"])
    assert together["val_accuracy"].tolist() == pytest.approx(alone["val_accuracy"].tolist(), abs=2e-3)


def test_population_pool_writes_a_populations_bookkeeping_together(study_file, monkeypatch):
    """A population's K owners and params reach the journal in one append, and its K trials' reports
    (held: no pruner reads them) with their K endings in one more, plus one per trial's creation. One by
    one, a trial costs three (its creation, its owner and params, its reports and ending)."""
    from hpsearch.store.journal import RepairingJournalBackend

    appends = []
    original = RepairingJournalBackend.append_logs
    monkeypatch.setattr(
        RepairingJournalBackend, "append_logs", lambda self, logs: (appends.append(len(logs)), original(self, logs))[1]
    )
    counts = {}
    for k in (1, 4):
        store, info = _stage(study_file, "score_together", trials=8, name=f"writes{k}")
        executor = PoolExecutor(make_executor(DispatchConfig("cpu", None, 1, None, k)).slots, population=k)
        appends.clear()
        result = run_stage(store, info, executor)
        assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in result.trials) == 8
        counts[k] = len(appends)
    # Per population of 4 x 2 epochs: 4 creations, then 1 (owners, params), 1 (reports and endings).
    assert counts[4] <= 8 // 4 * (4 + 1 + 1) + 2 < counts[1] <= 8 * 3 + 2, counts
    trials = Store("writes4").trials(Store("writes4").stage("coarse"))
    assert all(
        t.user_attrs.get("owner") and set(t.params) == {"lr", "momentum"} for t in trials
    )  # nothing held back was lost
    assert all(len(t.intermediate_values) == 2 for t in trials if t.state == TrialState.COMPLETE)


def test_population_auto_the_other_workers_train_one_by_one_while_one_measures(study_file):
    store, info = _stage(study_file, "score_probed", trials=120, name="probed")
    executor = PoolExecutor(make_executor(DispatchConfig("cpu", None, 2, None, 1)).slots, population=AUTO)
    result = run_stage(store, info, executor)
    done = [t for t in result.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 120
    assert any("population: K = 2" in n for n in executor.notices), executor.notices
    size = {t.number: (trial_attr(t, "metrics") or {}).get("population_size", 1) for t in done}
    first_pair = min(t.datetime_start for t in done if size[t.number] == 2)
    # trained by the worker that was not measuring, before K was known (as populations of one)
    assert any(size[t.number] == 1 and t.datetime_start < first_pair for t in done if t.state == TrialState.COMPLETE), (
        size
    )


def test_population_pool_shares_the_last_trials_between_workers(study_file):
    store, info = _stage(study_file, "score_together", trials=10, name="share")
    executor = PoolExecutor(make_executor(DispatchConfig("cpu", None, 2, None, 8)).slots, population=8)
    result = run_stage(store, info, executor)
    sizes = [
        trial_attr(t, "metrics").get("population_size", 1.0) for t in result.trials if t.state == TrialState.COMPLETE
    ]
    # At most half each (two of 5, or smaller when one worker came late), never one of 8 and one of 2.
    assert len(result.trials) == 10 and sizes and max(sizes) <= 5.0
