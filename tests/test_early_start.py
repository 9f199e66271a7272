"""Workers started early and processes that exit fast (issue 13: a stage's start-up).

The CLI starts a stage's worker processes right after reading the study file
(PoolExecutor.start), so their imports overlap its own start-up; the stage's
run adopts them. Early workers a run does not need, or that no run adopts
(the stage cannot be set up), are ended. Workers and the CLI exit without the
interpreter's teardown of every module, atexit handlers kept. No test asserts
on wall-clock time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch import __version__
from hpsearch.dispatch import DispatchConfig, PoolExecutor, cpu_cores, plan_workers
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import trial_attr
from hpsearch.workloads.spec import Workload
from tests.test_dispatch import (
    LR_ONLY,
    by_state,
    faulty,
    running,
    stored,
    worker_children,
)

Cli = Callable[..., tuple[int, str, str]]
WORKERS = min(2, cpu_cores())  # --workers 2 is capped at the cores
two_cores = pytest.mark.skipif(cpu_cores() < 2, reason="needs two workers, capped at the cores")


@pytest.fixture
def early_pids(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pids of the workers PoolExecutor.start starts, in order, as the CLI runs."""
    pids: list[int] = []
    original = PoolExecutor.start

    def start(self: PoolExecutor, workload: Workload, limit: int | None = None) -> None:
        original(self, workload, limit)
        pids.extend(w.pid for w in self.crew.early if w.pid not in pids)

    monkeypatch.setattr(PoolExecutor, "start", start)
    return pids


def trial_pids(name: str = "fake") -> set[int]:
    return {int(trial_attr(t, "metrics")["pid"]) for t in by_state(stored(name), "COMPLETE")}


def test_cli_starts_workers_before_the_storage_and_the_stage_runs_on_them(
    study_file: Callable[..., Path], run_cli: Cli, monkeypatch: pytest.MonkeyPatch, early_pids: list[int]
) -> None:
    events: list[str] = []
    start, store_init = PoolExecutor.start, Store.__init__
    monkeypatch.setattr(PoolExecutor, "start", lambda self, *a: (events.append("start"), start(self, *a))[1])
    monkeypatch.setattr(Store, "__init__", lambda self, *a, **k: (events.append("store"), store_init(self, *a, **k))[1])
    path = study_file(faulty("grid_point"), coarse="trials = 4\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2", "-q")
    assert code == 0, err
    assert events.index("start") < events.index("store")  # workers first, then Optuna's storage and the stage
    assert len(early_pids) == WORKERS and trial_pids() <= set(early_pids)  # the run adopted them
    assert worker_children() == [] and not any(running(p) for p in early_pids)


