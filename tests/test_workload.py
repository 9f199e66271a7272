"""hpsearch/workload.py: the workload kinds as stored, and the command line template (no process runs)."""

from __future__ import annotations

import pytest

from hpsearch.workloads.spec import (
    TemplateError,
    Workload,
    check_command,
    format_value,
    parse_command,
    placeholders,
    render,
    resolve,
)

BUILTINS = {"epochs": 3, "seed": 12, "trial": 4, "stage": "coarse", "study": "s", "device": "cpu", "split": "val"}


def test_workload_command_is_split_first_so_a_value_never_splits_or_joins_arguments() -> None:
    argv = parse_command("python train.py --name {name} --tag='{name} x' --lr={lr}")
    out = render(argv, {"name": "two words; rm -rf /", "lr": 0.001}, BUILTINS)
    assert out == ["python", "train.py", "--name", "two words; rm -rf /", "--tag=two words; rm -rf / x", "--lr=0.001"]


def test_workload_builtins_short_and_long_and_a_param_named_like_a_builtin_takes_the_short_form() -> None:
    argv = ("run", "{epochs}", "{hpsearch.epochs}", "{seed}", "{trial}", "{stage}", "{device}", "{split}", "{study}")
    assert render(argv, {"epochs": 7}, BUILTINS) == ["run", "7", "3", "12", "4", "coarse", "cpu", "val", "s"]
    assert render(("{epochs}",), {}, BUILTINS) == ["3"]


def test_workload_any_param_name_toml_allows_is_a_placeholder() -> None:
    params = {"batch size": 64, "rank": 2, "a.b-c": "x", "state": True}
    argv = ("p", "{batch size}", "{rank}", "{a.b-c}", "{state}")
    assert render(argv, params, BUILTINS) == ["p", "64", "2", "x", "true"]
    assert check_command(argv, params) == []


def test_workload_unknown_placeholder_names_it_and_lists_what_exists() -> None:
    with pytest.raises(TemplateError, match=r"unknown placeholder \{lr_rate\}.*\{lr\}.*\{epochs\}"):
        check_command(("python", "t.py", "{lr_rate}"), ["lr"])


def test_workload_literal_braces_and_lone_braces() -> None:
    assert render(('--json={{"a": {lr}}}',), {"lr": 1}, BUILTINS) == ['--json={"a": 1}']
    with pytest.raises(TemplateError, match="lone"):
        placeholders(["--x={lr"])
    with pytest.raises(TemplateError, match="lone"):
        placeholders(["--x=}"])


def test_workload_unused_params_are_listed_for_the_warning() -> None:
    assert check_command(("python", "t.py", "--lr", "{lr}"), ["lr", "momentum", "wd"]) == ["momentum", "wd"]


def test_workload_values_are_written_exactly() -> None:
    assert [format_value(v) for v in (0.001, 1e-05, 0.1 + 0.2, 3, True, False, "relu", 2.0)] == [
        "0.001",
        "1e-05",
        "0.30000000000000004",
        "3",
        "true",
        "false",
        "relu",
        "2.0",
    ]
    assert float(format_value(0.1 + 0.2)) == 0.1 + 0.2


def test_workload_unbalanced_quotes_and_empty_command_are_errors() -> None:
    with pytest.raises(TemplateError, match="quotes"):
        parse_command("python 'train.py")
    with pytest.raises(TemplateError, match="empty"):
        parse_command("   ")


def test_workload_stored_and_sent_forms_round_trip() -> None:
    function = Workload(function="/x/train.py:train")
    command = Workload(command=("python", "train.py", "--lr", "{lr}"))
    assert function.to_data() == "/x/train.py:train"  # as stages stored it before commands existed
    for w in (function, command):
        assert Workload.from_data(w.to_data()) == w
        assert Workload.from_arg(w.to_arg()) == w
    assert command.kind == "command" and function.kind == "function"
    assert str(command) == "python train.py --lr {lr}"  # as the study file wrote it, no quotes added


def test_workload_resolve_prefers_params_then_builtins() -> None:
    assert resolve("seed", ["seed"]) == ("param", "seed")
    assert resolve("hpsearch.seed", ["seed"]) == ("builtin", "seed")
    assert resolve(" lr ", ["lr"]) == ("param", "lr")


def test_a_split_label_in_reports_and_results_is_not_a_metric() -> None:
    """A function may say which split it evaluated on (`final` checks it); in a search it is no metric
    and fails nothing."""
    from hpsearch.workloads.api import TrialContext, TrialRecord, normalize_result

    ctx = TrialContext.open(TrialRecord(0, {"lr": 0.1}, 2, 0, metric="val_accuracy"), "cpu")
    ctx.report(0, val_accuracy=0.5, split="val")
    assert ctx.curves == {"val_accuracy": [0.5]}
    assert normalize_result({"val_accuracy": 0.5, "split": "val"}, "val_accuracy") == {"val_accuracy": 0.5}
