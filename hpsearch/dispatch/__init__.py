"""Dispatch: who runs the trials a stage's coordinator hands out.

- plan.py: which worker processes to start (devices -> slots);
- pool.py: `PoolExecutor`, long-lived worker processes (what the CLI uses);
- inline.py: `InlineExecutor`, trials one after another in this process;
- worker.py: the worker process itself.

See docs/dispatch.md for the design and the measured costs.
"""

from __future__ import annotations

from hpsearch.dispatch.inline import InlineExecutor, pick_device
from hpsearch.dispatch.plan import (
    AUTO,
    DispatchConfig,
    WorkerSlot,
    capped_note,
    cpu_cores,
    no_population_notice,
    parse_population,
    plan_workers,
    visible_gpus,
)
from hpsearch.dispatch.pool import PoolExecutor
from hpsearch.dispatch.stalls import TIMEOUT_REASON
from hpsearch.errors import DispatchError
from hpsearch.limits import LimitOverrides

__all__ = [
    "AUTO",
    "TIMEOUT_REASON",
    "DispatchConfig",
    "InlineExecutor",
    "LimitOverrides",
    "PoolExecutor",
    "WorkerSlot",
    "cpu_cores",
    "make_executor",
    "no_population_notice",
    "parse_population",
    "pick_device",
    "plan_workers",
    "visible_gpus",
]


def make_executor(
    config: DispatchConfig, overrides: LimitOverrides = LimitOverrides()
) -> InlineExecutor | PoolExecutor:
    """The executor for `config`: a worker pool, or InlineExecutor for workers = 0 (which cannot watch for
    stalls: its trial runs in this very process). `overrides`: the stall rule's and log bound's settings
    given for this run, in place of each study file's (limits.py)."""
    if config.trial_timeout is not None and config.trial_timeout <= 0:
        raise DispatchError("$trial_timeout must be a positive number of seconds")
    population = parse_population(config.population)
    if config.workers == 0 and config.per_device is None:
        if config.trial_timeout is not None:
            raise DispatchError("$trial_timeout needs worker processes; $workers 0 runs trials in this process")
        return InlineExecutor("cpu" if config.devices == "cpu" else "auto", population, overrides)
    slots = plan_workers(config)
    pool = PoolExecutor(slots, config.trial_timeout, population, overrides)
    note = capped_note(config, slots)
    if note:
        pool.notices.append(note)
    return pool
