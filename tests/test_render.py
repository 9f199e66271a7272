"""The CLI's leaderboard table: it fits the console (80 columns), abbreviates on purpose, and never cuts a word."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from rich.console import Console

from hpsearch.cli.render import leaderboard_table, make_console
from hpsearch.leaderboard import FLAGS_ATTR
from hpsearch.space import fmt
from tests.conftest import SIX_PARAMS

RunCli = Callable[..., tuple[int, str, str]]

PARAMS_3 = ["lr", "momentum", "weight_decay"]
PARAMS_6 = ["learning_rate", "momentum", "weight_decay", "batch_size", "activation", "dropout_rate"]
VALUES = {
    "lr": 3.2e-3,
    "learning_rate": 3.2e-3,
    "momentum": 0.9,
    "weight_decay": 1.5e-5,
    "batch_size": 64,
    "activation": "relu",
    "dropout_rate": 0.25,
}


def _frame(params: Sequence[str], stages: Sequence[str] = ("coarse",), n: int = 8) -> pd.DataFrame:
    """A leaderboard as leaderboard.frame builds it: ranked complete trials, then failed ones; every
    row's border column names two params ('learning_rate:high, weight_decay:low')."""
    rows = []
    for i in range(n):
        done = i < n - 2
        border = ", ".join(f"{p}:{'high' if k % 2 else 'low'}" for k, p in enumerate(params) if (i + k) % 3 == 0)
        rows.append(
            {
                "rank": i + 1 if done else None,
                "trial": i,
                "stage": stages[i % len(stages)],
                "state": "COMPLETE" if done else "FAIL",
                "reason": "" if done else "ValueError: lr 0.3 too large for this model\nraised in layer 3",
                "val_accuracy": 0.95 - i / 100 if done else None,
                **{p: VALUES[p] * (i + 1) if isinstance(VALUES[p], float) else VALUES[p] for p in params},
                "epochs": 3,
                "duration_s": 12.345,
                "border": border,
                "val_loss": 0.1 + i / 100,
                "update_ratio": 1.2e-3,
                "lr_hint": "",
                "notes": "undertrained" if i == 0 else "",
            }
        )
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype("Int64")
    df.attrs[FLAGS_ATTR] = {  # the flags as data, as frame keeps them beside the border column's text
        i: {p: "high" if k % 2 else "low" for k, p in enumerate(params) if (i + k) % 3 == 0} for i in range(n)
    }
    return df


def _render(df: pd.DataFrame, params: Sequence[str], width: int = 80, crop: bool = True, **kwargs: Any) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(
        leaderboard_table(df, "val_accuracy", params, "fake: coarse (maximize val_accuracy)", **kwargs), crop=crop
    )
    return console.export_text().splitlines()


@pytest.mark.parametrize(
    ("params", "stages"), [(PARAMS_3, ("coarse",)), (PARAMS_6, ("coarse",)), (PARAMS_6, ("coarse", "refine-1"))]
)
def test_leaderboard_table_fits_80_columns_without_cutting_words(params: list[str], stages: tuple[str, ...]) -> None:
    df = _frame(params, stages)
    lines = _render(df, params)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80, text
    assert "…" not in text, text  # nothing cut with an ellipsis (was: `weight_decay:…`)
    # Every param is a column, every value on a border is marked, and the legend says what the marks mean.
    assert "↑" in text and "↓" in text
    assert "↑ ↓ = at the high / low border of the searched range" in text
    first = next(line for line in lines if line.lstrip().startswith("1 "))
    for p in params:
        assert fmt(df.loc[0, p]) in first, (p, first)
    assert "0.9500" in first  # the metric
    assert "FAIL: ValueError:" in text  # the state of failed trials, with the reason
    assert "not shown:" in text and "--wide" in text


def test_leaderboard_table_abbreviates_long_names_and_explains_them() -> None:
    text = "\n".join(_render(_frame(PARAMS_6, ("coarse", "refine-1")), PARAMS_6))
    header = next(line for line in text.splitlines() if line.startswith("#"))
    assert "wd" in header.split() and "weight_decay" not in header
    legend = " ".join(text.split())  # the legend wraps at spaces
    assert "wd = weight_decay" in legend and "lr = learning_rate" in legend
    assert "r1 = refine-1" in legend  # stage names shortened too


def test_leaderboard_table_keeps_full_names_where_they_fit() -> None:
    text = "\n".join(_render(_frame(PARAMS_3), PARAMS_3))
    header = next(line for line in text.splitlines() if line.startswith("#"))
    assert header.split()[:7] == ["#", "trial", "lr", "momentum", "weight_decay", "val_accuracy", "state"]
    assert "= weight_decay" not in text and "= momentum" not in text  # no abbreviation, nothing to explain


