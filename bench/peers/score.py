"""Score bench/peers' results: each method's pick retrained at full length, on test; tables and ranks.

For each result file (bench/results/peers/WORKLOAD/METHOD/seedS.json, written by the runners), the
configuration the method ranks first is retrained from scratch for the workload's max_epochs with each
of common.RETRAIN_SEEDS (10000, 10001, 10002: the same for every method, so methods are paired) and
scored on the TEST split, the mean of the retrains (mnist1d: the 1,000 test sequences; digits: its 20%
test split); on hartmann6 the score is its true value, f at full fidelity without noise (lower is
better; the optimum is -3.32237). A method that picked nothing scores the worst value (accuracy 0, f 0).
Scores are cached in scores.json beside the results, so scoring again retrains only new picks.

The seed split (common.SETTINGS_SEEDS, common.SCORED_SEEDS): seeds 0-9 are the SETTINGS seeds, on which
settings of `search` (or of any method) may be chosen and looked at; seeds 100-119 are the SCORED seeds,
held out: never run while choosing settings, and the only ones whose tables count. A search's seed
seeds the method (its sampler, its evaluations' training seeds); the split and the retrain seeds are
fixed.

Per workload: each method's mean ± standard error over seeds, the paired difference against `search`
on the seeds both ran (positive: search better, whichever the direction), with its standard error; then
each method's rank on each workload (by the mean; 1 is best) and its mean rank across the workloads.

    .venv/bin/python bench/peers/score.py --seeds scored        # the held-out seeds (the figures that count)
    .venv/bin/python bench/peers/score.py --seeds settings --retrains 1     # a quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import common

# search_population is `search` itself on MNIST-1D's model workload (a wall-clock variant): shown, not ranked
UNRANKED = ("search_population",)
ORDER = ("search", "search_population", "tpe_hyperband", "gp", "random_sh", "smac", "dehb", "neps")


def load(results: Path, seeds: str) -> list[dict[str, Any]]:
    """Every result file under `results` whose seed is in the chosen set ("settings", "scored", "all")."""
    found = []
    for path in sorted(results.glob("*/*/seed*.json")):
        data = json.loads(path.read_text())
        if seeds == "all" or common.seed_set(data["seed"]) == seeds:
            found.append(data)
    return found


def score(result: dict[str, Any], retrains: int, cache: dict[str, float]) -> float:
    """The result's pick scored (module docstring), through `cache`."""
    return quality(result["workload"], result["pick"], retrains, cache)


def cache_key(name: str, pick: dict[str, Any], retrains: int) -> str:
    workload = common.WORKLOADS[name]
    return json.dumps([workload.name, workload.max_epochs, sorted(pick.items()), list(common.RETRAIN_SEEDS[:retrains])])


def _retrain(task: tuple[str, dict[str, Any], int]) -> float:
    name, pick, seed = task
    return common.train(name, pick, common.WORKLOADS[name].max_epochs, seed, "test")


def fill(wanted: list[tuple[str, dict[str, Any] | None, int]], cache: dict[str, float], jobs: int) -> None:
    """Retrain, `jobs` processes at once, every (workload, pick, retrains) of `wanted` that `cache` lacks
    (one training per process at a time, as the runs had)."""
    missing: dict[str, tuple[str, dict[str, Any], int]] = {}
    for name, pick, retrains in wanted:
        if pick is not None and name != "hartmann6" and (key := cache_key(name, pick, retrains)) not in cache:
            missing[key] = (name, pick, retrains)
    tasks = [(name, pick, seed) for name, pick, n in missing.values() for seed in common.RETRAIN_SEEDS[:n]]
    if not tasks:
        return
    from concurrent.futures import ProcessPoolExecutor

    print(f"retraining {len(missing)} picks ({len(tasks)} trainings, {jobs} at a time)", flush=True)
    with ProcessPoolExecutor(jobs) as pool:
        values = iter(pool.map(_retrain, tasks))
    for key, (_, _, n) in missing.items():
        cache[key] = statistics.fmean(next(values) for _ in range(n))


def quality(name: str, pick: dict[str, Any] | None, retrains: int, cache: dict[str, float]) -> float:
    """A configuration of workload `name` scored: retrained at full length on test (the mean of `retrains`
    runs), or its true value; the worst value where there is none. Cached in `cache`."""
    workload = common.WORKLOADS[name]
    if pick is None:
        return 0.0
    seeds = common.RETRAIN_SEEDS[:retrains]
    key = cache_key(name, pick, retrains)
    if key not in cache:
        if workload.name == "hartmann6":
            import hartmann

            cache[key] = hartmann.true_value(pick)
        else:
            cache[key] = statistics.fmean(_retrain((name, pick, seed)) for seed in seeds)
    return cache[key]


