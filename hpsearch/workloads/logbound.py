"""A trial's log with a bound: its first and its last bytes, and one line between saying how many were left out.

With a bound (record.log_limit > 0), a trial's output does not go straight into its log file: file
descriptors 1 and 2 (capture.py) point at a pipe, and a *keeper* reads the pipe and writes the file
(`BoundedLog`): everything up to the limit as it comes; past it, the first half stays, the last half
is kept in memory and written over the file's second part every SAVE_S (and when the trial ends),
after a line such as `[hpsearch: 12,345,678 bytes left out here (log_limit 10 MB: first 5 MB and
last 5 MB kept)]`. A trial that prints 900 MB costs a 10 MB file and 5 MB of memory.

The keeper is a process in a worker (dispatch/worker.py forks it before it imports the workload,
`start_keeper(fork=True)`), so it needs nothing from the trial's process, not even Python's lock:
a C extension that holds it while it prints cannot block the keeper it waits on. Elsewhere (the
in-process executor, final's runs) it is a thread, started at the first bounded log (there, a C
extension that prints over 64 KB at once while it holds Python's lock would hang: log_limit = 0 is
the way out for such a run). The worker
tells it, over a socket pair (SOCK_SEQPACKET: one message each), where the next trial's log goes
(the pipe's read end and the open file, passed as file descriptors); at the trial's end, once its
processes are gone, `finish` has it read what is left and waits for its answer, so the file is
whole when the outcome reads its tail.

A killed worker still leaves a readable log: on SIGTERM (a timeout, a stall, an interrupt: the
worker's group is ended) or when the worker vanishes (SIGKILL: its socket closes; the kernel sends
SIGTERM too), the keeper reads what the pipe holds, writes head, line and latest tail, and leaves.
A log that cannot be written (a full disk) says so once on the worker's stderr; the trial goes on.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from typing import Any

SAVE_S = 1.0  # past the limit, the kept tail reaches the file this often: what a SIGKILL loses, vs rewriting it
FINISH_WAIT_S = 10.0  # longest wait for the keeper to write a trial's last output
CHUNK = 1 << 16
_MESSAGE = 4096


class BoundedLog:
    """A log file that keeps the first `limit // 2` bytes written and the last `limit - limit // 2`."""

    def __init__(self, fd: int, path: str, limit: int, err: int = 2) -> None:
        self.fd, self.path, self.limit, self.err = fd, path, limit, err  # err: where a failure is said
        self.head = limit // 2
        self.keep = limit - self.head
        self.written = 0  # bytes the trial wrote
        self.tail: collections.deque[bytes] = collections.deque()  # the bytes after the head, the last `keep` of them
        self.tail_size = 0
        self.head_ends_line = True
        self.dirty = False  # past the limit, with a tail the file does not show yet
        self.failed = False

    def write(self, data: bytes) -> None:
        start, self.written = self.written, self.written + len(data)
        if start < self.head:
            part, data = data[: self.head - start], data[self.head - start :]
            self._write_at(start, part)
            self.head_ends_line = part.endswith(b"\n")
        if not data:
            return
        self.tail.append(data)
        self.tail_size += len(data)
        while self.tail_size - len(self.tail[0]) >= self.keep:
            self.tail_size -= len(self.tail.popleft())
        if self.written <= self.limit:
            self._write_at(self.written - len(data), data)  # within the bound: the file is all of it
        else:
            self.dirty = True

    def save(self) -> None:
        """Write the left-out line and the latest tail after the head (past the limit; else nothing to do)."""
        if not self.dirty:
            return
        self.dirty = False
        tail = b"".join(self.tail)[-self.keep :]
        cut = tail.find(b"\n", 0, min(len(tail), 4096))  # start the tail at a line where one starts nearby
        tail = tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail
        left = self.written - self.head - len(tail)
        line = (
            f"{'' if self.head_ends_line else chr(10)}[hpsearch: {left:,} bytes left out here "
            f"(log_limit {size(self.limit)}: first {size(self.head)} and last {size(self.keep)} kept)]\n"
        ).encode()
        self._write_at(self.head, line + tail)
        if not self.failed:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, self.head + len(line) + len(tail))

    def close(self) -> None:
        self.save()
        os.close(self.fd)

    def _write_at(self, offset: int, data: bytes) -> None:
        while data and not self.failed:
            try:
                done = os.pwrite(self.fd, data, offset)
            except OSError as e:  # a full disk: say so once; the trial goes on, its output unkept
                self.failed = True
                _say(
                    self.err, f"hpsearch: cannot write the trial log {self.path} ({e}); the rest of its output is lost"
                )
                return
            data, offset = data[done:], offset + done


def _say(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())


def size(n: int) -> str:
    """Bytes as the left-out line writes them: '10 MB', '512 kB', '300 bytes'."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


# -- the keeper: reads the pipe, writes the log


class _Leave(BaseException):
    """SIGTERM reached a keeper process: save and go."""


