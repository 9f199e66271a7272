"""Many machines on one PostgreSQL study: `hpsearch worker` processes joining the coordinating command.

Each test gets its own database on the throwaway server of tests/postgres.py.
The "machines" are processes on this one: each `hpsearch worker` is its own
coordinator with its own worker pool, exactly as on another host. Heartbeat
settings are shortened (1 s interval, 3 s grace) so a killed worker's trial
is noticed within seconds. No test asserts on wall-clock time.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import FrozenTrial, TrialState

from hpsearch.search.coordinator import Coordinator
from hpsearch.search.jobs import Job, Wait
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import HEARTBEAT_LOST, INTERRUPTED
from hpsearch.workloads.api import TrialOutcome

pytestmark = pytest.mark.postgres

SLOW = Path(__file__).parent / "workloads" / "slow.py"
HPSEARCH = str(Path(sys.executable).parent / "hpsearch")
OPTUNA = str(Path(sys.executable).parent / "optuna")
PASSWORD = "s3cret-pw"  # the test server trusts loopback, so any password works: it must never be printed
GRID = "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\ngrid_points = 5\n\n[params.momentum]\nvalues = [0.9, 0.99]\n"
DEADLINE_S = 90.0  # a hung process fails the test instead of hanging it (not a timing assertion)


def _next_job(coordinator: Coordinator) -> Job | None:
    """The coordinator's next trial, or None when it answers Wait or Stop."""
    answer = coordinator.next()
    return answer[0] if isinstance(answer, list) else None


def with_password(url: str) -> str:
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


def env(url: str, **extra: str) -> dict[str, str]:
    """Environment of a "machine": storage from HPSEARCH_STORAGE (not --storage), short heartbeats."""
    e = dict(os.environ)
    e.update(
        HPSEARCH_STORAGE=url,
        HPSEARCH_HEARTBEAT_INTERVAL="1",
        HPSEARCH_HEARTBEAT_GRACE="3",
        PYTHONPATH=str(Path(__file__).parent.parent),
        **extra,
    )
    return e


