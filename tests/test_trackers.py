"""Experiment trackers (hpsearch/trackers/): every trial sent to MLflow or TensorBoard as it runs.

Tested against the real things: an `mlflow server` started here on loopback and read back with MLflow's
own client; TensorBoard's event files read back with TensorBoard's own EventAccumulator and the HParams
plugin's protos. A tracker that is down costs one warning line, never a trial; a tracker's package that
is missing is one `Error:` line naming the extra, before any trial.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpsearch.cli.options import RunOptions
from hpsearch.refine import stage_flags
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trackers import TrackerDown, Tracking, check_installed
from hpsearch.trackers.settings import TrackerSpec, tracker_spec

# Trial 1 fails, trial 2 diverges at its first epoch (pruned), every other one completes; each prints a
# line its log keeps. val_accuracy grows with lr; train_loss is 1 / (epoch + 1).
MIXED = """
import math


def train(trial):
    print(f"training trial {trial.number}")
    if trial.number == 1:
        raise ValueError("bad batch")
    score = 0.5 + 0.1 * math.log10(trial.params["lr"])
    for epoch in range(trial.epochs):
        loss = float("nan") if trial.number == 2 else 1.0 / (epoch + 1)
        trial.report(epoch, train_loss=loss, val_accuracy=score)
    return {"val_accuracy": score}
