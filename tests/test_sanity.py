"""hpsearch sanity: built-in and example workloads pass; each deliberately broken workload fails its check."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.instruments.sanity import FAIL, NA, PASS, SKIP, WARN, _regression_fell, candidate_lrs, run_sanity
from hpsearch.spec import load_spec

pytestmark = pytest.mark.torch
ROOT = Path(__file__).parent.parent
BROKEN = Path(__file__).parent / "workloads" / "broken.py"
REGRESSION = Path(__file__).parent / "workloads" / "regression.py"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Tiny models: thread start-up costs more than the maths on a shared 2-core machine.
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)


def _statuses(spec_path: Path) -> dict[str, str]:
    report = run_sanity(load_spec(spec_path))
    return {c.name.split()[0]: c.status for c in report.checks}


def test_sanity_digits_mlp_passes_and_exits_0(run_cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, out, err = run_cli("sanity", ROOT / "studies" / "digits_mlp.toml", "--dir", tmp_path / "r")
    assert code == 0, err
    assert out.count("PASS") == 2
    assert "log(10)" in out
    saved = json.loads((tmp_path / "r" / "digits_mlp" / "sanity.json").read_text())  # --dir: where it is kept
    assert saved["passed"] is True and [c["status"] for c in saved["checks"]] == ["PASS", "PASS"]


def test_sanity_example_user_workload_passes() -> None:
    assert _statuses(ROOT / "studies" / "example.toml") == {"initial": PASS, "overfit": PASS}


def test_sanity_softmax_before_cross_entropy_fails_overfit(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    path = study_file(workload=f"{BROKEN}:softmax_before_ce")
    code, _, _ = run_cli("sanity", path)
    assert code == 1
    report = run_sanity(load_spec(path))
    initial, overfit = report.checks
    assert initial.status == PASS  # softmaxed logits still start near log(C): only overfitting exposes it
    assert overfit.status == FAIL
    assert "softmax" in overfit.advice
    assert "loss 1." in overfit.measured or "loss 2." in overfit.measured  # stuck far above zero


def test_sanity_huge_init_warns_on_initial_loss(study_file: Callable[..., Path]) -> None:
    report = run_sanity(load_spec(study_file(workload=f"{BROKEN}:huge_init")))
    initial = report.checks[0]
    assert initial.status == WARN
    assert float(initial.measured) > 2 * 2.303
    assert not report.passed


def test_sanity_workload_ignoring_subset_fails(study_file: Callable[..., Path]) -> None:
    report = run_sanity(load_spec(study_file(workload=f"{BROKEN}:ignores_subset")))
    assert report.checks[1].status == FAIL
    assert "trial.subset" in report.checks[1].advice


def test_sanity_plain_workload_without_watch_skips(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    path = study_file(workload=f"{BROKEN}:no_watch")
    report = run_sanity(load_spec(path))
    assert [c.status for c in report.checks] == [SKIP, SKIP]
    assert "trial.watch" in report.checks[0].advice
    assert run_cli("sanity", path)[0] == 1


def test_candidate_lrs_stay_inside_the_study_range() -> None:
    assert candidate_lrs(1e-4, 1.0) == [1e-1, 1e-2, 1e-3]
    assert candidate_lrs(1e-5, 5e-3) == [1e-3]
    assert candidate_lrs(2.0, 8.0) == [pytest.approx(4.0)]


# ---------------------------------------------------------------- regression workloads


def _regression(study_file: Callable[..., Path], name: str) -> Path:
    return study_file(workload=f"{REGRESSION}:{name}", metric="val_loss", direction="minimize")


def test_sanity_regression_initial_loss_is_not_applicable_and_counts_as_passed(study_file: Callable[..., Path]) -> None:
    report = run_sanity(load_spec(_regression(study_file, "mlp")))
    initial, overfit = report.checks
    assert initial.status == NA and "not applicable" in initial.advice and "regression" in initial.advice
    assert "log(2)" not in initial.expected  # a [B, 1] prediction is no 2-class logit
    assert overfit.status == PASS and "1% of its initial value" in overfit.expected
    assert "accuracy" not in overfit.measured
    assert report.passed


def test_sanity_regression_gaussian_nll_passes_by_an_absolute_fall(study_file: Callable[..., Path]) -> None:
    report = run_sanity(load_spec(_regression(study_file, "gaussian")))
    initial, overfit = report.checks
    assert initial.status == NA and overfit.status == PASS
    assert float(overfit.measured.split()[1]) < 0  # the NLL went negative: the ratio test cannot apply
    assert report.passed


def test_sanity_regression_model_that_cannot_fit_fails(study_file: Callable[..., Path]) -> None:
    report = run_sanity(load_spec(_regression(study_file, "linear_on_noise")))
    overfit = report.checks[1]
    assert overfit.status == FAIL and "targets" in overfit.advice and "accuracy" not in overfit.advice
    assert not report.passed


def test_sanity_regression_cli_exits_0(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, out, _ = run_cli("sanity", _regression(study_file, "mlp"))
    assert code == 0 and "N/A" in out and "PASS" in out


def test_sanity_regression_fall_rule() -> None:
    assert _regression_fell(2.0, 0.019, False) and not _regression_fell(2.0, 0.021, False)  # to 1%
    assert not _regression_fell(0.2, -0.05, True)  # barely negative: no 1% ratio for a loss of either sign
    assert _regression_fell(0.2, -2.2, True) and not _regression_fell(0.2, -2.0, True)  # a fall of log(10)
    assert not _regression_fell(1.0, float("nan"), False)
