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

Regression workloads (the watched loss module is one of torch's regression
losses: nn.MSELoss, L1Loss, SmoothL1Loss, HuberLoss, GaussianNLLLoss,
PoissonNLLLoss, or a subclass; and no loss record carries class accuracy)
have no chance level and no accuracy, so:

1. initial loss: N/A, with why. N/A counts as passed (`SanityReport.passed`),
   unlike SKIP, which means the check could not run on a workload it applies to.
2. overfit: the loss on the 20 examples must fall to 1% of its initial value
   (the first training loss, before any update) within the same 300 steps: a
   relative test, as a regression loss has the scale of its targets (an
   absolute "< 0.05" would pass targets in [0, 0.1] untrained). A loss that
   goes negative (a Gaussian NLL with a learned variance) has no meaningful
   ratio: it must instead fall by at least log(10) = 2.3 nats, what shrinking
   the predicted spread tenfold (the variance to 1%) gives. Learning rates are
   tried as for classifiers; else FAIL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hpsearch.errors import TrialStopped
from hpsearch.instruments.probe import WATCH_HINT, base_params, lr_bounds, lr_param, require_training_loop, run_probe
from hpsearch.space import fmt
from hpsearch.spec import StudySpec
from hpsearch.workloads.watch import LossRecord

SUBSET = 20  # the recipe's "about 20 examples"
MAX_STEPS = 300  # bounded: a model that cannot memorise 20 examples in 300 steps has a bug
NEAR_ZERO = 0.05  # nats; against ~2.3 at the start for 10 classes
INIT_TOLERANCE = 0.20  # relative distance from log(C) still counted as "at chance"
RECIPE_LRS = (1e-1, 1e-2, 1e-3)  # the recipe's good first learning rates, largest first
REGRESSION_FALL = 0.01  # regression: the subset's loss must fall to 1% of its initial value
NLL_FALL = math.log(10)  # nats; a regression loss that goes negative must fall by this much instead
REGRESSION_LOSSES = frozenset({"MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "GaussianNLLLoss", "PoissonNLLLoss"})

# N/A: the check does not apply to this workload (log(C) for a regression loss); it counts as passed.
PASS, WARN, FAIL, SKIP, NA = "PASS", "WARN", "FAIL", "SKIP", "N/A"


@dataclass(frozen=True)
class Check:
    """One check's verdict, with what was expected and measured, and what to look at when not PASS."""

    name: str
    status: str  # PASS | WARN | FAIL | SKIP | N/A
    expected: str
    measured: str
    advice: str = ""


@dataclass(frozen=True)
class SanityReport:
    study: str
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """True only when every check is PASS or N/A (`hpsearch sanity` exits 0 then, else 1)."""
        return all(c.status in (PASS, NA) for c in self.checks)


@dataclass(frozen=True)
class _Attempt:
    lr: float
    initial: LossRecord | None
    final_loss: float
    final_accuracy: float | None
    steps: int
    ignored_subset: bool
    watched: bool
    regression: bool = False  # a regression loss module, no class accuracy (module docstring)
    went_negative: bool = False  # some training loss was below 0 (a Gaussian NLL)


class _Stop(TrialStopped):
    pass


def candidate_lrs(low: float, high: float) -> list[float]:
    """The recipe's first learning rates inside [low, high], largest first; the range's
    geometric middle when none is."""
    inside = [lr for lr in RECIPE_LRS if low <= lr <= high]
    return inside or [math.sqrt(low * high)]


def run_sanity(spec: StudySpec, device: str = "cpu", seed: int = 0) -> SanityReport:
    """Run both checks on the study's workload (a few seconds for small models)."""
    require_training_loop(spec)
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
        if is_regression(watcher):
            initial = _initial_loss(watcher.losses)
            if _regression_fell(initial, loss, any(r.loss < 0 for r in watcher.losses)):
                return "subset memorised"
        elif loss < NEAR_ZERO and acc == 1.0:
            return "subset memorised"
        return None

    result = run_probe(spec, params, MAX_STEPS, "sanity", SUBSET, on_watch, on_report, seed, device)
    watcher = result.watcher
    if watcher is None or not watcher.watches_loss or not watcher.losses:
        return _Attempt(lr, None, math.nan, None, 0, False, False)
    # The last completed epoch is the verdict's data (a stop may have cut the next one short).
    loss, acc = _summary(state["last_epoch"] or watcher.losses[state["epoch_start"] :])
    first = watcher.losses[0] if watcher.losses[0].step == 0 else None
    negative = any(r.loss < 0 for r in watcher.losses)
    return _Attempt(lr, first, loss, acc, watcher.steps, state["ignored"], True, is_regression(watcher), negative)


def is_regression(watcher: Any) -> bool:
    """True when the watched loss module is one of torch's regression losses (by class, subclasses too;
    no torch import here) and no training loss carried class accuracy."""
    names = {cls.__name__ for cls in type(watcher.loss_fn).__mro__}
    return bool(names & REGRESSION_LOSSES) and all(r.correct is None for r in watcher.losses)


def _initial_loss(records: list[LossRecord]) -> float:
    """The first training loss, before any update (else the first one recorded)."""
    return records[0].loss if records else math.nan


def _regression_fell(initial: float, final: float, went_negative: bool) -> bool:
    """The regression overfit test (module docstring): to 1% of the initial loss, or, for a loss that
    goes negative, a fall of log(10) nats."""
    if not (math.isfinite(initial) and math.isfinite(final)):
        return False
    if went_negative or initial <= 0:
        return initial - final >= NLL_FALL
    return final <= REGRESSION_FALL * initial


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
    if a.regression:
        return a.initial is not None and _regression_fell(a.initial.loss, a.final_loss, a.went_negative)
    return a.final_loss < NEAR_ZERO and a.final_accuracy == 1.0


def _initial_check(a: _Attempt) -> Check:
    name = "initial loss at chance"
    if not a.watched:
        return Check(name, SKIP, "log(C)", "-", f"the workload gave no loss to watch: {WATCH_HINT}")
    if a.initial is None:
        return Check(name, SKIP, "log(C)", "-", "no training loss was computed before the first optimizer step")
    if a.regression:
        return Check(
            name,
            NA,
            "log(C): classifiers only",
            f"{a.initial.loss:.3g}",
            "not applicable: a regression loss has no chance level (log(C) is the initial cross-entropy of a "
            "C-class softmax classifier); the overfit check tests this workload",
        )
    expected = math.log(a.initial.classes)
    measured = a.initial.loss
    ok = math.isfinite(measured) and abs(measured - expected) <= INIT_TOLERANCE * expected
    advice = (
        ""
        if ok
        else (
            f"the loss at initialisation should be near log({a.initial.classes}) = {expected:.3f}: check the labels "
            "(0..C-1, matching the inputs), the init scale (large weights make confident wrong guesses), the input "
            "scaling, and that the loss gets raw logits"
        )
    )
    return Check(
        name,
        PASS if ok else WARN,
        f"{expected:.3f} = log({a.initial.classes}) ±{INIT_TOLERANCE:.0%}",
        f"{measured:.3f}",
        advice,
    )


def _overfit_check(attempts: list[_Attempt]) -> Check:
    name = f"overfit {SUBSET} examples"
    last = attempts[-1]
    if last.regression:
        expected = (
            f"loss <= {REGRESSION_FALL:.0%} of its initial value in <= {MAX_STEPS} steps "
            f"(a loss that goes negative: a fall >= {NLL_FALL:.2f})"
        )
    else:
        expected = f"loss < {NEAR_ZERO}, accuracy 100% in <= {MAX_STEPS} steps"
    if not last.watched:
        return Check(name, SKIP, expected, "-", f"the workload gave no loss to watch: {WATCH_HINT}")
    if last.ignored_subset:
        return Check(
            name,
            FAIL,
            expected,
            "trained on more examples",
            "the workload ignores trial.subset: when it is set, train on only the first trial.subset examples",
        )
    acc = "?" if last.final_accuracy is None else f"{last.final_accuracy:.0%}"
    tried = ", ".join(fmt(a.lr) for a in attempts)
    if last.regression:
        start = last.initial.loss if last.initial is not None else math.nan
        measured = f"loss {last.final_loss:.3g} from {start:.3g}"
    else:
        measured = f"loss {last.final_loss:.3g}, accuracy {acc}"
    measured += f" after {last.steps} steps (lr {fmt(last.lr)}; tried {tried})"
    if _overfitted(last):
        return Check(name, PASS, expected, measured)
    if last.regression:
        advice = (
            "a model that cannot fit 20 examples has a bug: check that inputs and targets stay paired, that the "
            "prediction has the target's shape (a [B, 1] prediction against a [B] target broadcasts to [B, B] in "
            "MSELoss), that the optimizer holds the model's parameters, that the targets are scaled (standardise "
            "them), and that the model is not too small; do not search yet"
        )
        return Check(name, FAIL, expected, measured, advice)
    if last.final_accuracy is None:
        advice = (
            "accuracy unknown: the loss module must get (logits [B, C], class indices [B]); a regression "
            f"workload is recognised by its loss module ({', '.join(sorted(REGRESSION_LOSSES))}). "
        )
    else:
        advice = ""
    advice += (
        "a model that cannot memorise 20 examples has a bug: check that the loss gets raw logits (no softmax "
        "before CrossEntropyLoss), that inputs and labels stay paired, that the optimizer holds the model's "
        "parameters, and that the model is not too small; do not search yet"
    )
    return Check(name, FAIL, expected, measured, advice)
