"""Benchmark: search quality at equal compute on the digits MLP, plus Bergstra & Bengio's random vs grid.

Not a test. Seven searches with the same total budget of 360 training epochs,
each run with --seeds seeds, through the library (spec -> stages -> Optuna
storage in a temporary folder):

  (s) `hpsearch search --budget 360` on studies/digits_mlp.toml as it is (the default plan:
      recipe.plan_stages);
  (a) coarse -> refine, the built-in study's settings: 30 random trials x 2 epochs, then
      refine-1 around the top 5: 20 x 15 epochs = 60 + 300 = 360 epochs;
  (b) flat random search: 24 trials x 15 epochs = 360 epochs;
  (c) grid search: a full 24-point grid x 15 epochs = 360 epochs
      (lr 6 log-spaced points in [1e-4, 1] x momentum {0.9, 0.99} x weight_decay {0, 1e-4});
  (d) Optuna TPE: 24 trials x 15 epochs = 360 epochs, asked one at a time;
  (e) TPE + hpsearch's `--pruner hyperband`, a coarse stage of 15-epoch trials with `budget = 360`;
  (f) plain Optuna: random sampler + SuccessiveHalvingPruner (min 1 epoch, reduction 3), to 360 epochs.

Score: the TEST accuracy of the configuration each method ranks first
(repeats.ranked_configs of its last stage; the best completed trial for (f)),
retrained for 15 epochs with --test-seeds seeds (the same seeds for every
method) by the built-in workload on its test split (trial.split == "test", as
`hpsearch final` runs it). The searches never look at the test split. Methods are
compared paired on the same seeds. Trials of (a)-(c) run through the
population trainer (InlineExecutor in population mode); TPE, the pruners and
search's TPE coarse run one trial at a time.

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
from hpsearch.repeats import ranked_configs
from hpsearch.search.stages import plan_refine, run_stage, start_coarse
from hpsearch.spec import parse_spec
from hpsearch.store.storage import Store

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "studies" / "digits_mlp.toml"
FLAT_TRIALS, FLAT_EPOCHS = 24, 15


def study_data(**changes: Any) -> dict[str, Any]:
    data = tomllib.loads(STUDY.read_text())
    data.update(changes)
    return data


BUDGET = FLAT_TRIALS * FLAT_EPOCHS


def picked(store: Store) -> dict[str, Any]:
    """The configuration a stored search ranks first: the noise-aware ranking of its last stage (as `final`)."""
    stage = store.stage(None)
    configs = ranked_configs(store.trials(stage), stage.spec.direction.value)
    return dict(configs[0].params) if configs else {}


class _Trial:
    """The trial record the built-in digits workload reads (params, epochs, seed, device, split, report)."""

    def __init__(
        self, params: dict[str, Any], epochs: int, seed: int, split: str = "val", on_report: Any = None
    ) -> None:
        self.params, self.epochs, self.seed, self.split, self.device = params, epochs, seed, split, "cpu"
        self.on_report = on_report

    def report(self, epoch: int, **metrics: float) -> None:
        if self.on_report is not None:
            self.on_report(epoch, metrics)


def test_accuracy(params: dict[str, Any], seeds: int) -> float:
    """The picked configuration retrained for FLAT_EPOCHS on train, tested on the TEST split: mean of `seeds` runs."""
    from hpsearch.workloads.digits import mlp

    if not params:
        return float("nan")
    return statistics.fmean(
        mlp(_Trial(params, FLAT_EPOCHS, 10_000 + i, split="test"))["val_accuracy"] for i in range(seeds)
    )


def coarse_refine(seed: int, tmp: Path) -> dict[str, Any]:
    spec = parse_spec(study_data(), STUDY)
    store = Store(spec.name, directory=tmp / f"cr{seed}")
    coarse = start_coarse(store, spec, {"seed": seed})
    run_stage(store, coarse, InlineExecutor("cpu", population=64))
    refine, _flags, _ = plan_refine(store, None, {"seed": seed})
    run_stage(store, refine, InlineExecutor("cpu", population=64))
    return picked(store)


def recipe_search(seed: int, tmp: Path) -> dict[str, Any]:
    """`hpsearch search studies/digits_mlp.toml --budget 360 --seed S`: the default plan (recipe.plan_stages)."""
    from hpsearch.search.recipe import search

    spec = parse_spec(study_data(name="search"), STUDY)
    store = Store(spec.name, directory=tmp / f"search{seed}")
    result = search(store, spec, {"seed": seed}, budget=BUDGET, executor=InlineExecutor("cpu"))  # TPE: one at a time
    return dict(result.best.params)


def hyperband(seed: int, tmp: Path) -> dict[str, Any]:
    changes = {"name": "tpe_hb", "coarse": {"strategy": "tpe", "trials": BUDGET, "epochs": FLAT_EPOCHS, "seed": seed}}
    spec = parse_spec(study_data(**changes), STUDY)
    store = Store(spec.name, directory=tmp / f"hb{seed}")
    run_stage(store, start_coarse(store, spec, {"budget": BUDGET}), InlineExecutor("cpu"), pruner="hyperband")
    return picked(store)


def successive_halving(seed: int, tmp: Path) -> dict[str, Any]:
    """Plain Optuna, random sampler + SuccessiveHalvingPruner (min 1 epoch, reduction 3), to BUDGET epochs."""
    from hpsearch.workloads.digits import mlp

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=seed),
        pruner=optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3),
    )
    spent = 0
    while spent + FLAT_EPOCHS <= BUDGET:
        trial = study.ask()
        params = {
            "lr": trial.suggest_float("lr", 1e-4, 1.0, log=True),
            "weight_decay": trial.suggest_categorical("weight_decay", [0, 1e-5, 1e-4, 1e-3]),
            "momentum": trial.suggest_categorical("momentum", [0.5, 0.9, 0.95, 0.99]),
        }

        def on_report(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal spent
            spent += 1
            trial.report(metrics["val_accuracy"], epoch)  # noqa: B023 - called in this iteration
            if epoch < FLAT_EPOCHS - 1 and trial.should_prune():  # noqa: B023 - same
                raise optuna.TrialPruned()

        try:
            value = mlp(_Trial(params, FLAT_EPOCHS, seed * 1000 + trial.number, on_report=on_report))["val_accuracy"]
            study.tell(
                trial,
                value if math.isfinite(value) else None,
                state=optuna.trial.TrialState.COMPLETE if math.isfinite(value) else optuna.trial.TrialState.FAIL,
            )
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return dict(max(done, key=lambda t: t.value).params) if done else {}


def flat(strategy: str, seed: int, tmp: Path, k: int) -> dict[str, Any]:
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
    run_stage(store, start_coarse(store, spec, {}), InlineExecutor("cpu", population=k))
    return picked(store)


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
            return -((p[0] - xs) ** 2) - 0.01 * (p[1] - ys) ** 2  # noqa: B023 - used in this iteration only

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
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first .. first + seeds - 1")
    parser.add_argument("--test-seeds", type=int, default=2, help="retrains of each picked configuration (digits)")
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
        "(e) TPE + hyperband": hyperband,
        "(f) random + succ. halving": successive_halving,
    }
    scores: dict[str, list[float]] = {name: [] for name in methods}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            for name, method in methods.items():
                scores[name].append(test_accuracy(method(seed, tmp), args.test_seeds))
            print(f"seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)

    print(
        f"\ntest accuracy of the configuration ranked first "
        f"(retrained {FLAT_EPOCHS} epochs, mean of {args.test_seeds} seeds), "
        f"digits MLP, {BUDGET} epochs per search, seeds {args.first_seed}-{args.first_seed + args.seeds - 1} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    print(f"{'search':<32}{'mean':>8}{'std':>8}{'min':>8}{'max':>8}   per seed")
    for name, values in scores.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        per_seed = " ".join(f"{v:.4f}" for v in values)
        print(
            f"{name:<32}{statistics.mean(values):>8.4f}{std:>8.4f}{min(values):>8.4f}{max(values):>8.4f}   {per_seed}"
        )
    base = scores["(s) hpsearch search"]
    if len(base) > 1:
        print("paired difference, search minus each (mean ± standard error, same seeds):")
        for name, values in scores.items():
            if name != "(s) hpsearch search":
                diffs = [b - v for b, v in zip(base, values)]
                print(
                    f"  {name:<30}{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs) / math.sqrt(len(diffs)):.4f}"
                )

    print("\nBergstra & Bengio: x matters, y barely (f = -(x-x*)^2 - 0.01 (y-y*)^2), 2000 random optima")
    for n in (9, 16, 25):
        result = bergstra_bengio(n)
        print(
            f"  {n:>2} trials: grid |x-x*| {result['grid'][0]:.4f} regret {result['grid'][1]:.5f}   "
            f"random |x-x*| {result['random'][0]:.4f} regret {result['random'][1]:.5f}"
        )


if __name__ == "__main__":
    main()
