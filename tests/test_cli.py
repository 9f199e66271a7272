"""The command line end to end: coarse -> refine -> leaderboard, errors as one line, help."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from hpsearch.cli import app

ROOT = Path(__file__).parent.parent


def _one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_fake_study_coarse_refine_leaderboard(run_cli, study_file, tmp_path):
    # 40 draws: some land in lr's top 10% (its HIGH border) for all but 1.5% of sampler seeds
    spec = study_file(workload="peak_above", coarse="trials = 40\nepochs = 1")

    code, out, err = run_cli("coarse", spec, "-q")
    assert code == 0, err
    assert "fake coarse: top 10" in out
    # The optimum (lr = 10) lies above [1e-4, 1]: the border warning names param and side.
    assert re.search(r"lr: best value \S+ is at the HIGH border of \[1\.0e-04, 1\]", err)
    assert "refine will widen it upward to 10" in err  # what refine then does: a decade past 1

    code, out, err = run_cli("refine", "fake", "-q")
    assert code == 0, err
    assert "refine-1: space narrowed around the top 4 of coarse" in out
    new_high = re.search(r"lr\s+│ \[1\.0e-04, 1\] \(log\)\s+│ → │ \[\S+, (\S+)\]", out)
    assert new_high and float(new_high.group(1)) > 1.0, out

    csv = tmp_path / "out" / "board.csv"
    code, out, err = run_cli("leaderboard", "fake", "--stage", "all", "--csv", csv)
    assert code == 0, err
    df = pd.read_csv(csv)
    assert set(df["stage"]) == {"coarse", "refine-1"} and len(df) == 40 + 6
    assert df.iloc[0]["rank"] == 1 and df["val_accuracy"].iloc[0] == df["val_accuracy"].max()
    assert df[df.stage == "refine-1"]["lr"].max() > 1.0  # refine searched above the old bound
    assert f"wrote {len(df)} rows" in err


def test_cli_leaderboard_csv_to_stdout_and_formats(run_cli, study_file):
    run_cli("coarse", study_file(coarse="trials = 4\nepochs = 1"), "-q")
    code, out, _ = run_cli("leaderboard", "fake", "--csv", "-")
    assert code == 0
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 4 and df.columns[0] == "rank"
    code, out, _ = run_cli("leaderboard", "fake", "--format", "json", "--top", "2")
    assert code == 0 and len(json.loads(out)) == 2
    code, out, _ = run_cli("leaderboard", "fake", "--top", "2", "--csv", "-")  # the export keeps every trial
    assert len(pd.read_csv(io.StringIO(out))) == 4
    code, out, _ = run_cli("leaderboard", "fake", "--format", "markdown")
    assert code == 0 and out.lstrip().startswith("|")


def test_cli_leaderboard_csv_holds_every_stage_unless_stage_is_given(run_cli, study_file, tmp_path):
    run_cli("coarse", study_file(coarse="trials = 4\nepochs = 1", refine="trials = 3\nepochs = 1"), "-q")
    run_cli("refine", "fake", "-q")
    code, out, err = run_cli("leaderboard", "fake", "--csv", tmp_path / "all.csv")
    assert code == 0, err
    df = pd.read_csv(tmp_path / "all.csv")
    assert len(df) == 7 and set(df["stage"]) == {"coarse", "refine-1"}
    assert "refine-1" in out and "wrote 7 rows" in err  # the table still shows the latest stage
    code, out, _ = run_cli("leaderboard", "fake", "--stage", "refine-1", "--csv", "-")
    assert set(pd.read_csv(io.StringIO(out))["stage"]) == {"refine-1"}


def test_cli_flags_override_the_study_file(run_cli, study_file):
    code, out, err = run_cli(
        "coarse", study_file(), "--trials", "3", "--epochs", "2", "--strategy", "grid", "--seed", "5", "-q"
    )
    assert code == 0, err
    code, out, _ = run_cli("leaderboard", "fake", "--csv", "-")
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 3 and (df["epochs"] == 2).all()


def test_cli_changing_epochs_of_existing_stage_is_refused(run_cli, study_file):
    spec = study_file(coarse="trials = 2\nepochs = 1")
    run_cli("coarse", spec, "-q")
    code, _, err = run_cli("coarse", spec, "--epochs", "5", "-q")
    _one_error_line(code, err, "--epochs", "already ran with epochs = 1")
    code, _, err = run_cli("coarse", spec, "--trials", "4", "-q")  # more trials: continue to the new target
    assert code == 0
    code, out, _ = run_cli("leaderboard", "fake", "--csv", "-")
    assert len(pd.read_csv(io.StringIO(out))) == 4


def test_cli_studies_lists_stages_and_best(run_cli, study_file):
    run_cli("coarse", study_file(coarse="trials = 3\nepochs = 1"), "-q")
    code, out, _ = run_cli("studies")
    assert code == 0
    assert "best = val_accuracy" in out
    assert re.search(r"fake\s+coarse\s+-\s+random\s+1\s+3/3\s+0\s+0\.\d{4}", out), out  # trials: complete/target
    run_cli("refine", "fake", "-q", "--trials", "2", "--epochs", "2")
    out = run_cli("studies")[1]
    assert re.search(r"fake\s+refine-1\s+coarse\s+random\s+2\s+2/2\s+0\s+0\.\d{4}", out), out  # its lineage


def test_cli_every_stage_failing_exits_1_with_reasons(run_cli, study_file):
    code, _, err = run_cli("coarse", study_file(workload="always_fails"), "-q")
    assert code == 1
    assert "Error: every trial of stage coarse failed" in err and "out of memory" in err


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["coarse", "studies/missing.toml"], ["studies/missing.toml: file: no such study file"]),
        (["coarse", "studies/digits_mlp.toml", "--bogus"], ["No such option: --bogus", "hpsearch coarse --help"]),
        (["coarse", "studies/digits_mlp.toml", "--trials", "0"], ["--trials", "greater than or equal to 1"]),
        (["coarse", "studies/digits_mlp.toml", "--strategy", "bayes"], ["--strategy", "bayes"]),
        (["refine", "no_such_study"], ["no study 'no_such_study'", "hpsearch coarse"]),
        (["leaderboard", "no_such_study"], ["no study 'no_such_study'"]),
        (["frobnicate"], ["No such command"]),
    ],
)
def test_cli_bad_input_is_one_error_line_exit_2(run_cli, monkeypatch, args, fragments):
    monkeypatch.chdir(ROOT)
    code, _, err = run_cli(*args)
    _one_error_line(code, err, *fragments)


def test_cli_bad_range_and_workload_in_study_file(run_cli, study_file):
    code, _, err = run_cli("coarse", study_file(params="[params.lr]\nlow = 1.0\nhigh = 0.1\n"))
    _one_error_line(code, err, "fake.toml: params.lr: low (1.0) must be below high (0.1)")
    code, _, err = run_cli("coarse", study_file(workload="missing_dir/train.py:train"))
    _one_error_line(code, err, "fake.toml: workload:", "does not exist")


def test_cli_reading_a_missing_study_leaves_nothing_behind(run_cli, tmp_path):
    code, _, err = run_cli("leaderboard", "typo", "--dir", tmp_path / "res")
    _one_error_line(code, err, "no study 'typo'", "studies there: none")
    assert not (tmp_path / "res" / "typo").exists()


def test_cli_leaderboard_unknown_stage(run_cli, study_file):
    run_cli("coarse", study_file(coarse="trials = 1\nepochs = 1"), "-q")
    code, _, err = run_cli("leaderboard", "fake", "--stage", "refine-7")
    _one_error_line(code, err, "has no stage 'refine-7'", "coarse")


def test_cli_debug_shows_traceback(run_cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    code, _, err = run_cli("--debug", "refine", "no_such_study")
    assert code == 2 and "Traceback" in err and err.strip().endswith("first, or pass --dir/--storage")


def _commands() -> list[str]:
    return [c.name or c.callback.__name__ for c in app.registered_commands]


def test_cli_every_command_has_help_with_example(run_cli):
    assert len(_commands()) >= 9
    for name in _commands():
        code, out, _ = run_cli(name, "--help")
        assert code == 0
        assert "Example: hpsearch " + name in out, name
        assert "%%" not in out, f"{name} --help prints a doubled %"


def test_cli_every_command_is_documented_in_the_readme():
    """As sqlite-utils' suite does: each command has its own README heading with an example."""
    readme = (ROOT / "README.md").read_text()
    for name in _commands():
        assert re.search(rf"^### `hpsearch {re.escape(name)}\b", readme, re.M), f"README has no section for {name}"
        assert f"hpsearch {name} " in readme.split(f"### `hpsearch {name}", 1)[1][:3000], f"no example of {name}"


