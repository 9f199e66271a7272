"""The Lightning integration (hpsearch/integrations/lightning.py): a real Trainer on the CPU reports each
epoch to its trial and stops cleanly when the trial says stop; the README's example is the file run here."""

from __future__ import annotations

import importlib
import re
import signal
import sys
from pathlib import Path

import pytest

pytest.importorskip("lightning", reason="the lightning extra is not installed: pip install 'hpsearch[lightning]'")

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerStatus
from optuna.trial import TrialState
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hpsearch.divergence import DIVERGED
from hpsearch.errors import TrialStopped, WorkloadError
from hpsearch.integrations.lightning import INSTALL, TrialCallback, device_options, epoch_metrics, fit
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import CURVES_ATTR, METRICS_ATTR, REASON_ATTR, trial_attr
from hpsearch.workloads.api import TrialContext, TrialRecord, TrialStatus
from hpsearch.workloads.function import run_trial
from hpsearch.workloads.loader import load_workload

pytestmark = pytest.mark.torch

ROOT = Path(__file__).parent.parent
WORKLOADS = Path(__file__).parent / "workloads"
EXAMPLE = WORKLOADS / "lightning_train.py"  # the README's example, as is
STUDY = WORKLOADS / "lightning.toml"  # the README's study file
QUIET = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False, "enable_model_summary": False}
METRICS = {"train_loss", "val_loss", "val_accuracy"}


def context(epochs: int, stop_at: int | None = None, reason: str = "pruned (median)", heard: list | None = None):
    """A trial whose report hook answers `reason` at epoch `stop_at` (as the coordinator's pruner does)."""
    heard = [] if heard is None else heard

    def hook(epoch, metrics, timing):
        heard.append((epoch, metrics, timing))
        return reason if epoch == stop_at else None

    return TrialContext.open(
        TrialRecord(0, {"lr": 0.1, "momentum": 0.9}, epochs, 0, metric="val_accuracy"), "cpu", hook
    )


class Tiny(L.LightningModule):
    """Logistic regression on 48 points; `interrupt`: its training_step raises KeyboardInterrupt (Ctrl-C)."""

    def __init__(self, interrupt: bool = False) -> None:
        super().__init__()
        self.net, self.interrupt = nn.Linear(4, 2), interrupt

    def training_step(self, batch, batch_idx):
        if self.interrupt:
            raise KeyboardInterrupt
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 4, generator=g)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=16)


class Spy(L.Callback):
    """What the Trainer did: training epochs started, exceptions it handled."""

    def __init__(self) -> None:
        self.epochs, self.exceptions = 0, []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epochs += 1

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.exceptions.append(exception)


# ---------------------------------------------------------------- the callback on a real Trainer


def test_lightning_pruned_trial_stops_the_trainer_cleanly_after_that_epoch() -> None:
    heard: list = []
    callback, spy = TrialCallback(context(4, stop_at=1, heard=heard)), Spy()
    trainer = L.Trainer(max_epochs=4, callbacks=[callback, spy], **QUIET)
    trainer.fit(Tiny(), loader(), loader())  # returns: the stop is no exception inside Lightning's loop
    assert trainer.state.status == TrainerStatus.FINISHED and not trainer.interrupted and spy.exceptions == []
    assert spy.epochs == 2 and [epoch for epoch, _, _ in heard] == [0, 1]  # no epoch after the one pruned
    assert set(heard[0][1]) == {"train_loss", "val_loss"} and heard[0][2].iterations == 3  # 48 points / 16 a batch
    with pytest.raises(TrialStopped, match=r"pruned \(median\)"):
        callback.check()


def test_lightning_reports_the_epochs_own_training_loss_not_the_sanity_check() -> None:
    heard: list = []
    trainer = L.Trainer(max_epochs=2, callbacks=[TrialCallback(context(2, heard=heard))], **QUIET)
    trainer.fit(Tiny(), loader(), loader())  # the sanity check validates first (2 batches): not a report
    assert [epoch for epoch, _, _ in heard] == [0, 1]
    assert heard[1][1]["train_loss"] == pytest.approx(trainer.callback_metrics["train_loss"].item())  # epoch 1's own
    assert heard[0][1]["train_loss"] != heard[1][1]["train_loss"]


