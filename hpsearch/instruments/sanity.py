"""Sanity checks before searching (the recipe's "Before searching"): initial loss, overfit a tiny subset.

`run_sanity` calls the study's own `train(trial)` with `trial.mode == "sanity"`,
`trial.subset == 20` (train on the first 20 examples), weight decay 0 and a
learning rate from the study's range, and reads the training losses through
the watcher (`trial.watch(model, optimizer, loss_fn)`):

1. initial loss: the very first training loss, before any update, against
   log(C) for a C-class softmax classifier (C read from the logits' shape);
   PASS within 20% of it, else WARN.
2. overfit: with regularisation off, the loss on the 20 examples must fall
   near zero (< 0.05) and their accuracy reach 100% within 300 optimizer
   steps; the recipe's first learning rates (1e-1, 1e-2, 1e-3) inside the
   study's range are tried, largest first, until one succeeds; else FAIL.

A workload that does not call trial.watch gets SKIP for both, with what to add.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import TrialStopped
from hpsearch.instruments.probe import WATCH_HINT, base_params, lr_bounds, lr_param, run_probe
from hpsearch.space import fmt
from hpsearch.spec import StudySpec
from hpsearch.workloads.watch import LossRecord

SUBSET = 20  # the recipe's "about 20 examples"
MAX_STEPS = 300  # bounded: a model that cannot memorise 20 examples in 300 steps has a bug
NEAR_ZERO = 0.05  # nats; against ~2.3 at the start for 10 classes
INIT_TOLERANCE = 0.20  # relative distance from log(C) still counted as "at chance"
RECIPE_LRS = (1e-1, 1e-2, 1e-3)  # the recipe's good first learning rates, largest first

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    """One check's verdict, with what was expected and measured, and what to look at when not PASS."""

    name: str
    status: str  # PASS | WARN | FAIL | SKIP
    expected: str
    measured: str
    advice: str = ""


@dataclass(frozen=True)
class SanityReport:
    study: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """True only when every check is PASS (`hpsearch sanity` exits 0 then, else 1)."""
        return all(c.status == PASS for c in self.checks)


@dataclass(frozen=True)
class _Attempt:
    lr: float
    initial: LossRecord | None
    final_loss: float
    final_accuracy: float | None
    steps: int
    ignored_subset: bool
    watched: bool


class _Stop(TrialStopped):
    pass


def candidate_lrs(low: float, high: float) -> list[float]:
    """The recipe's first learning rates inside [low, high], largest first; the range's
    geometric middle when none is."""
    inside = [lr for lr in RECIPE_LRS if low <= lr <= high]
    return inside or [math.sqrt(low * high)]


def run_sanity(spec: StudySpec, device: str = "cpu", seed: int = 0) -> SanityReport:
    """Run both checks on the study's workload (a few seconds for small models)."""
    low, high = lr_bounds(lr_param(spec))
    attempts: list[_Attempt] = []
    for lr in candidate_lrs(low, high):
        attempt = _overfit(spec, lr, device, seed)
        attempts.append(attempt)
        if not attempt.watched or attempt.ignored_subset or _overfitted(attempt):
            break
    return SanityReport(spec.name, (_initial_check(attempts[0]), _overfit_check(attempts)))


