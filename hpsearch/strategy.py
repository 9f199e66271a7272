"""Strategies: how a stage picks trials, each an Optuna sampler.

- random (the default): independent draws, log-uniform on log ranges. The
  recipe prefers it to grid: when one of two parameters matters, 9 random
  points try 9 values of it where a 3x3 grid tries 3 (Bergstra & Bengio 2012).
- grid: the cartesian product of each param's grid points (log-spaced on log
  ranges), enqueued once as waiting trials, so no point runs twice.
- tpe: Optuna's Tree-structured Parzen Estimator, a model-based option.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # optuna loads when a sampler is made: the CLI imports this module at start-up
    import optuna


class Strategy(str, Enum):
    """How a stage picks its trials. Random is the recipe's default (Bergstra & Bengio 2012)."""

    random = "random"
    grid = "grid"
    tpe = "tpe"

    @property
    def learns(self) -> bool:
        """Whether a draw depends on the results so far (TPE): the pool draws no trial ahead for it."""
        return self is Strategy.tpe


def make_sampler(strategy: Strategy, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of a strategy. Grid points are enqueued by the stage, so grid samples randomly
    only if asked for more trials than it has points (it never is)."""
    import optuna

    if strategy == Strategy.tpe:
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)
