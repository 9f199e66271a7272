"""Pruners: early stopping of hopeless trials, each an Optuna pruner.

The coordinator decides, from the per-epoch reports of the study's metric:
after each report it asks the trial's pruner, and a trial it gives up on
ends as PRUNED with the reason `pruned by <name> pruner`.

- none (the default): every trial runs all its epochs; only divergence stops one.
- median: stop a trial whose metric at an epoch is worse than the median of
  earlier trials at that epoch (Optuna's MedianPruner), once 5 trials finished.
- hyperband: Optuna's HyperbandPruner, with resources counted in epochs.

No pruner stops a trial at its last epoch (`is_last_report`): pruning saves
nothing then, and a trial that ran every epoch completes and is ranked
(Hyperband's last rung would otherwise prune it at the maximum).
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # optuna loads when a pruner is made: the CLI imports this module at start-up
    import optuna


class Pruner(str, Enum):
    """The pruners by name, as `--pruner` takes them."""

    none = "none"
    median = "median"
    hyperband = "hyperband"


PRUNERS = tuple(p.value for p in Pruner)
MEDIAN_STARTUP_TRIALS = 5  # no pruning until this many trials give a median to compare with
HYPERBAND_REDUCTION = 3  # Optuna's default: keep a third of the trials at each rung


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """The Optuna pruner called `name` for trials of `epochs` epochs. Unknown names raise ValueError."""
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        # No warm-up: the recipe finds even less than one epoch informative, and coarse trials are short.
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max(epochs, 1), reduction_factor=HYPERBAND_REDUCTION
        )
    raise ValueError(f"unknown pruner {name!r}; choose one of {', '.join(PRUNERS)}")


def prune_reason(name: str) -> str:
    """The reason recorded for a trial that pruner `name` stopped."""
    return f"pruned by {name} pruner"


def is_last_report(epoch: int, reports: int, epochs: int) -> bool:
    """Whether a trial's report is for its last epoch, so it must not be pruned: its `epochs`-th
    report (`reports` counts this one), or one numbered `epochs - 1` or more - workloads count from
    0 (range(trial.epochs)) or from 1, and some report only every few epochs."""
    return reports >= epochs or epoch >= epochs - 1
