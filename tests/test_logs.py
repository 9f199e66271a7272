"""Trial logs: a trial's stdout and stderr go to its own file, never into the command's data.

The CLI runs in this process; its stdout and stderr are read at the file
descriptor level (capfd), so output a worker process or a child writes
straight to fd 1 or 2 is seen too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial

from hpsearch import cli
from hpsearch.store.storage import Store
from hpsearch.trials import LOG_ATTR, LOG_TAIL_ATTR, trial_attr
from hpsearch.workloads.api import TrialOutcome, TrialRecord
from hpsearch.workloads.capture import TAIL_LINES, run_captured

NOISY = Path(__file__).parent / "workloads" / "noisy.py"
LR_ONLY = "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n"
LINES = 40  # what noisy.train prints per stream

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run_fd(capfd: pytest.CaptureFixture[str]) -> Cli:
    """Run the CLI in-process: (exit code, stdout, stderr), both read at the fd level."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = cli.run([str(a) for a in args])
        out, err = capfd.readouterr()
        return code, out, err

    return invoke


def noisy_study(study_file: Callable[..., Path]) -> Path:
    return study_file(workload=f"{NOISY}:train", coarse="trials = 3\nepochs = 1", params=LR_ONLY)


def stored(name: str = "fake", stage: str = "coarse") -> list[FrozenTrial]:
    store = Store(name)
    return sorted(store.trials(store.stage(stage)), key=lambda t: t.number)


def log_file(trial: FrozenTrial) -> Path:
    host, _, path = trial_attr(trial, LOG_ATTR).partition(":")
    assert host == socket.gethostname()
    return Path(path)


# ----------------------------------------------------------------------------- capture through the CLI


@pytest.mark.parametrize("workers", ["1", "0"])
def test_noisy_workload_output_goes_to_each_trials_log_not_stdout(
    study_file: Callable[..., Path], run_fd: Cli, tmp_path: Path, workers: str
) -> None:
    code, out, err = run_fd("coarse", noisy_study(study_file), "--workers", workers)
    assert code == 0, err
    assert out.lstrip().startswith("fake coarse: top 3")  # the leaderboard, and only it
    assert sum(line.startswith("[coarse] trial ") for line in err.splitlines()) == 3  # the live view stays
    for noise in ("stdout line", "stderr line", "last words", "child says hi"):
        assert noise not in out
    if workers == "1":  # a worker's fds 1 and 2 both point at the log: stderr stays the command's own too
        assert "stdout line" not in err and "stderr line" not in err and "child says hi" not in err
    trials = stored()
    assert len(trials) == 3
    for t in trials:
        path = log_file(t)
        assert path == tmp_path / "results" / "fake" / "logs" / "coarse" / f"trial-{t.number}.log"
        text = path.read_text()
        for i in (0, LINES - 1):
            assert f"trial {t.number} stdout line {i}\n" in text and f"trial {t.number} stderr line {i}\n" in text
        assert "child says hi" in text  # fd 1 is captured in both modes
        assert not any(f"trial {other} " in text for other in range(3) if other != t.number)  # its own only
        tail = trial_attr(t, LOG_TAIL_ATTR).splitlines()
        assert len(tail) == TAIL_LINES and tail[-1] == f"trial {t.number} last words"


def test_logs_prints_the_trials_log_file(study_file: Callable[..., Path], run_fd: Cli) -> None:
    code, _, err = run_fd("coarse", noisy_study(study_file), "-q", "--workers", "0")
    assert code == 0, err
    code, out, err = run_fd("logs", "fake", "1", "--stage", "coarse")
    assert code == 0, err
    assert out == log_file(stored()[1]).read_text() and err == ""
    code, out, _ = run_fd("logs", "fake", "2")  # the latest stage by default
    assert code == 0 and "trial 2 stdout line 0" in out


