"""`hpsearch dashboard`: a real stage served by optuna-dashboard, read back over its HTTP API.

The end-to-end test runs the command as a user does (a subprocess on a free
loopback port), compares what the dashboard's API says with what the storage
holds (trials, params, values, intermediate values, hpsearch's attributes),
stops it with Ctrl-C (SIGINT) and checks that the port is free again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial

pytest.importorskip("optuna_dashboard")

RunCli = Callable[..., tuple[int, str, str]]
STATES = {"COMPLETE": "Complete", "PRUNED": "Pruned", "FAIL": "Fail", "RUNNING": "Running", "WAITING": "Waiting"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url) as answer:
        return json.loads(answer.read())


def _send(url: str, method: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _stored(name: str, storage: str | None = None) -> dict[str, list[FrozenTrial]]:
    """Every stage's trials as the storage holds them, by Optuna study name."""
    from hpsearch.store.storage import Store

    store = Store(name, None, storage, create=False)
    return {s.optuna_name: store.trials(s) for s in store.stages()}


def _assert_same_trials(api_trials: list[dict[str, Any]], stored: list[FrozenTrial]) -> None:
    """The dashboard shows each stored trial: its state, params, value, intermediate values and attributes."""
    from hpsearch.trials import RESULT_ATTR, SEED_ATTR, trial_attr

    assert [t["number"] for t in api_trials] == [t.number for t in stored]
    for shown, trial in zip(api_trials, stored):
        assert shown["state"] == STATES[trial.state.name]
        assert {p["name"]: p["param_external_value"] for p in shown["params"]} == {
            k: str(v) for k, v in trial.params.items()
        }  # a categorical's internal value is its index: the external one is the value, as text
        assert shown["values"] == trial.values
        steps = {v["step"]: v["value"] for v in shown["intermediate_values"]}
        assert steps == trial.intermediate_values and len(steps) == 3  # one per epoch
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        assert json.loads(attrs[RESULT_ATTR])[SEED_ATTR] == trial_attr(trial, SEED_ATTR)


@pytest.fixture
def coarse(study_file: Callable[..., Path], run_cli: RunCli) -> str:
    """A finished coarse stage of study `fake`: 4 trials of 3 epochs, each reporting its metric per epoch."""
    code, _, err = run_cli("coarse", study_file(coarse='strategy = "random"\ntrials = 4\nepochs = 3\nseed = 0'), "-q")
    assert code == 0, err
    return "fake"


