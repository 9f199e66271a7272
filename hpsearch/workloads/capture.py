"""Where a trial runs and where its output goes: its study's folder, its log file. The one place for both.

`run_captured(records, fd_level, body)` runs `body` (one trial, or a population
of them) in the records' `workdir` with everything it prints going to the
log at `log_path`, then stamps each outcome with `log` ("host:path") and
`log_tail` (its last lines). Both executors use it:

- a worker process (dispatch/worker.py) passes fd_level=True: file
  descriptors 1 and 2 point at the log for the duration, so the output of
  C extensions and of the processes the trial starts is caught too;
- the in-process executor (dispatch/inline.py, `--workers 0`) passes
  fd_level=False: sys.stdout and sys.stderr are redirected, and fd 1 too
  (a child's prints must not land in the command's data either), while fd 2
  stays the live view's (the CLI's consoles hold the real streams).

With a bound (record.log_limit > 0, the default) fds 1 and 2 (or fd 1 and
sys.stdout, sys.stderr in-process) point at a pipe instead, read by the
process's log keeper, which keeps the log's first and last bytes
(workloads/logbound.py); log_tail reads the file's end as before.

A population (several records trained together by one call) shares one log,
its first member's log_path: its output cannot be told apart by member.
Every member's outcome points at that file. A record with log_path ""
is not captured; a workdir that is "" or does not exist here leaves the
current folder as it is (the trial still runs; its log says so).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from hpsearch.workloads import logbound
from hpsearch.workloads.api import TrialOutcome, TrialRecord

TAIL_LINES = 20  # lines of a log kept with the trial (shown for failures, and where the file is out of reach)
TAIL_CHARS = 4000  # and at most this many characters of them (the end is kept)
_TAIL_READ = 16384  # bytes read from the end of the file to find them


def run_captured(
    records: Sequence[TrialRecord], fd_level: bool, body: Callable[[], list[TrialOutcome]]
) -> list[TrialOutcome]:
    """Run `body` in the records' folder with its output in their log; stamp the outcomes with the log."""
    with trial_scope(records, fd_level):
        outcomes = body()
    log, tail = log_fields(records)
    for outcome in outcomes:
        outcome.log, outcome.log_tail = log, tail
    return outcomes


@contextlib.contextmanager
def trial_scope(records: Sequence[TrialRecord], fd_level: bool) -> Iterator[None]:
    """For the duration: output into the shared log (if any), current folder the study's (if here)."""
    path = shared_log_path(records)
    with (
        _capture(path, fd_level, records[0].log_limit) if path else contextlib.nullcontext(),
        _in_folder(records[0].workdir if records else ""),
    ):
        yield


def shared_log_path(records: Sequence[TrialRecord]) -> str:
    """The log a trial, or a population of them, writes: the first record's ("" = none)."""
    return records[0].log_path if records else ""


def log_fields(records: Sequence[TrialRecord]) -> tuple[str, str]:
    """(log, log_tail) for these records' outcomes: ("host:path", last lines), or ("", "") with no file."""
    path = shared_log_path(records)
    if not path or not os.path.isfile(path):
        return "", ""
    return log_ref(path), read_tail(path)


def log_ref(path: str | Path) -> str:
    """How a log is named in storage: 'host:/abs/path', valid from any machine."""
    return f"{socket.gethostname()}:{path}"


def on_this_host(ref: str) -> bool:
    """Whether the log `ref` ('host:path') was written on this machine."""
    return ref.partition(":")[0] == socket.gethostname()


def local_log(ref: str) -> Path | None:
    """The file `ref` ('host:path') names when it is on this machine and exists, else None."""
    path = ref.partition(":")[2]
    if not on_this_host(ref) or not path or not os.path.isfile(path):
        return None
    return Path(path)


def read_tail(path: str | Path, lines: int = TAIL_LINES, max_chars: int = TAIL_CHARS) -> str:
    """The last `lines` lines of a file (at most `max_chars` characters, the end kept); "" if unreadable."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(size - _TAIL_READ, 0))
            data = f.read()
    except OSError:
        return ""
    text = "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])
    return text[-max_chars:]


# -- internals


@contextlib.contextmanager
def _capture(path: str, fd_level: bool, limit: int) -> Iterator[None]:
    """Point the process's output at the file `path` (created with its folder; replaced if there), through
    the log keeper when `limit` bounds it (see logbound.py)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        file_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if limit > 0 else os.O_APPEND), 0o644)
    except OSError as e:  # an unwritable results folder must not stop the search: run uncaptured
        print(f"hpsearch: cannot write the trial log {path} ({e}); its output is not captured", file=sys.stderr)
        yield
        return
    keeper = logbound.keeper() if limit > 0 else None
    fd = keeper.begin(file_fd, path, limit) if keeper is not None else None
    if fd is None:  # unbounded, or no keeper to bound it: the output goes straight into the file
        fd, keeper = file_fd, None
    else:
        os.close(file_fd)  # the keeper holds its own copy
    try:
        with _pointed_at(fd, fd_level):
            yield
    finally:
        os.close(fd)  # the pipe's last write end here: the keeper reads what is left, then says it is done
        if keeper is not None:
            keeper.finish()


@contextlib.contextmanager
def _pointed_at(fd: int, fd_level: bool) -> Iterator[None]:
    """For the duration: fds 1 and 2 (fd_level) or fd 1 and sys.stdout, sys.stderr write to `fd`."""
    fds = (1, 2) if fd_level else (1,)
    log = open(fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115 - closed last, in the outer finally
    try:
        _flush()
        saved = [(target, os.dup(target)) for target in fds]
        try:
            for target in fds:
                os.dup2(fd, target)
            if fd_level:  # sys.stdout/stderr write to fds 1 and 2 already; line by line, so both interleave
                with _line_buffered(sys.stdout):
                    yield
            else:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    yield
        finally:
            _flush()
            log.flush()
            for target, copy in saved:
                os.dup2(copy, target)
                os.close(copy)
    finally:
        log.close()


@contextlib.contextmanager
def _in_folder(workdir: str) -> Iterator[None]:
    if not workdir:
        yield
    elif not os.path.isdir(workdir):
        print(
            f"hpsearch: the study's folder {workdir} is not on this machine; running in {os.getcwd()}", file=sys.stderr
        )
        yield
    else:
        with contextlib.chdir(workdir):
            yield


@contextlib.contextmanager
def _line_buffered(stream: TextIO) -> Iterator[None]:
    before = getattr(stream, "line_buffering", None)
    if not isinstance(stream, io.TextIOWrapper) or before:
        yield
        return
    stream.reconfigure(line_buffering=True)
    try:
        yield
    finally:
        stream.reconfigure(line_buffering=before)


def _flush() -> None:
    """Flush Python's and C's buffered output, so it lands where it was written (before a switch)."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    with contextlib.suppress(OSError, AttributeError):
        _libc().fflush(None)


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL(None)
