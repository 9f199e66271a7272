"""A user's first real study, not the demo: names, numbers, losses, failures and edits as real code has them."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pandas as pd
import pytest

REAL = Path(__file__).parent / "workloads" / "real.py"

NAMED_PARAMS = textwrap.dedent(
    """
    [params.rank]
    values = [2, 4, 8, 16, 32]

    [params.state]
    values = ["cold", "warm"]

    [params.epochs]
    low = 1
    high = 20
    type = "int"
    """
)


def test_real_params_named_like_leaderboard_columns_work_and_stay_ints(run_cli, study_file, tmp_path):
    spec = study_file(workload=f"{REAL}:named", coarse="trials = 6\nepochs = 1", params=NAMED_PARAMS)
    code, out, err = run_cli("coarse", spec, "-q", "--workers", "0")
    assert code == 0, err
    code, out, err = run_cli("leaderboard", "fake", "--csv", "-")
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 6
    # The params keep their names; the leaderboard's own rank/state/epochs columns move aside.
    assert {"rank", "state", "epochs", "hpsearch_rank", "hpsearch_state", "hpsearch_epochs"} <= set(df.columns)
    assert set(df["hpsearch_state"]) == {"COMPLETE"} and set(df["state"]) <= {"cold", "warm"}
    assert df["rank"].dtype.kind == "i" and df["epochs"].dtype.kind == "i"  # ints, never 8.0
    assert list(df["hpsearch_rank"]) == [1, 2, 3, 4, 5, 6]
    assert df["steps"].notna().all()  # a numpy int64 metric is a number
    code, _, err = run_cli("refine", "fake", "-q", "--workers", "0", "--trials", "3")
    assert code == 0, err


def test_real_param_named_like_the_metric_is_refused_up_front(run_cli, study_file):
    params = "[params.val_accuracy]\nlow = 0.1\nhigh = 1.0\n"
    code, _, err = run_cli("coarse", study_file(params=params), "-q")
    assert code == 2 and "params.val_accuracy: has the name of the metric" in err


def test_real_negative_falling_loss_is_not_divergence(run_cli, study_file):
    spec = study_file(
        workload=f"{REAL}:gaussian_nll",
        metric="val_loss",
        direction="minimize",
        coarse="trials = 5\nepochs = 4",
        params="[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n",
    )
    code, _, err = run_cli("coarse", spec, "-q", "--workers", "0")
    assert code == 0, err
    df = pd.read_csv(io.StringIO(run_cli("leaderboard", "fake", "--csv", "-")[1]))
    assert set(df["state"]) == {"COMPLETE"}, df[["state", "reason"]]


def test_real_stage_that_cannot_reach_its_target_says_so_and_exits_1(run_cli, study_file):
    spec = study_file(workload=f"{REAL}:disk_fills_after_three", coarse="trials = 10\nepochs = 1")
    code, _, err = run_cli("coarse", spec, "-q", "--workers", "0")
    assert code == 1
    assert (
        "stage coarse stopped short: 3 of 10 trials completed, "
        "10 failed (OSError: [Errno 28] No space left on device ×10)" in err
    )
    assert "Traceback" not in err
    df = pd.read_csv(io.StringIO(run_cli("leaderboard", "fake", "--csv", "-")[1]))
    assert (df["state"] == "COMPLETE").sum() == 3  # nothing completed is lost
    # Running again continues the stage; --max-failures caps the failures of one run.
    code, _, err = run_cli("coarse", spec, "-q", "--workers", "0", "--max-failures", "2")
    assert code == 1 and "every trial of stage coarse failed (2 tried)" in err
    df = pd.read_csv(io.StringIO(run_cli("leaderboard", "fake", "--csv", "-")[1]))
    assert (df["state"] == "COMPLETE").sum() == 3 and (df["state"] == "FAIL").sum() == 12


def test_real_edited_study_file_replaces_a_stage_with_no_completed_trial(run_cli, study_file):
    broken = study_file(workload="always_fails", coarse="trials = 3\nepochs = 1")
    code, _, err = run_cli("coarse", broken, "-q", "--workers", "0")
    assert code == 1
    fixed = study_file(workload="peak_inside", coarse="trials = 3\nepochs = 1")  # same study, workload fixed
    code, _, err = run_cli("coarse", fixed, "-q", "--workers", "0")
    assert code == 0, err
    assert "replaced it with" in err and "workload changed" in err
    df = pd.read_csv(io.StringIO(run_cli("leaderboard", "fake", "--csv", "-")[1]))
    assert len(df) == 3 and set(df["state"]) == {"COMPLETE"}


def test_real_edited_study_file_after_results_names_the_way_out(run_cli, study_file):
    run_cli("coarse", study_file(coarse="trials = 2\nepochs = 1"), "-q", "--workers", "0")
    edited = study_file(coarse="trials = 2\nepochs = 1", params="[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n")
    code, _, err = run_cli("coarse", edited, "-q", "--workers", "0")
    assert code == 2 and "params: differs from the coarse stage" in err and "hpsearch delete NAME" in err
    code, _, err = run_cli("delete", "fake", "--yes")
    assert code == 0 and "deleted coarse of fake (2 trials)" in err, err
    code, _, err = run_cli("coarse", edited, "-q", "--workers", "0")
    assert code == 0, err


def test_real_delete_latest_stages_only_and_asks_when_not_told(run_cli, study_file, monkeypatch):
    run_cli("coarse", study_file(coarse="trials = 4\nepochs = 1"), "-q", "--workers", "0")
    run_cli("refine", "fake", "-q", "--workers", "0", "--trials", "2")
    run_cli("refine", "fake", "-q", "--workers", "0", "--trials", "2")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    code, _, err = run_cli("delete", "fake", "--stage", "refine-1")
    assert code == 2 and "pass --yes" in err
    code, _, err = run_cli("delete", "fake", "--stage", "refine-1", "--yes")
    assert code == 0 and "deleted refine-1, refine-2 of fake" in err
    df = pd.read_csv(io.StringIO(run_cli("leaderboard", "fake", "--stage", "all", "--csv", "-")[1]))
    assert set(df["stage"]) == {"coarse"} and len(df) == 4
    code, _, err = run_cli("delete", "fake", "--stage", "refine-9", "--yes")
    assert code == 2 and "no stage 'refine-9'" in err


def test_real_numpy_and_tensor_results_are_numbers():
    np = pytest.importorskip("numpy")
    from hpsearch.workloads.api import normalize_result

    assert normalize_result(np.float32(0.25), "m") == {"m": 0.25}
    assert normalize_result({"a": np.int64(3), "b": 2}, "m") == {"a": 3.0, "b": 2.0}
    torch = pytest.importorskip("torch")
    assert normalize_result(torch.tensor(0.5), "m") == {"m": 0.5}
    with pytest.raises(ValueError, match="return a dict of metrics or a number"):
        normalize_result("0.5", "m")