def test_cli_shared_options_are_one_definition_in_three_commands(run_cli):
    """coarse, refine and worker take the same dispatch options (written once in cli/options.py)."""
    helps = {name: run_cli(name, "--help")[1] for name in ("coarse", "refine", "worker")}
    for option in ("--devices", "--per-device", "--workers", "--trial-timeout", "--population", "--pruner", "--quiet"):
        assert all(option in text for text in helps.values()), option
    assert "--trials" in helps["coarse"] and "--trials" in helps["refine"] and "--trials" not in helps["worker"]


def test_cli_library_errors_are_spelled_with_flags(run_cli, study_file):
    code, _, err = run_cli("coarse", study_file(), "--population", "0")
    _one_error_line(code, err, "--population 0: must be 1 or more")
    code, _, err = run_cli("coarse", study_file(), "--per-device", "2", "--devices", "cpu")
    _one_error_line(code, err, "--per-device counts trials per GPU", "use --workers N")


def test_cli_version(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("hpsearch ")


def test_cli_import_does_not_import_torch():
    code = "import sys, hpsearch.cli; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_cli_installed_command_reports_error_without_traceback(tmp_path):
    exe = Path(sys.executable).parent / "hpsearch"
    proc = subprocess.run([str(exe), "coarse", str(tmp_path / "x.toml")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Error: ") and "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.torch
def test_cli_builtin_digits_study_end_to_end(run_cli, tmp_path):
    spec = ROOT / "studies" / "digits_mlp.toml"
    code, _, err = run_cli("coarse", spec, "--trials", "4", "--epochs", "1", "-q")
    assert code == 0, err
    code, _, err = run_cli("refine", "digits_mlp", "--trials", "2", "--epochs", "2", "-q")
    assert code == 0, err
    csv = tmp_path / "lb.csv"
    code, _, err = run_cli("leaderboard", "digits_mlp", "--stage", "all", "--csv", csv)
    assert code == 0, err
    df = pd.read_csv(csv)
    assert len(df) == 6 and (df["state"] == "COMPLETE").all()
    assert {"train_loss", "val_loss"} <= set(df.columns)
    assert df["val_accuracy"].max() > 0.5  # real learning on real digits, even in 1-2 epochs
    assert (df[df.stage == "refine-1"]["epochs"] == 2).all()


@pytest.mark.torch
def test_cli_user_workload_file_end_to_end(run_cli, tmp_path):
    spec = ROOT / "studies" / "example.toml"
    code, out, err = run_cli("coarse", spec, "--trials", "3", "--epochs", "1", "-q")
    assert code == 0, err
    code, out, err = run_cli("refine", "example", "--trials", "2", "--epochs", "2", "-q")
    assert code == 0, err
    code, out, _ = run_cli("leaderboard", "example", "--stage", "all", "--csv", "-")
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 5 and set(df["stage"]) == {"coarse", "refine-1"}
    assert df["val_accuracy"].notna().all()


def test_cli_database_outage_is_said_so_and_no_debug_hint_under_debug(monkeypatch):
    import sys as _sys

    import optuna
    import sqlalchemy.exc

    app_module = _sys.modules["hpsearch.cli.app"]
    refused = sqlalchemy.exc.OperationalError(
        "UPDATE trials", {}, ConnectionRefusedError("connection to server failed: Connection refused")
    )
    try:
        try:
            raise refused
        except sqlalchemy.exc.OperationalError as e:
            raise optuna.exceptions.StorageInternalError(
                "An exception is raised during the commit. invalid data, e.g. exceeding max length"
            ) from e
    except optuna.exceptions.StorageInternalError as e:
        error = e
    monkeypatch.setitem(app_module._state, "debug", False)
    text = app_module.unexpected(error)
    assert "database stopped answering" in text and "Connection refused" in text and "exceeding max length" not in text
    assert text.endswith("(run with --debug for the traceback)")
    monkeypatch.setitem(app_module._state, "debug", True)
    assert "--debug" not in app_module.unexpected(error)
    assert "--debug" not in app_module.unexpected(ValueError("x"))


def test_every_command_accepts_the_common_options_it_can_use() -> None:
    """--dir on every command (where results live), --storage on every command that reads a study
    (sanity and lr-find run the workload from its study file and touch no storage)."""
    import typer.main

    commands = typer.main.get_command(app).commands
    no_storage = {"sanity", "lr-find"}
    options = {name: {o for p in c.params for o in p.opts} for name, c in commands.items()}
    assert {name for name, opts in options.items() if "--dir" not in opts} == set()
    assert {name for name, opts in options.items() if "--storage" not in opts} == no_storage


def test_studies_at_80_columns_breaks_no_name(run_cli, study_file, monkeypatch):
    """`hpsearch studies` in an 80-column terminal: every study and stage name stays whole on its line."""
    monkeypatch.setenv("COLUMNS", "80")
    for name in ("mnist1d_cmd", "mnist1d_model"):
        run_cli("coarse", study_file(name=name, coarse="trials = 3\nepochs = 1", refine="trials = 2\nepochs = 1"), "-q")
        run_cli("refine", name, "-q")
    code, out, err = run_cli("studies")
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("mnist1d_")]
    assert len(rows) == 4 and all(len(line) <= 80 for line in out.splitlines()), out
    assert [(r[0], r[1]) for r in rows] == [
        ("mnist1d_cmd", "coarse"),
        ("mnist1d_cmd", "refine-1"),
        ("mnist1d_model", "coarse"),
        ("mnist1d_model", "refine-1"),
    ], out
    assert all(r[-1].replace(".", "").lstrip("-").isdigit() for r in rows), out  # the best column is whole too