def load_cache(results: Path) -> dict[str, float]:
    """The scores retrained so far for the results under `results` (cache_key -> score)."""
    path = results / "scores.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def save_cache(results: Path, cache: dict[str, float]) -> None:
    (results / "scores.json").write_text(json.dumps(cache, indent=1) + "\n")


def se(values: list[float]) -> float:
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def table(workload: str, scores: dict[str, dict[int, float]]) -> list[str]:
    """One workload's lines: mean ± se, and the paired difference against search."""
    sign = 1.0 if common.WORKLOADS[workload].maximize else -1.0
    lines = [f"{'method':<15}{'n':>4}{'mean':>10}{'± se':>9}   paired diff, search minus each (+: search better)"]
    base = scores.get("search", {})
    for method in sorted(scores, key=lambda m: (ORDER.index(m) if m in ORDER else len(ORDER), m)):
        values = list(scores[method].values())
        paired = ""
        common_seeds = sorted(set(base) & set(scores[method]))
        if method != "search" and common_seeds:
            diffs = [sign * (base[s] - scores[method][s]) for s in common_seeds]
            paired = f"{statistics.fmean(diffs):+.4f} ± {se(diffs):.4f} (n = {len(diffs)})"
        lines.append(f"{method:<15}{len(values):>4}{statistics.fmean(values):>10.4f}{se(values):>9.4f}   {paired}")
    return lines


def ranks(means: dict[str, float], maximize: bool) -> dict[str, float]:
    """1 for the best mean; ties share the average of their places."""
    ordered = sorted(means, key=lambda m: -means[m] if maximize else means[m])
    out: dict[str, float] = {}
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and means[ordered[j + 1]] == means[ordered[i]]:
            j += 1
        for m in ordered[i : j + 1]:
            out[m] = (i + j) / 2 + 1
        i = j + 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--seeds", choices=("scored", "settings", "all"), default="scored")
    parser.add_argument("--retrains", type=int, default=len(common.RETRAIN_SEEDS), choices=(1, 2, 3))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="retrains at once (default: cores)")
    args = parser.parse_args()
    print(
        f"seed split: settings seeds {common.SETTINGS_SEEDS.start}-{common.SETTINGS_SEEDS.stop - 1} "
        f"(settings may be chosen on them), scored seeds {common.SCORED_SEEDS.start}-{common.SCORED_SEEDS.stop - 1} "
        f"(held out); showing: {args.seeds}; retrains per pick: {args.retrains} (seeds "
        f"{', '.join(map(str, common.RETRAIN_SEEDS[: args.retrains]))})"
    )
    results = load(args.results, args.seeds)
    if not results:
        sys.exit(f"no results for the {args.seeds} seeds under {args.results}")
    cache = load_cache(args.results)
    by_workload: dict[str, dict[str, dict[int, float]]] = {}
    fill([(r["workload"], r["pick"], args.retrains) for r in results], cache, args.jobs)
    save_cache(args.results, cache)
    for result in results:
        value = score(result, args.retrains, cache)
        by_workload.setdefault(result["workload"], {}).setdefault(result["method"], {})[result["seed"]] = value
    save_cache(args.results, cache)  # with Hartmann-6's true values, computed as scored
    all_ranks: dict[str, list[float]] = {}
    summary: dict[str, Any] = {"seeds": args.seeds, "retrains": args.retrains, "workloads": {}}
    for workload, scores in sorted(by_workload.items()):
        spec = common.WORKLOADS[workload]
        what = f"test accuracy, retrained {spec.max_epochs} epochs," if spec.maximize else "true f (lower is better)"
        budgets = sorted({r["budget"] for r in results if r["workload"] == workload})
        unequal = "  NOT EQUAL: these methods are not comparable" if len(budgets) > 1 else ""
        print(f"\n{workload}: {what} of the pick; budget {', '.join(map(str, budgets))} trial-epochs{unequal}")
        print("\n".join(table(workload, scores)))
        means = {m: statistics.fmean(v.values()) for m, v in scores.items() if m not in UNRANKED}
        for method, rank in ranks(means, spec.maximize).items():
            all_ranks.setdefault(method, []).append(rank)
        summary["workloads"][workload] = {m: {str(s): v for s, v in vs.items()} for m, vs in scores.items()}
    print(f"\nmean rank across workloads (1 = best mean on a workload; not ranked: {', '.join(UNRANKED)})")
    for method, values in sorted(all_ranks.items(), key=lambda kv: statistics.fmean(kv[1])):
        places = ", ".join(f"{r:g}" for r in values)
        print(f"  {method:<15}{statistics.fmean(values):>6.2f}   ({len(values)} workloads: {places})")
    summary["mean_rank"] = {m: statistics.fmean(v) for m, v in all_ranks.items()}
    (args.results / f"summary-{args.seeds}.json").write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
