"""The synthetic half of bench/quality.py: every method at the same trial-epoch budget, 20 seeds.

Imported by bench/quality.py (`--workload synthetic`); see bench/synthetic.py for the workload.
Score: the TRUE quality (synthetic.true_quality) of the configuration each method ranks first.
"""

from __future__ import annotations

import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import true_quality

from hpsearch.dispatch import InlineExecutor
from hpsearch.search.recipe import search
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import parse_spec
from hpsearch.store.storage import Store
from hpsearch.trials import ranked_trials

WORKLOAD = str(Path(__file__).resolve().parent / "synthetic.py") + ":train"
LONG = 10  # epochs of a refine-length trial
PARAMS = {
    "lr": {"low": 1e-6, "high": 1.0, "log": True},
    "weight_decay": {"low": 1e-7, "high": 1e-1, "log": True},
    "momentum": {"low": 0.5, "high": 0.99, "limits": [0, 1]},
}


def _spec(
    name: str, coarse: dict[str, Any], refine: dict[str, Any] | None = None, params: dict | None = None, **top: Any
) -> Any:
    data = {
        "name": name,
        "workload": WORKLOAD,
        "metric": "val_accuracy",
        "direction": "maximize",
        "params": params or PARAMS,
        "coarse": coarse,
        **top,
    }
    if refine:
        data["refine"] = refine
    return parse_spec(data, Path(__file__))


def _best_params(trials: list[Any]) -> dict[str, Any]:
    ranked = ranked_trials(trials, "maximize")
    return dict(ranked[0].params) if ranked else {}


HAND_PICKED = {"strategy": "tpe", "trials": 60, "epochs": 3}  # the hand-picked stage settings of bench/RESULTS.md


def m_search(seed: int, tmp: Path, budget: int, coarse: dict[str, Any] | None = None) -> dict[str, Any]:
    """`hpsearch search --budget N` with an ordinary study file (only [refine] epochs = 10 written): the
    default plan (recipe.plan_stages). With `coarse`: search_plan = "study", that coarse, refine 12 x 10."""
    if coarse is None:
        spec = _spec("search", {"seed": seed}, {"epochs": LONG})
    else:
        spec = _spec(
            "search", {**coarse, "seed": seed}, {"trials": 12, "epochs": LONG, "top_k": 5}, search_plan="study"
        )
    store = Store(spec.name, tmp / f"search{seed}{'' if coarse is None else 'alt'}")
    result = search(store, spec, budget=budget, executor=InlineExecutor("cpu"))
    return dict(result.best.params)


def m_flat(strategy: str) -> Callable[[int, Path, int], dict[str, Any]]:
    def run(seed: int, tmp: Path, budget: int) -> dict[str, Any]:
        spec = _spec(f"flat_{strategy}", {"strategy": strategy, "trials": budget // LONG, "epochs": LONG, "seed": seed})
        store = Store(spec.name, tmp / f"{strategy}{seed}")
        return _best_params(run_stage(store, start_coarse(store, spec, {}), InlineExecutor("cpu")).trials)

    return run


def m_hyperband(seed: int, tmp: Path, budget: int) -> dict[str, Any]:
    spec = _spec("tpe_hb", {"strategy": "tpe", "trials": budget, "epochs": LONG, "seed": seed})
    store = Store(spec.name, tmp / f"hb{seed}")
    info = start_coarse(store, spec, {"budget": budget})
    return _best_params(run_stage(store, info, InlineExecutor("cpu"), pruner="hyperband").trials)


def m_grid(seed: int, tmp: Path, budget: int) -> dict[str, Any]:
    n = budget // LONG  # 40 points: lr 8 x weight_decay 5, momentum 0.9
    params = {
        "lr": {"low": 1e-6, "high": 1.0, "log": True, "grid_points": 8},
        "weight_decay": {"low": 1e-7, "high": 1e-1, "log": True, "grid_points": 5},
        "momentum": {"values": [0.9]},
    }
    spec = _spec("grid", {"strategy": "grid", "trials": n, "epochs": LONG, "seed": seed}, params=params)
    store = Store(spec.name, tmp / f"grid{seed}")
    return _best_params(run_stage(store, start_coarse(store, spec, {}), InlineExecutor("cpu")).trials)


def m_successive_halving(seed: int, tmp: Path, budget: int) -> dict[str, Any]:
    """Plain Optuna: random sampler + SuccessiveHalvingPruner (min 1 epoch, reduction 3), to the same budget."""
    import random

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synthetic import quality

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    spent, number = 0, 0
    while spent + LONG <= budget:
        trial = study.ask()
        p = {
            "lr": trial.suggest_float("lr", 1e-6, 1.0, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-7, 1e-1, log=True),
            "momentum": trial.suggest_float("momentum", 0.5, 0.99),
        }
        rng = random.Random(hash((seed, number)) % 2**31)
        number += 1
        state, value = optuna.trial.TrialState.COMPLETE, 0.0
        for e in range(1, LONG + 1):
            mean = quality(p["lr"], p["weight_decay"], p["momentum"], shift=0.6 / e) * (1.0 - math.exp(-e / 3.0))
            value = mean + rng.gauss(0.0, 0.15 / math.sqrt(e))
            spent += 1
            trial.report(value, e - 1)
            if e < LONG and trial.should_prune():
                state = optuna.trial.TrialState.PRUNED
                break
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return dict(max(done, key=lambda t: t.value).params) if done else {}


METHODS = {
    "hpsearch search": m_search,
    "search, hand-picked plan": lambda seed, tmp, budget: m_search(seed, tmp, budget, HAND_PICKED),
    "flat random": m_flat("random"),
    "flat TPE": m_flat("tpe"),
    "TPE + hyperband": m_hyperband,
    "random + succ. halving": m_successive_halving,
    "grid (8 x 5)": m_grid,
}


def main(seeds: int, budget: int, first: int = 0) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    scores: dict[str, list[float]] = {name: [] for name in METHODS}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(first, first + seeds):
            for name, method in METHODS.items():
                params = method(seed, Path(folder), budget)
                scores[name].append(true_quality(params) if params else 0.0)
            print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)
    print(
        f"\ntrue quality of the configuration ranked first, synthetic workload, {budget} trial-epochs, seeds "
        f"{first}-{first + seeds - 1}"
    )
    print(f"{'method':<26}{'mean':>8}{'± se':>8}{'std':>8}{'<0.1':>6}   paired diff vs search (mean ± se)")
    base = scores["hpsearch search"]
    for name, values in scores.items():
        sd = statistics.stdev(values)
        diffs = [b - v for b, v in zip(base, values)]
        paired = (
            f"{statistics.fmean(diffs):+.3f} ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.3f}"
            if name != "hpsearch search"
            else ""
        )
        near = sum(v < 0.1 for v in values)
        print(
            f"{name:<26}{statistics.fmean(values):>8.3f}{sd / math.sqrt(len(values)):>8.3f}{sd:>8.3f}{near:>6}   "
            f"{paired}"
        )
