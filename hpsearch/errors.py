"""The errors hpsearch raises. The CLI turns each into one `Error: ...` line."""

from __future__ import annotations


class HpsearchError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits with `exit_code`."""

    exit_code = 2


class SpecError(HpsearchError):
    """A study file (or a flag overriding it) is invalid: names the file, the key and the fix."""

    def __init__(self, file: object, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}")


class WorkloadError(HpsearchError):
    """A workload path or function cannot be found or loaded."""


class StorageError(HpsearchError):
    """The study storage cannot be opened or written."""


class StudyNotFound(HpsearchError):
    """No study or stage of that name exists in the storage."""


class StageFailed(HpsearchError):
    """Every trial of a stage failed: the search itself is broken, not the parameters."""

    exit_code = 1


class TrialStopped(Exception):
    """Raised inside a workload's `trial.report(...)` to end the trial early (pruned/diverged).

    Workloads need not catch it: it travels up to hpsearch, which records the
    trial as PRUNED with `reason`.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DispatchError(HpsearchError):
    """Devices or worker options that this machine cannot satisfy (no GPU, bad --devices, ...)."""
