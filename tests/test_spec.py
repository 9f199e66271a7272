"""Study-file parsing and every validation error: one message naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.errors import SpecError
from hpsearch.space import Choice, Range
from hpsearch.spec import Direction, Strategy, load_spec

STUDIES = Path(__file__).parent.parent / "studies"


def test_spec_issue_example_parses(study_file):
    spec = load_spec(study_file())
    assert spec.name == "fake"
    assert spec.metric == "val_accuracy" and spec.direction == Direction.maximize
    assert spec.coarse.strategy == Strategy.random and spec.coarse.trials == 12 and spec.coarse.epochs == 2
    assert spec.refine.top_k == 4 and spec.refine.epochs == 3
    lr = spec.space["lr"]
    assert isinstance(lr, Range) and lr.log and (lr.low, lr.high) == (1e-4, 1.0)
    momentum = spec.space["momentum"]
    assert isinstance(momentum, Choice) and momentum.values == (0.5, 0.9, 0.95, 0.99)
    assert momentum.limits == (0.0, 1.0)


@pytest.mark.parametrize("path", sorted(STUDIES.glob("*.toml")), ids=lambda p: p.name)
def test_spec_every_study_file_parses(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert len(spec.space) >= 1


def test_spec_file_workload_is_resolved_relative_to_study_file():
    spec = load_spec(STUDIES / "example.toml")
    module, _, function = spec.workload.function.rpartition(":")
    assert Path(module) == (STUDIES / "example_workload.py").resolve()
    assert function == "train"


def test_spec_defaults_when_stage_tables_missing(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "s"\nworkload = "hpsearch.workloads.digits:mlp"\nmetric = "val_accuracy"\n'
        "[params.lr]\nlow = 0.001\nhigh = 0.1\nlog = true\n"
    )
    spec = load_spec(path)
    assert spec.direction == Direction.maximize
    assert (spec.coarse.trials, spec.coarse.epochs) == (30, 2)
    assert (spec.refine.trials, spec.refine.epochs, spec.refine.top_k) == (20, 15, 5)


def _error(study_file, **kwargs) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(study_file(**kwargs))
    return info.value


def _params(text: str) -> dict:
    return {"params": text}


@pytest.mark.parametrize(
    ("kwargs", "key", "fragment"),
    [
        (_params("[params.lr]\nlow = 1.0\nhigh = 0.1\n"), "params.lr", "must be below high"),
        (_params("[params.lr]\nlow = 0.1\nhigh = 0.1\n"), "params.lr", "must be below high"),
        (_params("[params.lr]\nlow = 0.0\nhigh = 1.0\nlog = true\n"), "params.lr.low", "log range needs low > 0"),
        (_params("[params.lr]\nlow = -1\nhigh = 1.0\nlog = true\n"), "params.lr.low", "values = [0"),
        (_params("[params.lr]\nhigh = 1.0\n"), "params.lr.low", "missing"),
        (_params("[params.wd]\nvalues = []\n"), "params.wd.values", "non-empty list"),
        (_params("[params.wd]\nvalues = [1, 1]\n"), "params.wd.values", "twice"),
        (_params("[params.lr]\nlow = 0.1\nhigh = 1.0\nlogg = true\n"), "params.lr.logg", "did you mean 'log'"),
        (_params('[params.lr]\nlow = 0.1\nhigh = 1.0\ntype = "double"\n'), "params.lr.type", 'use "float" or "int"'),
        (_params("[params.lr]\nlow = 0.1\nhigh = 1.0\ngrid_points = 1\n"), "params.lr.grid_points", ">= 2"),
        (_params("[params.m]\nvalues = [0.9]\nlimits = [1, 0]\n"), "params.m.limits", "[lowest, highest]"),
        (_params("[params.lr]\nlow = 0.1\nhigh = 2.0\nlimits = [0, 1]\n"), "params.lr.limits", "within limits"),
        (_params(""), "params", "no parameters"),
        ({"coarse": 'strategy = "bayes"'}, "coarse.strategy", "random, grid, tpe"),
        ({"coarse": "trials = 0"}, "coarse.trials", "positive integer"),
        ({"refine": "top_kk = 3"}, "refine.top_kk", "did you mean 'top_k'"),
        ({"direction": "up"}, "direction", '"maximize" or "minimize"'),
        ({"workload": "nowhere.py:train"}, "workload", "does not exist"),
        ({"workload": "no_such_module_xyz:train"}, "workload", "cannot be found"),
        ({"workload": "hpsearch.workloads.digits:resnet"}, "workload", "defines no function 'resnet'"),
    ],
)
def test_spec_invalid_names_file_key_and_fix(study_file, kwargs, key, fragment):
    error = _error(study_file, **kwargs)
    assert error.key == key
    assert fragment in error.message
    assert str(error).startswith(f"{error.file}: {key}: ")
    assert "\n" not in str(error)


def test_spec_unknown_top_level_key_rejected(tmp_path, study_file):
    path = study_file()
    path.write_text(path.read_text().replace('metric = "val_accuracy"', 'metric = "val_accuracy"\nmetrics = "x"'))
    with pytest.raises(SpecError, match=r"metrics: unknown key; did you mean 'metric'"):
        load_spec(path)


def test_spec_missing_required_key(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\nmetric = "val_accuracy"\n[params.lr]\nlow = 0.001\nhigh = 0.1\n')
    with pytest.raises(SpecError, match=r"s.toml: workload: missing"):
        load_spec(path)


def test_spec_bad_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such study file"):
        load_spec(tmp_path / "missing.toml")


def test_spec_int_range(study_file):
    spec = load_spec(study_file(params='[params.hidden]\nlow = 16\nhigh = 256\nlog = true\ntype = "int"\n'))
    hidden = spec.space["hidden"]
    assert isinstance(hidden, Range) and hidden.is_int and hidden.low == 16


def test_spec_workload_without_function_part(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "s"\nworkload = "hpsearch.workloads.digits"\nmetric = "m"\n[params.lr]\nlow = 0.001\nhigh = 0.1\n'
    )
    with pytest.raises(SpecError, match=r"workload: .*must be \"package.module:function\""):
        load_spec(path)


def test_spec_binary_file_and_folder_are_clear_errors(run_cli, tmp_path) -> None:
    binary = tmp_path / "x.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    code, _, err = run_cli("coarse", binary)
    assert code == 2 and "x.toml: file: is not a text file" in err and "Traceback" not in err
    code, _, err = run_cli("coarse", tmp_path)
    assert code == 2 and "file: is a folder, not a study file" in err


def test_spec_too_many_params_are_refused_up_front(tmp_path) -> None:
    from hpsearch.spec import MAX_PARAMS, parse_spec

    params = {f"p{i}": {"low": 0.0, "high": 1.0} for i in range(MAX_PARAMS + 1)}
    data = {"name": "wide", "workload": "hpsearch.workloads.digits:mlp", "metric": "val_accuracy", "params": params}
    with pytest.raises(SpecError, match="1,001 parameters; hpsearch searches at most 1,000"):
        parse_spec(data, tmp_path / "wide.toml")
    del params["p0"]
    assert len(parse_spec(data, tmp_path / "wide.toml").space) == MAX_PARAMS


# ----------------------------------------------------------------------------- [workload] table: function or command

LR = "[params.lr]\nlow = 0.001\nhigh = 0.1\nlog = true\n"


def _command_study(tmp_path: Path, workload: str, params: str = LR) -> Path:
    (tmp_path / "train.py").write_text("print('{}')\n")
    path = tmp_path / "s.toml"
    path.write_text(f'name = "s"\nmetric = "val_accuracy"\n\n[workload]\n{workload}\n\n{params}')
    return path


def test_spec_workload_table_function_is_the_string_form(tmp_path):
    path = _command_study(tmp_path, 'function = "hpsearch.workloads.digits:mlp"')
    assert load_spec(path).workload.function == "hpsearch.workloads.digits:mlp"


def test_spec_workload_command_string_and_list_forms(tmp_path):
    spec = load_spec(_command_study(tmp_path, 'command = "python train.py --lr {lr} --epochs {epochs}"'))
    assert spec.workload.kind == "command"
    assert spec.workload.command == ("python", "train.py", "--lr", "{lr}", "--epochs", "{epochs}")
    listed = load_spec(_command_study(tmp_path, 'command = ["python", "train.py", "--lr={lr}"]'))
    assert listed.workload.command == ("python", "train.py", "--lr={lr}")
    assert listed.unused_params() == []


def test_spec_workload_command_survives_storage(tmp_path):
    from hpsearch.spec import StudySpec

    spec = load_spec(_command_study(tmp_path, 'command = "python train.py --lr {lr}"'))
    assert StudySpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("workload", "key", "fragment"),
    [
        ('command = "python train.py --lr {learning_rate}"', "workload.command", "unknown placeholder {learning_rate}"),
        ('command = "python missing.py --lr {lr}"', "workload.command", "script missing.py does not exist"),
        ('command = "no-such-program-xyz {lr}"', "workload.command", "'no-such-program-xyz' is not on PATH"),
        ('command = "./bin/run {lr}"', "workload.command", "program ./bin/run does not exist"),
        ('command = "python \'train.py {lr}"', "workload.command", "balance its quotes"),
        ('command = "python train.py --json={lr"', "workload.command", "lone '{'"),
        ("command = 3", "workload.command", "must be a command line or a list"),
        ('command = "python train.py"\nfunction = "a.py:f"', "workload", "exactly one of"),
        ('comand = "python train.py"', "workload.comand", "did you mean 'command'"),
    ],
)
def test_spec_workload_command_errors_name_the_key_and_the_fix(tmp_path, run_cli, workload, key, fragment):
    path = _command_study(tmp_path, workload)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert e.value.key == key and fragment in str(e.value)
    code, _, err = run_cli("coarse", path)  # the same, as the CLI says it: one line, exit 2, before any trial
    assert code == 2 and err.strip().startswith("Error: ") and fragment in err and "Traceback" not in err


def test_spec_workload_command_not_executable(tmp_path):
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    with pytest.raises(SpecError, match="not executable"):
        load_spec(_command_study(tmp_path, 'command = "./run.sh {lr}"'))
    (tmp_path / "run.sh").chmod(0o755)
    assert load_spec(_command_study(tmp_path, 'command = "./run.sh {lr}"')).workload.command[0] == "./run.sh"


# ----------------------------------------------------------------------------- [workload] model = ...

MODELS = Path(__file__).parent / "workloads" / "models.py"


def _model_study(tmp_path: Path, extra: str = "", params: str = LR) -> Path:
    path = tmp_path / "m.toml"
    path.write_text(
        'name = "m"\nmetric = "val_accuracy"\n\n'
        f'[workload]\nmodel = "{MODELS}:mlp"\ndata = "{MODELS}:data"\n{extra}\n\n{params}'
    )
    return path


def test_spec_workload_model_table_with_defaults_and_storage(tmp_path):
    from hpsearch.spec import StudySpec

    spec = load_spec(_model_study(tmp_path, 'optimizer = "adamw"\nbatch_size = 16\nloss = "mse"\nprecision = "bf16"'))
    model = spec.workload.model
    assert (
        spec.workload.kind == "model"
        and model.model.endswith("models.py:mlp")
        and model.data.endswith("models.py:data")
    )
    assert (model.optimizer, model.batch_size, model.loss, model.precision) == ("adamw", 16, "mse", "bf16")
    assert StudySpec.from_dict(spec.to_dict()) == spec
    plain = load_spec(_model_study(tmp_path)).workload.model
    assert (plain.optimizer, plain.batch_size, plain.loss, plain.precision) == ("sgd", 64, "cross_entropy", "fp32")


@pytest.mark.parametrize(
    ("extra", "params", "key", "fragment"),
    [
        ('optimizer = "adam"', LR, "workload.optimizer", "use one of sgd, adamw"),
        ('loss = "hinge"', LR, "workload.loss", "not a loss"),
        ('loss = "nofile.py:fn"', LR, "workload.loss", "does not exist"),
        ("batch_size = 0", LR, "workload.batch_size", "positive integer"),
        ('precision = "fp8"', LR, "workload.precision", "fp32, bf16"),
        ("", "[params.momentum]\nvalues = [0.9]\n", "params", "needs a param named lr"),
    ],
)
def test_spec_workload_model_errors(tmp_path, extra, params, key, fragment):
    with pytest.raises(SpecError) as e:
        load_spec(_model_study(tmp_path, extra, params))
    assert e.value.key == key and fragment in str(e.value)


def test_spec_workload_model_keys_belong_to_a_model(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        'name = "s"\nmetric = "m"\n[workload]\nfunction = "hpsearch.workloads.digits:mlp"\nbatch_size = 3\n' + LR
    )
    with pytest.raises(SpecError, match=r"workload.batch_size: belongs to a model workload"):
        load_spec(path)
    path.write_text(f'name = "s"\nmetric = "m"\n[workload]\nmodel = "{MODELS}:nothing"\ndata = "{MODELS}:data"\n' + LR)
    with pytest.raises(SpecError, match=r"workload.model: .*defines no function 'nothing'"):
        load_spec(path)
