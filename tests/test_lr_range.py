"""hpsearch lr-find: the suggested range trains on digits; the suggestion rule; --apply edits the study file."""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.instruments.lr_range import apply_range, find_lr_range, suggest
from hpsearch.spec import load_spec

ROOT = Path(__file__).parent.parent
BROKEN = Path(__file__).parent / "workloads" / "broken.py"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)  # tiny models: threads cost more than they save


def _val_accuracy(lr: float) -> float:
    from hpsearch.workloads.api import TrialContext, TrialRecord
    from hpsearch.workloads.function import run_trial
    from hpsearch.workloads.loader import load_workload

    fn = load_workload("hpsearch.workloads.digits:mlp")
    outcome = run_trial(
        fn, TrialContext(TrialRecord(0, {"lr": lr, "momentum": 0.9, "weight_decay": 0.0}, 2, 0)), "val_accuracy"
    )
    value = outcome.metrics.get("val_accuracy", math.nan)
    return value if math.isfinite(value) else 0.0


@pytest.mark.torch
def test_lr_find_digits_suggests_a_range_that_trains(tmp_path: Path) -> None:
    from hpsearch.report.plots import plot_lr_range

    found = find_lr_range(load_spec(ROOT / "studies" / "digits_mlp.toml"))
    assert 1e-6 < found.low < found.high < 10
    plot = plot_lr_range(found, tmp_path / "lr_find.png")
    assert plot.stat().st_size > 10_000
    middle = math.sqrt(found.low * found.high)
    good = _val_accuracy(middle)
    assert good > _val_accuracy(1e-6)
    assert good > _val_accuracy(10.0)
    assert good > 0.5


@pytest.mark.torch
def test_lr_find_cli_applies_the_range_with_a_backup(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    spec_path = tmp_path / "example.toml"
    shutil.copy(ROOT / "studies" / "example.toml", spec_path)
    shutil.copy(ROOT / "studies" / "example_workload.py", tmp_path / "example_workload.py")
    code, out, err = run_cli("lr-find", spec_path, "--apply", "--iterations", "150", "--dir", tmp_path / "res")
    assert code == 0, err
    assert "suggested lr range" in out
    assert (tmp_path / "res" / "example" / "lr_find.png").is_file()
    lr = load_spec(spec_path).space["lr"]
    assert (lr.low, lr.high) != (1e-4, 1.0)
    assert load_spec(spec_path.with_name("example.toml.bak")).space["lr"].low == 1e-4


@pytest.mark.torch
def test_lr_find_plain_workload_without_watch_is_an_error(study_file: Callable[..., Path]) -> None:
    with pytest.raises(HpsearchError, match=r"trial.watch"):
        find_lr_range(load_spec(study_file(workload=f"{BROKEN}:no_watch")))


def test_suggest_spans_steep_fall_to_minimum() -> None:
    lrs = [10 ** (-7 + 8 * i / 99) for i in range(100)]  # 1e-7 .. 10
    # flat at 2.3 up to 1e-3, falls to 0.3 by 1e-1, then blows up
    losses = [
        2.3 if lr < 1e-3 else max(0.3, 2.3 - 1.0 * math.log10(lr / 1e-3)) if lr <= 1e-1 else 0.3 * (lr / 1e-1) ** 2
        for lr in lrs
    ]
    low, high = suggest(lrs, losses)
    assert 1e-3 <= low <= 3e-3
    assert 0.08 <= high <= 0.2


def test_suggest_flat_loss_is_an_error() -> None:
    with pytest.raises(HpsearchError, match="never fell"):
        suggest([1e-6, 1e-5, 1e-4, 1e-3], [2.3, 2.3, 2.29, 2.3])


def test_apply_range_edits_only_low_and_high_of_lr(tmp_path: Path, study_file: Callable[..., Path]) -> None:
    path = study_file()
    before = path.read_text()
    backup = apply_range(path, 0.002, 0.3)
    after = path.read_text()
    assert backup.read_text() == before
    lr = load_spec(path).space["lr"]
    assert (lr.low, lr.high, lr.log) == (0.002, 0.3, True)
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("low = 1e-4", "low = 0.002"), ("high = 1.0", "high = 0.3")]


def test_apply_range_refuses_a_value_set(study_file: Callable[..., Path]) -> None:
    path = study_file(params="[params.lr]\nvalues = [0.1, 0.01]\n")
    with pytest.raises(SpecError, match="value set"):
        apply_range(path, 0.001, 0.1)
    assert not path.with_name(path.name + ".bak").exists()


@pytest.mark.torch
def test_lr_find_keeps_the_sweep_when_the_workload_raises_on_nan(study_file: Callable[..., Path]) -> None:
    found = find_lr_range(load_spec(study_file(workload=f"{BROKEN}:raises_on_nan")))
    assert found.low < found.high
    assert len(found.lrs) >= 10
