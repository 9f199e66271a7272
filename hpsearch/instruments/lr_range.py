"""The learning-rate range test: which learning rates make the loss fall, before searching.

`find_lr_range` calls the study's own `train(trial)` with `trial.mode ==
"lr_find"`, all training data, the smallest weight decay of the study, and
steers the learning rate through the watcher (`trial.watch(model, optimizer,
loss_fn)`): before optimizer step i it sets lr = start * (end/start)^(i/(n-1)),
growing exponentially from 1e-7 to 10 over 300 steps (wider when the study's
range is), recording the training loss at each step. It stops early once the
smoothed loss exceeds 4x its lowest value (the loss exploded).

The suggested coarse range runs from where the smoothed loss has fallen by 5%
of its total drop (it starts falling steeply) to where it is lowest (just
before it blows up). `apply_range` writes it into the study file.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import HpsearchError, SpecError, TrialStopped
from hpsearch.instruments.probe import WATCH_HINT, base_params, lr_bounds, lr_param, require_training_loop, run_probe
from hpsearch.space import Range
from hpsearch.spec import StudySpec, load_spec
from hpsearch.workloads.api import TrialStatus

START_LR = 1e-7  # far below any useful SGD lr: the loss must look flat here
END_LR = 10.0  # far above: the loss must blow up before this
ITERATIONS = 300  # the recipe's "a few hundred iterations"
EXPLODE = 4.0  # smoothed loss above this multiple of its minimum: exploded, stop
SMOOTHING = 0.9  # EMA factor of the loss (about a 10-step window): single batches are noisy
FALL_START = 0.05  # the range starts where the loss has fallen by 5% of its total drop


@dataclass(frozen=True)
class LrRange:
    """The LR range test's record and suggestion."""

    study: str
    lrs: tuple[float, ...]  # the lr of each recorded step
    losses: tuple[float, ...]  # the training loss at that step
    smoothed: tuple[float, ...]  # bias-corrected EMA of losses
    low: float  # suggested range for the coarse stage
    high: float
    stopped: str  # why the sweep ended


class _Done(TrialStopped):
    pass


def find_lr_range(
    spec: StudySpec,
    iterations: int = ITERATIONS,
    device: str = "cpu",
    seed: int = 0,
) -> LrRange:
    """Run the LR range test on the study's workload and return what it recorded and suggests.

    Draws nothing: report.plots.plot_lr_range draws the returned LrRange.

    Raises HpsearchError when the workload does not call trial.watch with a
    loss module, or when the loss never fell (nothing to suggest).
    """
    require_training_loop(spec)
    param = lr_param(spec)
    low, high = lr_bounds(param)
    start, end = min(START_LR, low / 100), max(END_LR, high * 10)
    growth = (end / start) ** (1 / max(iterations - 1, 1))
    lrs: list[float] = []
    losses: list[float] = []
    state: dict[str, Any] = {
        "watcher": None,
        "ema": 0.0,
        "best": math.inf,
        "stopped": f"reached lr {end:.3g} without exploding",
    }

    def on_step(step: int, optimizer: Any) -> None:
        watcher = state["watcher"]
        # 1. record the loss the last forward computed: the result of the previous step, at its lr
        if step > 0 and watcher.losses and watcher.losses[-1].step == step:
            loss = watcher.losses[-1].loss
            lrs.append(start * growth ** (step - 1))
            losses.append(loss)
            if not math.isfinite(loss):
                state["stopped"] = f"loss not finite at lr {lrs[-1]:.3g}"
                raise _Done("exploded")
            state["ema"] = SMOOTHING * state["ema"] + (1 - SMOOTHING) * loss
            smooth = state["ema"] / (1 - SMOOTHING ** len(losses))
            state["best"] = min(state["best"], smooth)
            if smooth > EXPLODE * state["best"]:
                state["stopped"] = f"loss exploded at lr {lrs[-1]:.3g}"
                raise _Done("exploded")
        if step >= iterations:
            raise _Done("done")
        # 2. this step's lr, growing exponentially
        for group in optimizer.param_groups:
            group["lr"] = start * growth**step

    def on_watch(watcher: Any) -> None:
        state["watcher"] = watcher
        watcher.on_step = on_step

    def on_report(epoch: int, metrics: dict[str, float], timing: Any = None) -> str | None:
        return None if state["watcher"] is not None else "the workload does not call trial.watch"

    params = {**base_params(spec.space, decay="low"), param.name: start}
    # A workload may raise on its own when the loss blows up: what was recorded until then still counts.
    result = run_probe(spec, params, 10**6, "lr_find", None, on_watch, on_report, seed, device, allow_fail=True)
    if result.watcher is None or not result.watcher.watches_loss:
        if result.outcome.state == TrialStatus.FAIL:
            raise HpsearchError(f"workload {spec.workload} crashed in lr_find mode: {result.outcome.reason}")
        raise HpsearchError(f"lr-find needs the training loss of every step: {WATCH_HINT}")
    if result.outcome.state == TrialStatus.FAIL:
        state["stopped"] = f"the workload stopped at lr {lrs[-1] if lrs else start:.3g}: {result.outcome.reason}"
    if len(losses) < 10:
        raise HpsearchError(
            f"lr-find recorded only {len(losses)} steps ({state['stopped']}); the workload trained too few steps"
        )
    smoothed = _smooth(losses)
    low_s, high_s = suggest(lrs, smoothed)
    return LrRange(spec.name, tuple(lrs), tuple(losses), tuple(smoothed), low_s, high_s, state["stopped"])