def test_logs_without_the_file_prints_the_stored_tail_and_says_where_the_log_is(
    study_file: Callable[..., Path], run_fd: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run_fd("coarse", noisy_study(study_file), "-q", "--workers", "0")
    assert code == 0, err
    trial = stored()[0]
    ref = trial_attr(trial, LOG_ATTR)
    with monkeypatch.context() as patch:
        patch.setattr(socket, "gethostname", lambda: "another-machine")
        code, out, err = run_fd("logs", "fake", "0")
    assert code == 0, err
    assert out == trial_attr(trial, LOG_TAIL_ATTR) + "\n" and out.splitlines()[-1] == "trial 0 last words"
    assert err.splitlines() == [f"the full log of trial 0 lives on {ref}; above: its last lines, as stored"]
    log_file(trial).unlink()
    code, out, err = run_fd("logs", "fake", "0")
    assert code == 0 and out.splitlines()[-1] == "trial 0 last words"
    assert f"was at {ref}, gone now" in err


def test_logs_errors_are_one_line(study_file: Callable[..., Path], run_fd: Cli, tmp_path: Path) -> None:
    code, _, err = run_fd("coarse", noisy_study(study_file), "-q", "--workers", "0")
    assert code == 0, err
    code, out, err = run_fd("logs", "fake", "7")
    assert (code, out) == (2, "")
    assert err == "Error: stage coarse of study 'fake' has no trial 7; its trials are 0 to 2\n"
    code, _, err = run_fd("logs", "fake", "0", "--stage", "refine-1")
    assert code == 2 and err.startswith("Error: study 'fake' has no stage 'refine-1'")
    # A trial that recorded no log (one from before logs were kept).
    store = Store("fake")
    info = store.stage("coarse")
    study = optuna.load_study(study_name=info.optuna_name, storage=store.storage)
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.01},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 1.0, log=True)},
            value=0.5,
        )
    )
    code, out, err = run_fd("logs", "fake", "3")
    assert (code, out) == (2, "") and err.startswith("Error: trial 3 of fake coarse (complete) has no log")
    assert len(err.splitlines()) == 1
    # A trial still running (no log recorded yet) whose file is on this machine: the file is shown.
    (tmp_path / "results" / "fake" / "logs" / "coarse" / "trial-3.log").write_text("epoch 1 of 9\n")
    code, out, _ = run_fd("logs", "fake", "3")
    assert (code, out) == (0, "epoch 1 of 9\n")


# ----------------------------------------------------------------------------- the capture itself


def _record(number: int, log_path: Path | str, workdir: Path | str = "") -> TrialRecord:
    return TrialRecord(number, {}, 1, 0, log_path=str(log_path), workdir=str(workdir))


def test_capture_restores_the_streams_and_the_folder(tmp_path: Path) -> None:
    before_fd1, before_stdout, before_cwd = os.fstat(1).st_ino, sys.stdout, os.getcwd()
    (tmp_path / "study").mkdir()

    def body() -> list[TrialOutcome]:
        print("to sys.stdout")
        print("to sys.stderr", file=sys.stderr)
        os.write(1, b"to fd 1\n")
        print(f"cwd {os.getcwd()}")
        return [TrialOutcome("complete")]

    [outcome] = run_captured([_record(0, tmp_path / "logs" / "trial-0.log", tmp_path / "study")], False, body)
    text = (tmp_path / "logs" / "trial-0.log").read_text()
    assert text == f"to sys.stdout\nto sys.stderr\nto fd 1\ncwd {tmp_path / 'study'}\n"  # in order
    assert (
        outcome.log == f"{socket.gethostname()}:{tmp_path / 'logs' / 'trial-0.log'}"
        and outcome.log_tail == text.strip()
    )
    assert (os.fstat(1).st_ino, sys.stdout, os.getcwd()) == (before_fd1, before_stdout, before_cwd)


