"""The workload API: how a user's training function is found, called and heard from.

A workload is a plain function `train(trial)`; it needs no import of hpsearch.
It reads `trial.params`, `trial.epochs`, `trial.device`, `trial.seed`, calls
`trial.report(epoch, **metrics)` once per epoch and returns a dict of metrics
(or one float, the study's metric). Optionally it calls
`trial.watch(model, optimizer, loss_fn)` once and honours `trial.subset`: that
is all the instruments (sanity checks, LR range test, update:weight ratios)
need; see docs/instruments.md. `run_trial` executes one trial and turns
whatever happens (result, exception, early stop) into a TrialOutcome: failed
trials are data, never a crash of the search.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import math
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpsearch.errors import TrialStopped, WorkloadError

# Called by trial.report: returns None to go on, or the reason to stop the trial.
ReportHook = Callable[[int, dict[str, float]], "str | None"]


@dataclass
class TrialContext:
    """What a workload's `train(trial)` receives."""

    number: int
    params: dict[str, Any]
    epochs: int
    seed: int
    device: str = "cpu"
    stage: str = "coarse"
    study: str = ""
    # "search" for trials of a stage; "sanity" and "lr_find" when an instrument
    # runs the workload. Workloads may ignore it: the instruments steer through watch().
    mode: str = "search"
    # When set, train on only the first `subset` training examples (the sanity
    # check's overfit-a-tiny-subset); None means all of them.
    subset: int | None = None
    # Timing of the latest epoch, read by executors when the report hook runs.
    epoch_seconds: float | None = field(default=None, repr=False)
    iterations: int | None = field(default=None, repr=False)
    _on_report: ReportHook | None = field(default=None, repr=False)
    _curves: dict[str, list[float]] = field(default_factory=dict, repr=False)
    _last_report: float = field(default_factory=time.perf_counter, repr=False)
    _watcher: Any = field(default=None, repr=False)
    # Set by an instrument to steer the watcher it gets (learning rate, early stops).
    _on_watch: Callable[[Any], None] | None = field(default=None, repr=False)

    def watch(self, model: Any, optimizer: Any, loss_fn: Any = None) -> None:
        """Let hpsearch look inside the training loop; call once, after building them.

        `optimizer` must be a torch.optim.Optimizer; `loss_fn` the loss module the
        loop calls on (logits, targets), e.g. nn.CrossEntropyLoss() (optional,
        but the sanity checks and the LR range test need it). The trial then
        records the per-epoch update:weight ratio as the curve `update_ratio`.
        Calling it again replaces the previous hooks.
        """
        from hpsearch.watch import Watcher

        self.close()
        self._watcher = Watcher(model, optimizer, loss_fn)
        if self._on_watch is not None:
            self._on_watch(self._watcher)

    @property
    def watcher(self) -> Any:
        """The Watcher of the last `watch` call, or None when the workload never called it."""
        return self._watcher

    def close(self) -> None:
        """Remove the watcher's hooks (run_trial calls it when the trial ends)."""
        if self._watcher is not None:
            self._watcher.close()

    def report(self, epoch: int, iterations: int | None = None, **metrics: float) -> None:
        """Record this epoch's metrics (losses, accuracies). May end the trial early.

        `iterations`, optional, is how many optimiser steps the epoch took:
        with it, progress shows the time per iteration (and warns above the
        recipe's 500 ms); without it, only the time per epoch is known.
        When the loss diverges or a pruner gives up on the trial, this raises
        an exception that ends `train`; workloads need not catch it.
        """
        now = time.perf_counter()
        self.epoch_seconds, self._last_report = now - self._last_report, now
        self.iterations = int(iterations) if iterations else None
        values = {k: float(v) for k, v in metrics.items()}
        for k, v in values.items():
            self._curves.setdefault(k, []).append(v)
        if self._watcher is not None:
            ratio = self._watcher.end_epoch()
            if ratio is not None and "update_ratio" not in values:
                self._curves.setdefault("update_ratio", []).append(ratio)
        if self._on_report is not None:
            reason = self._on_report(epoch, values)
            if reason is not None:
                raise TrialStopped(reason)

    @property
    def curves(self) -> dict[str, list[float]]:
        """Every metric reported so far, one value per report (per epoch)."""
        return self._curves


@dataclass
class TrialOutcome:
    """How one trial ended: state is 'complete', 'pruned' or 'fail'."""

    state: str
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)
    duration_s: float = 0.0


