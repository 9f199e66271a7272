"""The one-node SLURM cluster of tests/slurm.py does what hpsearch's SLURM tests rely on.

Each test is also the recipe: job arrays, a signal to the batch script, a requeue with its restart
count, a signal before the time limit, and submitit's map_array. Polls give up only after
tests/slurm.GIVE_UP_S (minutes), far above the seconds each step takes here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.slurm import SlurmCluster, wait_until

pytestmark = pytest.mark.slurm

# Waits in short sleeps (a bash trap runs only between two foreground commands).
TRAP_USR1 = """#!/bin/bash
trap 'echo "USR1 in task $SLURM_ARRAY_TASK_ID" > "{out}/usr1_$SLURM_ARRAY_TASK_ID"; exit 0' USR1
touch "{out}/started_$SLURM_ARRAY_TASK_ID"
while true; do sleep 0.2; done
"""


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def show_job(slurm: SlurmCluster, job: str) -> str:
    return slurm.run("scontrol", "-o", "show", "job", job)


def eligible(shown: str) -> str:
    """EligibleTime of a `scontrol -o show job` line (ISO text: compares as time)."""
    return next(w for w in shown.split() if w.startswith("EligibleTime=")).partition("=")[2]


def test_slurm_cluster_node_is_idle_with_the_machines_cpus(slurm: SlurmCluster) -> None:
    node, cpus, partition, state = slurm.run("sinfo", "-h", "-N", "-o", "%N %c %P %T").split()
    assert (node, partition, state) == ("localhost", "debug*", "idle")
    assert int(cpus) in {os.cpu_count(), len(os.sched_getaffinity(0))}
    assert slurm.run("scontrol", "show", "config").count("auth/munge") >= 1


def test_slurm_array_of_two_tasks_writes_both_files_and_empties_queue(slurm: SlurmCluster, tmp_path: Path) -> None:
    body = '#!/bin/bash\necho "task $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID" > "{out}/task_$SLURM_ARRAY_TASK_ID"\n'
    path = script(tmp_path / "a.sh", body.format(out=tmp_path))
    job = slurm.sbatch("--array=0-1", "-o", f"{tmp_path}/%A_%a.log", str(path))

    wait_until(lambda: [slurm.job_state(f"{job}_{i}") for i in (0, 1)] == ["COMPLETED"] * 2, "both tasks to complete")
    assert (tmp_path / "task_0").read_text() == f"task 0 of {job}\n"
    assert (tmp_path / "task_1").read_text() == f"task 1 of {job}\n"
    wait_until(lambda: not slurm.queue(), "the queue to empty")


def test_slurm_scancel_signal_batch_reaches_the_scripts_trap(slurm: SlurmCluster, tmp_path: Path) -> None:
    body = TRAP_USR1.format(out=tmp_path)
    job = slurm.sbatch("--array=0-1", "-o", f"{tmp_path}/%A_%a.log", str(script(tmp_path / "t.sh", body)))
    wait_until(lambda: (tmp_path / "started_0").exists() and (tmp_path / "started_1").exists(), "both tasks to start")

    slurm.run("scancel", "--signal=USR1", "--batch", f"{job}_1")

    wait_until(lambda: (tmp_path / "usr1_1").exists(), "the USR1 trap of task 1")
    assert (tmp_path / "usr1_1").read_text() == "USR1 in task 1\n"
    wait_until(lambda: slurm.job_state(f"{job}_1") == "COMPLETED", "task 1 to end by its trap's exit 0")
    assert slurm.job_state(f"{job}_0") == "RUNNING"  # the signal went to task 1 only
    assert not (tmp_path / "usr1_0").exists()


def test_slurm_requeue_restarts_the_task_with_restart_count_one(slurm: SlurmCluster, tmp_path: Path) -> None:
    # Task 1 waits on its first run; its second run (after the requeue) ends at once.
    body = f"""#!/bin/bash
echo "run restart=${{SLURM_RESTART_COUNT:-unset}}" >> "{tmp_path}/runs_$SLURM_ARRAY_TASK_ID"
if [ "$SLURM_ARRAY_TASK_ID" = 1 ] && [ -z "$SLURM_RESTART_COUNT" ]; then while true; do sleep 0.2; done; fi
"""
    job = slurm.sbatch("--requeue", "--array=0-1", "-o", f"{tmp_path}/%A_%a.log", str(script(tmp_path / "r.sh", body)))
    wait_until(lambda: (tmp_path / "runs_1").exists(), "task 1's first run")

    slurm.run("scontrol", "requeue", f"{job}_1")
    # The first run is killed (COMPLETING), then the task waits, held for cred_expire seconds
    # (REQUEUE_DELAY_S here, 120 s by default): lifted at once with StartTime=now (22.05 refuses BeginTime=now).
    wait_until(lambda: "JobState=PENDING Reason=BeginTime" in show_job(slurm, f"{job}_1"), "the requeue's hold")
    held = show_job(slurm, f"{job}_1")
    assert "Restarts=1" in held
    slurm.run("scontrol", "update", f"jobid={job}_1", "StartTime=now")

    wait_until(lambda: slurm.job_state(f"{job}_1") == "COMPLETED", "task 1's second run to complete")
    assert eligible(show_job(slurm, f"{job}_1")) < eligible(held)  # it started before the hold's end
    assert (tmp_path / "runs_1").read_text() == "run restart=unset\nrun restart=1\n"
    assert (tmp_path / "runs_0").read_text() == "run restart=unset\n"


def test_slurm_signal_before_the_time_limit_reaches_the_batch_script(slurm: SlurmCluster, tmp_path: Path) -> None:
    # --time=1 (minute) with USR1 asked 55 s before: due 5 s in, sent at slurmctld's next time-limit check (<= 30 s)
    path = script(tmp_path / "t.sh", TRAP_USR1.format(out=tmp_path))
    job = slurm.sbatch("--time=1", "--signal=B:USR1@55", "-o", f"{tmp_path}/%j.log", str(path))

    wait_until(lambda: (tmp_path / "usr1_").exists(), "USR1 before the time limit")
    wait_until(lambda: slurm.job_state(job) == "COMPLETED", "the job to end by its trap's exit 0")


def test_slurm_submitit_map_array_returns_both_results(
    slurm: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitit = pytest.importorskip("submitit")
    slurm.activate(monkeypatch)  # submitit runs sbatch (and sacct) from this process

    def square(x: int) -> tuple[int, str, str]:
        return x * x, os.environ["SLURM_ARRAY_TASK_ID"], sys.executable

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, mem_gb=1)
    assert executor.cluster == "slurm"
    jobs = executor.map_array(square, [2, 3])

    wait_until(lambda: all(job.done() for job in jobs), "submitit's two tasks to finish")
    assert [job.result() for job in jobs] == [(4, "0", sys.executable), (9, "1", sys.executable)]
    wait_until(lambda: not slurm.queue(), "the queue to empty")
    # No accounting storage (slurmdbd) here: submitit's sacct call fails, so it knows a job has ended only
    # from the job's result file, and a job's state stays UNKNOWN (squeue/scontrol know it).
    assert [job.state for job in jobs] == ["UNKNOWN", "UNKNOWN"]
    assert slurm.job_state(jobs[0].job_id) == "COMPLETED"
