"""Checkpoints and resume (issue 28): an interrupted trial is run again with the same params, seed and
checkpoint folder, and continues from its last checkpoint; its epochs count once; it shows once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from optuna.trial import TrialState

from hpsearch.leaderboard import frame
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store
from hpsearch.trials import ATTEMPT_ATTR, FIRST_ATTEMPT_ATTR, REASON_ATTR, RETRY_OF_ATTR
from hpsearch.workloads import checkpoint

RESUMABLE = Path(__file__).parent / "workloads" / "resumable.py"
TEN = 'strategy = "random"\ntrials = 2\nepochs = 10\nseed = 4'
LR = "[params.lr]\nlow = 0.01\nhigh = 0.1\nlog = true\n"


def _runs(path: Path) -> list[tuple[int, int, int, int, str]]:
    """(trial, attempt, epoch, seed, checkpoint folder) of every epoch a run trained."""
    rows = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return [(int(a), int(b), int(c), int(d), e) for a, b, c, d, e in rows]


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "runs.txt"
    monkeypatch.setenv("HPSEARCH_TEST_RUNS", str(path))
    return path


def test_an_interrupted_trial_resumes_from_its_checkpoint_not_replaced(
    study_file: Callable[..., Path], runs: Path
) -> None:
    """Ctrl-C in epoch 7 of a 10-epoch random-search trial; the stage run again resumes that trial: same
    params, seed and folder, epochs 7-9 only, its curve whole, one row on the leaderboard."""
    spec = load_spec(study_file(f"{RESUMABLE}:interrupted", coarse=TEN, params=LR))
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    with pytest.raises(KeyboardInterrupt):
        run_stage(store, info)
    [stopped, queued] = store.trials(info)  # the run, failed; its next run, queued at once
    assert stopped.state == TrialState.FAIL and stopped.user_attrs[REASON_ATTR] == "interrupted"
    assert queued.state == TrialState.WAITING and queued.user_attrs[RETRY_OF_ATTR] == stopped.number
    assert sorted(stopped.intermediate_values) == list(range(7))

    result = run_stage(store, info)
    trials = store.trials(info)
    [again] = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == stopped.number]
    assert again.params == stopped.params and again.state == TrialState.COMPLETE
    assert again.user_attrs[ATTEMPT_ATTR] == 2 and again.user_attrs[FIRST_ATTEMPT_ATTR] == stopped.number
    assert sorted(again.intermediate_values) == list(range(10))  # the pruner sees epochs 0-9, not 0-2
    assert len(again.user_attrs["result"]["curves"]["val_accuracy"]) == 10
    trained = [(a, e) for n, a, e, _, _ in _runs(runs) if n in (stopped.number, again.number)]
    assert trained == [(1, e) for e in range(7)] + [(2, e) for e in range(7, 10)]  # 10 epochs in all
    mine = [(seed, folder) for n, _, _, seed, folder in _runs(runs) if n in (stopped.number, again.number)]
    seeds, folders = {seed for seed, _ in mine}, {folder for _, folder in mine}
    assert len(seeds) == 1 and len(folders) == 1 and f"trial-{stopped.number}" in folders.pop()
    # Its value equals an uninterrupted run's: 10 epochs of w += lr.
    lr = again.params["lr"]
    assert again.value == pytest.approx(10 * lr / (1 + 10 * lr))
    assert result.finished == 2 and len(trials) == 3

    board = frame([info], [trials])
    assert len(board) == 2 and stopped.number not in set(board["trial"])  # once, at its latest run
    row = board[board["trial"] == again.number].iloc[0]
    assert row["epochs"] == 10 and row["attempt"] == 2 and row["attempt_of"] == stopped.number
    every = frame([info], [trials], runs=True)
    assert set(every["trial"]) == {t.number for t in trials}


def test_the_budget_charges_a_resumed_trial_the_epochs_it_ran(study_file: Callable[..., Path], runs: Path) -> None:
    spec = load_spec(study_file(f"{RESUMABLE}:interrupted", coarse=TEN + "\nbudget = 40", params=LR))
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    with pytest.raises(KeyboardInterrupt):
        run_stage(store, info)
    run_stage(store, info)
    from hpsearch.trials import spent_epochs

    assert spent_epochs(store.trials(info), 10) == 7 + 3 + 10  # the interrupted run's 7 count once


def test_a_killed_worker_s_trial_resumes_on_its_replacement(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]], runs: Path
) -> None:
    """SIGKILL of the worker (an OOM killer, a scheduler) in epoch 7: in the same stage run, the trial
    resumes on the fresh worker from its checkpoint."""
    path = study_file(f"{RESUMABLE}:killed", coarse=TEN, params=LR)
    code, _, err = run_cli("coarse", path, "--workers", "1", "-q")
    assert code == 0, err
    store = Store("fake")
    trials = store.trials(store.stage("coarse"))
    killed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs[REASON_ATTR] for t in killed] == ["worker died (signal 9)"] * 2
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 2 and all(t.user_attrs[ATTEMPT_ATTR] == 2 for t in complete)
    for t in complete:
        assert [e for n, a, e, _, _ in _runs(runs) if n == t.number] == [7, 8, 9]


def test_a_trial_runs_out_of_attempts_with_each_reason(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]]
) -> None:
    one = "[params.lr]\nvalues = [0.05]\n"
    path = study_file(f"{RESUMABLE}:always_killed", coarse='strategy = "grid"\ntrials = 1\nepochs = 10', params=one)
    path.write_text(path.read_text().replace('direction = "maximize"\n', 'direction = "maximize"\nattempts = 2\n'))
    code, _, err = run_cli("coarse", path, "--workers", "1", "-q")
    assert "Error: every trial" in err, err
    store = Store("fake")
    trials = store.trials(store.stage("coarse"))
    assert [t.user_attrs.get(ATTEMPT_ATTR, 1) for t in trials] == [1, 2]  # the cap: two runs, no third
    assert [t.user_attrs[REASON_ATTR] for t in trials] == ["worker died (signal 9)"] * 2
    assert code != 0 and "worker died (signal 9)" in err  # the stage failed: every trial of it did


def test_sigusr1_preempts_the_stage_and_the_trial_resumes_later(
    study_file: Callable[..., Path], run_cli: Callable[..., tuple[int, str, str]], runs: Path
) -> None:
    """SIGUSR1 to the command (SLURM's --signal before it takes the node): running trials are recorded
    `preempted`; the next run of the command resumes them from their checkpoints."""
    path = study_file(f"{RESUMABLE}:preempted", coarse=TEN.replace("trials = 2", "trials = 1"), params=LR)
    code, _, err = run_cli("coarse", path, "--workers", "1", "-q")
    assert code == 75, err  # EX_TEMPFAIL: preempted, to be run again
    store = Store("fake")
    [stopped] = [t for t in store.trials(store.stage("coarse")) if t.state == TrialState.FAIL]
    assert stopped.user_attrs[REASON_ATTR] == "preempted"
    code, _, err = run_cli("coarse", path, "--workers", "1", "-q")
    assert code == 0, err
    trials = store.trials(store.stage("coarse"))
    [again] = [t for t in trials if t.state == TrialState.COMPLETE]
    assert again.user_attrs[FIRST_ATTEMPT_ATTR] == stopped.number
    assert [e for n, a, e, _, _ in _runs(runs) if n == again.number] == [7, 8, 9]


def test_checkpoint_files_are_written_whole_or_not_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "trial-3"
    assert checkpoint.load(folder) is None  # none yet
    assert checkpoint.save(folder, {"epoch": 1}) == folder / checkpoint.NAME
    assert checkpoint.load(folder) == {"epoch": 1}
    assert [p.name for p in folder.iterdir()] == [checkpoint.NAME]  # no temporary file left
    (folder / checkpoint.NAME).write_bytes(b"\x80\x05half a pick")  # cut by a kill mid-write (not ours: os.replace)
    assert checkpoint.load(folder) is None
    assert "unreadable" in capsys.readouterr().err
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert checkpoint.save(blocked / "sub", {"epoch": 2}) is None  # a folder that cannot be made: the trial goes on
    assert "checkpoint not saved" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the model workload saves itself

MODELS = Path(__file__).parent / "workloads" / "models.py"


def _model_run(folder: Path, every: int | str, stop_at: int | None, attempt: int = 1) -> dict[str, float]:
    """One run of a 10-epoch model-workload trial (dropout: its RNG must resume too) keeping its checkpoints
    in `folder`; Ctrl-C as epoch `stop_at` is reported (it was saved just before)."""
    from hpsearch.workloads.api import TrialContext, TrialRecord
    from hpsearch.workloads.loader import load_workload
    from hpsearch.workloads.model import ModelWorkload
    from hpsearch.workloads.spec import ModelSpec

    spec = ModelSpec(f"{MODELS}:dropout", f"{MODELS}:data", checkpoint_every=every, batch_size=16)
    workload = ModelWorkload(spec, load_workload)  # type: ignore[arg-type]

    def hook(epoch: int, metrics: dict[str, float], timing: object) -> str | None:
        if epoch == stop_at:
            raise KeyboardInterrupt
        return None

    params = {"lr": 0.05, "momentum": 0.9, "dropout": 0.3}
    record = TrialRecord(0, params, 10, 7, metric="val_accuracy", checkpoint_dir=str(folder), attempt=attempt)
    return workload(TrialContext.open(record, "cpu", hook))


@pytest.mark.parametrize("every", [1, "0.001s"])  # each epoch; and within epochs, at every batch
def test_a_model_workload_trial_resumed_equals_one_never_stopped(tmp_path: Path, every: int | str) -> None:
    """hpsearch saves model, optimiser, RNGs and place in the loop; a resumed CPU run ends exactly as an
    uninterrupted one (same seed: same batches, same dropout masks)."""
    whole = _model_run(tmp_path / "whole", every, None)
    with pytest.raises(KeyboardInterrupt):
        _model_run(tmp_path / "cut", every, stop_at=6)
    saved = checkpoint.load(tmp_path / "cut")
    if every == 1:
        assert (saved["epoch"], saved["batch"]) == (7, 0)  # saved before the report that was cut
    else:
        assert saved["epoch"] >= 6  # within epoch 6, or after it
    resumed = _model_run(tmp_path / "cut", every, None, attempt=2)
    assert resumed == whole


def test_a_model_workload_without_a_folder_saves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from hpsearch.workloads.api import TrialContext, TrialRecord
    from hpsearch.workloads.loader import load_workload
    from hpsearch.workloads.model import ModelWorkload
    from hpsearch.workloads.spec import ModelSpec

    workload = ModelWorkload(ModelSpec(f"{MODELS}:mlp", f"{MODELS}:data"), load_workload)  # type: ignore[arg-type]
    workload(TrialContext.open(TrialRecord(0, {"lr": 0.1}, 2, 0, metric="val_accuracy"), "cpu"))
    assert list(tmp_path.iterdir()) == []


def test_a_command_trial_preempted_resumes_from_the_checkpoint_its_script_kept(
    tmp_path: Path, run_cli: Callable[..., tuple[int, str, str]], runs: Path
) -> None:
    """{checkpoint_dir} and HPSEARCH_CHECKPOINT_DIR name the trial's own folder, the same on its resumed
    run (HPSEARCH_ATTEMPT=2), so a script that keeps its state there continues where it was stopped."""
    script = Path(__file__).parent / "workloads" / "checkpointed_script.py"
    study = tmp_path / "cmd.toml"
    study.write_text(
        'name = "cmd"\nmetric = "val_accuracy"\n'
        f'[workload]\ncommand = "python {script} --lr {{lr}} --epochs {{epochs}} --checkpoint-dir {{checkpoint_dir}}"\n'
        '[coarse]\nstrategy = "random"\ntrials = 1\nepochs = 6\n' + LR
    )
    code, _, err = run_cli("coarse", study, "--workers", "0", "-q")  # the script's parent: this process
    assert code == 75, err  # EX_TEMPFAIL: preempted, to be run again
    code, _, err = run_cli("coarse", study, "--workers", "0", "-q")
    assert code == 0, err
    store = Store("cmd")
    trials = store.trials(store.stage("coarse"))
    assert [t.user_attrs.get("reason") for t in trials] == ["preempted", None]
    assert [(a, e) for _, a, e, _, _ in _runs(runs)] == [(1, 0), (1, 1), (1, 2), (2, 3), (2, 4), (2, 5)]
    assert len({folder for *_, folder in _runs(runs)}) == 1
    lr = trials[1].params["lr"]
    assert trials[1].value == pytest.approx(6 * lr / (1 + 6 * lr))


def test_a_resumed_run_keeps_why_its_trial_was_queued(study_file: Callable[..., Path]) -> None:
    """A repeat, a carried configuration, a warm start or a spread point that is resumed stays one (its
    next run keeps the mark), and counts once: the run it continues is not counted again."""
    from hpsearch.search.retry import requeue
    from hpsearch.trials import MARKS, REPEAT_ATTR, continued_runs

    spec = load_spec(study_file(coarse=TEN, params=LR))
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    study = store.study(info)
    trial = study.ask()
    trial.suggest_float("lr", 0.01, 0.1, log=True)
    for mark in MARKS:
        trial.set_user_attr(mark, 3 if mark == REPEAT_ATTR else True)
    study.tell(trial, state=TrialState.FAIL)
    [failed] = store.trials(info)
    requeue(study, failed, dict(failed.params))
    [_, queued] = store.trials(info)
    assert {m: queued.user_attrs.get(m) for m in MARKS} == {m: failed.user_attrs[m] for m in MARKS}
    assert continued_runs(store.trials(info)) == {failed.number}
