"""Configurations: the trials of one stage grouped by their params, with mean, spread and n.

A configuration run more than once (re-run with other seeds to measure the
noise: see recipe.py) has several trials; its value is their mean. THE
noise-aware ranking, `ranked_configs`, orders the configurations of one
stage by their shrunk mean (below); everything that says "best configuration"
(the search's stop rule, refine's box and borders, `final`) uses it, while
trials.ranked_trials stays the ranking of single trials.

The noise is measured, not assumed: `noise_sd` is the pooled within-
configuration standard deviation of the configurations that have repeats.
The shrunk mean is the empirical-Bayes estimate of a configuration's true
value, grand + (mean - grand) * tau^2 / (tau^2 + sd^2 / n), with tau^2 the
spread of the configuration means beyond the noise: a single lucky run is
pulled toward the stage's mean more than the mean of three runs. Without
repeats there is no measured noise and configurations rank by their value.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from hpsearch.direction import Direction
from hpsearch.trials import point_key


@dataclass
class Configuration:
    """One configuration of a stage: its params and the completed trials that ran it."""

    params: dict[str, Any]
    trials: list[FrozenTrial] = field(default_factory=list)
    score: float = math.nan  # the shrunk mean it is ranked by
    noise: float | None = None  # the stage's measured noise (pooled sd, `noise_sd`), set by ranked_configs

    @property
    def values(self) -> list[float]:
        return [float(t.value) for t in self.trials]  # type: ignore[arg-type]  # complete trials: each has a value

    @property
    def n(self) -> int:
        return len(self.trials)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def spread(self) -> float | None:
        """The standard deviation of its runs (None with one run)."""
        return statistics.stdev(self.values) if self.n > 1 else None

    @property
    def stderr(self) -> float | None:
        """The standard error of its mean from the stage's measured noise: noise / sqrt(n) (None when the
        stage has no repeats). Not its own runs' sd: two runs that happen to agree say little of the noise."""
        return None if self.noise is None else self.noise / math.sqrt(self.n)

    def describe(self, metric: str) -> str:
        """Its value as every command shows THE best configuration: mean ± standard error, runs, noise."""
        if self.noise is None:
            return f"{metric} {self.mean:.4f} ({self.n} run{'s' if self.n != 1 else ''}; noise not measured)"
        return (
            f"{metric} {self.mean:.4f} ± {self.stderr:.4f} "
            f"({self.n} run{'s' if self.n != 1 else ''}; noise sd {self.noise:.4f})"
        )


def group_configs(trials: Sequence[FrozenTrial]) -> list[Configuration]:
    """Completed trials with a finite value grouped by params, in order of each config's first trial."""
    configs: dict[tuple[tuple[str, str], ...], Configuration] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
            configs.setdefault(point_key(t.params), Configuration(dict(t.params))).trials.append(t)
    return list(configs.values())


def noise_sd(configs: Sequence[Configuration]) -> float | None:
    """The pooled within-configuration standard deviation (None when no configuration has repeats)."""
    dof = sum(c.n - 1 for c in configs)
    if dof == 0:
        return None
    return math.sqrt(sum((c.n - 1) * c.spread**2 for c in configs if c.spread is not None) / dof)


def ranked_configs(trials: Sequence[FrozenTrial], direction: Direction | str) -> list[Configuration]:
    """The configurations of one stage, best first by their shrunk mean (module docstring); ties keep
    the order of their first trial."""
    configs = group_configs(trials)
    if not configs:
        return []
    sd = noise_sd(configs)
    means = [c.mean for c in configs]
    grand = statistics.fmean(means)
    for c in configs:
        c.noise = sd
    if sd is None or len(configs) < 2:
        for c in configs:
            c.score = c.mean
    else:
        # The true values' spread: the means' variance less the noise it holds (sd^2 / n on average).
        tau2 = max(statistics.pvariance(means) - sd**2 * statistics.fmean(1 / c.n for c in configs), 1e-12)
        for c in configs:
            c.score = grand + (c.mean - grand) * tau2 / (tau2 + sd**2 / c.n)
    return Direction(direction).ranked(configs, key=lambda c: c.score)


def difference_noise(sd: float | None, n_a: int, n_b: int) -> float:
    """The standard error of the difference of two means of n_a and n_b runs (0 when sd is unknown)."""
    return 0.0 if sd is None else sd * math.sqrt(1 / max(n_a, 1) + 1 / max(n_b, 1))
