"""Diagnostics: update:weight ratio hints, curve-shape notes, and their leaderboard columns."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.instruments.diagnostics import curve_notes, last_ratio, lr_too_high, overfits, ratio_hint
from hpsearch.leaderboard import leaderboard
from hpsearch.store.storage import Store

BROKEN = Path(__file__).parent / "workloads" / "broken.py"


# Curves shaped like the MNIST-1D CNN's (SGD, 10 classes: loss starts near ln 10 = 2.30).
GOOD = [2.28, 1.88, 1.58, 1.43, 1.34, 1.22, 1.18, 1.05, 1.07, 0.98]  # a normal noisy descent (one uptick)
DIVERGED = [2.19, 2.76, 2.38, 2.39, 2.38]  # rose above its start, then stuck at chance
EXPLODED = [2.27, 1.9, float("nan"), float("nan")]  # NaN: diverged
ROSE_AGAIN = [2.3, 1.2, 0.8, 1.0, 1.6]  # learnt, then the loss ran away: ends 2x its minimum
BOUNCING = [2.3, 1.4, 1.9, 1.2, 1.8, 1.1, 1.6]  # oscillates strongly from the start


def test_ratio_hint_thresholds() -> None:
    assert ratio_hint(5e-5) == "lr too low?"
    assert ratio_hint(1e-3) == ""
    assert ratio_hint(5e-3) == ""
    assert ratio_hint(None) == ""


@pytest.mark.parametrize("train", [DIVERGED, EXPLODED, ROSE_AGAIN, BOUNCING])
def test_lr_too_high_needs_a_high_ratio_and_a_curve_that_shows_it(train: list[float]) -> None:
    curves = {"train_loss": train}
    assert lr_too_high(train)
    assert ratio_hint(0.05, curves) == "lr too high?"
    assert ratio_hint(5e-3, curves) == ""  # a healthy ratio: the curve alone is the note's business
    assert "unstable: lr too high?" in curve_notes(curves)


def test_lr_too_high_stays_quiet_on_a_good_descent_whatever_the_ratio() -> None:
    """The MNIST-1D report put `lr too high?` on 8 of its top 10, the best included: a ratio above 1e-2
    is common with momentum in short trials. A curve that descends well is no evidence."""
    curves = {"train_loss": GOOD, "val_loss": [v + 0.05 for v in GOOD]}
    assert not lr_too_high(GOOD)
    assert ratio_hint(0.05, curves) == ""
    assert ratio_hint(0.05) == ""  # without curves a high ratio alone proves nothing
    assert curve_notes(curves) == []
    assert not lr_too_high([2.3, 2.1, 1.9, 1.95, 1.7, 1.72, 1.5])  # small upticks in a steady descent


def test_last_ratio_skips_non_finite_values() -> None:
    assert last_ratio({"update_ratio": [1e-3, 2e-3, math.nan]}) == 2e-3
    assert last_ratio({"train_loss": [1.0]}) is None


@pytest.mark.parametrize(
    ("curves", "notes"),
    [
        ({"train_loss": [2.0, 1.0, 0.5, 0.45, 0.44], "val_loss": [2.0, 1.1, 0.6, 0.55, 0.55]}, []),
        ({"train_loss": [2.0, 1.5, 1.0, 0.5]}, ["undertrained"]),
        ({"train_loss": [2.0, 1.0, 0.5, 0.3, 0.2], "val_loss": [2.0, 1.0, 0.6, 0.8, 1.0]}, ["overfitting"]),
        ({"train_loss": [2.3, 1.9, float("nan"), float("nan")]}, ["unstable: lr too high?"]),
        ({"train_loss": [2.30, 2.30, 2.29, 2.30]}, ["flat: lr too low or dead"]),
        ({"train_loss": [1.0, 0.5, 0.9, 1.2]}, ["unstable: lr too high?"]),
        ({"train_loss": [2.0, 1.0]}, []),  # two epochs tell no shape
    ],
)
def test_curve_notes_shapes(curves: dict[str, list[float]], notes: list[str]) -> None:
    assert curve_notes(curves) == notes


# Validation losses of 15 epochs; the train loss falls throughout.
TRAIN = [2.1, 1.5, 1.1, 0.85, 0.7, 0.6, 0.52, 0.46, 0.41, 0.37, 0.34, 0.31, 0.29, 0.27, 0.25]
NOISY_DESCENT = [1.69, 1.3, 1.05, 0.88, 0.78, 0.66, 0.6, 0.55, 0.5, 0.47, 0.44, 0.41, 0.45, 0.42, 0.44]
LATE_UPTICK = [1.69, 1.3, 1.05, 0.88, 0.78, 0.66, 0.6, 0.55, 0.5, 0.47, 0.45, 0.44, 0.43, 0.41, 0.46]
NOISY_PLATEAU = [1.69, 1.1, 0.8, 0.62, 0.55, 0.5, 0.47, 0.45, 0.44, 0.41, 0.46, 0.43, 0.44, 0.42, 0.45]
U_SHAPED = [1.69, 1.2, 0.9, 0.72, 0.62, 0.56, 0.54, 0.55, 0.58, 0.6, 0.64, 0.66, 0.7, 0.73, 0.78]
NOISY_U = [1.69, 1.2, 0.9, 0.7, 0.6, 0.58, 0.55, 0.6, 0.57, 0.63, 0.62, 0.68, 0.66, 0.72, 0.75]


@pytest.mark.parametrize("val", [NOISY_DESCENT, LATE_UPTICK, NOISY_PLATEAU])
def test_overfitting_does_not_fire_on_a_noisy_epoch(val: list[float]) -> None:
    """The MNIST-1D report: val loss 1.69 -> 0.41 with one epoch > 5% above the minimum was called overfitting."""
    assert max(val[val.index(min(val)) :]) > 1.05 * min(val)  # the old rule's trigger is there
    assert not overfits(TRAIN, val)
    assert "overfitting" not in curve_notes({"train_loss": TRAIN, "val_loss": val})


@pytest.mark.parametrize("val", [U_SHAPED, NOISY_U])
def test_overfitting_fires_on_a_sustained_rise_while_train_falls(val: list[float]) -> None:
    assert overfits(TRAIN, val)
    assert "overfitting" in curve_notes({"train_loss": TRAIN, "val_loss": val})
    assert not overfits([2.1] + [0.9] * 14, val)  # train loss stuck too: no growing gap, no overfitting
    assert not overfits(TRAIN[:4], val[:4])  # too few epochs for a trend


def test_leaderboard_appends_diagnostics_after_existing_columns(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = run_cli("coarse", study_file(coarse="trials = 4\nepochs = 4\nseed = 0"), "-q")
    assert code == 0, err
    df = leaderboard(Store("fake"))
    expected_head = [
        "rank",
        "trial",
        "stage",
        "state",
        "reason",
        "val_accuracy",
        "lr",
        "momentum",
        "epochs",
        "duration_s",
        "border",
    ]
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

    outcome = run_trial(
        load_workload(f"{BROKEN}:no_watch"), TrialContext(TrialRecord(0, {"lr": 0.1}, 2, 0)), "val_accuracy"
    )
    assert outcome.state == "complete"
    assert "update_ratio" not in outcome.curves
    assert len(outcome.curves["train_loss"]) == 2


@pytest.mark.torch
def test_leaderboard_csv_has_ratio_and_hint_for_a_watched_workload(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path
) -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    path = study_file(workload=f"{BROKEN}:good", coarse="trials = 3\nepochs = 2\nseed = 0")
    assert run_cli("coarse", path, "-q")[0] == 0
    code, out, _ = run_cli("leaderboard", "fake", "--csv", "-")
    assert code == 0
    header = out.splitlines()[0].split(",")
    assert header[-3:] == ["update_ratio", "lr_hint", "notes"]
    df = leaderboard(Store("fake"))
    assert df["update_ratio"].notna().all()
