"""Dispatch: the worker pool, device planning, and every fault a trial or worker can throw at it.

Fault tests run real worker processes on the torch-free workloads of
tests/workloads/faulty.py; the interrupt tests run the CLI as a subprocess
and signal it. No test asserts on wall-clock time.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from optuna.trial import FrozenTrial
from rich.console import Console

from hpsearch.cli.progress import ProgressDisplay
from hpsearch.dispatch import DispatchConfig, PoolExecutor, cpu_cores, make_executor, plan_workers, visible_gpus
from hpsearch.dispatch import messages as msg
from hpsearch.errors import DispatchError
from hpsearch.search.jobs import Answer, Job, TrialEvent
from hpsearch.spec import load_spec
from hpsearch.store.storage import StageInfo, Store
from hpsearch.trials import trial_attr
from hpsearch.workloads.api import TrialRecord

FAULTY = Path(__file__).parent / "workloads" / "faulty.py"
STALLS = Path(__file__).parent / "workloads" / "stalls.py"
SPAWNER = Path(__file__).parent / "workloads" / "spawner.py"
RELATIVE = Path(__file__).parent / "workloads" / "relative.py"
LR_ONLY = "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n"

Cli = Callable[..., tuple[int, str, str]]


def faulty(function: str) -> str:
    return f"{FAULTY}:{function}"


def stored(name: str = "fake", stage: str = "coarse") -> list[FrozenTrial]:
    store = Store(name)
    return store.trials(store.stage(stage))


def by_state(trials: list[FrozenTrial], state: str) -> list[FrozenTrial]:
    return [t for t in trials if t.state.name == state]


def worker_children() -> list[int]:
    """Live hpsearch worker processes whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"hpsearch.dispatch.worker" in cmdline and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(pid: int) -> bool:
    """Alive and not a zombie: a zombie of another parent (init not reaping yet) has exited, it counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return alive(pid) if not Path("/proc").is_dir() else False
    return state not in "ZX"


# ----------------------------------------------------------------------------- device planning


def test_plan_workers_gpus_per_device_each_sees_one_gpu() -> None:
    slots = plan_workers(DispatchConfig("auto", per_device=2), gpus=["0", "1"], cores=8)
    assert [s.visible for s in slots] == ["0", "0", "1", "1"]
    assert {s.device for s in slots} == {"cuda:0"}  # each worker sees only its GPU, as cuda:0
    assert {s.threads for s in slots} == {2}  # 8 cores over 4 workers


def test_plan_workers_device_list_maps_to_visible_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    assert visible_gpus() == ["3", "5", "7"]
    slots = plan_workers(DispatchConfig("cuda:0,cuda:2"), cores=4)
    assert [(s.visible, s.label) for s in slots] == [("3", "cuda:0"), ("7", "cuda:2")]


def test_plan_workers_cpu_splits_threads_between_workers() -> None:
    assert [s.threads for s in plan_workers(DispatchConfig("cpu", workers=2), gpus=[], cores=8)] == [4, 4]
    default = plan_workers(DispatchConfig("auto"), gpus=[], cores=3)
    assert len(default) == 3 and {s.device for s in default} == {"cpu"} and {s.threads for s in default} == {1}


@pytest.mark.parametrize(
    ("config", "gpus", "message"),
    [
        (DispatchConfig("cuda"), [], "no CUDA GPU is visible"),
        (DispatchConfig("cuda:2"), ["0", "1"], "cuda:2 does not exist"),
        (DispatchConfig("gpu0"), ["0"], "is not cuda:N"),
        (DispatchConfig("cpu", per_device=2), [], "per_device counts trials per GPU"),
        (DispatchConfig("cuda", workers=3), ["0"], "workers sets CPU workers; on GPUs use per_device"),
    ],
)
def test_plan_workers_impossible_options_raise(config: DispatchConfig, gpus: list[str], message: str) -> None:
    with pytest.raises(DispatchError, match=message):
        plan_workers(config, gpus=gpus, cores=2)


def test_visible_gpus_hidden_by_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert visible_gpus() == []


def test_cli_devices_cuda_without_gpu_is_one_line_error(
    study_file: Callable[..., Path], run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    code, _, err = run_cli("coarse", study_file(), "--devices", "cuda")
    assert code == 2
    assert err.strip().splitlines() == [err.strip()] and err.startswith("Error: --devices cuda: no CUDA GPU")


def test_trial_timeout_needs_workers() -> None:
    with pytest.raises(DispatchError, match="trial_timeout needs worker processes; workers 0") as raised:
        make_executor(DispatchConfig(workers=0, trial_timeout=5))
    # The library names settings; the command line names the flags that set them.
    from hpsearch.cli.app import message

    assert message(raised.value) == "--trial-timeout needs worker processes; --workers 0 runs trials in this process"


# ----------------------------------------------------------------------------- the pool


def test_pool_two_workers_grid_has_no_duplicates_and_no_leftovers(
    study_file: Callable[..., Path], run_cli: Cli
) -> None:
    params = "[params.lr]\nvalues = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]\n"
    path = study_file(faulty("grid_point"), coarse='strategy = "grid"\ntrials = 20\nepochs = 1', params=params)
    code, _, err = run_cli("coarse", path, "--devices", "cpu", "--workers", "2")
    assert code == 0, err
    trials = stored()
    assert len(trials) == 8 and len(by_state(trials, "COMPLETE")) == 8  # the whole grid, once
    assert sorted(t.params["lr"] for t in trials) == [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    pids = {int(trial_attr(t, "metrics")["pid"]) for t in trials}
    assert os.getpid() not in pids  # trained in workers, not in the coordinator
    assert worker_children() == [] and not any(alive(p) for p in pids)


def test_pool_workers_get_their_share_of_threads(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("threads"), coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    seen = {trial_attr(t, "metrics")["omp_threads"] for t in stored()}
    assert seen == {float(max(cpu_cores() // 2, 1))}


def test_pool_keeps_torch_out_of_the_coordinator(study_file: Callable[..., Path], tmp_path: Path) -> None:
    path = study_file(faulty("grid_point"), coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    code = (
        "import sys; from hpsearch import cli; "
        f"rc = cli.run(['coarse', {str(path)!r}, '--workers', '2', '--quiet']); "
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split()[-2:] == ["0", "False"], done.stderr


# ----------------------------------------------------------------------------- faults


def test_raising_trial_fails_with_last_line_and_search_goes_on(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("raises_on_1"), coarse="trials = 4\nepochs = 2", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    trials = stored()
    [failed] = by_state(trials, "FAIL")
    assert failed.number == 1 and failed.user_attrs["reason"] == "shape mismatch in layer 3"
    assert len(by_state(trials, "COMPLETE")) == 4


def test_all_trials_fail_exits_1_with_first_reasons(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("always_raises"), coarse="trials = 3\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 1
    assert "Error: every trial of stage coarse failed" in err and "RuntimeError: broken data loader" in err
    assert worker_children() == []


@pytest.mark.parametrize(
    ("function", "reason"),
    [
        ("exits_on_1", "worker died (exit code 3)"),
        ("sigkill_on_1", f"worker died (signal {signal.SIGKILL.value})"),
        ("segfault_on_1", f"worker died (signal {signal.SIGSEGV.value})"),
    ],
)
def test_worker_death_fails_trial_and_is_replaced(
    study_file: Callable[..., Path], run_cli: Cli, function: str, reason: str
) -> None:
    path = study_file(faulty(function), coarse="trials = 4\nepochs = 2", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    trials = stored()
    [failed] = by_state(trials, "FAIL")
    assert failed.number == 1 and failed.user_attrs["reason"] == reason
    assert len(by_state(trials, "COMPLETE")) == 4  # the stage still reached its target
    assert worker_children() == []


def test_trial_timeout_kills_and_replaces_worker(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("hangs_on_1"), coarse="trials = 3\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2", "--trial-timeout", "1")
    assert code == 0, err
    trials = stored()
    [failed] = by_state(trials, "FAIL")
    assert failed.number == 1 and failed.user_attrs["reason"] == "timeout"
    assert len(by_state(trials, "COMPLETE")) == 3
    assert worker_children() == []


def group_left(pid: int) -> list[int]:
    """The live processes of the group worker `pid` led (the worker, its log keeper, what its trials started)."""
    from hpsearch.procs import group_members

    return group_members(pid) or []


def test_stalled_trial_is_ended_replaced_and_recorded_with_its_silence(
    study_file: Callable[..., Path], run_cli: Cli, markers: Path
) -> None:
    """Trial 2 hangs at its epoch 2 (no --trial-timeout): past the stall rule (here the study file's floor of
    1 s) its worker's group is ended, it fails `stalled`, and the stage still gets its 8 completed trials."""
    path = study_file(f"{STALLS}:hangs_on_2", coarse='strategy = "random"\ntrials = 8\nepochs = 3', params=LR_ONLY)
    path.write_text("stall_floor = 1\n" + path.read_text())
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    trials = stored()
    [failed] = by_state(trials, "FAIL")
    assert failed.number == 2
    # e.g. "stalled: no report for 1.6 s (limit 1.0 s: the floor; 10 x the stage's median epoch of 0.051 s is less)"
    silent, limit = re.fullmatch(
        r"stalled: no report for ([\d.]+) s \(limit ([\d.]+) s: .*median epoch of .*\)", failed.user_attrs["reason"]
    ).groups()  # type: ignore[union-attr]
    assert float(silent) > float(limit) >= 1.0
    assert "trial 2 hangs now" in trial_attr(failed, "log_tail")  # its log is kept, as a timed-out trial's
    assert len(by_state(trials, "COMPLETE")) == 8
    pids = {int(p.name.split("-")[0]) for p in markers.iterdir()}
    assert worker_children() == [] and not any(group_left(pid) for pid in pids)  # keepers and all


