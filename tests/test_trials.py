"""THE ranking: trials.ranked_trials, and the leaderboard, which ranks by it."""

from __future__ import annotations

from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hpsearch.leaderboard import frame
from hpsearch.spec import load_spec
from hpsearch.store.storage import StageInfo
from hpsearch.trials import display_order, ranked_trials

LR = {"lr": FloatDistribution(1e-4, 1.0, log=True)}


def _trial(number: int, value: float | None, state: TrialState = TrialState.COMPLETE):
    t = create_trial(state=state, value=value, params={"lr": 0.01}, distributions=LR)
    t.number = number
    return t


def test_trials_ranked_best_first_ties_in_given_order_unfinished_left_out() -> None:
    trials = [_trial(0, 0.5), _trial(1, 0.9), _trial(2, 0.5), _trial(3, None, TrialState.PRUNED), _trial(4, 0.7)]
    assert [t.number for t in ranked_trials(trials, "maximize")] == [1, 4, 0, 2]
    assert [t.number for t in ranked_trials(trials, "minimize")] == [0, 2, 4, 1]


def test_trials_display_order_ranks_then_pruned_failed_running() -> None:
    trials = [
        _trial(0, None, TrialState.FAIL),
        _trial(1, 0.2),
        _trial(2, None, TrialState.RUNNING),
        _trial(3, None, TrialState.PRUNED),
        _trial(4, 0.4),
        _trial(5, None, TrialState.WAITING),
    ]
    order = display_order(trials, "maximize")
    assert [(rank, t.number) for rank, t in order] == [(1, 4), (2, 1), (None, 3), (None, 0), (None, 2)]


def test_trials_leaderboard_ranks_exactly_as_ranked_trials_across_stages(study_file) -> None:
    spec = load_spec(study_file())
    coarse = StageInfo("coarse", 0, None, spec.coarse, spec.space, spec)
    refine = StageInfo("refine-1", 1, "coarse", spec.refine, spec.space, spec)
    a = [_trial(0, 0.8), _trial(1, 0.6)]
    b = [_trial(0, 0.8), _trial(1, 0.9), _trial(2, None, TrialState.FAIL)]
    df = frame([coarse, refine], [a, b])
    expected = [(id(t)) for t in ranked_trials(a + b, "maximize")]
    by_id = {id(t): (s, t.number) for s, ts in (("coarse", a), ("refine-1", b)) for t in ts}
    ranked = df[df["rank"].notna()]
    assert list(zip(ranked["stage"], ranked["trial"])) == [by_id[i] for i in expected]
    assert list(ranked["rank"]) == [1, 2, 3, 4]
    assert list(zip(ranked["stage"], ranked["trial"]))[:2] == [
        ("refine-1", 1),
        ("coarse", 0),
    ]  # a tie keeps stage order