@pytest.fixture
def served(coarse: str) -> Iterator[subprocess.Popen[str]]:
    """`hpsearch dashboard fake --port P` running in its own process (the results folder from HPSEARCH_DIR)."""
    port = _free_port()
    command = [sys.executable, "-m", "hpsearch", "dashboard", coarse, "--port", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_dashboard_serves_the_stage_trials_and_intermediate_values(served: subprocess.Popen[str]) -> None:
    assert served.stdout is not None
    url = served.stdout.readline().strip()  # printed once the port is bound: requests queue until served
    assert served.poll() is None, served.communicate()
    port = int(url.split(":")[2].split("/")[0])
    assert url == f"http://127.0.0.1:{port}/dashboard"
    stage_line = served.stdout.readline()
    assert "coarse" in stage_line and f"{url}/studies/0" in stage_line and "(fake.coarse, 4 trials)" in stage_line
    root = url.removesuffix("/dashboard")

    with urllib.request.urlopen(url) as page:  # the dashboard's page itself
        assert page.status == 200 and "bundle.js" in page.read().decode()
    studies = _get(f"{root}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["fake.coarse"]
    assert studies[0]["directions"] == ["maximize"]
    assert "hpsearch" in {a["key"] for a in studies[0]["user_attrs"]}  # the stage record
    study_id = studies[0]["study_id"]
    detail = _get(f"{root}/api/studies/{study_id}")
    assert detail["name"] == "fake.coarse" and detail["has_intermediate_values"] is True
    stored = _stored("fake")["fake.coarse"]
    _assert_same_trials(detail["trials"], stored)
    best = max(stored, key=lambda t: t.value or 0.0)
    assert [t["number"] for t in detail["best_trials"]] == [best.number]

    # Read-only: deleting the stage or telling a trial from the browser is refused, and nothing changed.
    code, answer = _send(f"{root}/api/studies/{study_id}", "DELETE")
    assert code == 403 and "read-only" in answer["reason"]
    code, _ = _send(f"{root}/api/trials/{detail['trials'][0]['trial_id']}/tell", "POST", {"state": "Fail"})
    assert code == 403
    assert [(t.number, t.state, t.value) for t in _stored("fake")["fake.coarse"]] == [
        (t.number, t.state, t.value) for t in stored
    ]

    served.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = served.communicate()
    assert served.returncode == 0, err
    assert "read-only" in err and err.rstrip().endswith("dashboard stopped")
    assert "Traceback" not in err
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass  # nothing listens any more
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a web server binds (past TIME_WAIT)
        s.bind(("127.0.0.1", port))  # the port is free again: a new dashboard can have it


def test_each_stage_is_its_own_study_in_the_dashboard(coarse: str, run_cli: RunCli) -> None:
    from hpsearch.dashboard import open_dashboard

    code, _, err = run_cli("refine", coarse, "-q")
    assert code == 0, err
    stored = _stored(coarse)
    with open_dashboard(coarse, port=0) as board:
        thread = threading.Thread(target=board.serve)
        thread.start()
        try:
            assert [(p.stage, p.study_name, p.trials) for p in board.pages] == [
                ("coarse", "fake.coarse", 4),
                ("refine-1", "fake.refine-1", len(stored["fake.refine-1"])),
            ]
            assert board.url == f"http://127.0.0.1:{board.port}/dashboard" and board.metric == "val_accuracy"
            root = board.url.removesuffix("/dashboard")
            listed = {s["study_name"]: s["study_id"] for s in _get(f"{root}/api/studies")["study_summaries"]}
            assert set(listed) == set(stored)
            for page in board.pages:
                assert page.url == f"{board.url}/studies/{listed[page.study_name]}"
                shown = _get(f"{root}/api/studies/{listed[page.study_name]}")["trials"]
                _assert_same_trials(shown, stored[page.study_name])
        finally:
            board.stop()
            thread.join()
    assert not thread.is_alive()


OLD_OPTUNA = tuple(int(part) for part in optuna.__version__.split(".")[:2]) < (4, 4)


@pytest.mark.postgres
@pytest.mark.skipif(
    OLD_OPTUNA,
    reason="on PostgreSQL, Optuna 4.3's get_best_trial fails under SQLAlchemy 2.1 (the dashboard's study page answers "
    "HTTP 500): README, optuna-dashboard",
)
def test_dashboard_reads_a_postgres_storage(study_file: Callable[..., Path], run_cli: RunCli, postgres_db: str) -> None:
    from hpsearch.dashboard import open_dashboard

    spec = study_file(coarse='strategy = "random"\ntrials = 3\nepochs = 3\nseed = 0')
    code, _, err = run_cli("coarse", spec, "-q", "--storage", postgres_db)
    assert code == 0, err
    with open_dashboard("fake", url=postgres_db, port=0) as board:
        assert "postgres@127.0.0.1" in board.location
        thread = threading.Thread(target=board.serve)
        thread.start()
        try:
            root = board.url.removesuffix("/dashboard")
            studies = _get(f"{root}/api/studies")["study_summaries"]
            assert [s["study_name"] for s in studies] == ["fake.coarse"]
            detail = _get(f"{root}/api/studies/{studies[0]['study_id']}")
            _assert_same_trials(detail["trials"], _stored("fake", postgres_db)["fake.coarse"])
        finally:
            board.stop()
            thread.join()


def test_dashboard_of_a_study_that_does_not_exist(run_cli: RunCli, tmp_path: Path) -> None:
    code, out, err = run_cli("dashboard", "nosuch", "--port", "0")
    assert code == 2 and out == ""
    assert err.startswith("Error: no study 'nosuch'") and "--dir/--storage" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "results" / "nosuch").exists()  # reading a mistyped name leaves nothing behind


def test_dashboard_on_a_port_in_use(coarse: str, run_cli: RunCli) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = run_cli("dashboard", coarse, "--port", str(port))
    assert code == 2 and out == ""
    assert err == (
        f"Error: port {port} on 127.0.0.1 is in use (another dashboard?): pass a free --port, or 0 for any free one\n"
    )


def test_dashboard_without_optuna_dashboard_installed(
    coarse: str, run_cli: RunCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # `import optuna_dashboard` raises ImportError
    code, out, err = run_cli("dashboard", coarse)
    assert code == 2 and out == ""
    assert err == "Error: optuna-dashboard is not installed: pip install 'hpsearch[dashboard]'\n"
