"""MLflow: a run per stage ("<study>/<stage>"), and in it one nested run per trial.

A trial's run gets its params; tags for its stage, trial number, seed and attempt; each epoch's metrics
at step = epoch; and when it ends, its final metrics (as `final/<name>`), `duration_s`, its state
(`hpsearch.state`: COMPLETE, PRUNED or FAIL) and reason, its log as an artifact (when the log is on
this machine), and a status: FINISHED, KILLED (pruned) or FAILED. The stage's run gets the stage's
settings and space as tags, and its border flags (`hpsearch.border.<param>`) when it ends. A stage run
again (continued, or joined by `hpsearch worker`) finds its run and adds to it.

MlflowClient only (not the fluent API and its global active run): nothing leaks between stages. Each
call runs with short HTTP limits (unless the user set MLflow's own variables): a down server costs a
warning within seconds, not MLflow's default of minutes of retries.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from hpsearch.store.passwords import mask_url
from hpsearch.trackers import TrackerDown
from hpsearch.workloads.api import TrialStatus
from hpsearch.workloads.capture import local_log

if TYPE_CHECKING:
    from hpsearch.border import BorderFlag
    from hpsearch.search.jobs import TrialEvent
    from hpsearch.store.storage import StageInfo
    from hpsearch.workloads.api import TrialOutcome

# MLflow's defaults retry a failed request 7 times with a backoff factor of 2 (about 4 minutes) and wait
# 120 s for an answer: a down server would hold up the stage that long at each call. Ours: a few seconds.
CALLS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
PROBE = {**CALLS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}  # the stage's first call
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}  # ending a run prints its URL on stdout: hpsearch's data
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under that run
STATUS = {TrialStatus.COMPLETE: "FINISHED", TrialStatus.PRUNED: "KILLED", TrialStatus.FAIL: "FAILED"}
STAGE_STATUS = {"finished": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}
BATCH = 100  # params (and metrics) per log_batch call: MLflow's limit for params
TEXT = 5000  # characters of a tag's value (MLflow's limit is higher; a reason or a flag is far shorter)
BAD_KEY = re.compile(r"[^\w\-. /:]")  # MLflow's keys: letters, digits, _ - . space / :


class MLflowTracker:
    """One stage's runs in one MLflow experiment (see the module docstring)."""

    def __init__(self, client: MlflowClient, uri: str, experiment: str, parent: str, info: StageInfo) -> None:
        self.client, self.experiment, self.parent, self.info = client, experiment, parent, info
        self.name = f"mlflow at {mask_url(uri)}"
        self.runs: dict[int, str] = {}  # trial number -> its run, while it runs

    @classmethod
    def open(cls, uri: str, experiment: str, info: StageInfo) -> MLflowTracker:
        """The stage's run in `experiment` (created, or the one an earlier run of the stage made), marked
        running. Raises TrackerDown when the server cannot be reached or refuses."""
        client = MlflowClient(tracking_uri=uri)
        with _requests(PROBE):
            found = client.get_experiment_by_name(experiment)
        with _requests(CALLS):
            if found is not None and found.lifecycle_stage == "deleted":
                raise TrackerDown(f"the experiment {experiment!r} is deleted; restore it, or name another one")
            experiment_id = found.experiment_id if found is not None else _create_experiment(client, experiment)
            parent = _stage_run(client, experiment_id, info)
        return cls(client, uri, experiment_id, parent, info)

    def __call__(self, event: TrialEvent) -> None:
        with _requests(CALLS):
            if event.kind == "start":
                self._start(event)
            elif event.kind == "report" and event.metrics is not None and event.job.number in self.runs:
                now, step = _now(), event.epoch or 0
                metrics = [Metric(_key(k), float(v), now, step) for k, v in event.metrics.items()]
                for i in range(0, len(metrics), BATCH):
                    self.client.log_batch(self.runs[event.job.number], metrics=metrics[i : i + BATCH])
            elif event.kind == "finish" and event.outcome is not None and event.job.number in self.runs:
                self._finish(event, event.outcome)

    def close(self, flags: Sequence[BorderFlag], ended: str) -> None:
        """End the trials' runs still open (their trial never said how it ended: KILLED), then the stage's:
        its border flags as tags (when it finished), and a status for how it ended."""
        with _requests(CALLS):
            for run in self.runs.values():
                self.client.set_terminated(run, "KILLED")
            self.runs.clear()
            if ended == "finished":
                self._flags(flags)
            self.client.set_terminated(self.parent, STAGE_STATUS.get(ended, "FAILED"))

    def _start(self, event: TrialEvent) -> None:
        record, info = event.job.record, self.info
        tags = {
            PARENT_TAG: self.parent,
            "hpsearch.kind": "trial",
            "hpsearch.study": info.spec.name,
            "hpsearch.stage": info.name,
            "hpsearch.trial": str(record.number),
            "hpsearch.seed": str(record.seed),
            "hpsearch.attempt": str(record.attempt),
            "hpsearch.epochs": str(record.epochs),
        }
        run = self.client.create_run(self.experiment, run_name=f"trial-{record.number}", tags=tags)
        self.runs[record.number] = run_id = run.info.run_id
        params = [Param(_key(k), str(v)) for k, v in record.params.items()]
        for i in range(0, len(params), BATCH):
            self.client.log_batch(run_id, params=params[i : i + BATCH])

    def _finish(self, event: TrialEvent, outcome: TrialOutcome) -> None:
        job = event.job
        run = self.runs.pop(job.number)
        now, step = _now(), max(job.heard_epochs, default=0)
        metrics = [Metric(f"final/{_key(k)}", float(v), now, step) for k, v in outcome.metrics.items()]
        metrics.append(Metric("duration_s", round(outcome.duration_s, 4), now, step))
        state = TrialStatus(outcome.state)
        tags = [RunTag("hpsearch.state", state.name)]  # COMPLETE, PRUNED, FAIL: Optuna's names of the states
        if outcome.reason:
            tags.append(RunTag("hpsearch.reason", outcome.reason[:TEXT]))
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(run, metrics=metrics[i : i + BATCH], tags=tags if i == 0 else ())
        log = local_log(outcome.log) if outcome.log else None
        if log is not None:
            self.client.log_artifact(run, str(log))
        self.client.set_terminated(run, STATUS[state])

    def _flags(self, flags: Sequence[BorderFlag]) -> None:
        """The border flags as the stage run's tags (one per flagged param and side); flags an earlier run of
        the stage left that no longer hold are removed."""
        tags = {f"hpsearch.border.{_key(f.param)}.{f.side}": f.message()[:TEXT] for f in flags}
        summary = ", ".join(f"{f.param} ({f.side})" for f in flags) or "none"
        stale = [key for key in self.client.get_run(self.parent).data.tags if key.startswith("hpsearch.border.")]
        for key in stale:
            if key not in tags:
                self.client.delete_tag(self.parent, key)
        entries = [RunTag("hpsearch.border", summary), *(RunTag(k, v) for k, v in tags.items())]
        self.client.log_batch(self.parent, tags=entries)


