"""A study in optuna-dashboard: its storage served read-only on a local web server.

optuna-dashboard (the `dashboard` extra) is Optuna's own web UI. It is given
the storage object hpsearch itself opens (store/storage.py), so it reads the
journal through RepairingJournalBackend, or the PostgreSQL/SQLite database
with hpsearch's settings, and never a second way of reading the same file.

What a user sees there of hpsearch: each stage is its own Optuna study,
`<name>.<stage>` (fake.coarse, fake.refine-1; `<name>.final` once `final`
ran), with the study's direction. A trial shows its params, its value (the
study's metric), its state, and as intermediate values the metric at each
epoch (step = epoch): the dashboard's intermediate-value chart is the
stage's learning curves. Its user attributes are hpsearch's records:
`result` (seed, epochs, epochs_run, curves of every reported metric,
metrics, duration_s, log; shown as JSON, cut at 1024 characters), `reason`
for a pruned or failed trial, `owner` (host:pid of the process that ran
it). The study's user attribute `hpsearch` is the stage record (settings,
space, parent, spec).

Read-only: every request that would write (delete or rename a study, tell a
trial, save a note) is refused with 403. A dashboard deleting a stage would
cut the lineage refine reads, and a trial told from the browser while a
coordinator runs it would be lost to that coordinator.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from hpsearch.errors import HpsearchError
from hpsearch.store.storage import FINAL_STUDY, Store

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

INSTALL = "pip install 'hpsearch[dashboard]'"
READS = ("GET", "HEAD", "OPTIONS")  # every other method writes (POST, PUT, DELETE)
READ_ONLY = "hpsearch serves this study read-only: change it with hpsearch (delete, repair), not from the dashboard"


@dataclass(frozen=True)
class StagePage:
    """One Optuna study of the hpsearch study, as the dashboard lists it."""

    stage: str  # "coarse", "refine-1", ..., or "final"
    study_name: str  # the Optuna study's name: "<name>.<stage>"
    trials: int
    url: str  # its page in the dashboard


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection never keeps Ctrl-C waiting


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request: the browser polls every few seconds (errors still reach the log)."""


class Dashboard:
    """optuna-dashboard listening on `url`: serve() answers until Ctrl-C or stop(); close() frees the port."""

    def __init__(self, server: WSGIServer, url: str, location: str, metric: str, pages: list[StagePage]) -> None:
        self._server = server
        self.url = url  # the dashboard's study list
        self.location = location  # where the storage is (password-masked)
        self.metric = metric  # the study's metric: each trial's value, and its intermediate values
        self.pages = pages  # the stages, then the final study (if any), in order

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def serve(self) -> None:
        """Answer requests until stop() (from another thread) or KeyboardInterrupt."""
        self._server.serve_forever()

    def stop(self) -> None:
        """End serve() running in another thread, and wait for it."""
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()

    def __enter__(self) -> Dashboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_dashboard(
    name: str,
    directory: str | Path | None = None,
    url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8080,
) -> Dashboard:
    """optuna-dashboard over study `name`'s storage, bound to host:port (0: any free port), not serving yet.

    Raises HpsearchError when optuna-dashboard is not installed or the port
    cannot be had, StudyNotFound when the study has no stage (nothing is
    created: the storage is opened as the reading commands open it).
    """
    try:
        import optuna_dashboard  # type: ignore[import-untyped]  # optuna-dashboard ships no type information
    except ImportError:
        raise HpsearchError(f"optuna-dashboard is not installed: {INSTALL}") from None
    store = Store(name, directory, url, create=False)
    stages = store.stages_from(None)
    names = [(s.name, s.optuna_name) for s in stages]
    final = f"{name}.{FINAL_STUDY}"
    if any(s.study_name == final for s in store.storage.get_all_studies()):
        names.append((FINAL_STUDY, final))
    found = []  # (stage, study name, study id, trials), read before the port is taken
    for stage, study_name in names:
        study_id = store.storage.get_study_id_from_name(study_name)
        found.append((stage, study_name, study_id, len(store.storage.get_all_trials(study_id, deepcopy=False))))
    server = _bind(host, port, read_only(optuna_dashboard.wsgi(store.storage)))
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{server.server_address[1]}/dashboard"
    pages = [StagePage(stage, study_name, trials, f"{base}/studies/{i}") for stage, study_name, i, trials in found]
    return Dashboard(server, base, store.location, stages[0].spec.metric, pages)


def _bind(host: str, port: int, app: WSGIApplication) -> WSGIServer:
    server_class = _Server6 if ":" in host else _Server
    try:
        return make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise HpsearchError(
                f"port {port} on {host} is in use (another dashboard?): pass a free $port, or 0 for any free one"
            ) from None
        if e.errno == errno.EACCES:
            raise HpsearchError(f"port {port} needs root: pass a $port above 1023") from None
        reason = e.strerror or str(e)
        raise HpsearchError(f"cannot listen on {host}:{port}: {reason}; pass another $host") from None


def read_only(app: WSGIApplication) -> WSGIApplication:
    """`app` answering only requests that read: any other method gets 403 with optuna-dashboard's JSON
    error shape ({"reason": ...}), which its pages show as the reason an action failed."""

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") in READS:
            return app(environ, start_response)
        body = json.dumps({"reason": READ_ONLY}).encode()
        start_response("403 Forbidden", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return guarded