def _smooth(losses: list[float]) -> list[float]:
    out, ema = [], 0.0
    for i, loss in enumerate(losses, 1):
        ema = SMOOTHING * ema + (1 - SMOOTHING) * loss
        out.append(ema / (1 - SMOOTHING**i))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(low, high): from where the loss has fallen by 5% of its total drop, to where it is lowest.

    Raises HpsearchError when the loss never fell by 10% of its starting value.
    """
    finite = [(lr, s) for lr, s in zip(lrs, smoothed) if math.isfinite(s)]
    head = sorted(s for _, s in finite[: max(len(finite) // 20, 3)])
    first = head[len(head) // 2]  # median of the first 5%: the loss before anything is learned
    i_min = min(range(len(finite)), key=lambda i: finite[i][1])
    drop = first - finite[i_min][1]
    if drop < 0.1 * abs(first):
        raise HpsearchError(
            f"the loss never fell (from {first:.3g} to at best {finite[i_min][1]:.3g}) between lr "
            f"{finite[0][0]:.3g} and {finite[-1][0]:.3g}: run `hpsearch sanity` first"
        )
    i_low = next(i for i, (_, s) in enumerate(finite) if s <= first - FALL_START * drop)
    low, high = _round(finite[i_low][0]), _round(finite[i_min][0])
    if low >= high:  # the whole fall happened within a few steps
        low = _round(high / 10)
    return low, high


def _round(x: float) -> float:
    """Two significant digits: ranges print and read cleanly."""
    return float(f"{x:.2g}")


def apply_range(spec_file: str | Path, low: float, high: float) -> Path:
    """Write low/high into the study file's lr range, keeping the old file as <file>.bak.

    Edits only the `low = ...` and `high = ...` lines of the [params.<lr>]
    table (comments and layout stay). Returns the backup's path. Raises
    SpecError when the lr parameter is not a range written as its own table.
    """
    path = Path(spec_file)
    spec = load_spec(path)
    param = lr_param(spec)
    key = f"params.{param.name}"
    if not isinstance(param, Range):
        raise SpecError(path, key, "is a value set; only low/high ranges can be written: edit the values by hand")
    text = path.read_text()
    header = re.search(rf"^[ \t]*\[[ \t]*params\.{re.escape(param.name)}[ \t]*\][^\n]*$", text, re.M)
    if header is None:
        raise SpecError(path, key, f"is not written as its own [{key}] table; edit low/high by hand")
    following = re.search(r"^[ \t]*\[", text[header.end() :], re.M)
    end = header.end() + following.start() if following else len(text)
    section = text[header.end() : end]
    for bound, value in (("low", low), ("high", high)):
        section, n = re.subn(
            rf"^([ \t]*{bound}[ \t]*=[ \t]*)[^#\n]*?([ \t]*(#[^\n]*)?)$",
            rf"\g<1>{value:g}\g<2>",
            section,
            count=1,
            flags=re.M,
        )
        if n != 1:
            raise SpecError(path, f"{key}.{bound}", "not found on a line of its own; edit the range by hand")
    backup = path.with_name(path.name + ".bak")
    backup.write_text(text)
    path.write_text(text[: header.end()] + section + text[end:])
    try:
        load_spec(path)
    except SpecError:
        path.write_text(text)  # never leave a broken study file behind
        raise
    return backup
