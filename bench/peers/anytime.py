"""Anytime curves of bench/peers: the quality of each method's current pick against what it has spent.

Every runner notes its pick each time it changes (common.Ledger.track: trial-epochs spent, seconds since
its search began, the configuration). Each distinct pick is scored as score.py scores a final one, but
with one retrain by default (--retrains; the first of common.RETRAIN_SEEDS), since a run changes its
pick a few times: test accuracy after a full-length retrain (mnist1d, digits), the true value of f
(hartmann6, free). Scores share score.py's cache (scores.json).

For each workload it writes bench/results/anytime-WORKLOAD.png, two panels: the mean over seeds of the
current pick's quality against trial-epochs spent, and against wall-clock seconds on the machine that
ran them. A method's curve starts where every one of its seeds has a pick (before that, some seed has
nothing to show). `search` notes its pick at the end of each stage, the moment it has one to give.

It also prints, per workload, the best peer's final quality and wall time, and the time at which
`search`'s mean curve first reaches that quality (the issue's "half of the best peer's wall time").

    .venv/bin/python bench/peers/anytime.py --seeds scored
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path
from typing import Any

import common
import score

OUT = common.ROOT / "bench" / "results"


def steps(result: dict[str, Any], axis: str, cache: dict[str, float], retrains: int) -> list[tuple[float, float]]:
    """(x, quality) at each change of the run's pick; x is trial-epochs ("spent") or seconds."""
    return [
        (float(p[axis]), score.quality(result["workload"], p["params"], retrains, cache))
        for p in result["picks"]
        if p["params"] is not None
    ]


def value_at(points: list[tuple[float, float]], x: float) -> float | None:
    """The quality of the pick held at x (the last change at or before x), None before the first."""
    held = None
    for at, value in points:
        if at > x:
            break
        held = value
    return held


def mean_curve(runs: list[list[tuple[float, float]]], grid: list[float]) -> tuple[list[float], list[float]]:
    """The mean over runs at each grid point where every run has a pick."""
    xs, ys = [], []
    for x in grid:
        values = [value_at(points, x) for points in runs]
        if values and all(v is not None for v in values):
            xs.append(x)
            ys.append(statistics.fmean(v for v in values if v is not None))
    return xs, ys


def first_reaching(xs: list[float], ys: list[float], target: float, maximize: bool) -> float | None:
    for x, y in zip(xs, ys, strict=True):
        if (y >= target) if maximize else (y <= target):
            return x
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=common.RESULTS)
    parser.add_argument("--seeds", choices=("scored", "settings", "all"), default="scored")
    parser.add_argument("--retrains", type=int, default=1, choices=(1, 2, 3))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="retrains at once (default: cores)")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = score.load(args.results, args.seeds)
    cache = score.load_cache(args.results)
    picks = [(r["workload"], p["params"], args.retrains) for r in results for p in r["picks"]]
    score.fill(picks, cache, args.jobs)
    score.save_cache(args.results, cache)
    by_workload: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for result in results:
        by_workload.setdefault(result["workload"], {}).setdefault(result["method"], []).append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, methods in sorted(by_workload.items()):
        workload = common.WORKLOADS[name]
        figure, panels = plt.subplots(1, 2, figsize=(12, 4.5))
        finals: dict[str, tuple[float, float]] = {}  # method -> (final mean quality, mean wall seconds)
        curves: dict[str, tuple[list[float], list[float]]] = {}
        for method in sorted(methods, key=lambda m: score.ORDER.index(m) if m in score.ORDER else 99):
            runs = methods[method]
            for panel, axis, end in ((panels[0], "spent", workload.budget), (panels[1], "seconds", None)):
                points = [steps(r, axis, cache, args.retrains) for r in runs]
                top = end if end is not None else max(r["seconds"] for r in runs)
                grid = [top * i / 400 for i in range(401)]
                xs, ys = mean_curve(points, grid)
                style = {"linewidth": 2.5, "color": "black"} if method == "search" else {"linewidth": 1.2}
                style = {"linewidth": 2.5, "color": "grey"} if method == "search_population" else style
                panel.step(xs, ys, where="post", label=f"{method} (n={len(runs)})", **style)
                if axis == "seconds":
                    curves[method] = (xs, ys)
                    finals[method] = (ys[-1] if ys else float("nan"), statistics.fmean(r["seconds"] for r in runs))
        what = "test accuracy (1 retrain)" if workload.maximize else "true f (lower is better)"
        panels[0].set(xlabel="trial-epochs spent", ylabel=f"current pick: {what}", title=f"{name}: by budget")
        panels[1].set(xlabel="wall-clock seconds (one core each)", title=f"{name}: by time")
        for panel in panels:
            panel.grid(alpha=0.3)
        panels[1].legend(fontsize=8, loc="lower right" if workload.maximize else "upper right")
        figure.tight_layout()
        path = args.out / f"anytime-{name}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        print(f"{name}: {path}")
        sign = 1 if workload.maximize else -1
        for method, (final, seconds) in sorted(finals.items(), key=lambda kv: -kv[1][0] * sign):
            print(f"  {method:<15} final mean {final:.4f}, mean wall {seconds:6.1f} s")
        ours = [m for m in ("search", "search_population") if m in curves]
        peers = {m: v for m, v in finals.items() if m not in ours}
        if ours and peers:
            best = max(peers, key=lambda m: peers[m][0] * sign)
            target, seconds = peers[best]
            print(f"  best peer {best}: {target:.4f} after {seconds:.1f} s on the mean")
            for method in ours:
                reached = first_reaching(*curves[method], target, workload.maximize)
                shown = "never" if reached is None else f"at {reached:.1f} s ({reached / seconds:.2f} of its time)"
                print(f"  {method} reaches it {shown}")
    score.save_cache(args.results, cache)  # with Hartmann-6's true values, computed as plotted


if __name__ == "__main__":
    main()
