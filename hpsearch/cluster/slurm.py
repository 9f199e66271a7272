"""Workers on a SLURM cluster: one job array whose every task joins a study's stage (submitit submits it).

Each task runs what `hpsearch worker NAME` runs on a machine of its own: a coordinator that joins the
stage through the study's storage, with its own worker processes (--workers, --devices as on the
command line), until the stage has its trials. The storage must be one every node reaches: PostgreSQL
(--storage), or the journal file in a results folder on a filesystem every node shares (see README, "On
a SLURM cluster", for when a journal there is safe). Checkpoints live in the results folder too.

Preemption: submitit asks SLURM for `--signal=USR2@<signal_delay_s>` and `--requeue`. When SLURM warns a
task (preemption, or the time limit coming), submitit's handler in the task requeues it (`scontrol
requeue`) and leaves with SystemExit; on its way out the task's coordinator ends its workers (the trials'
checkpoints stay on disk) and records its running trials `interrupted`, queued to be resumed. The
requeued task (SLURM_RESTART_COUNT=1) joins the stage again and resumes them. A task cancelled or
killed outright leaves RUNNING trials that the other tasks fail (host:pid gone, or heartbeat lost) and
resume.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpsearch.dispatch.plan import DispatchConfig
from hpsearch.errors import HpsearchError, Preempted
from hpsearch.limits import LimitOverrides
from hpsearch.search.jobs import TrialEvent
from hpsearch.search.liveness import slurm_task

SIGNAL_DELAY_S = 120  # the warning a task gets before SLURM takes its node: time to end its workers


class SlurmError(HpsearchError):
    """sbatch is missing, or SLURM refused the job (its reason quoted); nothing was submitted."""


@dataclass(frozen=True)
class SlurmOptions:
    """What the job array asks SLURM for (sbatch's options); None: SLURM's default."""

    partition: str | None = None
    time_min: int = 240  # each task's time limit, minutes
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    mem: str | None = None  # e.g. "16G"
    account: str | None = None
    extra: tuple[str, ...] = ()  # more sbatch options, "--qos=low" or "qos=low"
    signal_delay_s: int = SIGNAL_DELAY_S

    def parameters(self, name: str, tasks: int) -> dict[str, Any]:
        """submitit's parameters for an array of `tasks` tasks named `name`."""
        extra: dict[str, Any] = {"requeue": True}
        for option in self.extra:
            key, _, value = option.removeprefix("--").partition("=")
            extra[key.replace("-", "_")] = value or True
        if self.account:
            extra["account"] = self.account
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": self.time_min,
            "slurm_array_parallelism": tasks,
            "slurm_signal_delay_s": self.signal_delay_s,
            "slurm_additional_parameters": extra,
            "tasks_per_node": 1,
            "nodes": 1,
        }
        optional: tuple[tuple[str, str | int | None], ...] = (
            ("slurm_partition", self.partition),
            ("slurm_gpus_per_task", self.gpus_per_task),
            ("cpus_per_task", self.cpus_per_task),
            ("slurm_mem", self.mem),
        )
        params.update({setting: given for setting, given in optional if given is not None})
        return params


@dataclass
class StageWorker:
    """What each task of the array runs (picklable): what `hpsearch worker NAME` runs, joining `stage` of
    study `name` with its own workers (`dispatch`, `overrides`, `pruner` as the command line gave them)."""

    name: str
    stage: str
    directory: str | None = None
    storage: str | None = None
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    overrides: LimitOverrides = field(default_factory=LimitOverrides)
    pruner: str = "none"
    track: tuple[str, ...] = ()  # --track entries over the study's [trackers] (trackers/settings.py)

    def __call__(self, task: int) -> int:
        from hpsearch.dispatch import make_executor
        from hpsearch.search.stages import join_stage
        from hpsearch.store.storage import Store
        from hpsearch.trackers import open_trackers
        from hpsearch.trackers.settings import tracker_spec

        try:
            store = Store(self.name, self.directory, self.storage, create=False)
            info = store.stage(self.stage)
        except HpsearchError as e:  # this node cannot reach the study: the task's log says why, in one line
            print(f"task {task}: cannot join {self.name} {self.stage}: {e}", flush=True)
            raise
        executor = make_executor(self.dispatch, self.overrides)
        print(f"task {task}: joining {self.name} {self.stage} in {store.location}", flush=True)
        trackers = tracker_spec(info.spec, list(self.track))
        try:
            with open_trackers(trackers, info, lambda line: print(f"warning: {line}", flush=True)) as tracking:
                result = join_stage(store, self.stage, executor, listener=tracking.around(_log), pruner=self.pruner)
                tracking.close(result.flags)
        except Preempted:  # warned by SLURM (USR1, USR2): its trials are recorded, to be resumed
            print(f"task {task}: preempted; back in the queue", flush=True)
            requeue()
            return Preempted.exit_code
        finally:
            getattr(executor, "close", lambda: None)()
        print(f"task {task}: {result.finished}/{result.target} trials of {self.stage} done", flush=True)
        return 0

    def checkpoint(self, task: int) -> Any:
        """Called by submitit when SLURM warns the task (USR2) outside a stage's run: resubmit the same task,
        which joins the stage again and resumes its trials (what they saved is in their checkpoint folders)."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, task)


def _log(event: TrialEvent) -> None:
    """The task's log: one line per finished trial."""
    if event.kind == "finish" and event.outcome is not None:
        reason = f" ({event.outcome.reason})" if event.outcome.reason else ""
        print(f"trial {event.job.number} {event.outcome.state}{reason}: {event.done}/{event.target} done", flush=True)


def submit(folder: Path, name: str, worker: StageWorker, tasks: int, options: SlurmOptions) -> list[Any]:
    """Submit `tasks` tasks running `worker` as one job array; its submitit files (sbatch script, each
    task's log) in `folder`. Returns submitit's jobs. Raises SlurmError when sbatch is missing or refuses."""
    try:
        import submitit
    except ImportError:
        raise SlurmError("submitit is not installed: pip install 'hpsearch[slurm]'") from None
    if shutil.which("sbatch") is None:
        raise SlurmError("cannot run sbatch (not on PATH): run this on a SLURM login node")
    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    executor.update_parameters(**options.parameters(name, tasks))
    said = io.StringIO()  # submitit prints sbatch's complaint itself: quoted once, in the error, instead
    try:
        with contextlib.redirect_stderr(said):
            return list(executor.map_array(worker, range(tasks)))
    except FileNotFoundError as e:
        raise SlurmError(f"cannot run sbatch ({e.strerror or e}): is this a SLURM login node?") from None
    except submitit.core.utils.FailedJobError as e:
        reason = " ".join(str(e).split()) or " ".join(said.getvalue().split()) or "no reason given"
        raise SlurmError(f"sbatch refused the job: {reason}") from None


def requeue() -> None:
    """Put this SLURM task back in the queue (scontrol requeue): it starts again, from the beginning, and
    its `hpsearch worker` joins the stage and resumes the trials it was running."""
    if task := slurm_task():
        subprocess.run(["scontrol", "requeue", task], check=False)
