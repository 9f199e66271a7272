"""Command workloads (workloads/command.py): a user's argparse script, run per trial as a real process.

The script is tests/workloads/script_train.py, copied next to each study file;
its --mode picks a misbehaviour. No test asserts on wall-clock time: stops are
checked by the epoch they happened at and by which processes are left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.dispatch import PoolExecutor
from hpsearch.dispatch.plan import WorkerSlot
from hpsearch.errors import TrialFailed, TrialStopped
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import trial_attr, trial_params
from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads.command import CommandWorkload, emit, parse_report

SCRIPT = Path(__file__).parent / "workloads" / "script_train.py"
Cli = Callable[..., tuple[int, str, str]]


def write_study(
    folder: Path,
    command: str,
    params: str = "[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n",
    coarse: str = "trials = 4\nepochs = 3",
    name: str = "cmd",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPT, folder / "train.py")
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nmetric = "val_accuracy"\n\n[workload]\ncommand = {json.dumps(command)}\n\n'
        f"[coarse]\n{coarse}\nmax_failures = 20\n\n[refine]\ntrials = 3\nepochs = 4\n\n{params}"
    )
    return path


def stored(name: str = "cmd", stage: str = "coarse") -> list:
    store = Store(name)
    return store.trials(store.stage(stage))


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent's wait is missing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def seen(markers: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(markers.glob("script-*"))]


def pids(markers: Path, prefix: str) -> list[int]:
    return [int(p.name.split("-")[1]) for p in markers.glob(f"{prefix}-*")]


MODES = '[params.lr]\nvalues = [0.1]\n\n[params.mode]\nvalues = ["ok", "exit3", "kill9", "silent"]\n'
FAULT_COMMAND = "python train.py --lr {lr} --epochs {epochs} --mode {mode} --markers {markers}"


# ----------------------------------------------------------------------------- end to end through the CLI


def test_command_argparse_script_coarse_and_refine_from_another_folder(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = tmp_path / "markers"
    path = write_study(
        tmp_path / "study",
        f"python train.py --lr {{lr}} --momentum {{momentum}} --epochs {{epochs}} --seed {{seed}} --markers {markers}",
        params="[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n\n[params.momentum]\nlow = 0.5\nhigh = 0.99\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    trials = stored()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    for t in trials:
        assert len(trial_attr(t, "curves")["val_loss"]) == 3  # one report per epoch, noise lines between them
        assert set(trial_attr(t, "metrics")) == {"train_loss", "val_loss", "val_accuracy"}
        log = trial_attr(t, "log_tail")
        assert "some progress bar text {not json}" in log and "noise {on a line" in log and "done" in log
    runs = seen(markers)
    assert {r["cwd"] for r in runs} == {str(path.parent)}  # the study file's folder, not the caller's
    assert os.getcwd() == str(elsewhere)
    for r in runs:
        env = r["env"]
        assert env["HPSEARCH_STUDY"] == "cmd" and env["HPSEARCH_STAGE"] == "coarse" and env["HPSEARCH_SPLIT"] == "val"
        params = json.loads(env["HPSEARCH_PARAMS"])
        assert r["argv"][:2] == ["--lr", repr(params["lr"])]  # the exact value, as one argument
        assert r["argv"][r["argv"].index("--seed") + 1] == env["HPSEARCH_SEED"]
    code, _, err = run_cli("refine", "cmd", "--workers", "2")
    assert code == 0, err
    refined = stored(stage="refine-1")
    assert len(refined) == 3 and all(t.state.name == "COMPLETE" for t in refined)
    assert all(len(trial_attr(t, "curves")["val_loss"]) == 4 for t in refined)  # refine's epochs reached the script
    code, _, err = run_cli("leaderboard", "cmd", "--stage", "all", "--csv", tmp_path / "lb.csv")
    assert code == 0 and len((tmp_path / "lb.csv").read_text().splitlines()) == 1 + 4 + 3


def test_command_exit_code_signal_and_missing_metric_are_failures_with_reasons(tmp_path: Path, run_cli: Cli) -> None:
    markers = tmp_path / "markers"
    path = write_study(
        tmp_path / "study",
        FAULT_COMMAND.replace("{markers}", str(markers)),
        MODES,
        'strategy = "grid"\ntrials = 4\nepochs = 2',
    )
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    reasons = {t.params["mode"]: (t.state.name, t.user_attrs.get("reason", "")) for t in stored()}
    assert reasons["ok"] == ("COMPLETE", "")
    assert reasons["exit3"] == ("FAIL", "exit code 3: RuntimeError: CUDA out of memory (pretend)")
    assert reasons["kill9"] == ("FAIL", f"signal {signal.SIGKILL.value} (SIGKILL)")
    state, reason = reasons["silent"]
    assert state == "FAIL" and 'printed no "val_accuracy"' in reason and '{"epoch": 1, "val_accuracy": 0.9}' in reason


@pytest.mark.parametrize("workers", ["0", "1"])
def test_command_nan_is_stopped_at_the_epoch_it_diverged(tmp_path: Path, run_cli: Cli, workers: str) -> None:
    markers = tmp_path / "markers"
    path = write_study(
        tmp_path / "study",
        f"python train.py --lr {{lr}} --epochs {{epochs}} --mode nan --markers {markers}",
        "[params.lr]\nvalues = [0.1]\n",
        "trials = 1\nepochs = 5",
    )
    code, _, err = run_cli("coarse", path, "--workers", workers)
    assert code == 0, err
    [trial] = stored()
    assert trial.state.name == "PRUNED" and trial.user_attrs["reason"] == "diverged"
    assert len(trial_attr(trial, "curves")["val_loss"]) == 2  # stopped at epoch 2, not after a minute of NaNs
    [script] = pids(markers, "script")
    assert not running(script)
    assert pids(markers, "term") == [script]  # asked with SIGTERM first


def test_command_hang_past_the_timeout_leaves_no_process(tmp_path: Path, run_cli: Cli) -> None:
    markers = tmp_path / "markers"
    path = write_study(
        tmp_path / "study",
        f"python train.py --lr {{lr}} --mode {{mode}} --markers {markers}",
        '[params.lr]\nvalues = [0.1]\n\n[params.mode]\nvalues = ["hang", "ok"]\n',
        'strategy = "grid"\ntrials = 2\nepochs = 2',
    )
    code, _, err = run_cli("coarse", path, "--workers", "1", "--trial-timeout", "3")
    assert code == 0, err
    reasons = {t.params["mode"]: (t.state.name, t.user_attrs.get("reason", "")) for t in stored()}
    assert reasons == {"hang": ("FAIL", "timeout"), "ok": ("COMPLETE", "")}
    [child] = pids(markers, "child")
    for _ in range(100):  # SIGKILL is asynchronous (a bound, not a timing assertion)
        if not any(running(p) for p in [child, *pids(markers, "script")]):
            break
        time.sleep(0.05)
    assert not running(child)
    assert not any(running(p) for p in pids(markers, "script"))


def test_command_two_workers_grid_runs_each_point_once(tmp_path: Path, run_cli: Cli) -> None:
    path = write_study(
        tmp_path / "study",
        "python train.py --lr {lr} --epochs {epochs} --momentum {momentum}",
        "[params.lr]\nvalues = [0.01, 0.1, 1.0]\n\n[params.momentum]\nvalues = [0.5, 0.9]\n",
        'strategy = "grid"\ntrials = 6\nepochs = 1',
    )
    code, _, err = run_cli("coarse", path, "--workers", "2", "--population", "4")
    assert code == 0, err
    assert "a command workload runs one trial per process" in err  # the population fallback, said once
    points = sorted((t.params["lr"], t.params["momentum"]) for t in stored() if t.state.name == "COMPLETE")
    assert points == sorted((lr, m) for lr in (0.01, 0.1, 1.0) for m in (0.5, 0.9))


def test_command_interrupt_ends_the_script_and_rerun_continues(tmp_path: Path, run_cli: Cli) -> None:
    markers = tmp_path / "markers"
    path = write_study(
        tmp_path / "study",
        f"python train.py --lr {{lr}} --epochs {{epochs}} --markers {markers}",
        coarse="trials = 2\nepochs = 3",
    )
    env = {**os.environ, "SCRIPT_SLEEP": "20"}  # the first epoch takes 20 s: the interrupt comes during it
    cli = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "coarse", str(path), "--workers", "1", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # the script runs (a bound, not a timing assertion)
            if pids(markers, "script") or cli.poll() is not None:
                break
            time.sleep(0.1)
        assert pids(markers, "script"), cli.stderr.read() if cli.poll() is not None else "no script started"
        time.sleep(0.2)  # let it install its SIGTERM handler
        cli.send_signal(signal.SIGINT)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, err
    [script] = pids(markers, "script")
    assert not running(script) and pids(markers, "term") == [script]  # SIGTERM first, then gone
    [trial, queued] = stored()  # its next run is queued at once: an interrupted trial is resumed
    assert trial.state.name == "FAIL" and trial.user_attrs["reason"] == "interrupted"
    assert queued.state.name == "WAITING" and trial_params(queued) == trial.params
    code, _, err = run_cli("coarse", path, "--workers", "1")  # the same command continues (no sleep now)
    assert code == 0, err
    complete = [t for t in stored() if t.state.name == "COMPLETE"]
    assert len(complete) == 2 and trial.params in [t.params for t in complete]  # resumed, not replaced


def test_command_unused_param_is_one_warning(tmp_path: Path, run_cli: Cli) -> None:
    path = write_study(
        tmp_path / "study",
        "python train.py --lr {lr} --epochs {epochs}",
        "[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n\n[params.rank]\nvalues = [1, 2]\n",
        "trials = 2\nepochs = 1",
    )
    code, _, err = run_cli("coarse", path, "--workers", "1")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "never uses" in line]
    assert warnings == ["warning: the command never uses {rank}; the script gets them only from $HPSEARCH_PARAMS"]


@pytest.mark.parametrize("command", ["sanity", "lr-find"])
def test_command_instruments_refuse_with_one_line(tmp_path: Path, run_cli: Cli, command: str) -> None:
    path = write_study(tmp_path / "study", "python train.py --lr {lr} --epochs {epochs}")
    code, _, err = run_cli(command, path)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: ")
    assert "command workload" in lines[0] and "function workload" in lines[0]


# ----------------------------------------------------------------------------- the worker and the runner


def test_command_on_a_gpu_worker_sees_its_gpu_as_cuda0(tmp_path: Path) -> None:
    """A GPU worker's slot (here a pretend one: the script never touches CUDA) narrows CUDA_VISIBLE_DEVICES."""
    markers = tmp_path / "markers"
    path = write_study(
        tmp_path / "study",
        f"python train.py --lr {{lr}} --epochs {{epochs}} --device {{device}} --markers {markers}",
        coarse="trials = 1\nepochs = 1",
    )
    spec = load_spec(path)
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    run_stage(store, info, PoolExecutor([WorkerSlot("cuda:0", "5", 1, "cuda:5")]))
    [run] = seen(markers)
    assert run["device"] == "cuda:0" and run["env"]["CUDA_VISIBLE_DEVICES"] == "5"
    assert run["env"]["HPSEARCH_DEVICE"] == "cuda:0"