"""
COARSE = 'strategy = "random"\ntrials = 4\nepochs = 3\nseed = 0'
SERVER_START_GUARD_S = 300  # a hang guard only: a server that neither answers nor exits in this long is broken


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow tracking server on loopback (SQLite backend, artifacts served through it): its URL.
    Stopped at the end, with every process it started (its own process group)."""
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
        *("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")),
    ]
    log = (root / "server.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    try:
        started = time.monotonic()
        while not _answers(url):
            if server.poll() is not None or time.monotonic() - started > SERVER_START_GUARD_S:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
        for _ in range(200):  # its workers leave with it: the whole group is gone
            try:
                os.killpg(server.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(server.pid, signal.SIGKILL)
            pytest.fail("the mlflow server's processes outlived SIGTERM")
    assert not _answers(url)


@pytest.fixture
def mixed_study(tmp_path: Path, study_file: Callable[..., Path]) -> Callable[..., Path]:
    """A study file whose workload fails trial 1, prunes trial 2 and completes the others (MIXED)."""
    (tmp_path / "mixed.py").write_text(MIXED)

    def make(name: str, trackers: str = "") -> Path:
        params = "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n\n[params.momentum]\nvalues = [0.5, 0.9]\n"
        path = study_file(workload=f"{tmp_path / 'mixed.py'}:train", name=name, coarse=COARSE, params=params)
        if trackers:
            path.write_text(path.read_text() + f"\n[trackers]\n{trackers}\n")
        return path

    return make


def _stored(name: str, stage: str = "coarse") -> tuple[Any, list[Any]]:
    store = Store(name, create=False)
    info = store.stage(stage)
    return info, store.trials(info)


# -- MLflow, against a real server


def test_trackers_mlflow_one_nested_run_per_trial_with_its_epochs_state_and_log(
    tmp_path: Path,
    mlflow_server: str,
    mixed_study: Callable[..., Path],
    run_cli: Callable[..., tuple[int, str, str]],
) -> None:
    from mlflow.tracking import MlflowClient

    code, _out, err = run_cli("coarse", mixed_study("mlrun"), "--workers", "2", "--track", f"mlflow={mlflow_server}")
    assert code == 0, err
    assert "warning: mlflow" not in err
    info, trials = _stored("mlrun")
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("mlrun")  # the study's name by default
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "stage"]
    children = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert len(parents) == 1 and len(runs) == 1 + len(children)
    parent = parents[0]
    assert (parent.info.run_name, parent.info.status) == ("mlrun/coarse", "FINISHED")
    assert parent.data.tags["hpsearch.stage"] == "coarse" and parent.data.tags["hpsearch.epochs"] == "3"

    # One run per trial of the stage, each nested under the stage's run, with what the storage says of it.
    by_number = {int(r.data.tags["hpsearch.trial"]): r for r in children}
    assert sorted(by_number) == sorted(t.number for t in trials) == [0, 1, 2, 3, 4]
    for trial in trials:
        run = by_number[trial.number]
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == f"trial-{trial.number}"
        assert (tags["hpsearch.stage"], tags["hpsearch.attempt"]) == ("coarse", "1")
        assert tags["hpsearch.seed"] == str(trial.user_attrs["result"]["seed"])
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        assert tags["hpsearch.state"] == trial.state.name  # COMPLETE, PRUNED, FAIL: as the storage has it
        history = client.get_metric_history(run.info.run_id, "train_loss")
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert artifacts == [f"trial-{trial.number}.log"]
        (tmp_path / "dl").mkdir(exist_ok=True)
        log = Path(client.download_artifacts(run.info.run_id, artifacts[0], str(tmp_path / "dl")))
        assert f"training trial {trial.number}" in log.read_text()
        if trial.number == 1:
            assert (run.info.status, tags["hpsearch.reason"]) == ("FAILED", "ValueError: bad batch")
            assert history == [] and "final/val_accuracy" not in run.data.metrics
        elif trial.number == 2:
            assert (run.info.status, tags["hpsearch.reason"]) == ("KILLED", "diverged")
            assert [m.step for m in history] == [0] and math.isnan(history[0].value)
        else:
            assert run.info.status == "FINISHED" and "hpsearch.reason" not in tags
            assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
            expected = 0.5 + 0.1 * math.log10(trial.params["lr"])
            assert run.data.metrics["final/val_accuracy"] == pytest.approx(expected)
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
            assert sorted(steps) == [0, 1, 2]
        assert run.data.metrics["duration_s"] >= 0

    # The stage's border flags, as hpsearch computes them (momentum's best is one of its two values: always one).
    flags = stage_flags(info, trials)
    assert flags
    border = {k: v for k, v in parent.data.tags.items() if k.startswith("hpsearch.border.")}
    assert border == {f"hpsearch.border.{f.param}.{f.side}": f.message() for f in flags}


def test_trackers_mlflow_a_stage_run_again_and_refine_keep_one_run_per_stage(
    mlflow_server: str, study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    from mlflow.tracking import MlflowClient

    path = study_file(name="mlagain", coarse=COARSE)
    path.write_text(path.read_text() + f'\n[trackers]\nmlflow = "{mlflow_server}"\nmlflow_experiment = "again"\n')
    assert run_cli("coarse", path, "--workers", "0")[0] == 0
    assert run_cli("coarse", path, "--workers", "0", "--trials", "6")[0] == 0  # continued: 2 more trials
    code, _, err = run_cli("refine", "mlagain", "--workers", "0", "--trials", "2", "--epochs", "2")  # the stored table
    assert code == 0, err
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("again")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    stages = {r.data.tags["hpsearch.stage"]: r for r in runs if r.data.tags.get("hpsearch.kind") == "stage"}
    assert sorted(stages) == ["coarse", "refine-1"]
    assert len([r for r in runs if r.data.tags.get("hpsearch.kind") == "stage"]) == 2
    assert stages["coarse"].data.tags["hpsearch.trials"] == "6"  # the raised target, on the same run
    assert {r.info.status for r in stages.values()} == {"FINISHED"}
    assert stages["refine-1"].data.tags["hpsearch.parent_stage"] == "coarse"
    for stage, count in (("coarse", 6), ("refine-1", 2)):
        nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stages[stage].info.run_id]
        assert sorted(int(r.data.tags["hpsearch.trial"]) for r in nested) == list(range(count))
        assert {r.info.status for r in nested} == {"FINISHED"}


def test_trackers_mlflow_down_costs_one_warning_and_no_trial(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    pytest.importorskip("mlflow")
    port = _free_port()  # nothing listens there
    code, _out, err = run_cli(
        "coarse", study_file(name="down", coarse=COARSE), "--workers", "0", "--track", f"mlflow=http://127.0.0.1:{port}"
    )
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: mlflow")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: mlflow at http://127.0.0.1:{port}: unreachable (ConnectionError: ")
    assert warnings[0].endswith("Connection refused); trials are not tracked")
    _, trials = _stored("down")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4


# -- TensorBoard, read back with its own reader


def test_trackers_tensorboard_a_run_per_trial_with_scalars_and_hparams(
    tmp_path: Path, mixed_study: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    path = mixed_study("tbrun", trackers='tensorboard = "tb"')  # relative to the study file's folder
    code, _, err = run_cli("coarse", path, "--workers", "2")
    assert code == 0, err
    info, trials = _stored("tbrun")
    stage = tmp_path / "tb" / "tbrun" / "coarse"
    assert sorted(p.name for p in stage.iterdir() if p.is_dir()) == [f"trial-{t.number}" for t in trials]
    status = {"COMPLETE": api_pb2.STATUS_SUCCESS, "FAIL": api_pb2.STATUS_FAILURE, "PRUNED": api_pb2.STATUS_UNKNOWN}
    for trial in trials:
        run = EventAccumulator(str(stage / f"trial-{trial.number}"))
        run.Reload()
        content = run.PluginTagToContent(metadata.PLUGIN_NAME)
        start = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_START_INFO_TAG])
        end = plugin_data_pb2.HParamsPluginData.FromString(content[metadata.SESSION_END_INFO_TAG])
        hparams = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()}
        assert hparams == {
            "lr": pytest.approx(trial.params["lr"]),
            "momentum": trial.params["momentum"],
            "stage": "coarse",
            "seed": trial.user_attrs["result"]["seed"],
            "state": trial.state.name.lower(),
        }
        assert end.session_end_info.status == status[trial.state.name]
        scalars = run.Tags()["scalars"]
        if trial.state.name == "COMPLETE":
            losses = [(s.step, s.value) for s in run.Scalars("train_loss")]
            assert losses == [(0, 1.0), (1, 0.5), (2, pytest.approx(1 / 3))]
            expected = 0.5 + 0.1 * math.log10(trial.params["lr"])
            assert [(s.step, s.value) for s in run.Scalars("final/val_accuracy")] == [(2, pytest.approx(expected))]
        elif trial.state.name == "PRUNED":
            assert [s.step for s in run.Scalars("train_loss")] == [0] and math.isnan(run.Scalars("train_loss")[0].value)
        else:
            assert "train_loss" not in scalars and "final/val_accuracy" not in scalars
        if trial.state.name != "COMPLETE":
            reason = run.Tensors("reason")[0].tensor_proto.string_val[0].decode()
            assert reason == ("diverged" if trial.state.name == "PRUNED" else "ValueError: bad batch")
    whole = EventAccumulator(str(stage))
    whole.Reload()
    text = whole.Tensors("border_flags")[0].tensor_proto.string_val[0].decode()
    assert text.splitlines() == [f"- {f.message()}" for f in stage_flags(info, trials)]


