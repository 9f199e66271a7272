"""PyTorch Lightning in a function workload: the Trainer reports each epoch to its trial, and ends
cleanly when the trial says stop (pruned, diverged), which the trial then records with its reason.

    from hpsearch.integrations.lightning import fit

    def train(trial):
        L.seed_everything(trial.seed)
        return fit(trial, Classifier(lr=trial.params["lr"]), datamodule=Blobs())

`fit` builds the Trainer with a `TrialCallback`; a workload that builds its own Trainer adds
`TrialCallback(trial)` to its callbacks and calls `callback.check()` after `trainer.fit(...)`.
Only this module imports Lightning.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hpsearch.errors import TrialStopped, WorkloadError
from hpsearch.workloads.api import as_number

INSTALL = "pip install 'hpsearch[lightning]'"

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
except ModuleNotFoundError as e:
    if (e.name or "").partition(".")[0] != "lightning":
        raise  # Lightning is there, something it imports is not: its own message says what
    raise WorkloadError(f"hpsearch.integrations.lightning needs Lightning, which is not installed: {INSTALL}") from None

RESERVED = frozenset({"epoch", "iterations"})  # trial.report's own parameters: no metric can travel by these names
SUFFIXES = ("_step", "_epoch")  # Lightning's copies of a metric logged both on_step and on_epoch


class TrialCallback(pl.Callback):
    """Reports the Trainer's `callback_metrics` to `trial` at the end of each training epoch that ran a
    validation (Lightning's sanity check does not count; a Trainer that never validates reports every
    epoch), numbered by `trainer.current_epoch`: 0, 1, ... as `range(trial.epochs)`. At the epoch's end,
    not the validation's, so the epoch's own training loss goes with it (the divergence rule reads it).

    `metrics`: the names to report (default: every scalar logged; a name missing fails the trial).
    When the trial says stop, the callback sets `trainer.should_stop`, as EarlyStopping does: the
    Trainer ends after that epoch, and `check()`, called once `fit` returns, raises the stop
    (TrialStopped), so that the trial ends pruned with its reason ("diverged", the pruner's).
    """

    def __init__(self, trial: Any, metrics: Iterable[str] | None = None) -> None:
        super().__init__()
        self.trial = trial
        self.metrics = None if metrics is None else tuple(metrics)
        if self.metrics is not None and (reserved := RESERVED.intersection(self.metrics)):
            raise ValueError(f"metrics {sorted(reserved)} cannot be reported: trial.report takes those names itself")
        self.stop: TrialStopped | None = None  # the trial's answer to a report, when it said stop
        self._validated = False  # a validation ran since the last report
        self._steps = 0  # the Trainer's global step at the last report

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validated, self._steps = False, trainer.global_step  # after a checkpoint's step is restored

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stop is not None or not (self._validated or not trainer.enable_validation):
            return
        self._validated = False
        steps, self._steps = trainer.global_step - self._steps, trainer.global_step
        values = epoch_metrics(trainer.callback_metrics, self.metrics)
        try:
            self.trial.report(trainer.current_epoch, iterations=steps or None, **values)
        except TrialStopped as stop:
            self.stop = stop
            trainer.should_stop = True

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # Still training after a stop: the Trainer's min_epochs or min_steps are not reached yet. A pruned
        # or diverged trial trains no further: the stop ends fit as an exception instead.
        if self.stop is not None:
            raise self.stop

    def check(self) -> None:
        """Raise the trial's stop (TrialStopped) when it said stop during fit; call it after `trainer.fit`."""
        if self.stop is not None:
            raise self.stop


def fit(
    trial: Any,
    model: pl.LightningModule,
    train_dataloaders: Any = None,
    val_dataloaders: Any = None,
    datamodule: pl.LightningDataModule | None = None,
    *,
    metrics: Iterable[str] | None = None,
    **trainer_options: Any,
) -> dict[str, float]:
    """Train `model` for `trial` with a Lightning Trainer; return the last epoch's metrics (the workload's result).

    The Trainer takes `trainer_options` over defaults made for a search: max_epochs=trial.epochs,
    trial.device alone (not every visible GPU), and no progress bar or logger (hpsearch keeps each
    epoch's metrics); a TrialCallback(trial, metrics) joins its callbacks. In a stage, Lightning keeps
    `last.ckpt` in the trial's checkpoint folder after each epoch, and a resumed run of the trial
    (preempted, interrupted, its worker killed) continues from it (enable_checkpointing=False: not). When the trial
    is pruned or diverges, the Trainer ends after that epoch and this raises TrialStopped, which ends
    the trial with its reason. Ctrl-C stays a KeyboardInterrupt (Lightning exits the process).
    """
    callback = TrialCallback(trial, metrics)
    folder = getattr(trial, "checkpoint_dir", None)  # the trial's own: a resumed run continues from it
    keep = folder is not None and "enable_checkpointing" not in trainer_options
    options = {
        "max_epochs": trial.epochs,
        **device_options(getattr(trial, "device", "cpu")),
        "enable_progress_bar": False,
        "logger": False,
        "enable_checkpointing": keep,
        **trainer_options,
    }
    given = options.get("callbacks")
    options["callbacks"] = [*([given] if isinstance(given, pl.Callback) else given or []), callback]
    last = None
    if keep:  # Lightning's last.ckpt each epoch (model, optimisers, loops): a resumed run starts there
        options["callbacks"].append(ModelCheckpoint(dirpath=folder, filename="last", enable_version_counter=False))
        last = Path(str(folder)) / "last.ckpt" if (Path(str(folder)) / "last.ckpt").is_file() else None
    trainer = pl.Trainer(**options)
    with interrupts_kept():
        trainer.fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path=last)
    callback.check()
    return epoch_metrics(trainer.callback_metrics, callback.metrics)


def epoch_metrics(logged: Mapping[str, Any], names: tuple[str, ...] | None = None) -> dict[str, float]:
    """An epoch's numbers from the Trainer's `callback_metrics`: the `names` asked for, or every scalar
    (without the `x_step`/`x_epoch` copies Lightning keeps beside `x`). Raises ValueError for a name not logged."""
    if names is not None:
        if missing := [name for name in names if name not in logged]:
            raise ValueError(
                f"metrics {missing} were not logged (logged: {', '.join(sorted(logged)) or 'nothing'}); "
                "log them with self.log in the LightningModule, or leave them out of metrics"
            )
        return {name: as_number(logged[name]) for name in names}
    values = {}
    for name, value in logged.items():
        copy = any(name.endswith(s) and name.removesuffix(s) in logged for s in SUFFIXES)
        if copy or name in RESERVED:
            continue
        try:
            values[name] = as_number(value)
        except ValueError:
            continue  # a tensor of several values: not an epoch's metric
    return values


def device_options(device: str) -> dict[str, Any]:
    """Lightning's accelerator and devices for hpsearch's trial.device: "cpu", or "cuda:N" (the GPU N alone)."""
    kind, _, index = device.partition(":")
    return {"accelerator": "gpu" if kind == "cuda" else kind, "devices": [int(index)] if index else 1}


@contextmanager
def interrupts_kept() -> Iterator[None]:
    """Lightning answers Ctrl-C by ignoring SIGINT from then on and exiting 1 (SystemExit). Here the
    caller's SIGINT handler comes back and the KeyboardInterrupt goes on, so hpsearch records the
    trial interrupted and ends the search as it does for any workload."""
    main = threading.current_thread() is threading.main_thread()  # only the main thread sets handlers
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        yield
    except SystemExit as e:
        if isinstance(interrupt := e.__context__, KeyboardInterrupt):
            raise interrupt from None
        raise
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