def _context(tmp_path: Path, params: dict, epochs: int = 2, stops_at: int | None = None) -> TrialContext:
    def on_report(epoch: int, metrics: dict, timing: object) -> str | None:
        return "pruned by test" if stops_at is not None and epoch >= stops_at else None

    record = TrialRecord(
        7, params, epochs, 123, stage="refine-2", study="s", metric="val_accuracy", workdir=str(tmp_path)
    )
    return TrialContext.open(record, "cpu", on_report)


def test_command_runner_pruned_mid_run_ends_the_group(tmp_path: Path) -> None:
    shutil.copy(SCRIPT, tmp_path / "train.py")
    markers = tmp_path / "m"
    workload = CommandWorkload(
        (
            "python",
            str(tmp_path / "train.py"),
            "--lr",
            "{lr}",
            "--epochs",
            "{epochs}",
            "--sleep",
            "0.05",
            "--markers",
            str(markers),
        )
    )
    ctx = _context(tmp_path, {"lr": 0.1}, epochs=50, stops_at=3)
    with pytest.raises(TrialStopped, match="pruned by test"):
        workload(ctx)
    assert len(ctx.curves["val_accuracy"]) == 3
    assert not any(running(p) for p in pids(markers, "script"))


def test_command_runner_cannot_start_program(tmp_path: Path) -> None:
    with pytest.raises(TrialFailed, match="cannot run /no/such/program"):
        CommandWorkload(("/no/such/program", "{lr}"))(_context(tmp_path, {"lr": 0.1}))