_saving = {"now": False, "then_leave": False}  # a keeper process's SIGTERM waits while a log is being saved


def _serve(control: socket.socket, err: int) -> None:
    """The keeper's loop: one trial's log at a time, until the worker's end of `control` closes. `err`: the
    process's stderr as it was before any trial's output was pointed at a pipe (a message there must not
    go into the pipe this loop reads)."""
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, _MESSAGE, 2)
        except OSError:
            return
        if not message:
            return  # the worker is gone
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        path, limit = pickle.loads(message)
        pipe, log = fds[0], BoundedLog(fds[1], path, limit, err)
        try:
            ended = _copy(control, pipe, log)
        except Exception as e:
            _say(err, f"hpsearch: the log keeper failed on {path} ({e!r}); the rest of its output is lost")
            ended = True
        finally:
            _saving["now"] = True  # a SIGTERM now (the worker ended, or gone) must not cut this short
            with contextlib.suppress(Exception):  # what is left, and the latest tail: as much as it can
                _drain(pipe, log)
                log.save()
            os.close(log.fd)
            os.close(pipe)
            _saving["now"] = False
            if _saving["then_leave"]:
                raise _Leave
        if not ended:
            return
        try:
            control.send(b"done")
        except OSError:
            return


def _copy(control: socket.socket, pipe: int, log: BoundedLog) -> bool:
    """Copy the pipe into the log until the worker says the trial ended (True) or is gone (False)."""
    watched = [pipe, control.fileno()]
    saved = time.monotonic()
    while True:
        ready, _, _ = select.select(watched, [], [], SAVE_S)
        if pipe in ready:
            data = os.read(pipe, CHUNK)
            if data:
                log.write(data)
            else:
                watched.remove(pipe)  # every writer closed it: wait for the word from the worker
        if control.fileno() in ready:
            return control.recv(_MESSAGE) == b"end"
        if log.dirty and time.monotonic() - saved >= SAVE_S:
            log.save()
            saved = time.monotonic()


def _drain(pipe: int, log: BoundedLog) -> None:
    """What the pipe holds now, without waiting for writers that may never close it."""
    os.set_blocking(pipe, False)
    while True:
        try:
            data = os.read(pipe, CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            return
        log.write(data)


def _keeper_process(control: socket.socket) -> None:
    """The forked keeper: nothing of the worker's but its socket; leaves when told, or on SIGTERM."""
    from hpsearch.procs import parent_death_signal

    keep = control.fileno()
    os.closerange(3, keep)  # the coordinator's connection above all: its end must close when the worker dies
    os.closerange(keep + 1, max(os.sysconf("SC_OPEN_MAX"), keep + 1))

    def leave(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
        if _saving["now"]:
            _saving["then_leave"] = True  # once the log is saved
            return
        raise _Leave

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, leave)
    parent_death_signal(signal.SIGTERM)
    try:
        _serve(control, 2)
    except _Leave:
        pass
    finally:
        os._exit(0)


class Keeper:
    """The worker's end of a keeper: `begin` a trial's log (its output goes to the fd returned), `finish` it."""

    def __init__(self, fork: bool) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        if fork:
            for stream in (sys.stdout, sys.stderr):  # nothing buffered is written twice
                stream.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child process
                ours.close()
                _keeper_process(theirs)
            theirs.close()
            self.pid: int | None = pid
        else:
            self.pid = None
            err = os.dup(2)  # before any trial points fd 2 at a pipe
            threading.Thread(target=_serve, args=(theirs, err), name="hpsearch-log-keeper", daemon=True).start()

    def begin(self, file_fd: int, path: str, limit: int) -> int | None:
        """A pipe whose output the keeper writes into `file_fd` (path: for messages), within `limit`; its write
        end, or None when the keeper is gone (the caller writes the file itself, unbounded)."""
        read, write = os.pipe()
        try:
            socket.send_fds(self.sock, [pickle.dumps((path, limit))], [read, file_fd])
        except OSError:
            os.close(write)
            return None
        finally:
            os.close(read)
        return write

    def finish(self) -> None:
        """The trial's output is all in the pipe (its write ends closed): wait until the keeper wrote it."""
        try:
            self.sock.send(b"end")
            ready, _, _ = select.select([self.sock], [], [], FINISH_WAIT_S)
            if ready:
                self.sock.recv(_MESSAGE)
        except OSError:
            pass


_keeper: Keeper | None = None
_lock = threading.Lock()


def start_keeper(fork: bool) -> None:
    """Start this process's keeper now: forked (a worker, before it starts any thread or imports the
    workload), or as a thread. Without a call, the first bounded log starts a thread."""
    global _keeper
    with _lock:
        if _keeper is None:
            _keeper = Keeper(fork)


def keeper() -> Keeper:
    if _keeper is None:
        start_keeper(fork=False)
    assert _keeper is not None
    return _keeper