def start(args: list[str], environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([HPSEARCH, *args], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.1)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{proc.args} did not finish; stderr: {err[-2000:]}") from None
    return proc.returncode, out, err


def stage_exists(url: str, name: str = "fake") -> bool:
    try:
        return bool(Store(name, url=url).stages())
    except Exception:
        return False


def coarse_trials(url: str, name: str = "fake") -> list[FrozenTrial]:
    store = Store(name, url=url)
    return store.trials(store.stage("coarse"))


def point(t: FrozenTrial) -> tuple[float, float]:
    return (round(math.log10(t.params["lr"]), 6), t.params["momentum"])


# ----------------------------------------------------------------------------- two workers + coordinator


def test_multi_machine_two_workers_and_coordinator_run_grid_once(study_file, postgres_db: str) -> None:
    url = with_password(postgres_db)
    path = study_file(f"{SLOW}:sleepy", coarse='strategy = "grid"\ntrials = 100\nepochs = 2', params=GRID)
    machine = env(url, HPSEARCH_TEST_EPOCH_S="0.3")
    coordinator = start(["coarse", str(path), "--workers", "1"], machine)
    wait_for(lambda: stage_exists(url) or coordinator.poll() is not None, "the coordinator to create the stage")
    workers = [start(["worker", "fake", "--stage", "coarse", "--workers", "1"], machine) for _ in range(2)]
    results = [finish(p) for p in [coordinator, *workers]]
    for code, out, err in results:
        assert code == 0, err[-2000:]
        assert PASSWORD not in out + err  # the URL is shown masked, never in clear
    assert any("***@" in err for _, _, err in results[1:])  # the workers say where they joined, masked

    trials = coarse_trials(url)
    # Target = the whole grid (10 points < 100 trials); grid points come from one queue: exactly 10, no more.
    assert len(trials) == 10 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({point(t) for t in trials}) == 10  # every point once
    assert {point(t)[0] for t in trials} == {-4.0, -3.0, -2.0, -1.0, 0.0}
    assert len({t.number for t in trials}) == 10

    code, out, err = finish(start(["leaderboard", "fake", "--csv", "-"], env(url)))
    assert code == 0 and PASSWORD not in out + err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [int(r["rank"]) for r in rows] == list(range(1, 11))
    best = max(trials, key=lambda t: t.value or -1.0)
    assert int(rows[0]["trial"]) == best.number and float(rows[0]["val_accuracy"]) == pytest.approx(best.value)
    assert {r["state"] for r in rows} == {"COMPLETE"}


def test_multi_machine_killed_worker_trial_fails_at_once_on_its_host_and_stage_completes(
    study_file, postgres_db: str
) -> None:
    url = postgres_db
    path = study_file(f"{SLOW}:sleepy", coarse='strategy = "grid"\ntrials = 6\nepochs = 3', params=GRID)
    machine = env(url, HPSEARCH_TEST_EPOCH_S="1.0")
    coordinator = start(["coarse", str(path), "--workers", "1", "--quiet"], machine)
    wait_for(lambda: stage_exists(url) or coordinator.poll() is not None, "the coordinator to create the stage")
    victim = start(["worker", "fake", "--workers", "1", "--quiet"], machine)
    survivor = start(["worker", "fake", "--workers", "1", "--quiet"], machine)
    owner = f"{socket.gethostname()}:{victim.pid}"

    def victim_mid_trial() -> bool:
        assert victim.poll() is None, victim.communicate()[1][-2000:]
        running = [t for t in coarse_trials(url) if t.state == TrialState.RUNNING]
        # Training: owned by the victim and its params written (a kill between those writes leaves a
        # trial without its point, which `point` below cannot name; the coordinator handles that case too).
        # A database gets the params one write each: wait for all of them (lr alone was seen).
        return any(t.user_attrs.get("owner", "").partition("#")[0] == owner and len(t.params) == 2 for t in running)

    wait_for(victim_mid_trial, "the victim worker to start a trial")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    for proc in (coordinator, survivor):
        code, _, err = finish(proc)
        assert code == 0, err[-2000:]

    trials = coarse_trials(url)
    [dead] = [
        t for t in trials if t.user_attrs.get("owner", "").partition("#")[0] == owner and t.state != TrialState.COMPLETE
    ]
    # On the same host its host:pid is provably gone: failed at the next look (`interrupted`), unless its
    # heartbeat grace ran out first on a loaded machine (a machine gone entirely: the stale-grid test).
    assert dead.state == TrialState.FAIL and dead.user_attrs["reason"] in (INTERRUPTED, HEARTBEAT_LOST)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # Target 6 grid points; the dead one was queued again once and run by a live worker.
    assert len(complete) == 6 and len({point(t) for t in complete}) == 6
    assert point(dead) in {point(t) for t in complete}
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(trials) == 7  # 6 complete + the dead one: the retry was not duplicated

    code, out, _ = finish(start(["leaderboard", "fake", "--csv", "-"], env(url)))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and not [r for r in rows if r["state"] == "FAIL"]  # the resumed trial: once, its latest run
    code, out, _ = finish(start(["leaderboard", "fake", "--csv", "-", "--all"], env(url)))
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and [r["reason"] for r in rows if r["state"] == "FAIL"] == [dead.user_attrs["reason"]]
    [resumed] = [r for r in rows if r["attempt"] == "2"]  # its second run, linked to the first
    assert resumed["attempt_of"] == str(dead.number) and resumed["state"] == "COMPLETE"


# ----------------------------------------------------------------------------- coordinators in one process


def test_multi_machine_two_coordinators_random_stage_stop_at_target(study_file, postgres_db: str) -> None:
    """Interleaved coordinators count each other's trials: the stage gets exactly its target."""
    spec = load_spec(study_file("peak_inside", coarse="trials = 7\nepochs = 1"))
    store = Store(spec.name, url=postgres_db)
    info = start_coarse(store, spec, {})
    runs = [Coordinator(store, info, salt=0), Coordinator(store, info, salt=1)]
    try:
        while True:
            jobs = [(r, _next_job(r)) for r in runs]
            jobs = [(r, j) for r, j in jobs if j is not None]
            if not jobs:
                break
            for r, job in jobs:
                r.finish(job, TrialOutcome("complete", {"val_accuracy": 0.5}, duration_s=0.0))
    finally:
        for r in runs:
            r.close()
    trials = store.trials(info)
    # Both asked while the other's trial was in flight, yet neither overshot: 7, not 8.
    assert len(trials) == 7 and all(t.state == TrialState.COMPLETE for t in trials)
    assert all(r.ledger.ran > 0 for r in runs) and not any(isinstance(r.next(), Wait) for r in runs)
    assert len({t.params["lr"] for t in trials}) == 7  # different seeds: different draws


def test_multi_machine_stale_grid_trial_is_requeued_once(study_file, postgres_db: str, monkeypatch) -> None:
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("HPSEARCH_HEARTBEAT_GRACE", "2")
    spec = load_spec(study_file("peak_inside", coarse='strategy = "grid"\ntrials = 4\nepochs = 1', params=GRID))
    store = Store(spec.name, url=postgres_db)
    info = start_coarse(store, spec, {})
    ghost = Coordinator(store, info)
    job = _next_job(ghost)  # a machine takes a point ... and dies: no more heartbeats
    assert job is not None
    ghost.heartbeat.close()  # type: ignore[union-attr]
    time.sleep(3.5)
    others = [Coordinator(store, info, salt=s) for s in (1, 2)]  # both look at the stale trial
    for r in others:
        r.close()
    trials = store.trials(info)
    [dead] = [t for t in trials if t.number == job.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["reason"] == HEARTBEAT_LOST
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert len(waiting) == 4  # 3 never taken + the dead point queued ONCE, though two coordinators saw it
    assert sum(t.system_attrs["fixed_params"] == job.params for t in waiting) == 1
    ghost.close()
    result = run_stage(store, info)
    assert sum(t.state == TrialState.COMPLETE for t in result.trials) == 4


# ----------------------------------------------------------------------------- interoperability, env, masking


def test_multi_machine_optuna_cli_reads_the_study(study_file, postgres_db: str, run_cli) -> None:
    path = study_file("peak_inside", coarse="trials = 5\nepochs = 1")
    code, _, err = run_cli("coarse", path, "--storage", postgres_db, "--workers", "0", "--quiet")
    assert code == 0, err
    listed = subprocess.run(
        [OPTUNA, "trials", "--study-name", "fake.coarse", "--storage", postgres_db, "-f", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=DEADLINE_S,
    )
    rows = json.loads(listed.stdout)
    ours = coarse_trials(postgres_db)
    assert len(rows) == len(ours) == 5
    assert sorted(r["value"] for r in rows) == pytest.approx(sorted(t.value for t in ours))
    assert {r["state"] for r in rows} == {"COMPLETE"}


def test_multi_machine_storage_env_works_for_every_reading_command(
    study_file, postgres_db: str, run_cli, monkeypatch, tmp_path: Path
) -> None:
    url = with_password(postgres_db)
    monkeypatch.setenv("HPSEARCH_STORAGE", url)
    code, out, err = run_cli("coarse", study_file("peak_inside", coarse="trials = 3\nepochs = 1"), "--workers", "0")
    assert code == 0 and PASSWORD not in out + err, err
    assert stage_exists(postgres_db)  # it went to PostgreSQL, not to the local results folder
    assert not (tmp_path / "results" / "fake" / "optuna.journal").exists()  # (its trial logs are kept locally)
    for args in (
        ["worker", "fake", "--workers", "0"],  # stage complete: nothing to do, exit 0
        ["leaderboard", "fake", "--csv", "-"],
        ["studies"],
        ["refine", "fake", "--trials", "2", "--workers", "0"],
        ["curves", "fake", "--out", str(tmp_path / "c.png")],
        ["report", "fake"],
    ):
        code, out, err = run_cli(*args)
        assert code == 0, (args, err)
        assert PASSWORD not in out + err, args
    assert [s.name for s in Store("fake", url=postgres_db).stages()] == ["coarse", "refine-1"]


def test_multi_machine_password_masked_in_errors(run_cli, postgres_url: str) -> None:
    port = postgres_url.rsplit(":", 1)[1].split("/")[0]
    code, _, err = run_cli("worker", "nope", "--storage", f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/hpsearch")
    assert code == 2 and "Error:" in err and "postgres:***@" in err and PASSWORD not in err
    code, _, err = run_cli("leaderboard", "x", "--storage", f"postgresql://u:{PASSWORD}@127.0.0.1:1/none")
    assert code == 2 and "u:***@" in err and PASSWORD not in err