def test_command_runner_heavy_stderr_does_not_block(tmp_path: Path) -> None:
    script = tmp_path / "loud.py"
    script.write_text(
        "import sys, json\nsys.stderr.write('x' * 1_000_000 + '\\n')\n"
        "print(json.dumps({'epoch': 1, 'val_accuracy': 0.5}))\n"
    )
    assert CommandWorkload(("python", str(script)))(_context(tmp_path, {})) == {"val_accuracy": 0.5}


def test_command_report_lines() -> None:
    assert parse_report('{"epoch": 2, "val_loss": 0.5, "iterations": 10, "note": "x", "ok": true}') == (
        2,
        10,
        {"val_loss": 0.5},
    )
    assert parse_report('{"val_accuracy": NaN}')[2]["val_accuracy"] != 0.0  # NaN is a number (diverged)
    assert parse_report("epoch 3 {not json}") is None
    assert parse_report("[1, 2]") is None
    assert parse_report('  {"epoch": 1}  ') == (1, None, {})


def test_command_emit_writes_the_same_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    emit(epoch=3, val_loss=np.float32(0.25), val_accuracy=np.float64(0.75))
    line = capsys.readouterr().out
    assert json.loads(line) == {"epoch": 3, "val_loss": 0.25, "val_accuracy": 0.75}
    assert parse_report(line) == (3, None, {"val_loss": 0.25, "val_accuracy": 0.75})


