"""Diagnostics: update:weight ratio hints, curve-shape notes, and their leaderboard columns."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import pytest

from hpsearch.instruments.diagnostics import curve_notes, last_ratio, ratio_hint
from hpsearch.leaderboard import leaderboard
from hpsearch.storage import Store

BROKEN = Path(__file__).parent / "workloads" / "broken.py"


def test_ratio_hint_thresholds() -> None:
    assert ratio_hint(5e-5) == "lr too low?"
    assert ratio_hint(1e-3) == ""
    assert ratio_hint(5e-3) == ""
    assert ratio_hint(0.05) == "lr too high?"
    assert ratio_hint(None) == ""


def test_last_ratio_skips_non_finite_values() -> None:
    assert last_ratio({"update_ratio": [1e-3, 2e-3, math.nan]}) == 2e-3
    assert last_ratio({"train_loss": [1.0]}) is None


@pytest.mark.parametrize(
    ("curves", "notes"),
    [
        ({"train_loss": [2.0, 1.0, 0.5, 0.45, 0.44], "val_loss": [2.0, 1.1, 0.6, 0.55, 0.55]}, []),
        ({"train_loss": [2.0, 1.5, 1.0, 0.5]}, ["undertrained"]),
        ({"train_loss": [2.0, 1.0, 0.5, 0.3, 0.2], "val_loss": [2.0, 1.0, 0.6, 0.8, 1.0]}, ["overfitting"]),
        ({"train_loss": [2.30, 2.30, 2.29, 2.30]}, ["flat: lr too low or dead"]),
        ({"train_loss": [1.0, 0.5, 0.9, 1.2]}, ["unstable: lr too high?"]),
        ({"train_loss": [2.0, 1.0]}, []),  # two epochs tell no shape
    ],
)
def test_curve_notes_shapes(curves: dict[str, list[float]], notes: list[str]) -> None:
    assert curve_notes(curves) == notes


def test_leaderboard_appends_diagnostics_after_existing_columns(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = run_cli("coarse", study_file(coarse='trials = 4\nepochs = 4\nseed = 0'), "-q")
    assert code == 0, err
    df = leaderboard(Store("fake"))
    expected_head = ["rank", "trial", "stage", "state", "reason", "val_accuracy", "lr", "momentum", "epochs", "duration_s", "border"]
    assert list(df.columns[: len(expected_head)]) == expected_head
    assert list(df.columns[-3:]) == ["update_ratio", "lr_hint", "notes"]
    assert df["update_ratio"].isna().all()  # the fake workloads never call trial.watch
    assert set(df["notes"]) <= {"", "undertrained"}


@pytest.mark.torch
def test_watch_records_update_ratio_per_epoch_and_grows_with_lr() -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from hpsearch.workloads.api import TrialContext, TrialRecord
    from hpsearch.workloads.function import run_trial
    from hpsearch.workloads.loader import load_workload

    fn = load_workload(f"{BROKEN}:good")
    ratios = {}
    for lr in (1e-4, 1e-1):
        outcome = run_trial(fn, TrialContext(TrialRecord(0, {"lr": lr}, 3, 0)), "val_accuracy")
        assert outcome.state == "complete"
        ratios[lr] = outcome.curves["update_ratio"]
        assert len(ratios[lr]) == 3 and all(r > 0 for r in ratios[lr])
    assert ratios[1e-1][-1] > 100 * ratios[1e-4][-1]
    assert ratio_hint(ratios[1e-4][-1]) == "lr too low?"


@pytest.mark.torch
def test_plain_workload_without_watch_records_no_ratio() -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from hpsearch.workloads.api import TrialContext, TrialRecord
    from hpsearch.workloads.function import run_trial
    from hpsearch.workloads.loader import load_workload

    outcome = run_trial(load_workload(f"{BROKEN}:no_watch"), TrialContext(TrialRecord(0, {"lr": 0.1}, 2, 0)), "val_accuracy")
    assert outcome.state == "complete"
    assert "update_ratio" not in outcome.curves
    assert len(outcome.curves["train_loss"]) == 2


@pytest.mark.torch
def test_leaderboard_csv_has_ratio_and_hint_for_a_watched_workload(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    path = study_file(workload=f"{BROKEN}:good", coarse='trials = 3\nepochs = 2\nseed = 0')
    assert run_cli("coarse", path, "-q")[0] == 0
    code, out, _ = run_cli("leaderboard", "fake", "--csv", "-")
    assert code == 0
    header = out.splitlines()[0].split(",")
    assert header[-3:] == ["update_ratio", "lr_hint", "notes"]
    df = leaderboard(Store("fake"))
    assert df["update_ratio"].notna().all()
