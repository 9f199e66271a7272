"""When a trial has diverged, and which of its metrics is the training loss: each decided here, once.

The recipe: stop a trial early when its loss explodes (NaN, or several times
the initial loss); it is a wasted trial, not a result. The rule, used for
every workload, every executor and every population member:

- any reported metric whose name ends in `loss` is NaN or infinite; or
- the training loss (see `loss_keys`) has grown far above where it started:
  by more than (DIVERGE_FACTOR - 1) times the size of its first report, i.e.
  above 3x a positive first loss (2.3 -> 6.9), and for a loss that can be
  negative (a Gaussian NLL, a negative log-likelihood) above first + 2 |first|
  (-2.0 -> 2.0); a loss that falls, however far below zero, never diverges; or
- the trial's final value of the study's metric is not finite.

A diverged trial ends PRUNED with the reason `diverged`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

DIVERGED = "diverged"
DIVERGE_FACTOR = 3.0  # a training loss above 3x its first report has exploded (recipe: "several times")
MIN_SCALE = 1e-3  # a first loss of (almost) exactly 0 still gets a margin: the size of the rise it may take


def loss_keys(names: Iterable[str]) -> tuple[str | None, str | None]:
    """(training loss key, validation loss key) among metric names, each None when absent.

    Training: `train_loss`, else `loss`, else the first (sorted) name ending in
    `loss` that is not a val_/test_ one. Validation: `val_loss`.
    """
    names = sorted(set(names))
    if "train_loss" in names:
        train: str | None = "train_loss"
    elif "loss" in names:
        train = "loss"
    else:
        train = next((n for n in names if n.endswith("loss") and not n.startswith(("val", "test"))), None)
    return train, "val_loss" if "val_loss" in names else None


def is_finite(value: Any) -> bool:
    """A real, finite number (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class DivergenceCheck:
    """The rule above for one running trial: call it with each epoch's metrics."""

    def __init__(self, first_loss: float | None = None) -> None:
        self.first_loss = first_loss  # given: a resumed run continues its trial's first run

    def __call__(self, metrics: Mapping[str, float]) -> str | None:
        """'diverged' when this epoch's metrics show divergence, else None."""
        losses = {k: v for k, v in metrics.items() if k.endswith("loss")}
        if any(not math.isfinite(v) for v in losses.values()):
            return DIVERGED
        key = loss_keys(losses)[0]
        if key is None:
            return None
        if self.first_loss is None:
            self.first_loss = losses[key]
        elif losses[key] > divergence_threshold(self.first_loss):
            return DIVERGED
        return None


def first_training_loss(curves: Mapping[str, Sequence[float]]) -> float | None:
    """The first training loss in a trial's curves (the rule's baseline for a run that resumes it)."""
    key = loss_keys(n for n in curves if n.endswith("loss"))[0]
    values = curves.get(key) if key else None
    return float(values[0]) if values else None


def divergence_threshold(first: float) -> float:
    """The training loss above which a trial that started at `first` has diverged (either sign)."""
    return first + (DIVERGE_FACTOR - 1.0) * max(abs(first), MIN_SCALE)


def final_value_diverged(value: float | None) -> bool:
    """A trial that ended with a NaN/inf value of the study's metric diverged (no value at all did not)."""
    return value is not None and not math.isfinite(value)
