"""Function workloads: the user's `train(trial)`, run in this process, its ending classified.

Whatever happens (a result, an exception, an early stop) becomes a
TrialOutcome: failed trials are data, never a crash of the search.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from hpsearch.errors import TrialFailed, TrialStopped
from hpsearch.workloads.api import TrialContext, TrialOutcome, TrialStatus, exception_reason, result_outcome


def run_trial(fn: Callable[[TrialContext], Any], ctx: TrialContext, metric: str) -> TrialOutcome:
    """Run `fn(ctx)` and classify the ending. KeyboardInterrupt propagates (the caller records it)."""
    start = time.perf_counter()

    def outcome(state: TrialStatus, metrics: dict[str, float] | None = None, reason: str = "") -> TrialOutcome:
        return TrialOutcome(state, metrics or {}, reason, ctx.curves, time.perf_counter() - start)

    try:
        result = fn(ctx)
    except TrialStopped as stop:
        return outcome(TrialStatus.PRUNED, reason=stop.reason)
    except TrialFailed as failed:
        return outcome(TrialStatus.FAIL, reason=failed.reason)
    except Exception as e:  # a crashing trial is a result, not the end of the search
        return outcome(TrialStatus.FAIL, reason=exception_reason(e))
    finally:
        ctx.close()
    return result_outcome(result, metric, ctx.curves, time.perf_counter() - start)
