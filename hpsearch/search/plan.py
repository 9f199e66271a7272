"""The plan of `search`: the stage settings it runs, from the budget and the study file (pure functions).

Coarse is TPE at a third of refine's length over about half the budget, with its top
configurations re-run once; refine-1 takes about 60% of what coarse leaves, at the study
file's [refine] epochs; `search_plan = "study"` runs the study file's stages as written. Why
these settings: `git show 38b1a41:bench/RESULTS.md`, "What makes search win".
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hpsearch.spec import StageSpec, StudySpec
from hpsearch.strategy import Strategy

COARSE_RUNS = 2  # coarse: the top configurations are brought to this many runs (seeds) each
MIN_REFINE_TRIALS = 3  # a refine stage with room for fewer trials than this is not started
COARSE_LENGTH = 3  # coarse epochs = refine epochs / this (successive halving's rung below the top)
COARSE_SHARE = 0.5  # of the budget, for coarse (its trials and their re-runs)
FIRST_REFINE_SHARE = 0.6  # of what coarse leaves, for refine-1 (the next stages are sized to the rest)
MIN_COARSE_TRIALS, MAX_COARSE_TRIALS = 10, 200
MAX_REFINE_TRIALS = 40


def default_budget(spec: StudySpec) -> int:
    """The study file's `budget`, else coarse (with its re-runs) plus two refine stages, in trial-epochs."""
    if spec.budget is not None:
        return spec.budget
    return coarse_cost(spec.coarse) + 2 * spec.refine.trials * spec.refine.epochs


def plan_stages(spec: StudySpec, total: int, given: dict[str, Any] | None = None) -> StudySpec:
    """The stage settings `search` runs with: the study file's as written with `search_plan = "study"`,
    else planned from the budget `total` and the [refine] epochs R (a pure function):

    - coarse: TPE, max(1, round(R / 3)) epochs, as many trials as fill about half the budget with
      their re-runs (10 to 200);
    - refine: R epochs, trials to spend about 60% of what coarse leaves in refine-1 (3 to 40); the
      stages after it get the same, the last sized to what is left.

    `given` (the coarse flags: trials, epochs, strategy, top_k, ...) wins over the plan: with
    --epochs alone, the trials are planned for that length. [refine]'s epochs, top_k and seed and
    [coarse]'s seed, top_k and max_failures are always the study file's.
    """
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if spec.search_plan == "study":
        return replace(spec, coarse=spec.coarse.with_overrides(**given))
    refine = spec.refine
    epochs = given.get("epochs") or max(1, round(refine.epochs / COARSE_LENGTH))
    top_k = given.get("top_k") or spec.coarse.top_k
    share = int(total * COARSE_SHARE) // epochs - top_k * (COARSE_RUNS - 1)
    trials = given.get("trials") or min(max(share, MIN_COARSE_TRIALS), MAX_COARSE_TRIALS)
    coarse = replace(spec.coarse, strategy=Strategy.tpe, trials=trials, epochs=epochs).with_overrides(**given)
    left = max(total - coarse_cost(coarse), 0)
    refine_trials = min(max(round(FIRST_REFINE_SHARE * left / refine.epochs), MIN_REFINE_TRIALS), MAX_REFINE_TRIALS)
    return replace(spec, coarse=coarse, refine=replace(refine, trials=refine_trials))


def plan_note(written: StudySpec, planned: StudySpec) -> str | None:
    """One line when the plan (plan_stages) runs other stage settings than the study file wrote, with
    both, and how to run the file's as written; None when they agree."""
    parts = []
    for name, file, plan in (("coarse", written.coarse, planned.coarse), ("refine", written.refine, planned.refine)):
        if (file.strategy, file.trials, file.epochs) != (plan.strategy, plan.trials, plan.epochs):
            extra = f" (+ re-runs of its top {min(plan.top_k, plan.trials)})" if name == "coarse" else ""
            parts.append(
                f"{name} {plan.strategy.value}, {plan.trials} trials{extra} x {plan.epochs} epochs "
                f"(the study file: {file.strategy.value}, {file.trials} x {file.epochs})"
            )
    if not parts or planned.search_plan == "study":
        return None
    return (
        "search plans its stages from the budget: "
        + "; ".join(parts)
        + '; set search_plan = "study" to run them as written'
    )


def coarse_repeats(spec: StudySpec) -> int:
    """Re-runs after coarse: its top_k configurations once more each (short trials: cheap noise)."""
    return min(spec.coarse.top_k, spec.coarse.trials) * (COARSE_RUNS - 1)


def coarse_cost(coarse: StageSpec) -> int:
    """The trial-epochs of a coarse stage with these settings: its trials and the re-runs of its top ones."""
    return (coarse.trials + min(coarse.top_k, coarse.trials) * (COARSE_RUNS - 1)) * coarse.epochs


def budget_note(planned: StudySpec, total: int) -> str | None:
    """One line when `total` has no room for a refine stage after the planned coarse stage (with its
    re-runs): `search` then runs coarse only, and its pick is never trained at refine's length."""
    coarse, refine = planned.coarse, planned.refine
    need = coarse_cost(coarse) + MIN_REFINE_TRIALS * refine.epochs
    if total >= need:
        return None
    return (
        f"budget {total} trial-epochs has no room for a refine stage after coarse ({coarse.trials} trials and "
        f"{coarse_repeats(planned)} re-runs x {coarse.epochs} epochs, then {MIN_REFINE_TRIALS} x {refine.epochs}): "
        f"search runs coarse only, and its pick is never trained for {refine.epochs} epochs; give --budget {need} "
        "or more, or fewer [refine] epochs"
    )
