"""Where a stage's trials are tracked: the study file's [trackers] table, with the command line's entries
in their place. Pure: nothing of MLflow or TensorBoard is imported here (or anywhere, with no tracker set)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from hpsearch.errors import HpsearchError
from hpsearch.spec import TRACKER_KEYS, StudySpec

KINDS = ("mlflow", "tensorboard")  # each is also the name of its package and of hpsearch's extra


@dataclass(frozen=True)
class TrackerSpec:
    """The trackers a stage sends its trials to; "" = not that one."""

    mlflow: str = ""  # a tracking URI: http://host:5000, sqlite:///mlflow.db, ... (as MLflow reads it)
    mlflow_experiment: str = ""  # the MLflow experiment the runs go to; "": the study's name
    tensorboard: str = ""  # the folder of the event files, absolute

    @property
    def kinds(self) -> list[str]:
        """The trackers set: "mlflow", "tensorboard"."""
        return [kind for kind in KINDS if getattr(self, kind)]


def tracker_spec(spec: StudySpec, entries: Sequence[str] | None = None, here: str | Path = ".") -> TrackerSpec:
    """The study's trackers: its [trackers] table (a tensorboard folder relative to the study file's), with
    `entries` ("KEY=VALUE", the command line's: a folder relative to `here`) in place of the table's
    keys they name; "KEY=" turns that one off. Raises HpsearchError for an entry of another form."""
    table = dict(spec.trackers)
    if table.get("tensorboard"):
        table["tensorboard"] = _absolute(table["tensorboard"], spec.folder or here)
    for entry in entries or ():
        key, sep, value = entry.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in TRACKER_KEYS:
            raise HpsearchError(
                f"$track {entry!r}: use mlflow=URI, tensorboard=FOLDER or mlflow_experiment=NAME (KEY= turns one off)"
            )
        table[key] = _absolute(value, here) if key == "tensorboard" and value else value
    return replace(TrackerSpec(), **table)


def _absolute(folder: str, base: str | Path) -> str:
    return str((Path(base) / Path(folder).expanduser()).resolve())
