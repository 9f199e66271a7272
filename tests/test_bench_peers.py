"""bench/peers' bookkeeping: the charge of trial-epochs, the ranks, the anytime curves, sharing the runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PEERS = Path(__file__).resolve().parent.parent / "bench" / "peers"
sys.path.insert(0, str(PEERS))
import anytime  # noqa: E402
import common  # noqa: E402
import run  # noqa: E402
import score  # noqa: E402


def hartmann_ledger(budget: int) -> common.Ledger:
    return common.Ledger(common.WORKLOADS["hartmann6"], budget, run_seed=3)


POINT = {f"x{j}": 0.5 for j in range(6)}


def test_a_stopped_evaluation_pays_for_the_epochs_it_ran() -> None:
    ledger = hartmann_ledger(30)

    def stop_at_4(epoch: int, value: float) -> None:
        if epoch == 4:
            raise common.Stop

    stopped = ledger.evaluate(POINT, 20, on_epoch=stop_at_4)
    assert (stopped.state, stopped.ran, ledger.spent) == ("stopped", 4, 4)
    whole = ledger.evaluate(POINT, 20)
    assert (whole.state, whole.ran, ledger.spent, ledger.left) == ("complete", 20, 24, 6)
    assert stopped.seed != whole.seed and stopped.seed not in common.RETRAIN_SEEDS


def test_no_evaluation_starts_unless_its_full_length_fits() -> None:
    ledger = hartmann_ledger(25)
    ledger.evaluate(POINT, 20)
    with pytest.raises(common.BudgetSpent):
        ledger.evaluate(POINT, 6)
    assert ledger.spent == 20 and len(ledger.evaluations) == 1


def test_an_evaluation_the_callers_callback_ends_is_still_charged() -> None:
    """hpsearch's pruned trial raises its own exception through on_epoch: the epochs it ran still count."""
    ledger = hartmann_ledger(40)

    def pruned(epoch: int, value: float) -> None:
        if epoch == 3:
            raise KeyError("pruned")

    with pytest.raises(KeyError):
        ledger.evaluate(POINT, 20, on_epoch=pruned)
    assert ledger.spent == 3 and ledger.evaluations[-1].ran == 3


def test_picks_are_noted_only_when_they_change() -> None:
    ledger = hartmann_ledger(40)
    ledger.track(None)
    ledger.track({"x0": 0.1})
    ledger.spent = 7
    ledger.track({"x0": 0.1})
    ledger.track({"x0": 0.2})
    assert [(p["spent"], p["params"]) for p in ledger.picks] == [(0, {"x0": 0.1}), (7, {"x0": 0.2})]


def test_ranks_share_ties_and_follow_the_direction() -> None:
    assert score.ranks({"a": 0.9, "b": 0.8, "c": 0.9}, maximize=True) == {"a": 1.5, "c": 1.5, "b": 3.0}
    assert score.ranks({"a": -3.0, "b": -2.0}, maximize=False) == {"a": 1.0, "b": 2.0}


def test_the_anytime_curve_holds_each_pick_until_the_next() -> None:
    points = [(10.0, 0.5), (30.0, 0.8)]
    assert [anytime.value_at(points, x) for x in (0, 10, 29, 30, 99)] == [None, 0.5, 0.5, 0.8, 0.8]
    xs, ys = anytime.mean_curve([points, [(20.0, 0.6)]], [0, 10, 20, 30])
    assert xs == [20, 30]  # the mean starts where every run has a pick
    assert ys == pytest.approx([0.55, 0.7])
    assert anytime.first_reaching(xs, ys, 0.7, maximize=True) == 30
    assert anytime.first_reaching(xs, ys, 0.9, maximize=True) is None


def test_quality_of_no_pick_is_the_worst_and_hartmann_is_its_true_value() -> None:
    cache: dict[str, float] = {}
    assert score.quality("mnist1d", None, 3, cache) == 0.0
    import hartmann  # bench/, on the path through common

    optimum = dict(zip(hartmann.NAMES, hartmann.X_STAR, strict=True))
    assert score.quality("hartmann6", optimum, 3, cache) == pytest.approx(-3.32237, abs=1e-4)


def test_a_run_is_taken_by_one_process_and_a_dead_holders_run_is_taken_over(tmp_path: Path) -> None:
    result = tmp_path / "mnist1d" / "search" / "seed100.json"
    assert run.claim(result)  # free: ours
    assert run.claim(result)  # ours already
    marker = result.with_suffix(".running")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        marker.write_text(str(other.pid))
        assert not run.claim(result)  # a live process holds it
    finally:
        other.kill()
        other.wait()
    assert run.claim(result)  # its holder is gone
    assert marker.read_text() == str(os.getpid())


def test_seed_lists() -> None:
    assert run.seed_list("100-103,7") == [100, 101, 102, 103, 7]
