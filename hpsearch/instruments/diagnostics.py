"""Diagnostics read off a trial's per-epoch curves: the recipe's babysitting rules as short tags.

- update:weight ratio (the `update_ratio` curve, recorded when the workload
  calls trial.watch): around 1e-3 is healthy; below 1e-4 hints "lr too low?",
  above 1e-2 "lr too high?".
- loss-curve shapes (the training and validation losses that
  divergence.loss_keys names), at least 3 epochs:
  `undertrained` (train loss still falling steeply in the last epoch),
  `overfitting` (val loss rising from its minimum while train loss keeps
  falling), `flat: lr too low or dead` (train loss barely moved),
  `unstable: lr too high?` (train loss ends 50% above its minimum).
"""

from __future__ import annotations

import math
from typing import Sequence

from hpsearch.divergence import loss_keys

RATIO_LOW = 1e-4  # a decade below the recipe's ~1e-3: updates too small to learn in time
RATIO_HIGH = 1e-2  # a decade above: each step rewrites 1% of the weights, unstable
MIN_EPOCHS = 3  # fewer points tell no shape
STEEP = 0.10  # last epoch's drop above 10% of the whole drop: still falling steeply
FLAT = 0.02  # train loss moved less than 2% from first to last epoch
OVERFIT_RISE = 0.05  # val loss 5% above its minimum
UNSTABLE = 1.5  # train loss ending this far above its minimum went up, not down


def last_ratio(curves: dict[str, list[float]]) -> float | None:
    """The last recorded update:weight ratio, or None when the trial recorded none."""
    values = [v for v in curves.get("update_ratio", []) if math.isfinite(v)]
    return values[-1] if values else None


def ratio_hint(ratio: float | None) -> str:
    """'lr too low?' below 1e-4, 'lr too high?' above 1e-2, else ''."""
    if ratio is None:
        return ""
    if ratio < RATIO_LOW:
        return "lr too low?"
    if ratio > RATIO_HIGH:
        return "lr too high?"
    return ""


def curve_notes(curves: dict[str, list[float]]) -> list[str]:
    """Shape tags of one trial's loss curves (see the module docstring); [] when it looks fine."""
    train_key, val_key = loss_keys(curves)
    train = _finite(curves.get(train_key, []) if train_key else [])
    val = _finite(curves.get(val_key, []) if val_key else [])
    notes: list[str] = []
    if len(train) >= MIN_EPOCHS:
        first, last = train[0], train[-1]
        total = max(train) - min(train)
        if abs(first - last) <= FLAT * abs(first):
            notes.append("flat: lr too low or dead")
        elif last > UNSTABLE * min(train):
            notes.append("unstable: lr too high?")
        elif total > 0 and train[-2] - last > STEEP * total and last < first:
            notes.append("undertrained")
    if len(val) >= MIN_EPOCHS and len(train) >= MIN_EPOCHS:
        i_min = min(range(len(val)), key=lambda i: val[i])
        rising = i_min < len(val) - 1 and val[-1] > (1 + OVERFIT_RISE) * val[i_min]
        if rising and train[-1] < train[min(i_min, len(train) - 1)]:
            notes.append("overfitting")
    return notes


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
