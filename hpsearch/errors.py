"""The errors hpsearch raises. The CLI turns each into one `Error: ...` line.

Library errors name the settings they are about in library terms: a message
writes `$workers`, `$storage` or `$per_device` where a setting belongs, and
`str(error)` reads "workers", "storage", "per_device". The CLI renders the same
message with its flags instead (`--workers`, `--storage`, `--per-device`),
so no library module has to know the command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

SETTING = re.compile(r"\$([a-z][a-z_]*)")


def setting_name(name: str) -> str:
    """How the library spells a setting in a message: its own name."""
    return name


def render_settings(text: str, name_of: Callable[[str], str] = setting_name) -> str:
    """`text` with every `$setting` spelled by `name_of` (errors, and notices such as a capped worker count)."""
    return SETTING.sub(lambda m: name_of(m.group(1)), text)


class HpsearchError(Exception):
    """A problem the user can fix. The CLI prints it on one line and exits with `exit_code`."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        self.template = message
        super().__init__(self.render(setting_name))

    def render(self, name_of: Callable[[str], str]) -> str:
        """The message with every `$setting` spelled by `name_of` (the CLI passes its flag names)."""
        return render_settings(self.template, name_of)


class SpecError(HpsearchError):
    """A study file (or a setting overriding it) is invalid: names the file, the key and the fix."""

    def __init__(self, file: object, key: str, message: str) -> None:
        self.file = str(file)
        self.key = key
        self.message = message
        super().__init__(f"{self.file}: {key}: {message}")


class StageExists(SpecError):
    """The study file no longer matches a stored stage that has results (the CLI says how to delete it)."""


class WorkloadError(HpsearchError):
    """A workload path or function cannot be found or loaded."""


class StorageError(HpsearchError):
    """The study storage cannot be opened or written."""


class JournalDamaged(StorageError):
    """A record in the middle of a journal cannot be read (the CLI says how to repair it)."""

    def __init__(self, path: Any, line: int) -> None:
        self.path, self.line = path, line
        super().__init__(
            f"{path}: damaged record at line {line}; repair the study (every other record is kept, with a backup)"
        )


class JournalWriteError(StorageError):
    """Appending to the journal failed (a full disk): nothing was half-written."""

    exit_code = 1


class StudyNotFound(HpsearchError):
    """No study of that name exists in the storage (the CLI adds how to create one)."""


class StageNotFound(StudyNotFound):
    """The study exists but has no stage of that name."""


class TrialNotFound(StageNotFound):
    """The stage exists but has no trial of that number."""


class NoTrialLog(HpsearchError):
    """The trial exists but left no log."""


class StageFailed(HpsearchError):
    """Every trial of a stage failed: the search itself is broken, not the parameters."""

    exit_code = 1


class StageStoppedShort(HpsearchError):
    """A stage ended before its target (its failure cap, or the broken-workload rule): finished trials stay."""

    exit_code = 1


class TrialStopped(Exception):
    """Raised inside a workload's `trial.report(...)` to end the trial early (pruned/diverged).

    Workloads need not catch it: it travels up to hpsearch, which records the
    trial as PRUNED with `reason`.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TrialFailed(Exception):
    """Raised by hpsearch's own workload kinds (a command) to fail a trial with `reason` as it is,
    e.g. "exit code 3: CUDA out of memory" (other exceptions are reported with their type)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DispatchError(HpsearchError):
    """Devices or worker settings that this machine cannot satisfy (no GPU, bad devices, ...)."""


class Preempted(KeyboardInterrupt):
    """SIGUSR1 arrived: a cluster's warning that it takes the node back (SLURM's --signal). Handled as
    Ctrl-C is (clean-up runs), but the running trials are recorded `preempted`, to be resumed."""

    exit_code = 75  # EX_TEMPFAIL: run the same command again (a SLURM task requeues itself)
