"""hpsearch init: a study file from a script's argparse help (helptext.py reads it, scaffold.py writes the file).

The parsing and the choices are tested on help texts written out here; the
command end to end on real scripts in tests/workloads/ (init_*.py,
script_train.py, and studies/digits_script.py against its own study file),
whose written study files then run as written.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch.helptext import Flag, HelpText, parse_help
from hpsearch.scaffold import SEARCHED, ScaffoldError, fit, number, plan
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store

WORKLOADS = Path(__file__).parent / "workloads"
STUDIES = Path(__file__).parent.parent / "studies"
Cli = Callable[..., tuple[int, str, str]]

ARGPARSE_311 = """\
usage: train.py [-h] [--lr LR] [--weight_decay WEIGHT_DECAY]
            [--layers LAYERS [LAYERS ...]] [--split {val,test}]
            [--amp | --no-amp] --out OUT [--dropout DROPOUT]
            data_dir {train,eval} ...

Train a net; prints val_loss and val_accuracy as JSON.

positional arguments:
  data_dir
  {train,eval}
    train               train it
    eval                evaluate

options:
  -h, --help            show this help message and exit
  --lr LR, --learning-rate LR
                        the learning rate, a long help text that goes on and
                        on and wraps around the line (default: 0.1)
  --weight_decay WEIGHT_DECAY
  --layers LAYERS [LAYERS ...]
  --split {val,test}
  --amp, --no-amp
  --out OUT

model:
  --dropout DROPOUT     dropout (default: 0.2)