def test_leaderboard_table_drops_last_params_when_even_abbreviations_do_not_fit() -> None:
    lines = _render(_frame(PARAMS_6), PARAMS_6, width=50)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 50 and "…" not in text
    assert "not shown: " in text and "dropout_rate" in text.split("not shown: ")[1]


def test_leaderboard_table_wide_shows_every_column_whole() -> None:
    lines = _render(_frame(PARAMS_6), PARAMS_6, crop=False, wide=True)
    text = "\n".join(lines)
    header = lines[1].split()
    for name in [*PARAMS_6, "val_accuracy", "val_loss", "epochs", "time", "border", "upd:w", "hints"]:
        assert name in header, name
    assert "learning_rate:low, batch_size:high" in text  # the border text on one line, never cut
    assert "…" not in text and max(len(line) for line in lines) > 80


def test_leaderboard_table_columns_shows_rank_trial_and_those() -> None:
    lines = _render(_frame(PARAMS_6), PARAMS_6, crop=False, columns=["weight_decay", "border", "reason"])
    assert lines[1].split() == ["rank", "trial", "weight_decay", "border", "reason"]
    text = "\n".join(lines)
    assert "learning_rate:low," in text and "…" not in text
    assert max(len(line) for line in lines) <= 80  # the text columns wrap at spaces to fit


def test_leaderboard_table_renamed_own_columns() -> None:
    """A param named `rank` (LoRA): the frame moves its own column to hpsearch_rank (df.attrs['columns'])."""
    df = _frame(["lr"]).rename(columns={"rank": "hpsearch_rank"})
    df["rank"] = 8
    df.attrs["columns"] = {"rank": "hpsearch_rank"}
    text = "\n".join(_render(df, ["lr", "rank"]))
    first = next(line for line in text.splitlines() if line.startswith("1 "))
    assert first.split()[:4] == ["1", "0", "3.2e-03↓", "8"]


def test_make_console_respects_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert make_console().width == 80 and make_console(stderr=True).width == 80  # not forced to 140 when piped
    monkeypatch.setenv("COLUMNS", "100")
    assert make_console().width == 100
    assert make_console(width=60).width == 60


@pytest.fixture
def six_params(study_file: Callable[..., Path], run_cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    spec = study_file(workload="crash_high_lr", coarse="trials = 8\nepochs = 1\nseed = 0", params=SIX_PARAMS)
    code, _, err = run_cli("coarse", spec, "-q")
    assert code == 0, err


def test_cli_leaderboard_fits_columns(six_params: None, run_cli: RunCli) -> None:
    code, out, err = run_cli("leaderboard", "fake")
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert "…" not in out and "wd = weight_decay" in " ".join(out.split()) and "FAIL" in out


def test_cli_leaderboard_wide(six_params: None, run_cli: RunCli) -> None:
    code, out, err = run_cli("leaderboard", "fake", "--wide")
    assert code == 0, err
    header = out.splitlines()[1].split()
    for name in (
        "rank",
        "trial",
        "val_accuracy",
        "lr",
        "momentum",
        "weight_decay",
        "activation",
        "batch_size",
        "dropout_rate",
        "epochs",
        "time",
        "border",
    ):
        assert name in header, (name, out)
    assert "…" not in out and "ValueError: lr" in out


def test_cli_leaderboard_columns(six_params: None, run_cli: RunCli) -> None:
    code, out, err = run_cli("leaderboard", "fake", "--columns", "lr, reason,duration_s")
    assert code == 0, err
    assert out.splitlines()[1].split() == ["rank", "trial", "lr", "reason", "duration_s"]
    assert "ValueError: lr" in out and "…" not in out


def test_cli_leaderboard_columns_unknown_or_with_wide_is_a_usage_error(six_params: None, run_cli: RunCli) -> None:
    code, _, err = run_cli("leaderboard", "fake", "--columns", "lr,nope")
    assert code == 2 and err.startswith("Error: --columns: no column 'nope'") and "weight_decay" in err
    code, _, err = run_cli("leaderboard", "fake", "--columns", "lr", "--wide")
    assert code == 2 and err.startswith("Error:") and "--wide" in err


def test_render_border_warnings_are_capped_with_a_count():
    from rich.console import Console

    from hpsearch.border import BorderFlag
    from hpsearch.cli.render import print_flags

    flags = [BorderFlag(f"p{i}", "low", 0.0, True, 1, 1, "[0, 1]", at_limit=i % 2 == 0) for i in range(30)]
    console = Console(width=200, record=True)
    print_flags(console, flags, "coarse")
    lines = console.export_text().strip().splitlines()
    assert len(lines) == 13 and "... and 18 more border flags" in lines[-1]
    assert all("refine will widen" in line for line in lines[:12])  # the flags refine acts on come first