def test_trial_queued_behind_a_hung_one_runs_on_an_idle_worker(
    study_file: Callable[..., Path], run_cli: Cli, markers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Short trials get their successor queued behind them; trial 2 then waits (10 s at most, within the
    stall floor) until every other trial returned. The one queued behind it must not wait for it: the
    other worker, idle, takes it back and runs it (trial 2 saw them all); each trial is recorded once."""
    trials = _run_behind_a_hung_trial(study_file, run_cli, monkeypatch)
    assert all(sorted(t.intermediate_values) == [0, 1] for t in trials)  # one run's reports each, no copy's
    assert worker_children() == []


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The folder where tests/workloads/spawner.py leaves its pid and signal markers."""
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("HPSEARCH_TEST_MARKERS", str(folder))
    return folder


def test_trial_timeout_ends_what_the_trial_started_sigterm_first(
    study_file: Callable[..., Path], run_cli: Cli, markers: Path
) -> None:
    path = study_file(f"{SPAWNER}:spawns_and_hangs_on_1", coarse="trials = 3\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1", "--trial-timeout", "4")
    assert code == 0, err
    [failed] = by_state(stored(), "FAIL")
    assert failed.number == 1 and failed.user_attrs["reason"] == "timeout"
    child = int((markers / "child-1.pid").read_text())
    assert not running(child)  # not left under PID 1
    assert (markers / "term-1").read_text() == "SIGTERM"  # asked to stop before SIGKILL
    assert f"child {child} runs" in trial_attr(failed, "log_tail")  # a timed-out trial keeps its log
    assert worker_children() == []


def test_trial_that_returns_leaves_no_process_and_keeps_its_worker(
    study_file: Callable[..., Path], run_cli: Cli, markers: Path
) -> None:
    path = study_file(f"{SPAWNER}:spawns_and_returns", coarse="trials = 3\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1")
    assert code == 0, err
    metrics = [trial_attr(t, "metrics") for t in by_state(stored(), "COMPLETE")]
    assert len(metrics) == 3
    assert [m["stale_children"] for m in metrics] == [0.0, 0.0, 0.0]  # each trial's child ended with it
    assert len({m["pid"] for m in metrics}) == 1  # and one worker ran them all
    assert not any(running(int(p.read_text())) for p in markers.glob("child-*.pid"))
    assert worker_children() == []


@pytest.mark.parametrize("workers", ["0", "1"])
def test_trials_run_in_the_study_files_folder(
    study_file: Callable[..., Path], run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    path = study_file(f"{RELATIVE}:reads_relative", coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    (tmp_path / "data.txt").write_text("0.75")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli("coarse", path, "--workers", workers)
    assert code == 0, err
    trials = stored()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert {t.value for t in trials} == {0.75}
    assert os.getcwd() == str(elsewhere)  # --workers 0 changed folder for the trials only


@pytest.mark.parametrize("function", ["nan_on_odd", "explodes_on_odd"])
def test_divergence_through_pool_is_pruned(study_file: Callable[..., Path], run_cli: Cli, function: str) -> None:
    path = study_file(faulty(function), coarse="trials = 4\nepochs = 4", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    trials = stored()
    pruned = by_state(trials, "PRUNED")
    assert pruned and all(t.number % 2 == 1 and t.user_attrs["reason"] == "diverged" for t in pruned)
    assert {t.number for t in by_state(trials, "COMPLETE")} == {t.number for t in trials if t.number % 2 == 0}
    # stopped at the very epoch it diverged (the worker decides without waiting for the coordinator), and
    # the reports held back until then (no pruner reads them) were written with its outcome
    diverged_at = {"nan_on_odd": 0, "explodes_on_odd": 1}[function]
    assert all(len(trial_attr(t, "curves")["train_loss"]) == diverged_at + 1 for t in pruned)
    assert all(sorted(t.intermediate_values) == list(range(diverged_at + 1)) for t in pruned)
    assert all(sorted(t.intermediate_values) == [0, 1, 2, 3] for t in by_state(trials, "COMPLETE"))


def test_median_pruner_stops_worse_than_median(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("linear_score"), coarse="trials = 14\nepochs = 3", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1", "--pruner", "median")
    assert code == 0, err
    trials = sorted(stored(), key=lambda t: t.number)
    pruned = by_state(trials, "PRUNED")
    assert pruned and {t.user_attrs["reason"] for t in pruned} == {"pruned by median pruner"}
    for t in pruned:  # each was worse than the median of the trials finished before it
        before = sorted(u.params["lr"] for u in trials if u.number < t.number and u.state.name == "COMPLETE")
        assert t.number >= 5 and t.params["lr"] < before[len(before) // 2]


def test_no_pruner_runs_every_epoch(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("linear_score"), coarse="trials = 8\nepochs = 3", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    assert len(by_state(stored(), "COMPLETE")) == 8


def test_hyperband_pruner_runs_and_names_itself(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("linear_score"), coarse="trials = 10\nepochs = 9", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1", "--pruner", "hyperband")
    assert code == 0, err
    trials = stored()
    assert len(by_state(trials, "COMPLETE")) + len(by_state(trials, "PRUNED")) == 10
    assert {t.user_attrs["reason"] for t in by_state(trials, "PRUNED")} <= {"pruned by hyperband pruner"}


@pytest.mark.parametrize(
    "signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGHUP], [signal.SIGINT, signal.SIGINT]]
)
def test_interrupt_stops_workers_keeps_trials_and_rerun_continues(
    study_file: Callable[..., Path], run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signals: list[int]
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = study_file(faulty("slow"), coarse="trials = 4\nepochs = 40", params=LR_ONLY)
    env = {**os.environ, "HPSEARCH_TEST_MARKERS": str(markers), "HPSEARCH_TEST_SLEEP": "0.25"}
    cli = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "coarse", str(path), "--workers", "2"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # both workers are inside a trial (a bound, not a timing assertion)
            if len(list(markers.iterdir())) >= 2 or cli.poll() is not None:
                break
            time.sleep(0.1)
        workers = {int(p.name.split("-")[0]) for p in markers.iterdir()}
        assert len(workers) == 2, cli.stderr.read() if cli.poll() is not None else "workers never started"
        for sig in signals:
            cli.send_signal(sig)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 130, err
    assert not any(alive(pid) for pid in workers)  # no orphan worker
    if len(signals) == 1:  # the graceful path recorded the running trials
        assert "Interrupted: completed trials are kept" in err
        trials = stored()
        assert {t.user_attrs.get("reason") for t in by_state(trials, "FAIL")} == {"interrupted"}
        assert len(by_state(trials, "FAIL")) == 2 and not by_state(trials, "COMPLETE")
    # The same command, re-run, continues to the stage's target.
    monkeypatch.setenv("HPSEARCH_TEST_SLEEP", "0")
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    assert len(by_state(stored(), "COMPLETE")) == 4


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopped_coordinator_ends_what_a_running_trial_started(
    study_file: Callable[..., Path], tmp_path: Path, sig: int
) -> None:
    """SIGTERM: the pool ends each worker's group. SIGKILL: the kernel tells the worker, which ends its group."""
    markers = tmp_path / "markers"
    markers.mkdir()
    path = study_file(f"{SPAWNER}:spawns_and_hangs_on_1", coarse="trials = 3\nepochs = 1", params=LR_ONLY)
    env = {**os.environ, "HPSEARCH_TEST_MARKERS": str(markers)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "hpsearch", "coarse", str(path), "--workers", "1", "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(600):  # trial 1's child runs (a bound, not a timing assertion)
            if (markers / "child-1.pid").exists() or cli.poll() is not None:
                break
            time.sleep(0.1)
        assert (markers / "child-1.pid").exists(), cli.stderr.read() if cli.poll() is not None else "no child"
        cli.send_signal(sig)
        _, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == (130 if sig == signal.SIGTERM else -signal.SIGKILL), err
    child = int((markers / "child-1.pid").read_text())
    for _ in range(300):  # after SIGKILL, the orphaned worker ends it on its own (a bound, not a timing assertion)
        if not running(child):
            break
        time.sleep(0.1)
    assert not running(child)
    assert (markers / "term-1").exists()  # SIGTERM reached it before SIGKILL


def test_pool_rejects_zero_slots() -> None:
    with pytest.raises(DispatchError):
        PoolExecutor([])


# ----------------------------------------------------------------------------- progress


def _event(kind: str, epoch_seconds: float | None = None, iterations: int | None = None) -> TrialEvent:
    job = Job(trial=None, record=TrialRecord(7, {"lr": 0.1}, 3, 0, stage="coarse", study="s", metric="m"))  # type: ignore[arg-type]
    return TrialEvent(kind, job, epoch=0, metrics={}, epoch_seconds=epoch_seconds, iterations=iterations, target=3)


def test_progress_warns_once_on_slow_iterations(study_file: Callable[..., Path]) -> None:
    spec = load_spec(study_file())
    stage = StageInfo("coarse", 0, None, spec.coarse, spec.space, spec)
    buffer = io.StringIO()
    display = ProgressDisplay(Console(file=buffer, width=200), stage, quiet=True)
    display(_event("start"))
    display(_event("report", epoch_seconds=1.0, iterations=10))  # 100 ms per iteration: fine
    assert "warning" not in buffer.getvalue()
    display(_event("report", epoch_seconds=6.0, iterations=10))  # 600 ms per iteration
    display(_event("report", epoch_seconds=9.0, iterations=10))
    assert buffer.getvalue().count("ms per iteration") == 1 and "600 ms" in buffer.getvalue()
    display(_event("report", epoch_seconds=60.0))  # no iterations: per-epoch time is not per-iteration
    assert buffer.getvalue().count("warning") == 1


def test_progress_not_a_terminal_is_plain_lines(study_file: Callable[..., Path], run_cli: Cli) -> None:
    path = study_file(faulty("slow"), coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0
    assert "\x1b[" not in err  # no cursor movement or colour in a CI log
    assert sum(line.startswith("[coarse] trial ") for line in err.splitlines()) == 2
    code, _, err = run_cli("coarse", path, "--workers", "2", "--trials", "3", "--quiet")
    assert code == 0 and "[coarse] trial" not in err


def test_workers_are_capped_at_the_cores_and_the_trials_left(run_cli, study_file):
    cores = cpu_cores()
    code, _, err = run_cli("coarse", study_file(coarse="trials = 1\nepochs = 1"), "-q", "--workers", "1000")
    assert code == 0, err
    assert f"note: --workers 1000 capped at {cores}, the cores this process may use" in err
    if cores >= 2:
        assert f"note: started 1 of {cores} workers: the stage has 1 trial(s) left" in err
    assert len(plan_workers(DispatchConfig(workers=1000), gpus=[], cores=2)) == 2


def _worker_end(replies: bool):
    """A worker's trial context for trial 7 on one end of a pipe; the other end plays the coordinator."""
    from multiprocessing import Pipe

    from hpsearch.dispatch.worker import Inbox, _hook
    from hpsearch.workloads.api import TrialContext

    ours, coordinator = Pipe()
    inbox = Inbox(ours)
    record = TrialRecord(7, {"lr": 0.1}, 5, 0)
    return TrialContext.open(record, "cpu", _hook(inbox, replies)(record)), coordinator, inbox


def test_worker_without_replies_trains_on_and_decides_divergence_itself() -> None:
    from hpsearch.errors import TrialStopped

    ctx, coordinator, _ = _worker_end(replies=False)
    ctx.report(0, train_loss=1.0)  # returns at once: nothing was sent back
    ctx.report(1, train_loss=2.0)
    with pytest.raises(TrialStopped, match="diverged"):  # 4.0 > 3x the first loss, decided in the worker
        ctx.report(2, train_loss=4.0)
    sent = [coordinator.recv() for _ in range(3)]
    assert [(type(m), m.number, m.epoch) for m in sent] == [(msg.Report, 7, 0), (msg.Report, 7, 1), (msg.Report, 7, 2)]


def test_worker_without_replies_reads_a_stop_sent_meanwhile_at_its_next_report() -> None:
    from hpsearch.errors import TrialStopped

    ctx, coordinator, _ = _worker_end(replies=False)
    coordinator.send(msg.Stops({6: "a stop for the trial before, which has ended"}))
    ctx.report(0, val_accuracy=0.5)  # the stale stop is read and dropped
    coordinator.send(msg.Stops({7: "failed by another machine"}))
    with pytest.raises(TrialStopped, match="failed by another machine"):
        ctx.report(1, val_accuracy=0.5)


def test_worker_with_replies_waits_for_the_answer_and_skips_stray_stops() -> None:
    from hpsearch.errors import TrialStopped

    ctx, coordinator, _ = _worker_end(replies=True)
    coordinator.send(msg.Reply(None))
    ctx.report(0, val_accuracy=0.5)
    coordinator.send(msg.Stops({7: "never sent to a waiting worker, skipped if it were"}))
    coordinator.send(msg.Reply("pruned by median pruner"))
    with pytest.raises(TrialStopped, match="pruned by median pruner"):
        ctx.report(1, val_accuracy=0.5)


@pytest.mark.parametrize("replies", [False, True])
def test_worker_keeps_the_next_trial_sent_while_one_trains(replies: bool) -> None:
    """The pool queues a short trial's successor behind it: met while the worker looks for stops (or
    waits for its reply), it is kept, in order, for the worker's main loop, not dropped."""
    ctx, coordinator, inbox = _worker_end(replies=replies)
    queued = msg.Trial(TrialRecord(8, {"lr": 0.2}, 5, 0), replies)
    coordinator.send(queued)
    coordinator.send(msg.Stops({6: "for a trial that has ended"}))
    if replies:
        coordinator.send(msg.Reply(None))
    ctx.report(0, val_accuracy=0.5)  # trains on
    assert list(inbox.kept) == [queued]
    assert inbox.recv() == queued and not inbox.kept


@pytest.mark.parametrize("replies", [False, True])
def test_worker_drops_a_queued_trial_taken_back_before_it_starts(replies: bool) -> None:
    """The pool takes a queued trial back for an idle worker: a drop met while training (looking for stops
    or a reply) or waiting in the connection when the trial ends removes it; the next one is started."""
    ctx, coordinator, inbox = _worker_end(replies=replies)
    queued, after = (msg.Trial(TrialRecord(n, {"lr": 0.2}, 5, 0), replies) for n in (8, 9))
    coordinator.send(queued)
    if replies:
        coordinator.send(msg.Reply(None))
    ctx.report(0, val_accuracy=0.5)  # trial 8 is kept meanwhile
    assert list(inbox.kept) == [queued]
    coordinator.send(msg.Drop(8))
    coordinator.send(after)
    coordinator.send(msg.Drop(5))  # one it no longer holds: nothing to do
    assert inbox.recv() == after and not inbox.kept


def test_trial_taken_back_too_late_is_recorded_once(
    study_file: Callable[..., Path], run_cli: Cli, markers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: a worker starts its queued trial as the pool hands it to another (here the drop is never
    sent, so it starts it once trial 2 ends). Its copy counts for nothing: every trial is recorded once."""
    from hpsearch.dispatch.handle import WorkerHandle

    def late(self: WorkerHandle) -> Job:
        job, self.queued = self.queued, None
        return job  # type: ignore[return-value]

    monkeypatch.setattr(WorkerHandle, "recall", late)
    trials = _run_behind_a_hung_trial(study_file, run_cli, monkeypatch)
    assert all(sorted(t.intermediate_values) == [0, 1] for t in trials)
    pids = {int(p.name.split("-")[0]) for p in markers.iterdir() if not p.name.startswith("done-")}
    assert worker_children() == [] and not any(group_left(pid) for pid in pids)


def test_pool_ends_a_worker_that_started_a_trial_taken_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """`Started(8)` from a worker that no longer holds trial 8: it is ended and replaced, the trial it was
    given since (never started: it ran 8) is handed out again, and nothing is recorded for either."""
    from hpsearch.dispatch import crew as crew_module
    from hpsearch.dispatch.plan import WorkerSlot

    class Handle:
        def __init__(self, slot: WorkerSlot, arg: str) -> None:
            self.slot, self.ready, self.jobs, self.queued, self.killed = slot, True, {}, None, False
            self.arg = arg

        def kill(self) -> None:
            self.killed = True

    class Run:
        finished: ClassVar[list[Job]] = []

        def finish(self, job: Job, outcome: object) -> None:
            self.finished.append(job)

    monkeypatch.setattr(crew_module, "WorkerHandle", Handle)
    pool = PoolExecutor([WorkerSlot("cpu", None, 1, "cpu")])
    pool.workload = type("Workload", (), {"to_arg": lambda self: "w"})()
    holder = Handle(pool.slots[0], "w")
    given = Job(trial=None, record=TrialRecord(9, {}, 1, 0))  # type: ignore[arg-type]
    holder.jobs = {9: given}
    pool.crew.workers = [holder]  # type: ignore[list-item]
    pool._on_started(Run(), holder, 8)  # type: ignore[arg-type]
    assert holder.killed and pool.workers[0] is not holder
    assert list(pool.handout.pending) == [given] and Run.finished == []


def _starts_and_ends(trials: list[FrozenTrial]) -> list[tuple[float, float]]:
    ordered = sorted(trials, key=lambda t: t.number)
    return [(t.datetime_start.timestamp(), t.datetime_complete.timestamp()) for t in ordered]


def test_pool_queues_a_short_trials_successor_while_it_trains(study_file: Callable[..., Path], run_cli: Cli) -> None:
    """One worker, short trials: once a trial completed quickly, the next one is drawn and sent while
    the current trains (its trial exists before the current one ends), so none waits for a round trip."""
    path = study_file(faulty("slow"), coarse='strategy = "random"\ntrials = 8\nepochs = 2', params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1")
    assert code == 0, err
    spans = _starts_and_ends(stored())
    assert len(spans) == 8 and len(by_state(stored(), "COMPLETE")) == 8
    ahead = [n for n in range(1, 8) if spans[n][0] < spans[n - 1][1]]  # drawn before its predecessor ended
    assert ahead == list(range(2, 8)), spans  # trial 1 follows the first short one; every later one is queued


@pytest.mark.parametrize("setting", ["tpe", "long trials"])
def test_pool_queues_nothing_for_tpe_or_long_trials(
    study_file: Callable[..., Path], run_cli: Cli, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """TPE draws from the results so far: a trial drawn ahead would miss one. A long trial gains nothing
    from it (and its start time would be early by a whole trial). Either way each trial starts after the last."""
    from hpsearch.dispatch import handout

    strategy = "tpe" if setting == "tpe" else "random"
    if setting == "long trials":
        monkeypatch.setattr(handout, "QUEUE_BELOW_S", 0.0)  # every trial counts as long
    path = study_file(faulty("slow"), coarse=f'strategy = "{strategy}"\ntrials = 6\nepochs = 2', params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1")
    assert code == 0, err
    spans = _starts_and_ends(stored())
    assert len(spans) == 6
    assert all(spans[n][0] >= spans[n - 1][1] for n in range(1, 6)), spans


def test_trial_queued_on_a_worker_that_dies_runs_on_its_successor(
    study_file: Callable[..., Path], run_cli: Cli
) -> None:
    """Trial 2 is queued behind trial 1, whose worker dies: 1 fails as `worker died`, 2 never started
    there, so it runs on the replacement worker and completes; the stage reaches its target."""
    path = study_file(faulty("exits_on_1"), coarse='strategy = "random"\ntrials = 5\nepochs = 2', params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1")
    assert code == 0, err
    trials = stored()
    [failed] = by_state(trials, "FAIL")
    assert failed.number == 1 and failed.user_attrs["reason"] == "worker died (exit code 3)"
    assert sorted(t.number for t in by_state(trials, "COMPLETE")) == [0, 2, 3, 4, 5]
    assert worker_children() == []


def test_pool_asks_for_a_queued_trial_once_per_trial_started(
    study_file: Callable[..., Path], run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Near the end of a stage there is nothing left to queue: the pool does not ask again at every
    report of the trials still running (each ask may read every trial of the stage)."""
    from hpsearch.search.coordinator import Coordinator

    calls: list[int] = []
    original = Coordinator.next

    def counted(self: Coordinator, k: int = 1) -> Answer:
        answer = original(self, k)
        calls.append(len(answer) if isinstance(answer, list) else 0)
        return answer

    monkeypatch.setattr(Coordinator, "next", counted)
    path = study_file(faulty("slow"), coarse='strategy = "random"\ntrials = 6\nepochs = 30', params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "1")
    assert code == 0, err
    assert sum(calls) == 6
    assert len(calls) <= 6 + 3, calls  # one per trial and a few that found none, not one per report


def test_progress_best_includes_the_trial_just_finished(study_file, run_cli) -> None:
    """Each finished-trial line's best is the best of every trial finished so far, that one included (it
    lagged one trial: the best was read before the batched write of the outcome landed), and the
    stage's first completed trial shows a best."""
    import re

    spec = study_file(coarse='strategy = "random"\ntrials = 8\nepochs = 2\nseed = 3')
    code, _, err = run_cli("coarse", spec, "--workers", "2")
    assert code == 0, err
    lines = [
        m
        for m in re.finditer(
            r"trial (\d+) complete val_accuracy=(-?[\d.]+) .*?best val_accuracy (-?[\d.]+) \(trial (\d+)\)", err
        )
    ]
    assert len(lines) == 8, err
    seen: dict[int, float] = {}
    for m in lines:
        seen[int(m.group(1))] = float(m.group(2))
        best_number = max(seen, key=lambda n: (seen[n], -n))
        assert float(m.group(3)) == pytest.approx(max(seen.values()), abs=1e-4), m.group(0)
        assert seen[int(m.group(4))] == pytest.approx(seen[best_number], abs=1e-4)


def _run_behind_a_hung_trial(study_file: Callable[..., Path], run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> list:
    """Six short trials on two workers; trial 2 waits (10 s at most) until every other one returned. Every
    trial is recorded once and complete, and trial 2 saw the others end: none waited behind it. The trials."""
    monkeypatch.setenv("HPSEARCH_TEST_TRIALS", "6")
    monkeypatch.setenv("HPSEARCH_TEST_WAIT_S", "10")
    path = study_file(
        f"{STALLS}:waits_for_the_others", coarse='strategy = "random"\ntrials = 6\nepochs = 2', params=LR_ONLY
    )
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    trials = stored()
    assert sorted(t.number for t in trials) == list(range(6)) and len(by_state(trials, "COMPLETE")) == 6
    assert trial_attr(next(t for t in trials if t.number == 2), "metrics")["saw_all"] == 1.0
    return trials