def _overfit(spec: StudySpec, lr: float, device: str, seed: int) -> _Attempt:
    """One bounded run on the tiny subset at `lr`; stops early once the subset is memorised."""
    name = lr_param(spec).name
    params = {**base_params(spec.space, decay="zero"), name: lr}
    state: dict[str, Any] = {"watcher": None, "epoch_start": 0, "last_epoch": [], "seen": 0, "ignored": False}

    def on_loss(record: LossRecord) -> None:
        state["seen"] += record.size
        if state["seen"] > SUBSET:
            state["ignored"] = True
            raise _Stop("the workload trains on more than trial.subset examples")

    def on_step(step: int, optimizer: Any) -> None:
        if step >= MAX_STEPS:
            raise _Stop("step budget used")

    def on_watch(watcher: Any) -> None:
        state["watcher"] = watcher
        watcher.on_loss = on_loss
        watcher.on_step = on_step

    def on_report(epoch: int, metrics: dict[str, float], timing: Any = None) -> str | None:
        watcher = state["watcher"]
        if watcher is None:
            return "the workload does not call trial.watch"
        state["seen"] = 0
        last = watcher.losses[state["epoch_start"] :]
        state["epoch_start"], state["last_epoch"] = len(watcher.losses), last
        loss, acc = _summary(last)
        if loss < NEAR_ZERO and acc == 1.0:
            return "subset memorised"
        return None

    result = run_probe(spec, params, MAX_STEPS, "sanity", SUBSET, on_watch, on_report, seed, device)
    watcher = result.watcher
    if watcher is None or not watcher.watches_loss or not watcher.losses:
        return _Attempt(lr, None, math.nan, None, 0, False, False)
    # The last completed epoch is the verdict's data (a stop may have cut the next one short).
    loss, acc = _summary(state["last_epoch"] or watcher.losses[state["epoch_start"] :])
    first = watcher.losses[0] if watcher.losses[0].step == 0 else None
    return _Attempt(lr, first, loss, acc, watcher.steps, state["ignored"], True)


def _summary(records: list[LossRecord]) -> tuple[float, float | None]:
    """(mean loss, accuracy) over the records, weighted by batch size."""
    if not records:
        return math.nan, None
    n = sum(r.size for r in records)
    loss = sum(r.loss * r.size for r in records) / n
    if any(r.correct is None for r in records):
        return loss, None
    return loss, sum(r.correct or 0 for r in records) / n


def _overfitted(a: _Attempt) -> bool:
    return a.final_loss < NEAR_ZERO and a.final_accuracy == 1.0


def _initial_check(a: _Attempt) -> Check:
    name = "initial loss at chance"
    if not a.watched:
        return Check(name, SKIP, "log(C)", "-", f"the workload gave no loss to watch: {WATCH_HINT}")
    if a.initial is None:
        return Check(name, SKIP, "log(C)", "-", "no training loss was computed before the first optimizer step")
    expected = math.log(a.initial.classes)
    measured = a.initial.loss
    ok = math.isfinite(measured) and abs(measured - expected) <= INIT_TOLERANCE * expected
    advice = "" if ok else (
        f"the loss at initialisation should be near log({a.initial.classes}) = {expected:.3f}: check the labels "
        "(0..C-1, matching the inputs), the init scale (large weights make confident wrong guesses), the input "
        "scaling, and that the loss gets raw logits"
    )
    return Check(name, PASS if ok else WARN, f"{expected:.3f} = log({a.initial.classes}) ±{INIT_TOLERANCE:.0%}", f"{measured:.3f}", advice)


def _overfit_check(attempts: list[_Attempt]) -> Check:
    name = f"overfit {SUBSET} examples"
    expected = f"loss < {NEAR_ZERO}, accuracy 100% in <= {MAX_STEPS} steps"
    last = attempts[-1]
    if not last.watched:
        return Check(name, SKIP, expected, "-", f"the workload gave no loss to watch: {WATCH_HINT}")
    if last.ignored_subset:
        return Check(
            name, FAIL, expected, "trained on more examples",
            "the workload ignores trial.subset: when it is set, train on only the first trial.subset examples",
        )
    acc = "?" if last.final_accuracy is None else f"{last.final_accuracy:.0%}"
    tried = ", ".join(fmt(a.lr) for a in attempts)
    measured = f"loss {last.final_loss:.3g}, accuracy {acc} after {last.steps} steps (lr {fmt(last.lr)}; tried {tried})"
    if _overfitted(last):
        return Check(name, PASS, expected, measured)
    if last.final_accuracy is None:
        advice = "accuracy unknown: the loss module must get (logits [B, C], class indices [B]). "
    else:
        advice = ""
    advice += (
        "a model that cannot memorise 20 examples has a bug: check that the loss gets raw logits (no softmax "
        "before CrossEntropyLoss), that inputs and labels stay paired, that the optimizer holds the model's "
        "parameters, and that the model is not too small; do not search yet"
    )
    return Check(name, FAIL, expected, measured, advice)
