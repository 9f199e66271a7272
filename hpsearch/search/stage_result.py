"""What running a stage returns: its trials, border flags, failures, and why it ended."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from optuna.trial import FrozenTrial

from hpsearch.border import BorderFlag
from hpsearch.store.storage import StageInfo


@dataclass
class StageResult:
    stage: StageInfo
    trials: list[FrozenTrial]
    ran: int  # trials this invocation ran
    flags: list[BorderFlag]
    failures: list[str]  # "trial N: reason" of the trials that failed in this invocation
    finished: int = 0  # trials that count toward the target (complete, pruned; on a grid, tried points)
    target: int = 0
    reasons: list[str] = field(default_factory=list)  # the reasons alone, one per failure
    ended_by: str | None = None  # "budget" or "timeout" when one of them ended the stage before its target

    @property
    def shortfall(self) -> str | None:
        """Why the stage ended before its target (not its budget or timeout), or None when it reached it."""
        if self.finished >= self.target or self.ended_by:
            return None
        counted = Counter(self.reasons)
        why = ", ".join(f"{reason} ×{n}" for reason, n in counted.most_common(3))
        more = f", {len(counted) - 3} other reasons" if len(counted) > 3 else ""
        failed = f", {len(self.reasons)} failed ({why}{more})" if self.reasons else ""
        return f"stage {self.stage.name} stopped short: {self.finished} of {self.target} trials completed{failed}"