def _create_experiment(client: MlflowClient, name: str) -> str:
    """Create the experiment; when another process created it first, that one."""
    try:
        return client.create_experiment(name)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _stage_run(client: MlflowClient, experiment: str, info: StageInfo) -> str:
    """The stage's run: the one an earlier run of the stage made (marked running again), or a new one."""
    query = (
        f"tags.`hpsearch.kind` = 'stage' and tags.`hpsearch.study` = '{info.spec.name}' "
        f"and tags.`hpsearch.stage` = '{info.name}'"
    )
    found = client.search_runs([experiment], filter_string=query, max_results=1, order_by=["attributes.start_time"])
    settings = info.settings
    given: dict[str, str | None] = {
        "hpsearch.kind": "stage",
        "hpsearch.study": info.spec.name,
        "hpsearch.stage": info.name,
        "hpsearch.parent_stage": info.parent,
        "hpsearch.metric": info.spec.metric,
        "hpsearch.direction": info.spec.direction.value,
        "hpsearch.strategy": settings.strategy.value,
        "hpsearch.trials": str(settings.trials),
        "hpsearch.epochs": str(settings.epochs),
        "hpsearch.seed": str(settings.seed),
        "hpsearch.top_k": str(settings.top_k),
        "hpsearch.budget": None if settings.budget is None else str(settings.budget),
        "hpsearch.space": "; ".join(f"{p.name} {p.describe()}" for p in info.space.params)[:TEXT],
    }
    tags = {k: v for k, v in given.items() if v}  # a coarse stage has no parent, a stage no budget
    if found:
        run = found[0].info.run_id
        client.update_run(run, status="RUNNING")
        client.log_batch(run, tags=[RunTag(k, v) for k, v in tags.items()])  # a raised target, a budget
        return str(run)
    return str(client.create_run(experiment, run_name=f"{info.spec.name}/{info.name}", tags=tags).info.run_id)


@contextmanager
def _requests(limits: dict[str, str]) -> Iterator[None]:
    """MLflow's HTTP limits set to `limits` (those the user did not set) for the calls inside, and their
    failures as TrackerDown. The process's environment is set back after: the trials' processes started
    later inherit it, and a workload's own MLflow calls keep MLflow's defaults."""
    wanted = {**{k: v for k, v in limits.items() if k not in os.environ}, **QUIET}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    except TrackerDown:
        raise
    except Exception as e:
        raise TrackerDown(_why(e)) from e
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _why(e: BaseException) -> str:
    """'unreachable (ConnectionError: [Errno 111] Connection refused)' when the server cannot be reached
    (requests' errors are OSErrors), else 'refused (<MLflow's first line>)'."""
    chain = [e]
    while (nxt := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 20:
        chain.append(nxt)
    network = next((x for x in chain if isinstance(x, OSError)), None)
    if network is not None:
        root = str(chain[-1]).strip() or type(chain[-1]).__name__
        return f"unreachable ({type(network).__name__}: {root})"
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return f"refused ({first[:300]})"


def _key(name: str) -> str:
    """A param or metric name as MLflow takes it (other characters become _)."""
    return BAD_KEY.sub("_", name)[:250] or "_"


def _now() -> int:
    return int(time.time() * 1000)
