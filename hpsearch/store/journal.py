"""The study journal: Optuna's JSON-lines journal file, written so that no damage loses a study.

Optuna's JournalFileBackend skips a final line without its newline (another
process may be writing it) and then appends after it: a record cut off by a
power loss, a full disk or a killed writer joins the next record into one
broken line in the middle, and from then on nothing reads. This backend
writes the same format (Optuna's own tools read it) and keeps it whole:

- before each append, under the journal's write lock (Optuna's symlink lock,
  so a record another process is still writing is never taken for torn), a
  torn or undecodable tail is set aside: the original file is kept next to
  the journal as `optuna.journal.torn-<time>`, the file is cut back to its
  last whole record, and one warning says what was dropped;
- a trial's state changes and study changes are fsynced; its params,
  attributes and reports reach the disk with the next fsync (one per trial,
  not one per write: optuna_compat.journal_record_is_durable);
- an append that fails (no space left on the device) is cut back to where
  it started, so nothing is half-written, and raises JournalWriteError
  naming the file: everything written before stays readable;
- a damaged record with whole records after it (a garbage line, a torn
  record glued to the next one) raises JournalDamaged naming the file and
  the line; `repair_journal` keeps every record before and after it
  (salvaging a whole record glued behind a torn one), with a backup.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.storages.journal import BaseJournalBackend, JournalFileSymlinkLock

from hpsearch.errors import JournalDamaged, JournalWriteError
from hpsearch.store.optuna_compat import journal_record_is_durable

log = logging.getLogger("hpsearch.store.journal")
TAIL_CHUNK = 1 << 16  # bytes read from the end to find the last whole record
RECORD_START = b'{"op_code"'  # every Optuna journal record starts so (compact JSON, op_code first)


def _decode(line: bytes) -> dict[str, Any] | None:
    """The record on one line, or None when the line is not one (torn, garbage, not UTF-8)."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


class RepairingJournalBackend(BaseJournalBackend):
    """A journal file backend (same format as optuna's JournalFileBackend) that survives damage."""

    def __init__(self, path: str | Path, shown: str | Path | None = None) -> None:
        self.path = Path(path)
        self.shown = Path(shown) if shown is not None else self.path  # how messages name it
        self.lock = JournalFileSymlinkLock(str(self.path))
        if not self.path.exists():
            self.path.touch()
        self._offsets: list[int] = [0]  # _offsets[n]: byte offset of log n's line (known so far)
        self._warned = False
        self._whole_size = -1  # the file's size when this process last knew it to end on a whole record

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        number = min(log_number_from, len(self._offsets) - 1)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(self._offsets[number])
            offset = self._offsets[number]
            bad: int | None = None  # line number of an undecodable whole line not yet followed by a good one
            for line in f:
                if offset + len(line) > size or not line.endswith(b"\n"):
                    break  # a record still being written (or torn): the next write decides
                record = _decode(line)
                if record is None:
                    bad = number if bad is None else bad
                else:
                    if bad is not None:
                        raise JournalDamaged(self.shown, bad + 1)
                    if number + 1 == len(self._offsets):
                        self._offsets.append(offset + len(line))
                    if number >= log_number_from:
                        yield record
                offset += len(line)
                number += 1
            if bad is None and offset == size:
                self._whole_size = size  # read to its end, every line whole: no tail to check before writing
            if bad is not None and not self._warned:
                self._warned = True
                log.warning("%s: the last record is damaged; it will be set aside at the next write", self.shown)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode("utf-8")
        self.lock.acquire()
        try:
            start = self._cut_torn_tail()
            try:
                with open(self.path, "ab") as f:
                    f.write(data)
                    f.flush()
                    if any(journal_record_is_durable(entry) for entry in logs):
                        os.fsync(f.fileno())
                self._whole_size = start + len(data)
            except OSError as e:
                self._truncate(start)
                raise JournalWriteError(
                    f"{self.shown}: cannot write to the study journal: {e.strerror or e}; free some space and run the "
                    "same command again (every record written before is kept)"
                ) from None
        finally:
            self.lock.release()

    # -- repairs, under the lock

    def _cut_torn_tail(self) -> int:
        """Cut the file back to its last whole record, keeping the original as a backup; returns its size.

        A file still as long as this process last saw it whole (its own last write, or a read to the
        end) has grown by no one: it needs no look at its tail.
        """
        size = self.path.stat().st_size
        if size == self._whole_size:
            return size
        good = last_whole_record_end(self.path, size)
        if good < size:
            backup = backup_path(self.path, "torn")
            shutil.copy2(self.path, backup)
            self._truncate(good)
            log.warning(
                "%s: set aside a torn final record (%d bytes, the end of a write that was cut off); "
                "original kept as %s",
                self.shown,
                size - good,
                backup.name,
            )
        return good

    def _truncate(self, size: int) -> None:
        try:
            with open(self.path, "r+b") as f:
                f.truncate(size)
        except OSError:
            pass  # the next append cuts the torn tail instead


def last_whole_record_end(path: Path, size: int) -> int:
    """The byte offset just past the last line that is a whole, readable record (0 if none).

    Fast path (every healthy append): the file ends in a newline and its last
    line reads. Otherwise (damage, rare) the file is scanned once.
    """
    if size == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(max(size - TAIL_CHUNK, 0))
        tail = f.read()
        if tail.endswith(b"\n"):
            last = tail[:-1].rsplit(b"\n", 1)[-1]
            if _decode(last) is not None and (len(last) + 1 < len(tail) or size <= TAIL_CHUNK):
                return size
        f.seek(0)
        good = offset = 0
        for line in f:
            offset += len(line)
            if line.endswith(b"\n") and _decode(line) is not None:
                good = offset
    return good


def backup_path(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.name}.{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")


@dataclass(frozen=True)
class RepairReport:
    path: Path
    kept: int  # records kept
    dropped_lines: list[int]  # 1-based line numbers of what was dropped
    salvaged: int  # whole records recovered from behind a torn one on the same line
    backup: Path | None  # the original, when anything changed


def repair_journal(path: str | Path) -> RepairReport:
    """Rewrite the journal with every readable record, in order; the original is kept as a backup.

    A line that is not a record is dropped, except that a whole record glued
    behind a torn one (`<torn>{"op_code"...}`) is salvaged. A dropped line was
    never read by anyone (Optuna stops at it), so the study keeps exactly
    what it had, plus what was written after the damage.
    """
    path = Path(path)
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        raw = path.read_bytes()
        kept: list[bytes] = []
        dropped: list[int] = []
        salvaged = 0
        for number, line in enumerate(raw.split(b"\n"), 1):
            if not line:
                continue
            if _decode(line) is not None:
                kept.append(line)
                continue
            at = line.rfind(RECORD_START)
            if at > 0 and _decode(line[at:]) is not None:
                kept.append(line[at:])
                salvaged += 1
            dropped.append(number)
        if not dropped:
            return RepairReport(path, len(kept), [], 0, None)
        backup = backup_path(path, "damaged")
        shutil.copy2(path, backup)
        tmp = path.with_name(path.name + ".repairing")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        os.replace(tmp, path)
        return RepairReport(path, len(kept), dropped, salvaged, backup)
    finally:
        lock.release()
