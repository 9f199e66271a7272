"""A synthetic workload for bench/quality.py: a narrow good region, and short runs that rank only roughly.

true_quality(params) in [0, 1]: a Gaussian bump in log10(lr) and log10(weight_decay) (about 4% of the
log-space volume scores above 0.1), barely moved by momentum. A trial of E epochs reports, per epoch e,
quality * (1 - exp(-e / 3)) at a centre shifted toward high lr by 0.6 / e decades (short runs favour
large learning rates), plus seed noise 0.15 / sqrt(e). Torch-free; no hpsearch import.
"""

import math
import random

LR_STAR, WD_STAR = -2.3, -3.6  # log10 of the best lr and weight decay (at full length)


def quality(lr: float, wd: float, momentum: float, shift: float = 0.0) -> float:
    a = (math.log10(lr) - LR_STAR - shift) / 0.25
    b = (math.log10(wd) - WD_STAR) / 0.5
    return math.exp(-0.5 * (a * a + b * b)) * (1.0 - 0.1 * abs(momentum - 0.9))


def true_quality(params: dict) -> float:
    return quality(params["lr"], params["weight_decay"], params["momentum"])


def train(trial):
    p = trial.params
    rng = random.Random(trial.seed)
    value = 0.0
    for e in range(1, trial.epochs + 1):
        mean = quality(p["lr"], p["weight_decay"], p["momentum"], shift=0.6 / e) * (1.0 - math.exp(-e / 3.0))
        value = mean + rng.gauss(0.0, 0.15 / math.sqrt(e))
        trial.report(e - 1, train_loss=2.0 - value, val_accuracy=value)
    return {"val_accuracy": value}