def test_lightning_without_validation_reports_every_training_epoch() -> None:
    heard: list = []
    trainer = L.Trainer(max_epochs=3, callbacks=[TrialCallback(context(3, heard=heard))], **QUIET)
    trainer.fit(Tiny(), loader())
    assert [(epoch, set(metrics)) for epoch, metrics, _ in heard] == [(e, {"train_loss"}) for e in range(3)]


def test_lightning_a_stop_before_min_epochs_ends_fit_at_once() -> None:
    heard: list = []
    callback, spy = TrialCallback(context(4, stop_at=0, reason=DIVERGED, heard=heard)), Spy()
    trainer = L.Trainer(max_epochs=4, min_epochs=3, callbacks=[callback, spy], **QUIET)
    with pytest.raises(TrialStopped, match=DIVERGED):
        trainer.fit(Tiny(), loader(), loader())
    assert [epoch for epoch, _, _ in heard] == [0] and spy.epochs == 2  # not one batch of the second epoch


def test_lightning_ctrl_c_stays_a_keyboard_interrupt_and_sigint_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # Lightning alone: SystemExit(1), and SIGINT ignored from then on
        fit(context(2), Tiny(interrupt=True), loader(), loader(), enable_model_summary=False)
    assert signal.getsignal(signal.SIGINT) is before


# ---------------------------------------------------------------- through hpsearch's function workloads


def test_lightning_pruned_trial_ends_pruned_with_its_reason_and_the_epochs_it_ran() -> None:
    outcome = run_trial(load_workload(f"{EXAMPLE}:train"), context(4, stop_at=1), "val_accuracy")
    assert outcome.state == TrialStatus.PRUNED and outcome.reason == "pruned (median)"
    assert {name: len(curve) for name, curve in outcome.curves.items()} == dict.fromkeys(METRICS, 2)


def test_lightning_stage_records_every_validation_epoch_as_a_report(study_file) -> None:
    spec = load_spec(
        study_file(
            workload=f"{EXAMPLE}:train",
            coarse="trials = 2\nepochs = 3",
            params="[params.lr]\nlow = 0.01\nhigh = 0.1\nlog = true\n",
        )
    )
    store = Store(spec.name)
    trials = run_stage(store, start_coarse(store, spec, {})).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    for trial in trials:
        curves = trial_attr(trial, CURVES_ATTR)
        assert {name: len(curve) for name, curve in curves.items()} == dict.fromkeys(METRICS, 3)
        assert trial.intermediate_values == dict(enumerate(curves["val_accuracy"]))  # epochs 0, 1, 2
        assert trial.value == curves["val_accuracy"][-1] == trial_attr(trial, METRICS_ATTR)["val_accuracy"]


def test_lightning_diverging_loss_stops_the_trial_with_the_divergence_reason(study_file) -> None:
    spec = load_spec(
        study_file(
            workload=f"{EXAMPLE}:train",
            coarse="trials = 1\nepochs = 6",
            params="[params.lr]\nvalues = [100.0]\n\n[params.momentum]\nvalues = [0.9]\n",
        )
    )
    store = Store(spec.name)
    [trial] = run_stage(store, start_coarse(store, spec, {})).trials
    assert trial.state == TrialState.PRUNED and trial_attr(trial, REASON_ATTR) == DIVERGED
    assert 1 <= len(trial_attr(trial, CURVES_ATTR)["train_loss"]) < 6  # stopped early


def test_lightning_readme_example_is_the_file_the_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## PyTorch Lightning", 1)[1].split("\n## ", 1)[0]
    blocks = dict(re.findall(r"```(python|toml)\n(.*?)```", section, re.S))
    assert blocks["python"] == EXAMPLE.read_text()
    assert blocks["toml"] == STUDY.read_text()
    assert INSTALL in section