def test_command_shipped_example_script_study_runs(run_cli: Cli) -> None:
    """The README's example: studies/digits_script.toml runs studies/digits_script.py (plain PyTorch)."""
    study = Path(__file__).resolve().parent.parent / "studies" / "digits_script.toml"
    code, _, err = run_cli("coarse", study, "--trials", "2", "--epochs", "1", "--workers", "2")
    assert code == 0, err
    trials = stored("digits_script")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert all(0.0 <= t.value <= 1.0 and len(trial_attr(t, "curves")["train_loss"]) == 1 for t in trials)


def test_command_wrong_metric_name_stops_at_the_first_trial_with_one_line(tmp_path: Path, run_cli: Cli) -> None:
    """A script that prints other metrics but not the study's: a wrong `metric` in the study file. One
    line naming the file's key and what the script printed, after the first trial, not a failure per trial."""
    path = write_study(
        tmp_path / "study", "python train.py --lr {lr} --epochs {epochs}", coarse="trials = 6\nepochs = 1"
    )
    path.write_text(path.read_text().replace('metric = "val_accuracy"', 'metric = "val_acc"'))
    code, _, err = run_cli("coarse", path, "--workers", "1")
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert code == 2 and len(errors) == 1, err
    assert "metric: the workload never returns 'val_acc'" in errors[0] and "val_accuracy" in errors[0]
    assert len(errors[0]) < 300 and err.count("val_acc'") == 1
    assert sum(t.state.name == "COMPLETE" for t in stored()) == 0  # the trial is not kept as a result


def test_failure_summary_says_each_reason_once() -> None:
    from hpsearch.search.stages import failure_summary

    text = failure_summary([f"trial {n}: exit code 1: boom" for n in range(3)] + ["trial 3: signal 9"])
    assert text == "exit code 1: boom (trials 0, 1, 2); signal 9 (trial 3)"
