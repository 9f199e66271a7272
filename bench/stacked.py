"""Benchmark: trials per minute of a model workload, stacked populations vs one trial at a time.

Not a test. The same training (SGD, batch 64, 2 epochs, params drawn like a
coarse stage) on scikit-learn's digits, in this process, interleaved over
--rounds rounds so background load hits every variant alike:
- "solo": ModelWorkload called once per trial (the one-by-one worker path);
- "stacked K": ModelWorkload.population on K trials (workloads/stacked.py: torch.func);
- "digits trainer K" (MLP only): the built-in hand-written stacked trainer
  (workloads/digits_population.py), the reference the generic path is held to.
Models: the digits MLP (64-128-10) and a small CNN (two 3x3 convs, 8 and 16 channels).
Prints the median trials/minute and each variant's ratio to solo.

    .venv/bin/python bench/stacked.py --rounds 3 --ks 8,32 --threads 1
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads.loader import load_workload
from hpsearch.workloads.model import ModelWorkload
from hpsearch.workloads.spec import ModelSpec

EPOCHS = 2
HERE = Path(__file__).resolve()


def mlp(params: dict[str, Any]) -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def cnn(params: dict[str, Any]) -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 64, 10),
    )


def data() -> Any:
    from hpsearch.workloads.digits_data import load_digits_split

    split = load_digits_split("cpu")
    return split["train"], split["val"]


def draw(rng: random.Random) -> dict[str, Any]:
    return {
        "lr": 10 ** rng.uniform(-4, 0),
        "momentum": rng.choice([0.5, 0.9, 0.95, 0.99]),
        "weight_decay": rng.choice([0.0, 1e-5, 1e-4, 1e-3]),
    }


def contexts(n: int, rng: random.Random) -> list[TrialContext]:
    return [TrialContext.open(TrialRecord(i, draw(rng), EPOCHS, i, metric="val_accuracy"), "cpu") for i in range(n)]


def rate(run: Callable[[list[TrialContext]], Any], n: int, rng: random.Random) -> float:
    trials = contexts(n, rng)
    start = time.perf_counter()
    run(trials)
    return 60 * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ks", default="8,32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--solo-trials", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    rng = random.Random(0)
    for model in ("mlp", "cnn"):
        workload = ModelWorkload(ModelSpec(f"{HERE}:{model}", f"{HERE}:data", batch_size=64), load_workload)
        variants: dict[str, tuple[Callable[[list[TrialContext]], Any], int]] = {
            "solo": (lambda ts, w=workload: [w(t) for t in ts], args.solo_trials),
        }
        for k in ks:
            variants[f"stacked K={k}"] = (workload.population, k)
        if model == "mlp":
            from hpsearch.workloads.digits_population import mlp_population

            for k in ks:
                variants[f"digits trainer K={k}"] = (mlp_population, k)
        workload(contexts(1, rng)[0])  # warm-up: data, kernels
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, (run, n) in variants.items():
                rates[name].append(rate(run, n, rng))
        solo = statistics.median(rates["solo"])
        print(f"\n{model}: trials/minute, {EPOCHS} epochs, batch 64, {args.threads} thread(s), median of {args.rounds}")
        print(f"{'variant':<22}{'median':>10}{'min':>10}{'max':>10}{'vs solo':>9}")
        for name, values in rates.items():
            med = statistics.median(values)
            print(f"{name:<22}{med:10.0f}{min(values):10.0f}{max(values):10.0f}{med / solo:8.2f}x")


if __name__ == "__main__":
    main()
