"""Diagnostics read off a trial's per-epoch curves: the recipe's babysitting rules as short tags.

A tag that fires on most trials (the best included) is noise, so each one
needs evidence from the curves, not one noisy epoch:

- update:weight ratio (the `update_ratio` curve, recorded when the workload
  calls trial.watch): around 1e-3 is healthy. Below 1e-4 hints "lr too low?".
  "lr too high?" needs the ratio above 1e-2 AND a training loss that shows it
  (`lr_too_high`); a high ratio alone is common in short trials and with
  momentum, and says nothing about a loss that descends well.
- loss-curve shapes (the training and validation losses that
  divergence.loss_keys names), at least 3 epochs:
  `undertrained` (train loss still falling steeply in the last epoch),
  `overfitting` (a sustained rise of the val loss: `overfits`),
  `flat: lr too low or dead` (train loss barely moved),
  `unstable: lr too high?` (`lr_too_high`: the train loss diverged, rose above
  its start, ended far above its minimum or oscillated strongly).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence

from hpsearch.divergence import loss_keys

RATIO_LOW = 1e-4  # a decade below the recipe's ~1e-3: updates too small to learn in time
RATIO_HIGH = 1e-2  # a decade above: each step rewrites 1% of the weights (a hint only with a bad curve)
MIN_EPOCHS = 3  # fewer points tell no shape
STEEP = 0.10  # last epoch's drop above 10% of the whole drop: still falling steeply
FLAT = 0.02  # train loss moved less than 2% from first to last epoch
# lr too high (lr_too_high), each measured against the curve's own scale:
ABOVE_START = 0.10  # a later epoch 10% (of |first|) above the first: the loss went up, not down
UNSTABLE = 1.5  # train loss ending this far above its minimum went up, not down
OSCILLATION = 0.5  # its upward steps add up to half its whole descent: it bounces more than it learns
# overfitting (overfits): a trend over the last epochs, not one uptick
OVERFIT_EPOCHS = 5  # fewer epochs show no trend after a descent
OVERFIT_AFTER_MIN = 2  # the val minimum at least this many epochs before the end
OVERFIT_RISE = 0.05  # the fitted rise over the last epochs: 5% of the val minimum


def last_ratio(curves: dict[str, list[float]]) -> float | None:
    """The last recorded update:weight ratio, or None when the trial recorded none."""
    values = [v for v in curves.get("update_ratio", []) if math.isfinite(v)]
    return values[-1] if values else None


def ratio_hint(ratio: float | None, curves: dict[str, list[float]] | None = None) -> str:
    """'lr too low?' below 1e-4; 'lr too high?' above 1e-2 when the trial's training loss shows it too
    (`lr_too_high` of `curves`: without curves a high ratio is no evidence); else ''."""
    if ratio is None:
        return ""
    if ratio < RATIO_LOW:
        return "lr too low?"
    if ratio > RATIO_HIGH and curves is not None and lr_too_high(_train(curves)):
        return "lr too high?"
    return ""


def lr_too_high(train: Sequence[float]) -> bool:
    """Whether a training loss shows a too-high lr: it diverged (a NaN or infinite epoch), rose more
    than 10% above its first epoch, ended 50% above its minimum, or its upward steps add up to half
    its descent (it oscillates). A normal noisy descent shows none of these."""
    if any(not math.isfinite(v) for v in train):
        return True
    if len(train) < 2:
        return False
    first, low, last = train[0], min(train), train[-1]
    if max(train[1:]) > first + ABOVE_START * max(abs(first), 1e-12):
        return True
    if len(train) >= MIN_EPOCHS and low > 0 and last > UNSTABLE * low:
        return True
    ups = sum(max(b - a, 0.0) for a, b in itertools.pairwise(train))
    return len(train) >= MIN_EPOCHS and ups > OSCILLATION * (first - low)


def overfits(train: Sequence[float], val: Sequence[float]) -> bool:
    """A sustained rise of the val loss while the train loss keeps falling (finite curves, one value per epoch):

    1. the val loss has its minimum at least 2 epochs before the end;
    2. its robust trend (Theil-Sen slope) over the last epochs (the last third, at least 3) rises by
       more than 5% of that minimum;
    3. over the same epochs the train loss falls and the gap val - train grows.
    One noisy epoch, or a noisy curve still descending, moves neither the minimum nor the trend.
    """
    n = min(len(train), len(val))
    if n < OVERFIT_EPOCHS:
        return False
    train, val = list(train[-n:]), list(val[-n:])
    i_min = min(range(n), key=lambda i: val[i])
    if i_min > n - 1 - OVERFIT_AFTER_MIN:
        return False
    w = max(MIN_EPOCHS, math.ceil(n / 3))
    rise = _slope(val[-w:]) * (w - 1)
    gap = [v - t for v, t in zip(val[-w:], train[-w:])]
    return rise > OVERFIT_RISE * abs(val[i_min]) and _slope(train[-w:]) < 0 and _slope(gap) > 0


def curve_notes(curves: dict[str, list[float]]) -> list[str]:
    """Shape tags of one trial's loss curves (see the module docstring); [] when it looks fine."""
    raw = _train(curves)
    train = _finite(raw)
    _, val_key = loss_keys(curves)
    val = _finite(curves.get(val_key, []) if val_key else [])
    notes: list[str] = []
    if len(train) < len(raw) and len(raw) >= MIN_EPOCHS:
        notes.append("unstable: lr too high?")  # diverged: a NaN or infinite epoch
    elif len(train) >= MIN_EPOCHS:
        first, last = train[0], train[-1]
        total = max(train) - min(train)
        if abs(first - last) <= FLAT * abs(first):
            notes.append("flat: lr too low or dead")
        elif lr_too_high(raw):
            notes.append("unstable: lr too high?")
        elif total > 0 and train[-2] - last > STEEP * total and last < first:
            notes.append("undertrained")
    if overfits(train, val):
        notes.append("overfitting")
    return notes


def _train(curves: dict[str, list[float]]) -> list[float]:
    """The training loss as recorded (non-finite values kept: they are evidence)."""
    key = loss_keys(curves)[0]
    return [float(v) for v in curves.get(key, []) if _number(v)] if key else []


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(values: Sequence[float]) -> list[float]:
    return [float(v) for v in values if _number(v) and math.isfinite(v)]


def _slope(ys: Sequence[float]) -> float:
    """The Theil-Sen slope per epoch: the median of the pairwise slopes (one outlier cannot move it)."""
    pairs = [(ys[j] - ys[i]) / (j - i) for i in range(len(ys)) for j in range(i + 1, len(ys))]
    return statistics.median(pairs) if pairs else 0.0