def test_capture_population_shares_the_first_members_log(tmp_path: Path) -> None:
    records = [_record(n, tmp_path / f"trial-{n}.log") for n in (4, 5, 6)]

    def body() -> list[TrialOutcome]:
        print("trained together")
        return [TrialOutcome("complete") for _ in records]

    outcomes = run_captured(records, False, body)
    assert {o.log for o in outcomes} == {f"{socket.gethostname()}:{tmp_path / 'trial-4.log'}"}
    assert {o.log_tail for o in outcomes} == {"trained together"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-4.log"]


def test_capture_missing_workdir_or_no_log_path_still_runs(tmp_path: Path) -> None:
    here = os.getcwd()
    missing = tmp_path / "not-on-this-machine"

    def body() -> list[TrialOutcome]:
        assert os.getcwd() == here
        return [TrialOutcome("complete")]

    [outcome] = run_captured([_record(0, tmp_path / "trial-0.log", missing)], False, body)
    assert f"the study's folder {missing} is not on this machine" in (tmp_path / "trial-0.log").read_text()
    with contextlib.redirect_stdout(io.StringIO()) as seen:
        [outcome] = run_captured([_record(1, "", "")], False, lambda: [print("shown") or TrialOutcome("complete")])  # type: ignore[func-returns-value]
    assert (outcome.log, outcome.log_tail, seen.getvalue()) == ("", "", "shown\n")


# ----------------------------------------------------------------------------- the bound on a trial's log

STALLS = Path(__file__).parent / "workloads" / "stalls.py"
MB = 1_000_000


def _check_bounded(path: Path, limit: int) -> None:
    """A log of a trial that printed 20 MB, bounded to `limit` bytes: its head, one left-out line, its tail."""
    from tests.workloads.stalls import FIRST_LINE, LAST_LINE

    data = path.read_bytes()
    left_out = [line for line in data.split(b"\n") if line.startswith(b"[hpsearch: ")]
    assert len(left_out) == 1, left_out
    assert len(data) <= limit + len(left_out[0]) + 2  # the limit, and the one line
    assert FIRST_LINE.encode() + b"\n" in data[:100] and data.endswith(
        LAST_LINE.encode() + b"\n"
    )  # (a command's report first)
    assert b" bytes left out here (log_limit 1 MB: first 500 kB and last 500 kB kept)]" in left_out[0]
    assert int(left_out[0].split()[1].replace(b",", b"")) > 18 * MB


@pytest.mark.parametrize(
    ("kind", "workers", "setting"),
    [("function", "1", "study file"), ("command", "1", "flag"), ("function", "0", "flag")],
)
def test_loud_trial_log_keeps_head_and_tail_within_the_limit(
    study_file: Callable[..., Path], run_fd: Cli, tmp_path: Path, kind: str, workers: str, setting: str
) -> None:
    """20 MB printed, log_limit 1 MB (from the study file or --log-limit): the log holds the first and the
    last half MB and one line saying what was left out; the stored tail is the log's end, as before."""
    from tests.workloads.stalls import LAST_LINE

    path = study_file(workload=f"{STALLS}:prints_a_lot", coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    if kind == "command":  # the same prints, from a script: its output reaches the log through the worker's
        workload = f"[workload]\ncommand = {json.dumps(f'python {STALLS}')}\n\n"
        text = path.read_text().replace(f'workload = "{STALLS}:prints_a_lot"\n', "")
        path.write_text(text.replace("[coarse]", workload + "[coarse]"))
    if setting == "study file":
        path.write_text('log_limit = "1MB"\n' + path.read_text())
    flags = ["--log-limit", "1MB"] if setting == "flag" else []
    code, _, err = run_fd("coarse", path, "-q", "--workers", workers, *flags)
    assert code == 0, err
    trials = stored()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:
        _check_bounded(log_file(t), MB)
        assert trial_attr(t, LOG_TAIL_ATTR).splitlines()[-1] == LAST_LINE


@pytest.mark.parametrize(
    ("function", "reason"), [("prints_then_hangs", "timeout"), ("prints_then_dies", "worker died (signal 9)")]
)
def test_killed_worker_leaves_a_bounded_log_with_its_latest_tail(
    study_file: Callable[..., Path],
    run_fd: Cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    function: str,
    reason: str,
) -> None:
    """A trial prints 20 MB, then hangs until --trial-timeout ends its worker's group, or SIGKILLs its worker
    alone: its log keeper, ended with it or told by the kernel, still saves the head, the left-out line and
    the last lines printed."""
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("HPSEARCH_TEST_MARKERS", str(markers))
    path = study_file(
        workload=f"{STALLS}:{function}", coarse="trials = 1\nepochs = 1\nmax_failures = 1", params=LR_ONLY
    )
    path.write_text("attempts = 1\n" + path.read_text())  # a killed worker's trial is not resumed: one run, one log
    code, _, err = run_fd("coarse", path, "-q", "--workers", "1", "--log-limit", "1MB", "--trial-timeout", "3")
    assert code == 1, err  # its only trial failed
    [trial] = stored()
    assert trial.user_attrs["reason"] == reason
    _check_bounded(log_file(trial), MB)
    from hpsearch.procs import group_members

    assert not any(group_members(int(p.name.split("-")[0])) for p in markers.iterdir())  # the keeper went too