def test_trackers_none_imports_neither_package(tmp_path: Path, study_file: Callable[..., Path]) -> None:
    path = study_file(name="plain", coarse=COARSE)
    code = (
        "import sys\nfrom hpsearch import cli\n"
        f"assert cli.run(['coarse', {str(path)!r}, '--workers', '0', '--quiet']) == 0\n"
        "print(sorted(m for m in ('mlflow', 'tensorboard') if m in sys.modules))"
    )
    env = {**os.environ, "HPSEARCH_DIR": str(tmp_path / "results")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


# -- bad input


@pytest.mark.parametrize("kind, where", [("mlflow", "mlflow=http://127.0.0.1:5000"), ("tensorboard", "tensorboard=tb")])
def test_trackers_package_missing_is_one_line_naming_the_extra(
    kind: str,
    where: str,
    tmp_path: Path,
    study_file: Callable[..., Path],
    run_cli: Callable[..., tuple[int, str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, kind, None)  # `import mlflow` raises ImportError; find_spec finds nothing
    code, _out, err = run_cli("coarse", study_file(name="missing"), "--track", where)
    assert code == 2
    assert err.strip() == f"Error: trackers.{kind}: the {kind} package is not installed; pip install 'hpsearch[{kind}]'"
    assert not (tmp_path / "results").exists()  # before any trial: not even the study was created


@pytest.mark.parametrize(
    "table, message",
    [
        ('mlfow = "http://x"', "trackers.mlfow: unknown key; did you mean 'mlflow'?"),
        ("tensorboard = 3", "trackers.tensorboard: must be a non-empty text, got 3"),
        ('mlflow = ""', "trackers.mlflow: must be a non-empty text, got ''"),
    ],
)
def test_trackers_study_file_table_errors_name_the_key(
    table: str, message: str, study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    path = study_file(name="bad")
    path.write_text(path.read_text() + f"\n[trackers]\n{table}\n")
    code, _, err = run_cli("coarse", path)
    assert code == 2
    assert err.strip() == f"Error: {path}: {message}"


def test_trackers_flag_of_another_form_names_the_flag(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    code, _, err = run_cli("coarse", study_file(name="badflag"), "--track", "wandb=x")
    assert code == 2
    assert err.strip() == (
        "Error: --track 'wandb=x': use mlflow=URI, tensorboard=FOLDER or mlflow_experiment=NAME (KEY= turns one off)"
    )


# -- the pure parts


def test_trackers_flags_replace_the_table_key_by_key(tmp_path: Path, study_file: Callable[..., Path]) -> None:
    path = study_file(name="table")
    path.write_text(path.read_text() + '\n[trackers]\nmlflow = "http://a:5000"\ntensorboard = "runs"\n')
    spec = load_spec(path)
    assert spec.trackers == {"mlflow": "http://a:5000", "tensorboard": "runs"}  # as written, and stored so
    assert tracker_spec(spec) == TrackerSpec("http://a:5000", "", str(tmp_path / "runs"))
    given = tracker_spec(spec, ["mlflow=http://b:5000", "mlflow_experiment=exp", "tensorboard="], here=tmp_path / "cwd")
    assert given == TrackerSpec("http://b:5000", "exp", "")
    assert tracker_spec(spec, ["tensorboard=tb"], here=tmp_path / "cwd").tensorboard == str(tmp_path / "cwd" / "tb")
    assert given.kinds == ["mlflow"] and TrackerSpec().kinds == []
    check_installed(TrackerSpec())  # nothing set: nothing to check


def test_trackers_track_flag_is_passed_on_once_per_value() -> None:
    """`hpsearch slurm` hands a run's options to its workers as a command line: each --track value again."""
    options = RunOptions(track=["mlflow=http://a:5000", "tensorboard=runs"])
    assert options.as_arguments() == ["--track", "mlflow=http://a:5000", "--track", "tensorboard=runs"]


class _Recorder:
    """A tracker that hears events and fails on the `fail_on` kind, if any."""

    def __init__(self, name: str, fail_on: str = "") -> None:
        self.name, self.fail_on = name, fail_on
        self.kinds: list[str] = []
        self.closed: list[str] = []

    def __call__(self, event: Any) -> None:
        self.kinds.append(event.kind)
        if event.kind == self.fail_on:
            raise TrackerDown("refused (INVALID_PARAMETER_VALUE: no)")

    def close(self, flags: Any, ended: str) -> None:
        self.closed.append(ended)


def test_trackers_a_failing_tracker_is_one_warning_then_dropped(study_file: Callable[..., Path]) -> None:
    from hpsearch.search.stages import run_stage, start_coarse

    spec = load_spec(study_file(name="dropped", coarse=COARSE))
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    failing, fine, seen = _Recorder("bad at x", fail_on="report"), _Recorder("good at y"), []
    warnings: list[str] = []
    with Tracking(info.name, [failing, fine], warnings.append) as tracking:
        result = run_stage(store, info, listener=tracking.around(seen.append))
        tracking.close(result.flags)
    assert warnings == ["bad at x: refused (INVALID_PARAMETER_VALUE: no); its trials are no longer tracked"]
    assert failing.kinds == ["start", "report"] and failing.closed == []  # dropped at its first failure
    assert fine.kinds == [e.kind for e in seen] and fine.kinds.count("finish") == 4 and fine.closed == ["finished"]
    assert [t.state.name for t in result.trials] == ["COMPLETE"] * 4


def test_trackers_an_interrupted_stage_closes_its_trackers_as_interrupted() -> None:
    tracker = _Recorder("t at z")
    with pytest.raises(KeyboardInterrupt), Tracking("coarse", [tracker], print):
        raise KeyboardInterrupt
    assert tracker.closed == ["interrupted"]
