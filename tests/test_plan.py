"""The plan of `search` (search/plan.py): a budget too small for a refine stage is said, not hidden."""

from __future__ import annotations

from pathlib import Path

from hpsearch.search.plan import MIN_REFINE_TRIALS, budget_note, coarse_repeats, plan_stages
from hpsearch.spec import parse_spec

WORKLOAD = Path(__file__).parent / "workloads" / "recipe.py"


def spec_for(refine_epochs: int):
    data = {
        "name": "plan",
        "workload": f"{WORKLOAD}:noisy_peak",
        "direction": "maximize",
        "metric": "val_accuracy",
        "params": {"lr": {"low": 1e-4, "high": 1.0, "log": True}},
        "refine": {"epochs": refine_epochs},
    }
    return parse_spec(data, WORKLOAD)


def smallest(planned) -> int:
    coarse = planned.coarse
    return (coarse.trials + coarse_repeats(planned)) * coarse.epochs + MIN_REFINE_TRIALS * planned.refine.epochs


def test_a_budget_with_room_for_refine_gets_no_note() -> None:
    spec = spec_for(20)
    for total in (400, 1000):
        assert budget_note(plan_stages(spec, total), total) is None


def test_a_budget_of_three_full_trials_is_said_with_the_budget_that_would_do() -> None:
    planned = plan_stages(spec_for(20), 60)
    note = budget_note(planned, 60)
    assert note is not None and "no room for a refine stage" in note
    need = smallest(planned)
    assert need > 60 and f"--budget {need}" in note and "20 epochs" in note


def test_search_says_the_note_and_runs_coarse_only(tmp_path: Path) -> None:
    from hpsearch.dispatch import InlineExecutor
    from hpsearch.search.recipe import search
    from hpsearch.store.storage import Store

    spec = spec_for(6)
    lines: list[str] = []
    store = Store(spec.name, directory=tmp_path)
    search(store, spec, {"seed": 1}, 20, InlineExecutor("cpu"), say=lines.append)
    assert any("no room for a refine stage" in line for line in lines)
    assert [s.name for s in store.stages()] == ["coarse"]
