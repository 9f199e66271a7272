"""Benchmark: search quality at equal compute on the digits MLP, plus Bergstra & Bengio's random vs grid.

Not a test. Four searches with the same total budget of training epochs,
each run with 5 seeds, through the library (spec -> stages -> Optuna storage
in a temporary folder):

  (a) coarse -> refine, the built-in study's settings (studies/digits_mlp.toml):
      30 random trials x 2 epochs, then refine-1 around the top 5: 20 x 15
      epochs = 60 + 300 = 360 epochs;
  (b) flat random search: 24 trials x 15 epochs = 360 epochs;
  (c) grid search: a full 24-point grid x 15 epochs = 360 epochs
      (lr 6 log-spaced points in [1e-4, 1] x momentum {0.9, 0.99} x weight_decay {0, 1e-4});
  (d) Optuna TPE: 24 trials x 15 epochs = 360 epochs, asked one at a time.

Score: the best val_accuracy any trial of the search reached (the test
split is never looked at). Trials run through the population trainer
(the library's InlineExecutor in population mode, the same run_population
the worker pool uses with --population K), except TPE, which needs each result before its next ask.

Then the synthetic Bergstra & Bengio (2012) experiment, torch-free.

    .venv/bin/python bench/quality.py [--seeds 5]
    .venv/bin/python bench/quality.py --workload synthetic --seeds 20 --budget 400   # bench/quality_synthetic.py
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import optuna
import torch

from hpsearch.dispatch import InlineExecutor
from hpsearch.spec import parse_spec
from hpsearch.stages import plan_refine, run_stage, start_coarse
from hpsearch.storage import Store

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "digits_mlp.toml"
FLAT_TRIALS, FLAT_EPOCHS = 24, 15


def study_data(**changes: Any) -> dict[str, Any]:
    data = tomllib.loads(STUDY.read_text())
    data.update(changes)
    return data


def best_value(trials: list[Any]) -> float:
    values = [t.value for t in trials if t.value is not None and math.isfinite(t.value)]
    return max(values) if values else float("nan")


def coarse_refine(seed: int, tmp: Path) -> float:
    spec = parse_spec(study_data(), STUDY)
    store = Store(spec.name, directory=tmp / f"cr{seed}")
    coarse = start_coarse(store, spec, {"seed": seed})
    first = run_stage(store, coarse, InlineExecutor("cpu", population=64))
    refine, _flags, _ = plan_refine(store, None, {"seed": seed})
    second = run_stage(store, refine, InlineExecutor("cpu", population=64))
    return max(best_value(first.trials), best_value(second.trials))


def recipe_search(seed: int, tmp: Path) -> float:
    """`hpsearch search` at the same 360 trial-epochs: coarse TPE 24 x 5 epochs (a third of refine's; + re-runs), then refine
    stages of up to 10 x 15 epochs (the last sized to what is left)."""
    from hpsearch.recipe import search

    changes = {"name": "search", "coarse": {"strategy": "tpe", "trials": 24, "epochs": 5, "seed": seed},
               "refine": {"trials": 10, "epochs": FLAT_EPOCHS, "top_k": 5}}
    spec = parse_spec(study_data(**changes), STUDY)
    store = Store(spec.name, directory=tmp / f"search{seed}")
    search(store, spec, budget=FLAT_TRIALS * FLAT_EPOCHS, executor=InlineExecutor("cpu", population=64))
    return max(best_value(store.trials(s)) for s in store.stages())


def flat(strategy: str, seed: int, tmp: Path, k: int) -> float:
    changes: dict[str, Any] = {
        "name": f"flat_{strategy}",
        "coarse": {"strategy": strategy, "trials": FLAT_TRIALS, "epochs": FLAT_EPOCHS, "seed": seed},
    }
    if strategy == "grid":
        changes["params"] = {
            "lr": {"low": 1e-4, "high": 1.0, "log": True, "grid_points": 6},
            "momentum": {"values": [0.9, 0.99]},
            "weight_decay": {"values": [0, 1e-4]},
        }
    spec = parse_spec(study_data(**changes), STUDY)
    store = Store(spec.name, directory=tmp / f"{strategy}{seed}")
    stage = start_coarse(store, spec, {})
    return best_value(run_stage(store, stage, InlineExecutor("cpu", population=k)).trials)


def bergstra_bengio(n_trials: int = 9, reps: int = 2000) -> dict[str, tuple[float, float]]:
    """One important parameter x, one unimportant y, on [0, 1]^2; the optimum x* is drawn per repetition.

    f(x, y) = -(x - x*)^2 - 0.01 (y - y*)^2. Grid: the sqrt(n) x sqrt(n) lattice of cell centres;
    random: n uniform points. Returns, per method, (mean |x_best - x*|, mean regret in f).
    """
    side = int(round(math.sqrt(n_trials)))
    lattice = [(i + 0.5) / side for i in range(side)]
    grid_points = [(x, y) for x in lattice for y in lattice]
    rng = random.Random(0)
    errors: dict[str, list[float]] = {"grid": [], "random": []}
    regrets: dict[str, list[float]] = {"grid": [], "random": []}
    for _ in range(reps):
        xs, ys = rng.random(), rng.random()

        def f(p: tuple[float, float]) -> float:
            return -((p[0] - xs) ** 2) - 0.01 * (p[1] - ys) ** 2

        random_points = [(rng.random(), rng.random()) for _ in range(n_trials)]
        for name, points in (("grid", grid_points), ("random", random_points)):
            best = max(points, key=f)
            errors[name].append(abs(best[0] - xs))
            regrets[name].append(-f(best))
    return {name: (statistics.mean(errors[name]), statistics.mean(regrets[name])) for name in errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workload", choices=("digits", "synthetic"), default="digits")
    parser.add_argument("--budget", type=int, default=400, help="trial-epochs per search (synthetic)")
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first .. first + seeds - 1 (synthetic)")
    args = parser.parse_args()
    if args.workload == "synthetic":  # issue 16: hpsearch search against five other methods, 20 seeds
        import quality_synthetic

        quality_synthetic.main(args.seeds, args.budget, args.first_seed)
        return
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    methods = {
        "(s) hpsearch search": lambda s, tmp: recipe_search(s, tmp),
        "(a) coarse->refine (defaults)": lambda s, tmp: coarse_refine(s, tmp),
        "(b) flat random": lambda s, tmp: flat("random", s, tmp, 64),
        "(c) grid (24 points)": lambda s, tmp: flat("grid", s, tmp, 64),
        "(d) Optuna TPE": lambda s, tmp: flat("tpe", s, tmp, 1),
    }
    scores: dict[str, list[float]] = {name: [] for name in methods}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for seed in range(args.seeds):
            for name, method in methods.items():
                scores[name].append(method(seed, tmp))
            print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)

    print(f"\nbest val_accuracy, digits MLP, 360 epochs per search, {args.seeds} seeds ({time.perf_counter() - start:.0f} s)")
    print(f"{'search':<32}{'mean':>8}{'std':>8}{'min':>8}{'max':>8}   per seed")
    for name, values in scores.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = " ".join(f"{v:.4f}" for v in values)
        print(f"{name:<32}{statistics.mean(values):>8.4f}{std:>8.4f}{min(values):>8.4f}{max(values):>8.4f}   {per_seed}")
    base = scores["(s) hpsearch search"]
    if len(base) > 1:
        print("paired difference, search minus each (mean ± standard error, same seeds):")
        for name, values in scores.items():
            if name != "(s) hpsearch search":
                diffs = [b - v for b, v in zip(base, values)]
                print(f"  {name:<30}{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.4f}")

    print("\nBergstra & Bengio: x matters, y barely (f = -(x-x*)^2 - 0.01 (y-y*)^2), 2000 random optima")
    for n in (9, 16, 25):
        result = bergstra_bengio(n)
        print(
            f"  {n:>2} trials: grid |x-x*| {result['grid'][0]:.4f} regret {result['grid'][1]:.5f}   "
            f"random |x-x*| {result['random'][0]:.4f} regret {result['random'][1]:.5f}"
        )


if __name__ == "__main__":
    main()
