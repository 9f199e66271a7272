"""`hpsearch slurm` on a real one-node SLURM cluster (tests/slurm.py starts it on loopback): a job array
of workers finishes a stage; a task preempted mid-trial is requeued and its trial resumes from its
checkpoint; nothing is left in the queue or running afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsearch.search.stages import start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import ATTEMPT_ATTR, FIRST_ATTEMPT_ATTR, REASON_ATTR
from tests.slurm import SlurmCluster, wait_until

pytestmark = pytest.mark.slurm

RESUMABLE = Path(__file__).parent / "workloads" / "resumable.py"
LR = "[params.lr]\nlow = 0.01\nhigh = 0.1\nlog = true\n"
Cli = Callable[..., tuple[int, str, str]]


def _stage(study_file: Callable[..., Path], trials: int, epochs: int) -> Store:
    """A created (not run) coarse stage of the `steady` workload, on the journal in the results folder
    (this one machine: a filesystem every node shares)."""
    coarse = f'strategy = "random"\ntrials = {trials}\nepochs = {epochs}\nseed = 1'
    spec = load_spec(study_file(f"{RESUMABLE}:steady", coarse=coarse, params=LR))
    store = Store(spec.name)
    start_coarse(store, spec, {})
    return store


def _runs(path: Path) -> list[tuple[int, int, int, int]]:
    """(trial, attempt, epoch, SLURM_RESTART_COUNT) of every epoch a run trained."""
    rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return [(int(a), int(b), int(c), int(d)) for a, b, c, d, _ in rows]


def test_slurm_job_array_of_two_workers_finishes_a_stage(
    study_file: Callable[..., Path], slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch, run_cli: Cli
) -> None:
    slurm.activate(monkeypatch)
    monkeypatch.setenv("HPSEARCH_TEST_EPOCH_S", "0.1")
    store = _stage(study_file, trials=6, epochs=3)
    code, _, err = run_cli("slurm", "fake", "--tasks", "2", "--workers", "1", "-p", "debug", "-t", "10m", "--wait")
    assert code == 0, err
    assert "submitted job array" in err
    trials = store.trials(store.stage("coarse"))
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    tasks = {t.user_attrs["owner"].partition(" slurm:")[2] for t in trials}
    assert len(tasks) == 2 and all(task.endswith(("_0", "_1")) for task in tasks)  # both tasks ran trials
    assert slurm.queue() == [] and slurm.job_processes() == []


def test_slurm_preempted_task_is_requeued_and_its_trial_resumes_from_its_checkpoint(
    study_file: Callable[..., Path],
    slurm: SlurmCluster,
    monkeypatch: pytest.MonkeyPatch,
    run_cli: Cli,
    tmp_path: Path,
) -> None:
    """SLURM warns a task (USR2, as submitit asks with --signal): its worker records its trial `preempted`
    and requeues the task; the task starts again (SLURM_RESTART_COUNT=1) and the trial continues from its
    last checkpoint, on no more than one epoch more than an uninterrupted trial."""
    slurm.activate(monkeypatch)
    runs = tmp_path / "runs.txt"
    monkeypatch.setenv("HPSEARCH_TEST_RUNS", str(runs))
    monkeypatch.setenv("HPSEARCH_TEST_EPOCH_S", "0.5")
    store = _stage(study_file, trials=1, epochs=10)
    code, _, err = run_cli("slurm", "fake", "--tasks", "1", "--workers", "1", "-p", "debug", "-t", "10m")
    assert code == 0, err
    [task] = slurm.queue()
    wait_until(lambda: any(epoch >= 3 for _, _, epoch, _ in _runs(runs)), "the trial to train 4 epochs")
    slurm.run("scancel", "--signal=USR2", task)
    wait_until(lambda: any(restarts == 1 for *_, restarts in _runs(runs)), "the requeued task to resume the trial")
    wait_until(lambda: slurm.queue() == [], "the requeued task to finish the stage")

    trials = store.trials(store.stage("coarse"))
    [stopped] = [t for t in trials if t.state == TrialState.FAIL]
    [resumed] = [t for t in trials if t.state == TrialState.COMPLETE]
    assert stopped.user_attrs[REASON_ATTR] == "preempted"
    assert resumed.user_attrs[ATTEMPT_ATTR] == 2 and resumed.user_attrs[FIRST_ATTEMPT_ATTR] == stopped.number
    first = [e for n, a, e, r in _runs(runs) if a == 1 and r == 0]
    again = [e for n, a, e, r in _runs(runs) if a == 2 and r == 1]
    assert again == list(range(first[-1] + 1, 10))  # from the checkpoint after the last epoch it finished
    assert len(first) + len(again) == 10 and sorted(resumed.intermediate_values) == list(range(10))
    assert slurm.job_processes() == []


def test_slurm_refusal_is_one_line_and_nothing_is_submitted(
    study_file: Callable[..., Path], slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch, run_cli: Cli
) -> None:
    slurm.activate(monkeypatch)
    _stage(study_file, trials=2, epochs=1)
    code, _, err = run_cli("slurm", "fake", "-p", "no_such_partition")
    assert code == 2 and err.startswith("Error: sbatch refused the job: ") and "partition" in err.lower()
    assert len(err.strip().splitlines()) == 1 and slurm.queue() == []


def test_slurm_without_sbatch_says_so(
    study_file: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, run_cli: Cli, tmp_path: Path
) -> None:
    _stage(study_file, trials=2, epochs=1)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch on it
    code, _, err = run_cli("slurm", "fake")
    assert code == 2 and "Error: cannot run sbatch" in err and len(err.strip().splitlines()) == 1, err


def test_studies_says_where_running_trials_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial's owner tag names its SLURM task inside one; `studies` and `slurm --wait` say where trials run."""
    from hpsearch.search.liveness import LIVE_COORDINATORS, is_stale, owner_tag, where

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    tag = owner_tag("tok")
    assert tag.endswith("#tok slurm:4711_3") and where(tag).endswith(" (slurm 4711_3)")
    assert is_stale(tag)  # this very process, and no coordinator "tok" lives in it: the suffix is read past
    LIVE_COORDINATORS.add("tok")
    try:
        assert not is_stale(tag)
    finally:
        LIVE_COORDINATORS.discard("tok")
    assert where("node7:12#abc") == "node7"
