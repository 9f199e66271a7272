"""Experiment trackers: every trial of a stage sent, as it runs, to MLflow (mlflow.py) or TensorBoard
(tensorboard.py).

A tracker is one more listener of the coordinator's TrialEvents (search/jobs.py), heard after the
progress display, and closed when its stage ends. A tracker never costs a trial or a result: one that
cannot be reached when its stage starts is one warning line and the stage runs untracked; one that fails
later is one warning line, once, and it is dropped. What is configured comes from trackers/settings.py;
a tracker's package that is not installed is an error before any trial runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from hpsearch.errors import HpsearchError

if TYPE_CHECKING:
    from types import TracebackType

    from hpsearch.border import BorderFlag
    from hpsearch.search.jobs import Listener, TrialEvent
    from hpsearch.store.storage import StageInfo
    from hpsearch.trackers.settings import TrackerSpec

Warn = Callable[[str], None]  # hears one warning line (the CLI prints it on stderr)
ENDINGS = ("finished", "interrupted", "failed")  # how a stage's run ended, as a tracker's close hears it


class TrackerDown(Exception):
    """A tracker that cannot be reached, or refuses what it is sent: said in one warning, never a failed trial.
    The message says why in a few words: 'unreachable (ConnectionError: [Errno 111] Connection refused)'."""


class Tracker(Protocol):
    """One tracker of one stage (opened when the stage starts)."""

    name: str  # how warnings name it: "mlflow at http://127.0.0.1:5000", "tensorboard at /abs/runs"

    def __call__(self, event: TrialEvent) -> None:
        """A trial started, reported an epoch, or finished: send it."""

    def close(self, flags: Sequence[BorderFlag], ended: str) -> None:
        """The stage's run ended (`ended`: one of ENDINGS) with these border flags (none when not finished)."""


def check_installed(spec: TrackerSpec) -> None:
    """Raise HpsearchError naming the extra to install when a tracker's package is missing (imports nothing)."""
    for kind in spec.kinds:
        if importlib.util.find_spec(kind) is None:
            raise _missing(kind, "is not installed")


def open_trackers(spec: TrackerSpec, info: StageInfo, warn: Warn) -> Tracking:
    """The stage's trackers, connected: one that cannot be reached or written is one warning line and left
    out. Raises HpsearchError when a tracker's package is missing. Use it as a context manager (the exit
    closes them: see Tracking)."""
    check_installed(spec)
    opened: list[Tracker] = []
    for kind in spec.kinds:
        try:
            tracker = _open(kind, spec, info)
        except ImportError as e:  # installed, but one of its own dependencies is not
            raise _missing(kind, f"cannot be imported ({e})") from None
        except TrackerDown as e:
            warn(f"{_name(kind, spec)}: {e}; trials are not tracked")
            continue
        opened.append(tracker)
    return Tracking(info.name, opened, warn)


class Tracking:
    """A stage's trackers behind one listener: each event goes to every tracker still alive. A tracker's
    exception is one warning line, once, after which that tracker is dropped: never a failed trial."""

    def __init__(self, stage: str, trackers: Sequence[Tracker], warn: Warn) -> None:
        self.stage, self.trackers, self.warn = stage, list(trackers), warn

    def __call__(self, event: TrialEvent) -> None:
        for tracker in list(self.trackers):
            try:
                tracker(event)
            except Exception as e:
                self.trackers.remove(tracker)
                self.warn(f"{tracker.name}: {_why(e)}; its trials are no longer tracked")

    def around(self, listener: Listener | None) -> Listener | None:
        """`listener` (the progress display), then the trackers: the one listener the stage's run takes."""
        return fan_out([listener, self] if self.trackers else [listener])

    def close(self, flags: Sequence[BorderFlag] = (), ended: str = "finished") -> None:
        """End the stage in every tracker still alive (its border flags, how it ended). Closing twice is
        closing once."""
        trackers, self.trackers = self.trackers, []
        for tracker in trackers:
            try:
                tracker.close(flags, ended)
            except Exception as e:
                self.warn(f"{tracker.name}: {_why(e)}; the end of stage {self.stage} is not tracked")

    def __enter__(self) -> Tracking:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Close what close() has not: an interrupted run (Ctrl-C, preempted) or one an error ended."""
        interrupted = kind is not None and issubclass(kind, KeyboardInterrupt)
        self.close(ended="finished" if kind is None else "interrupted" if interrupted else "failed")


def fan_out(listeners: Sequence[Listener | None]) -> Listener | None:
    """One listener calling each of `listeners` in turn (None for none); each is called as it is (Tracking
    keeps a tracker's failure from reaching the others)."""
    present = [listener for listener in listeners if listener is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def each(event: TrialEvent) -> None:
        for listener in present:
            listener(event)

    return each


def _open(kind: str, spec: TrackerSpec, info: StageInfo) -> Tracker:
    if kind == "mlflow":
        from hpsearch.trackers.mlflow import MLflowTracker

        return MLflowTracker.open(spec.mlflow, spec.mlflow_experiment or info.spec.name, info)
    from hpsearch.trackers.tensorboard import TensorBoardTracker

    return TensorBoardTracker.open(spec.tensorboard, info)


def _name(kind: str, spec: TrackerSpec) -> str:
    from hpsearch.store.passwords import mask_url

    return f"{kind} at {mask_url(getattr(spec, kind))}"


def _missing(kind: str, what: str) -> HpsearchError:
    return HpsearchError(f"trackers.{kind}: the {kind} package {what}; pip install 'hpsearch[{kind}]'")


def _why(e: Exception) -> str:
    """A tracker's exception in a few words: TrackerDown's own, else its type and first line."""
    if isinstance(e, TrackerDown):
        return str(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__