"""


def concept(param: str):
    return next(c for c in SEARCHED if c.param == param)


def one_error_line(code: int, err: str, *parts: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has exited; only its parent's wait is missing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def copy_script(source: Path, folder: Path, name: str = "train.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, folder / name))


# ----------------------------------------------------------------------------- reading help texts


def test_scaffold_parse_help_reads_argparse_options_positionals_and_subcommands() -> None:
    parsed = parse_help(ARGPARSE_311)
    flags = {f.name: f for f in parsed.flags}
    assert list(flags) == ["--help", "--lr", "--weight_decay", "--layers", "--split", "--amp", "--out", "--dropout"]
    lr = flags["--lr"]
    assert lr.names == ("--lr", "--learning-rate") and lr.metavar == "LR" and lr.default == "0.1"
    assert "wraps around the line" in lr.help and not lr.required
    assert flags["--out"].required and not flags["--weight_decay"].required  # outside brackets in the usage
    assert flags["--split"].choices == ("val", "test") and flags["--amp"].metavar == ""
    assert flags["--layers"].metavar == "LAYERS [LAYERS ...]" and flags["--dropout"].default == "0.2"
    assert parsed.positionals == ("data_dir",) and parsed.subcommands == ("train", "eval")


def test_scaffold_parse_help_reads_python_313_and_click_layouts() -> None:
    py313 = "usage: t.py [-h] [-l LR] -w WD\n\noptions:\n  -h, --help   show help\n  -l, --lr LR  step\n  -w, --wd WD\n"
    flags = {f.name: f for f in parse_help(py313).flags}
    assert flags["--lr"].names == ("-l", "--lr") and flags["--lr"].metavar == "LR" and not flags["--lr"].required
    assert flags["--wd"].required  # its short form stands outside brackets
    click = textwrap.dedent(
        """\
        Usage: train.py [OPTIONS]

        Options:
          --lr FLOAT        Learning rate  [default: 0.003]
          --data PATH       [required]
          --help            Show this message and exit.
        """
    )
    flags = {f.name: f for f in parse_help(click).flags}
    assert flags["--lr"].default == "0.003" and flags["--data"].required and not flags["--lr"].required
    subcommands = "usage: t.py [-h] {fit,test} ...\n\npositional arguments:\n  {fit,test}\n\noptions:\n  -h, --help\n"
    assert parse_help(subcommands).subcommands == ("fit", "test")  # no help per subcommand: read from the usage


# ----------------------------------------------------------------------------- choosing ranges


def test_scaffold_fit_widens_the_recipe_range_to_hold_the_scripts_default() -> None:
    lr, wd, bs, mom = concept("lr"), concept("weight_decay"), concept("batch_size"), concept("momentum")
    assert fit(lr, "0.1") == (lr, "")  # inside the recipe's 1e-4..1
    wide, note = fit(lr, "3e-05")
    assert (wide.low, wide.high, wide.log) == (1e-5, 1.0, True) and "3e-05" in note
    assert fit(wd, "0.01")[0].values == (0, 1e-5, 1e-4, 1e-3, 0.01)
    assert fit(bs, "256")[0].values == (16, 32, 64, 128, 256) and isinstance(fit(bs, "256")[0].values[-1], int)
    assert fit(mom, "0.9") == (mom, "") and fit(mom, "2.0") == (mom, "")  # past its limits: not a momentum
    assert fit(lr, "[0.1, 0.01]") == (lr, "") and fit(lr, None) == (lr, "")  # nothing to read: the recipe's


def test_scaffold_numbers_are_short_and_read_back_exactly() -> None:
    values = [0, 0.0, 1e-4, 3e-05, 5e-4, 0.95, 1.0, 64, 0.1 + 0.2]
    text = [number(v) for v in values]
    assert text[:7] == ["0", "0.0", "1e-4", "3e-5", "5e-4", "0.95", "1.0"]
    assert tomllib.loads(f"x = [{', '.join(text)}]")["x"] == values


def test_scaffold_plan_fills_builtins_only_where_the_flag_takes_hpsearchs_value() -> None:
    flags = (
        Flag(("--lr",), "LR"),
        Flag(("--learning-rate",), "LR"),  # a second learning rate: the first is searched
        Flag(("--split",), "{train,val}"),  # no test split: final could not use it
        Flag(("--device",), "{cpu,cuda}"),  # cuda:0 is not among its choices
        Flag(("--seed",), ""),  # a switch takes no value
        Flag(("--max_epochs",), "N"),
        Flag(("--data",), "DATA", required=True),
    )
    s = plan([((), HelpText(flags, ("root",), text="reports valid_loss"))], ("python", "t.py"), "t")
    assert s.command == (
        "python", "t.py", "{TODO_root}", "--lr", "{lr}", "--max_epochs", "{epochs}", "--data", "{TODO_data}",
    )  # fmt: skip
    assert [f.name for f in s.left] == ["--learning-rate", "--split", "--device", "--seed"]
    assert s.missing == ("seed", "device", "split") and s.todo == (("root", "{TODO_root}"), ("--data", "{TODO_data}"))
    assert (s.metric, s.direction) == ("valid_loss", "minimize")  # named in the help, and a loss
    with pytest.raises(ScaffoldError, match=r"no flag hpsearch knows how to search; looked for learning rate \(--lr"):
        plan([((), HelpText((Flag(("--epochs",), "N"),)))], ("python", "t.py"), "t")


# ----------------------------------------------------------------------------- the command, end to end


def test_scaffold_init_lr_script_then_coarse_runs_the_file_as_written(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = copy_script(WORKLOADS / "script_train.py", tmp_path / "project")
    monkeypatch.delenv("SCRIPT_SLEEP", raising=False)
    code, out, err = run_cli("init", script)
    assert code == 0, err
    path = tmp_path / "project" / "train.toml"
    assert out == "" and f"wrote {path}" in err and "left at the script's defaults: --mode, --markers, --sleep" in err
    spec = load_spec(path)
    command = "python train.py --lr {lr} --momentum {momentum} --epochs {epochs} --seed {seed} --device {device}"
    assert str(spec.workload) == command
    assert (spec.metric, spec.direction.value) == ("val_accuracy", "maximize")
    assert (spec.coarse.trials, spec.coarse.epochs, spec.refine.trials, spec.refine.epochs) == (30, 2, 20, 15)
    assert "# CHECK: no split flag" in path.read_text()
    code, _, err = run_cli("sanity", path)  # the instruments look inside the loop: a command says so, once
    one_error_line(code, err, f"{path}: workload:", "command workload")
    code, _, err = run_cli("coarse", path)
    assert code == 0, err
    store = Store("train")
    trials = store.trials(store.stage("coarse"))
    assert len(trials) == 30 and {t.state.name for t in trials} == {"COMPLETE"}
    assert {t.params["momentum"] for t in trials} <= {0.5, 0.9, 0.95, 0.99}
    assert all(1e-4 <= t.params["lr"] <= 1.0 for t in trials)
    code, _, err = run_cli("init", script, "--force")  # the name has results now: coarse would continue them
    assert code == 0 and "Warning: a study named train already has results" in err and "another --name" in err
    code, _, err = run_cli("init", script, "--force", "--name", "my study")
    one_error_line(code, err, "--name 'my study' is not a valid study name")


def test_scaffold_init_subcommand_script_reads_the_train_subcommand_and_runs(tmp_path: Path, run_cli: Cli) -> None:
    script = copy_script(WORKLOADS / "init_subcommands.py", tmp_path / "project")
    path = tmp_path / "studies" / "toy.toml"
    code, _, err = run_cli("init", script, "--output", path, "--name", "toy")
    assert code == 0, err
    spec = load_spec(path)
    assert spec.workload.command == (
        "python", "../project/train.py", "train", "--lr0", "{lr}", "--wd", "{weight_decay}",
        "--epochs", "{epochs}", "--seed", "{seed}", "--split", "{split}",
    )  # fmt: skip
    assert (spec.name, spec.metric, spec.direction.value) == ("toy", "val_loss", "minimize")  # its help names val_loss
    assert spec.space["weight_decay"].values == (0, 1e-5, 1e-4, 5e-4, 1e-3)  # its default 5e-4 joined the set
    assert "python ../project/train.py train --help" in path.read_text()
    code, _, err = run_cli("coarse", path, "--trials", "6")
    assert code == 0, err
    store = Store("toy")
    assert [t.state.name for t in store.trials(store.stage("coarse"))] == ["COMPLETE"] * 6
    code, _, err = run_cli("init", script, "--subcommand", "nope", "-o", "-")
    one_error_line(code, err, "has no subcommand 'nope'; its subcommands: train, eval")
    code, _, err = run_cli("init", script, "--subcommand", "eval", "-o", "-")
    one_error_line(code, err, "no flag hpsearch knows how to search")


def test_scaffold_init_without_a_training_subcommand_asks_for_one(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a printed study file names the script relative to the current folder
    script = tmp_path / "tool.py"
    script.write_text(
        "import argparse\np = argparse.ArgumentParser()\ns = p.add_subparsers()\n"
        "s.add_parser('learn').add_argument('--lr')\ns.add_parser('predict')\np.parse_args()\n"
    )
    code, _, err = run_cli("init", script, "-o", "-")
    one_error_line(code, err, "lists subcommands learn, predict", "--subcommand")
    code, out, err = run_cli("init", script, "-o", "-", "--subcommand", "learn")
    assert code == 0, err
    assert 'command = "python tool.py learn --lr {lr}"' in out


def test_scaffold_init_other_spellings_required_values_and_ranges(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy_script(WORKLOADS / "init_flags.py", tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("init", "train.py")
    assert code == 0, err
    assert "Warning: --data-dir is required: write its value in place of {TODO_data_dir}" in err
    text = Path("train.toml").read_text()
    params = tomllib.loads(text)["params"]
    assert params == {
        "lr": {"low": 1e-5, "high": 1.0, "log": True},  # widened to hold its default 3e-5
        "weight_decay": {"values": [0, 1e-5, 1e-4, 1e-3, 0.01]},
        "dropout": {"low": 0.0, "high": 0.5},
        "batch_size": {"values": [16, 32, 64, 128, 256]},
    }
    assert "--learning-rate {lr} --weight_decay {weight_decay}" in text and "--num_epochs {epochs}" in text
    assert "#   --device {cpu,cuda} (default: cpu)" in text and "#   --hidden HIDDEN (default: 128)" in text
    code, _, err = run_cli("coarse", "train.toml")  # refused before any trial until the value is written
    one_error_line(code, err, "workload.command: unknown placeholder {TODO_data_dir}")
    Path("train.toml").write_text(text.replace("{TODO_data_dir}", "data"))
    assert load_spec("train.toml").space.names == ["lr", "weight_decay", "dropout", "batch_size"]


def test_scaffold_init_digits_script_writes_the_house_study(
    tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """studies/digits_script.toml was written by hand; init on its script writes the same search."""
    monkeypatch.chdir(STUDIES)
    code, out, err = run_cli("init", "digits_script.py", "-o", "-", "--timeout", "120")  # it imports torch first
    assert code == 0, err
    written, house = tomllib.loads(out), tomllib.loads((STUDIES / "digits_script.toml").read_text())
    assert written["workload"] == house["workload"] and written["params"] == house["params"]
    assert (written["metric"], written["direction"]) == (house["metric"], house["direction"])


def test_scaffold_init_without_a_searchable_flag_is_one_line(run_cli: Cli) -> None:
    code, out, err = run_cli("init", WORKLOADS / "init_nothing.py")
    one_error_line(code, err, "init_nothing.py: no flag hpsearch knows how to search", "learning rate (--lr, --lr0")
    assert "weight decay (--wd, --weight-decay" in err and out == ""
    assert not (WORKLOADS / "init_nothing.toml").exists()


def test_scaffold_init_refuses_to_overwrite_without_force(tmp_path: Path, run_cli: Cli) -> None:
    script = copy_script(WORKLOADS / "script_train.py", tmp_path)
    (tmp_path / "train.toml").write_text("# mine\n")
    code, _, err = run_cli("init", script)
    one_error_line(code, err, "train.toml exists; pass --force to overwrite it, or --output")
    assert (tmp_path / "train.toml").read_text() == "# mine\n"
    code, _, err = run_cli("init", script, "--force", "--python", sys.executable)
    assert code == 0, err
    assert load_spec(tmp_path / "train.toml").workload.command[0] == str(Path(sys.executable).absolute())


def test_scaffold_init_help_that_hangs_is_ended_after_the_time_limit(tmp_path: Path, run_cli: Cli) -> None:
    marker = tmp_path / "pids"
    script = tmp_path / "slow.py"
    script.write_text(
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(marker)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(600)\n"
    )
    code, _, err = run_cli("init", script, "--timeout", "3")
    one_error_line(code, err, "slow.py --help` did not finish in 3 s; raise --timeout")
    # The script and the child it started are gone (a machine too busy to start them in 3 s left no marker).
    for pid in map(int, marker.read_text().split() if marker.exists() else []):
        assert not running(pid), pid
    assert not (tmp_path / "slow.toml").exists()


def test_scaffold_init_help_that_fails_or_is_no_help_is_one_line(tmp_path: Path, run_cli: Cli) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_for_init\n")
    code, _, err = run_cli("init", broken)
    one_error_line(code, err, "broken.py --help` exited with code 1: ModuleNotFoundError")
    quiet = tmp_path / "quiet.py"
    quiet.write_text("print('training...')\n")
    code, _, err = run_cli("init", quiet)
    one_error_line(code, err, "quiet.py --help` printed no usage line")
    code, _, err = run_cli("init", tmp_path / "missing.py")
    one_error_line(code, err, "missing.py: no such script")
    assert not list(tmp_path.glob("*.toml"))
