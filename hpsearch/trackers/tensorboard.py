"""TensorBoard: one run (an event-file folder) per trial, <folder>/<study>/<stage>/trial-<N>/.

A trial's run holds each epoch's metrics as scalars at step = epoch and, when it ends, its final metrics
(`final/<name>`) and `duration_s`, and the HParams plugin's data: its params with `stage`, `seed` and
`state` (complete, pruned, fail) as hyperparameters too, so the HParams tab filters and groups by them
(a param of one of those names keeps it; ours becomes `hpsearch_<name>`), and the session's status
(success, failure; TensorBoard has no "stopped early": a pruned trial's is unknown). Its reason is a text
summary (`reason`). The stage's folder gets its border flags as text (`border_flags`) when it ends.

Written with TensorBoard's own event writer and protos: neither TensorFlow nor torch is imported.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# tensorboard ships neither types nor stubs (no py.typed): each import below is untyped for mypy.
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams.summary_v2 import hparams_pb
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from hpsearch.trackers import TrackerDown
from hpsearch.workloads.api import TrialStatus

if TYPE_CHECKING:
    from hpsearch.border import BorderFlag
    from hpsearch.search.jobs import TrialEvent
    from hpsearch.store.storage import StageInfo
    from hpsearch.workloads.api import TrialOutcome

FLUSH_S = 5  # a running trial's epochs reach the files (and a TensorBoard watching them) within seconds
SESSION_STATUS = {
    TrialStatus.COMPLETE: api_pb2.STATUS_SUCCESS,
    TrialStatus.FAIL: api_pb2.STATUS_FAILURE,
    TrialStatus.PRUNED: api_pb2.STATUS_UNKNOWN,
}


class TensorBoardTracker:
    """One stage's trials as TensorBoard runs under <folder>/<study>/<stage>/ (see the module docstring)."""

    def __init__(self, folder: Path, info: StageInfo) -> None:
        self.folder, self.info = folder, info
        self.name = f"tensorboard at {folder.parent.parent}"
        self.writers: dict[int, EventFileWriter] = {}  # trial number -> its run's writer, while it runs
        self.started: dict[int, float] = {}

    @classmethod
    def open(cls, root: str, info: StageInfo) -> TensorBoardTracker:
        """The stage's folder, created. Raises TrackerDown when it cannot be."""
        folder = Path(root) / info.spec.name / info.name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise TrackerDown(f"cannot write ({type(e).__name__}: {e.strerror or e})") from None
        return cls(folder, info)

    def __call__(self, event: TrialEvent) -> None:
        number = event.job.number
        if event.kind == "start":
            self.writers[number] = EventFileWriter(str(self.folder / f"trial-{number}"), flush_secs=FLUSH_S)
            self.started[number] = time.time()
        elif event.kind == "report" and event.metrics is not None and number in self.writers:
            self._scalars(self.writers[number], event.metrics, event.epoch or 0)
        elif event.kind == "finish" and event.outcome is not None and number in self.writers:
            self._finish(event, event.outcome)

    def close(self, flags: Sequence[BorderFlag], ended: str) -> None:
        """Close the trials' files still open; the stage's border flags as text in its folder (when it finished)."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
        if ended != "finished":
            return
        writer = EventFileWriter(str(self.folder))
        text = "\n".join(f"- {f.message()}" for f in flags) or "none: no best value on the border of its range"
        _write(writer, text_pb("border_flags", text), 0)
        writer.close()

    def _finish(self, event: TrialEvent, outcome: TrialOutcome) -> None:
        job, record = event.job, event.job.record
        writer = self.writers.pop(job.number)
        step, state = max(job.heard_epochs, default=0), TrialStatus(outcome.state)
        self._scalars(writer, {f"final/{k}": v for k, v in outcome.metrics.items()}, step)
        self._scalars(writer, {"duration_s": outcome.duration_s}, step)
        ours = {"stage": self.info.name, "seed": record.seed, "state": state.value}
        hparams: dict[str, Any] = {k: v for k, v in record.params.items() if isinstance(v, (bool, int, float, str))}
        hparams.update({(f"hpsearch_{k}" if k in hparams else k): v for k, v in ours.items()})
        started = self.started.pop(job.number, None)
        _write(writer, hparams_pb(hparams, trial_id=f"{self.info.name}/trial-{job.number}", start_time_secs=started), 0)
        end = plugin_data_pb2.SessionEndInfo(status=SESSION_STATUS[state], end_time_secs=time.time())
        _write(writer, _hparams_summary(metadata.SESSION_END_INFO_TAG, end), 0)
        if outcome.reason:
            _write(writer, text_pb("reason", outcome.reason), step)
        writer.close()

    @staticmethod
    def _scalars(writer: EventFileWriter, metrics: dict[str, float], step: int) -> None:
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in metrics.items()]
        _write(writer, summary_pb2.Summary(value=values), step)


def _hparams_summary(tag: str, end: plugin_data_pb2.SessionEndInfo) -> summary_pb2.Summary:
    """A session's end as the HParams plugin reads it (what its summary.session_end_pb writes, without TensorFlow)."""
    data = metadata.create_summary_metadata(plugin_data_pb2.HParamsPluginData(session_end_info=end))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=data, tensor=metadata.NULL_TENSOR)])


def _write(writer: EventFileWriter, summary: summary_pb2.Summary, step: int) -> None:
    writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
