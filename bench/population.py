"""Benchmark: trials per minute of the digits MLP, population trainer vs one trial at a time.

Not a test. Runs the sequential worker path (digits.mlp called once per
trial, in this process) and mlp_population at K = 1, 8, 32, 128 side by side,
in both data-order modes ("K=32": each member its own shuffle, the default,
equal to its solo trial; "K=32 shared": one shuffle for the whole
population, HPSEARCH_POPULATION_SHARED_ORDER=1; at K=1 the two coincide),
interleaved over several rounds so background load hits every variant alike,
and prints the median trials/minute and each variant's ratio to the
sequential path. Every trial: 2 epochs, params drawn like the coarse stage
(log-uniform lr in [1e-4, 1], momentum and weight_decay from the study's sets).

    .venv/bin/python bench/population.py [--threads 1] [--rounds 3] [--ks 1,8,32,128] [--seq-threads 1]

`--mnist1d` instead times whole `hpsearch coarse studies/mnist1d_cnn.toml`
commands (the MNIST-1D CNN as a model workload, default workers, 30 trials x 5
epochs, a fresh results folder each) with `--population auto` and fixed K side
by side, the variants interleaved (their order rotated each round) so a slow
spell hits them alike, and prints the K that auto chose in each run, each
variant's median wall time and its ratio to K=1 and to K=8 (auto includes its
own probes):

    .venv/bin/python bench/population.py --mnist1d [--rounds 3] [--variants auto,1,8] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from hpsearch.workloads import digits
from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads.digits_population import mlp_population

EPOCHS = 2


def draw_params(rng: random.Random) -> dict[str, Any]:
    return {
        "lr": 10 ** rng.uniform(-4, 0),
        "momentum": rng.choice([0.5, 0.9, 0.95, 0.99]),
        "weight_decay": rng.choice([0.0, 1e-5, 1e-4, 1e-3]),
    }


def contexts(n: int, seed: int) -> list[TrialContext]:
    rng = random.Random(seed)
    return [TrialContext(TrialRecord(i, draw_params(rng), EPOCHS, seed + i)) for i in range(n)]


def sequential(n: int, seed: int, threads: int | None = None) -> float:
    """Seconds for n trials, one digits.mlp call each (what a worker does without --population)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    start = time.perf_counter()
    for ctx in contexts(n, seed):
        digits.mlp(ctx)
    elapsed = time.perf_counter() - start
    torch.set_num_threads(previous)
    return elapsed


def population(k: int, n: int, seed: int, shared_order: bool = False) -> float:
    """Seconds for n trials run as populations of k."""
    start = time.perf_counter()
    trials = contexts(n, seed)
    for i in range(0, n, k):
        mlp_population(trials[i : i + k], shared_order=shared_order)
    return time.perf_counter() - start


ROOT = Path(__file__).resolve().parent.parent
MNIST1D = ROOT / "studies" / "mnist1d_cnn.toml"
CHOSEN = re.compile(r"population: K = (\d+) \(measured: (.*)\)")
STAGE = re.compile(r"ran \d+ trials in ([0-9.]+)s")