def test_lightning_study_runs_from_the_cli_with_a_worker(run_cli) -> None:
    code, _, err = run_cli("coarse", STUDY, "--workers", "1", "-q")
    assert code == 0, err
    spec = load_spec(STUDY)
    store = Store(spec.name)
    trials = store.trials(store.stage("coarse"))
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(len(trial_attr(t, CURVES_ATTR)["val_accuracy"]) == 2 for t in trials)
    assert not (WORKLOADS / "lightning_logs").exists()  # no logger, no checkpoints in the study's folder


# ---------------------------------------------------------------- the parts


def test_lightning_epoch_metrics_leave_out_lightnings_copies_and_vectors() -> None:
    logged = {
        "train_loss": torch.tensor(0.5),
        "train_loss_step": torch.tensor(0.4),
        "train_loss_epoch": torch.tensor(0.5),
        "val_loss_step": torch.tensor(0.3),  # no "val_loss" beside it: a metric of its own
        "confusion": torch.ones(2, 2),
        "epoch": torch.tensor(3.0),
    }
    assert epoch_metrics(logged) == {"train_loss": 0.5, "val_loss_step": pytest.approx(0.3)}
    assert epoch_metrics(logged, ("train_loss_step",)) == {"train_loss_step": pytest.approx(0.4)}
    with pytest.raises(ValueError, match=r"\['val_acc'\] were not logged .*val_loss_step"):
        epoch_metrics(logged, ("val_acc",))
    with pytest.raises(ValueError, match="epoch"):
        TrialCallback(context(1), metrics=["epoch"])


def test_lightning_device_is_the_trials_alone() -> None:
    assert device_options("cpu") == {"accelerator": "cpu", "devices": 1}
    assert device_options("cuda:0") == {"accelerator": "gpu", "devices": [0]}


def test_lightning_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "hpsearch.integrations.lightning")
    with pytest.raises(WorkloadError) as caught:
        importlib.import_module("hpsearch.integrations.lightning")
    assert str(caught.value) == f"hpsearch.integrations.lightning needs Lightning, which is not installed: {INSTALL}"


def test_lightning_trial_stopped_mid_way_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    """In a stage a trial has a checkpoint folder: fit keeps Lightning's last.ckpt there each epoch, and the
    trial's next run (resumed after a stop) continues from it, its epochs numbered on, ending as a run
    never stopped would (same data order and weights, on the CPU)."""
    example = importlib.import_module("tests.workloads.lightning_train")

    def run(folder: Path, attempt: int, stop_at: int | None) -> tuple[list[int], dict[str, float] | None]:
        heard: list[int] = []

        def hook(epoch: int, metrics: dict, timing: object) -> str | None:
            heard.append(epoch)
            if epoch == stop_at:
                raise KeyboardInterrupt  # Ctrl-C, preemption: the run ends with its trial's checkpoint on disk
            return None

        record = TrialRecord(
            0, {"lr": 0.1, "momentum": 0.9}, 5, 0, metric="val_accuracy", checkpoint_dir=str(folder), attempt=attempt
        )
        try:
            return heard, example.train(TrialContext.open(record, "cpu", hook))
        except KeyboardInterrupt:
            return heard, None

    whole_epochs, whole = run(tmp_path / "whole", 1, None)
    first, stopped = run(tmp_path / "cut", 1, stop_at=2)
    again, resumed = run(tmp_path / "cut", 2, None)
    assert whole_epochs == [0, 1, 2, 3, 4] and stopped is None and first == [0, 1, 2]
    assert again[0] >= 2 and again[-1] == 4  # continued after the last epoch its checkpoint holds
    assert resumed is not None and whole is not None
    assert resumed["val_accuracy"] == pytest.approx(whole["val_accuracy"], abs=0.02)
