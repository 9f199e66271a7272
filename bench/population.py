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
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import torch

from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads import digits
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for every variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ks", default="1,8,32,128")
    parser.add_argument("--seq-trials", type=int, default=32, help="trials per round on the sequential path")
    parser.add_argument(
        "--seq-threads", type=int, default=None, help="threads for the sequential path only (default: --threads)"
    )
    args = parser.parse_args()
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