def coarse(population: str, trials: int, epochs: int, folder: Path, tree: Path = ROOT) -> tuple[float, float, str]:
    """One `hpsearch coarse` of the MNIST-1D CNN: (command wall s, the stage's own s, what auto measured).
    `tree`: the folder whose `hpsearch` package runs (its workers too: they start with it as their cwd)."""
    cmd = [
        str(Path(sys.executable).parent / "hpsearch"),
        "coarse",
        str(MNIST1D),
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--population",
        population,
        "--dir",
        str(folder / f"r{time.time_ns()}"),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    stage = STAGE.search(done.stderr)
    chosen = CHOSEN.search(done.stderr)
    return (
        wall,
        float(stage.group(1)) if stage else float("nan"),
        f"K={chosen.group(1)} ({chosen.group(2)})" if chosen else "",
    )


def mnist1d(variants: list[str], rounds: int, trials: int, epochs: int, baseline: Path | None = None) -> None:
    """--population auto against fixed K on the MNIST-1D CNN, whole commands, side by side; with `baseline`
    (a folder holding another version's hpsearch package) also that version's auto, as "auto@base"."""
    variants = variants + (["auto@base"] if baseline else [])
    walls: dict[str, list[float]] = {v: [] for v in variants}
    stages: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]  # rotated: no variant always first
            for v in order:
                tree = baseline if v == "auto@base" and baseline else ROOT
                wall, stage, chosen = coarse(v.partition("@")[0], trials, epochs, Path(tmp), tree)
                walls[v].append(wall)
                stages[v].append(stage)
                print(f"round {r + 1}/{rounds} --population {v}: {wall:.1f}s (stage {stage:.1f}s) {chosen}", flush=True)
    print(
        f"\nMNIST-1D CNN, {trials} trials x {epochs} epochs, whole commands, torch {torch.__version__}, rounds={rounds}"
    )
    base = {k: statistics.median(walls[k]) for k in ("1", "8") if k in walls}
    print(
        f"{'--population':<14}{'wall s (median)':>17}{'min':>8}{'max':>8}{'stage s':>9}"
        + "".join(f"{'t/t(K=' + k + ')':>11}" for k in base)
    )
    for v in variants:
        med = statistics.median(walls[v])
        ratios = "".join(f"{med / b:>10.2f}x" for b in base.values())
        print(
            f"{v:<14}{med:>17.1f}{min(walls[v]):>8.1f}{max(walls[v]):>8.1f}{statistics.median(stages[v]):>9.1f}{ratios}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ks", default="1,8,32,128")
    parser.add_argument("--seq-trials", type=int, default=32, help="trials per round on the sequential path")
    parser.add_argument(
        "--seq-threads", type=int, default=None, help="threads for the sequential path only (default: --threads)"
    )
    parser.add_argument("--mnist1d", action="store_true", help="time whole coarse commands of the MNIST-1D CNN instead")
    parser.add_argument("--variants", default="auto,1,8", help="--mnist1d: the --population values to compare")
    parser.add_argument("--trials", type=int, default=30, help="--mnist1d: trials per stage")
    parser.add_argument("--epochs", type=int, default=5, help="--mnist1d: epochs per trial")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="--mnist1d: also time auto of the hpsearch package in this folder "
        "(e.g. `git archive HEAD hpsearch | tar -x -C /tmp/base`)",
    )
    args = parser.parse_args()
    if args.mnist1d:
        return mnist1d(args.variants.split(","), args.rounds, args.trials, args.epochs, args.baseline)
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    digits.load_digits_split("cpu")
    sequential(2, 0)  # warm-up: first-call costs out of the timings
    population(max(ks), max(ks), 0)

    variants = [(f"K={k}", k, False) for k in ks] + [(f"K={k} shared", k, True) for k in ks if k > 1]
    rates: dict[str, list[float]] = {"sequential": []} | {name: [] for name, _, _ in variants}
    for r in range(args.rounds):
        n = args.seq_trials
        rates["sequential"].append(60 * n / sequential(n, 1000 * r, args.seq_threads))
        for name, k, shared in variants:
            n = max(k, 32)  # at least 32 trials per variant so small K is not timed on a handful of calls
            rates[name].append(60 * n / population(k, n, 1000 * r, shared))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    base = statistics.median(rates["sequential"])
    seq_threads = args.seq_threads or args.threads
    print(
        f"\ndigits MLP, {EPOCHS} epochs, torch {torch.__version__}, threads={args.threads} "
        f"(sequential: {seq_threads}), rounds={args.rounds}"
    )
    print(f"{'variant':<14}{'trials/min (median)':>22}{'min':>10}{'max':>10}{'vs sequential':>16}")
    for name, values in rates.items():
        med = statistics.median(values)
        print(f"{name:<14}{med:>22.0f}{min(values):>10.0f}{max(values):>10.0f}{med / base:>15.2f}x")


if __name__ == "__main__":
    main()