def run_trial(fn: Callable[[TrialContext], Any], ctx: TrialContext, metric: str) -> TrialOutcome:
    """Run `fn(ctx)` and classify the ending. KeyboardInterrupt propagates (the caller records it)."""
    start = time.perf_counter()

    def outcome(state: str, metrics: dict[str, float] | None = None, reason: str = "") -> TrialOutcome:
        return TrialOutcome(state, metrics or {}, reason, ctx.curves, time.perf_counter() - start)

    try:
        result = fn(ctx)
    except TrialStopped as stop:
        return outcome("pruned", reason=stop.reason)
    except Exception as e:  # a crashing trial is a result, not the end of the search
        return outcome("fail", reason=exception_reason(e))
    finally:
        ctx.close()
    return result_outcome(result, metric, ctx.curves, time.perf_counter() - start)


def result_outcome(result: Any, metric: str, curves: dict[str, list[float]], duration_s: float) -> TrialOutcome:
    """How a trial that returned `result` ended: complete, pruned ('diverged': non-finite metric) or
    fail (a result that is neither a dict of numbers nor a number)."""
    try:
        metrics = normalize_result(result, metric)
    except ValueError as e:
        return TrialOutcome("fail", {}, str(e), curves, duration_s)
    value = metrics.get(metric)
    if value is not None and not math.isfinite(value):
        return TrialOutcome("pruned", metrics, "diverged", curves, duration_s)
    return TrialOutcome("complete", metrics, "", curves, duration_s)


def normalize_result(result: Any, metric: str) -> dict[str, float]:
    """A workload returns a dict of metrics or a single number (= the study's metric)."""
    if isinstance(result, dict):
        try:
            return {str(k): float(v) for k, v in result.items()}
        except (TypeError, ValueError):
            raise ValueError(f"workload returned non-numeric metrics: {result!r}") from None
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        return {metric: float(result)}
    raise ValueError(f"workload returned {type(result).__name__}; return a dict of metrics or a float")


def exception_reason(e: BaseException) -> str:
    """The exception's last line, as a trial's reason: 'ValueError: lr too large'."""
    text = "".join(traceback.format_exception_only(type(e), e)).strip().splitlines()
    return text[-1] if text else type(e).__name__


def check_workload(module: str, function: str) -> None:
    """Check that `module:function` exists without importing it (no torch in the CLI).

    `module` is a dotted module name or an absolute path to a .py file.
    Raises LookupError with a message that says what to fix.
    """
    if module.endswith(".py"):
        source_path = Path(module)
        if not source_path.is_file():
            raise LookupError(f"workload file {module} does not exist; the path is relative to the study file")
    else:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            spec = None
        if spec is None or spec.origin is None:
            raise LookupError(f"module {module!r} cannot be found; check the name or install it")
        source_path = Path(spec.origin)
        if source_path.suffix != ".py":  # compiled or namespace module: cannot inspect, import decides
            return
    try:
        tree = ast.parse(source_path.read_text(), filename=str(source_path))
    except SyntaxError as e:
        raise LookupError(f"{source_path} has a syntax error at line {e.lineno}: {e.msg}") from None
    defined = _top_level_names(tree)
    if function not in defined:
        available = sorted(n for n in defined if not n.startswith("_"))
        hint = f"; functions there: {', '.join(available)}" if available else ""
        raise LookupError(f"{source_path} defines no function {function!r}{hint}")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def load_workload(path: str) -> Callable[[TrialContext], Any]:
    """Import `package.module:function` or `/path/file.py:function` and return the function."""
    module_name, _, function = path.rpartition(":")
    try:
        if module_name.endswith(".py"):
            file = Path(module_name)
            # A stable, unique module name so the same file is imported once per process.
            unique = "hpsearch_user_" + "".join(c if c.isalnum() else "_" for c in str(file.resolve()))
            module = sys.modules.get(unique)
            if module is None:
                spec = importlib.util.spec_from_file_location(unique, file)
                if spec is None or spec.loader is None:
                    raise WorkloadError(f"workload file {file} cannot be loaded")
                module = importlib.util.module_from_spec(spec)
                sys.modules[unique] = module
                # The workload's own folder is importable, as when running `python file.py`.
                sys.path.insert(0, str(file.parent))
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except WorkloadError:
        raise
    except Exception as e:
        raise WorkloadError(f"workload {path}: importing it failed: {exception_reason(e)}") from e
    fn = getattr(module, function, None)
    if not callable(fn):
        raise WorkloadError(f"workload {path}: {function!r} is not a function in {module_name}")
    return fn