def test_workers_started_for_another_workload_are_replaced_by_start(study_file: Callable[..., Path]) -> None:
    path = study_file(faulty("grid_point"), coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    spec = load_spec(path)
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    with PoolExecutor(plan_workers(DispatchConfig("cpu", workers=1), gpus=[])) as pool:
        pool.start(Workload(function=faulty("threads")), 1)  # a wrong guess
        [guessed] = [w.pid for w in pool.crew.early]
        pool.start(spec.workload, 1)
        [right] = [w.pid for w in pool.crew.early]
        pool.start(spec.workload, 1)  # the same workload again: nothing new starts
        assert [w.pid for w in pool.crew.early] == [right]
        run_stage(store, info, pool)
    assert trial_pids() == {right} and not running(guessed) and worker_children() == []


def test_an_invalid_study_file_starts_no_worker(
    study_file: Callable[..., Path], run_cli: Cli, early_pids: list[int]
) -> None:
    path = study_file(
        faulty("grid_point"), coarse="trials = 2\nepochs = 1", params="[params.lr]\nlow = 1.0\nhigh = 0.1\n"
    )
    code, _, err = run_cli("coarse", path, "--workers", "2", "-q")
    assert code == 2 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert early_pids == [] and worker_children() == []  # its workload's module never ran


@two_cores
def test_early_workers_are_capped_at_the_study_files_trials(
    study_file: Callable[..., Path], run_cli: Cli, early_pids: list[int]
) -> None:
    path = study_file(faulty("grid_point"), coarse="trials = 1\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2", "-q")
    assert code == 0, err
    assert len(early_pids) == 1 and trial_pids() == set(early_pids)


@two_cores
def test_surplus_early_workers_are_ended(study_file: Callable[..., Path], run_cli: Cli, early_pids: list[int]) -> None:
    path = study_file(faulty("grid_point"), coarse="trials = 3\nepochs = 1", params=LR_ONLY)
    assert run_cli("coarse", path, "--workers", "2", "-q")[0] == 0
    early_pids.clear()
    # The study file says 4 trials, the stage has 3: one is left, so one early worker is surplus.
    code, _, err = run_cli("coarse", path, "--workers", "2", "--trials", "4", "-q")
    assert code == 0, err
    assert "note: started 1 of 2 workers: the stage has 1 trial(s) left" in err
    assert len(by_state(stored(), "COMPLETE")) == 4
    assert len(early_pids) == 2 and worker_children() == [] and not any(running(p) for p in early_pids)


def test_early_workers_of_another_workload_are_replaced(study_file: Callable[..., Path]) -> None:
    path = study_file(faulty("grid_point"), coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    spec = load_spec(path)
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    with PoolExecutor(plan_workers(DispatchConfig("cpu", workers=1), gpus=[])) as pool:
        pool.start(Workload(function=faulty("threads")), 1)
        [early] = [w.pid for w in pool.crew.early]
        run_stage(store, info, pool)
    assert early not in trial_pids() and len(trial_pids()) == 1
    assert not running(early) and worker_children() == []


def test_early_workers_no_run_adopts_are_ended(study_file: Callable[..., Path]) -> None:
    spec = load_spec(study_file(faulty("grid_point"), params=LR_ONLY))
    pids: list[int] = []
    with (
        pytest.raises(KeyboardInterrupt),
        PoolExecutor(plan_workers(DispatchConfig("cpu", workers=2), gpus=[])) as pool,
    ):
        pool.start(spec.workload, 2)
        pids.extend(w.pid for w in pool.crew.early)
        raise KeyboardInterrupt  # Ctrl-C while the stage is being set up
    assert len(pids) == WORKERS and not any(running(p) for p in pids) and worker_children() == []


def test_a_stage_that_cannot_start_ends_its_early_workers(
    study_file: Callable[..., Path], run_cli: Cli, early_pids: list[int]
) -> None:
    path = study_file(faulty("grid_point"), coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    assert run_cli("coarse", path, "--workers", "2", "-q")[0] == 0
    early_pids.clear()
    path.write_text(path.read_text().replace('metric = "val_accuracy"', 'metric = "pid"'))
    code, _, err = run_cli("coarse", path, "--workers", "2", "-q")
    assert code == 2 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert "differs from the coarse stage already stored" in err
    assert len(early_pids) == WORKERS and worker_children() == [] and not any(running(p) for p in early_pids)


def test_a_workload_that_fails_to_import_is_one_line_error(
    study_file: Callable[..., Path], run_cli: Cli, tmp_path: Path, early_pids: list[int]
) -> None:
    bad = tmp_path / "bad_import.py"
    bad.write_text(
        "import hpsearch_no_such_module_for_tests\n\n\ndef train(trial):\n    return {'val_accuracy': 1.0}\n"
    )
    path = study_file(f"{bad}:train", coarse="trials = 4\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2", "-q")
    assert code == 2, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith(
        f"Error: workload {bad}:train: importing it failed"
    )
    assert "hpsearch_no_such_module_for_tests" in err
    assert len(early_pids) == WORKERS and worker_children() == [] and not any(running(p) for p in early_pids)
    # The same line as when the workload is imported in this process.
    assert run_cli("coarse", path, "--workers", "0", "-q")[1:] == ("", err)


def test_worker_exit_runs_the_workloads_atexit_handlers(
    study_file: Callable[..., Path], run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("HPSEARCH_TEST_MARKERS", str(markers))
    workload = tmp_path / "leaves_a_note.py"
    workload.write_text(
        textwrap.dedent(
            """
            import atexit, os
            from pathlib import Path

            def _bye():
                (Path(os.environ["HPSEARCH_TEST_MARKERS"]) / f"atexit-{os.getpid()}").write_text("bye")

            atexit.register(_bye)

            def train(trial):
                return {"val_accuracy": 0.5, "pid": float(os.getpid())}
            """
        )
    )
    path = study_file(f"{workload}:train", coarse="trials = 2\nepochs = 1", params=LR_ONLY)
    code, _, err = run_cli("coarse", path, "--workers", "2", "-q")
    assert code == 0, err
    ran = {int(p.name.split("-")[1]) for p in markers.iterdir()}
    assert len(ran) == WORKERS and trial_pids() <= ran  # in both workers, the one that ran the trials among them


def _main(body: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `body`, then the hpsearch console entry point (cli.main) with `argv`, in a fresh interpreter."""
    code = (
        f"import sys\n{textwrap.dedent(body)}\nsys.argv = ['hpsearch', *{list(argv)!r}]\n"
        "from hpsearch.cli import main\nmain()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120, cwd=os.getcwd()
    )


def test_cli_exit_keeps_atexit_handlers_exit_codes_and_flushed_output() -> None:
    done = _main("import atexit; atexit.register(lambda: print('atexit ran'))", "--version")
    assert done.returncode == 0 and done.stdout.splitlines() == [f"hpsearch {__version__}", "atexit ran"], done.stderr
    done = _main("import atexit; atexit.register(lambda: print('atexit ran'))", "coarse", "no-such-study.toml")
    assert done.returncode == 2 and done.stderr.startswith("Error: ") and done.stdout == "atexit ran\n"


def test_cli_exit_waits_for_a_non_daemon_thread() -> None:
    body = """
    import threading, time
    threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', flush=True))).start()
    """
    done = _main(body, "--version")
    assert done.returncode == 0 and done.stdout.splitlines() == [f"hpsearch {__version__}", "thread done"], done.stderr
