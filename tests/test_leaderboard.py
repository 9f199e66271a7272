"""Leaderboards: ranking in both directions, failed trials after completed, CSV columns."""

from __future__ import annotations

import io

import pandas as pd

from hpsearch.leaderboard import frame, leaderboard, to_text
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store


def _board(study_file, **kwargs):
    spec = load_spec(study_file(**kwargs))
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    run_stage(store, info)
    return store, leaderboard(store, None)


def test_leaderboard_maximize_ranks_highest_first(study_file):
    _, df = _board(study_file, workload="crash_high_lr", coarse="trials = 8\nepochs = 1")
    done = df[df.state == "COMPLETE"]
    assert list(done["rank"]) == list(range(1, len(done) + 1))
    assert done["val_accuracy"].is_monotonic_decreasing


def test_leaderboard_minimize_ranks_lowest_first(study_file):
    _, df = _board(
        study_file, workload="peak_inside", metric="val_accuracy", direction="minimize", coarse="trials = 8\nepochs = 1"
    )
    assert df["val_accuracy"].is_monotonic_increasing
    assert df.iloc[0]["rank"] == 1


def test_leaderboard_failed_trials_follow_completed_with_reason(study_file):
    _, df = _board(study_file, workload="crash_high_lr", coarse="trials = 8\nepochs = 1")
    states = list(df["state"])
    assert "FAIL" in states
    first_fail = states.index("FAIL")
    assert set(states[:first_fail]) == {"COMPLETE"} and set(states[first_fail:]) == {"FAIL"}
    failed = df[df.state == "FAIL"]
    assert failed["rank"].isna().all()
    assert failed["reason"].str.contains("ValueError").all()


def test_leaderboard_csv_has_required_columns_in_order(study_file):
    _, df = _board(study_file, coarse="trials = 4\nepochs = 1")
    csv = pd.read_csv(io.StringIO(to_text(df, "csv")))
    required = [
        "rank",
        "trial",
        "stage",
        "state",
        "reason",
        "val_accuracy",
        "lr",
        "momentum",
        "epochs",
        "duration_s",
        "border",
    ]
    assert list(csv.columns[: len(required)]) == required
    assert len(csv) == 4 and (csv["stage"] == "coarse").all() and (csv["epochs"] == 1).all()


def test_leaderboard_border_column_names_flagged_params(study_file):
    _, df = _board(study_file, coarse="trials = 12\nepochs = 1")
    for _, row in df.iterrows():
        expected = []
        if row["lr"] >= 10 ** (-4 + 0.9 * 4):
            expected.append("lr:high")
        elif row["lr"] <= 10 ** (-4 + 0.1 * 4):
            expected.append("lr:low")
        if row["momentum"] in (0.5, 0.99):
            expected.append("momentum:" + ("low" if row["momentum"] == 0.5 else "high"))
        assert row["border"] == ", ".join(expected)


def test_leaderboard_top_and_formats(study_file):
    store, df = _board(study_file, coarse="trials = 5\nepochs = 1")
    top2 = leaderboard(store, None, top=2)
    assert len(top2) == 2 and list(top2["trial"]) == list(df["trial"][:2])
    assert to_text(top2, "json").lstrip().startswith("[")
    assert to_text(top2, "markdown").splitlines()[0].split("|")[1].strip() == "rank"


def test_leaderboard_empty_stage_has_columns(study_file):
    spec = load_spec(study_file())
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    df = frame([info], [[]])
    assert list(df.columns[:5]) == ["rank", "trial", "stage", "state", "reason"] and df.empty


def test_leaderboard_csv_neutralises_formulas_and_numbers_stay_numbers(tmp_path) -> None:
    import io

    import pandas as pd

    from hpsearch.leaderboard import to_text, write_csv

    df = pd.DataFrame(
        {
            "reason": ["=cmd|' /C calc'!A0", '=HYPERLINK("http://x")', "+1", "@SUM(A1)", "\tx", "ok"],
            "val_loss": [-1.5, 0.25, -3.0, 1.0, 2.0, -0.5],
        }
    )
    for text in (to_text(df, "csv"), write_csv(df, tmp_path / "b.csv").read_text()):
        back = pd.read_csv(io.StringIO(text))
        assert all(not str(v).startswith(("=", "+", "@", "\t")) for v in back["reason"])
        assert back["reason"][0] == "'=cmd|' /C calc'!A0" and back["reason"][5] == "ok"
        assert back["val_loss"].dtype.kind == "f" and back["val_loss"][0] == -1.5
    md = to_text(pd.DataFrame({"a|b": ["x|y"]}), "markdown")
    assert "x\\|y" in md and "a\\|b" in md


def _tested(study_file, ensemble: int = 1, run_cli=None):
    """A coarse stage of tests/workloads/recipe.py's noisy_peak, then `final` (function workload: no ensemble
    prediction); with run_cli, checks that the leaderboard has no final line before."""
    from pathlib import Path

    from hpsearch.search.final import final

    recipe = Path(__file__).parent / "workloads" / "recipe.py"
    store, _ = _board(study_file, workload=f"{recipe}:noisy_peak", coarse="trials = 6\nepochs = 1\nseed = 0")
    if run_cli is not None:
        code, out, _ = run_cli("leaderboard", store.name)
        assert code == 0 and "final:" not in out  # nothing tested yet
    return store, final(store, seeds=2, ensemble=ensemble)


def test_leaderboard_shows_the_stored_final_result_under_the_table(study_file, run_cli) -> None:
    _, result = _tested(study_file, run_cli=run_cli)
    best = result.data["configs"][0]
    code, out, err = run_cli("leaderboard", "fake")
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("final:"))
    assert f"test val_accuracy {best['mean']:.4f} ± {best['spread']:.4f}" in line and "evaluated 1 time(s)" in line
    code, out, _ = run_cli("leaderboard", "fake", "--format", "csv")
    assert "final:" not in out  # data formats stay data


def test_studies_marks_the_tested_stage_with_the_final_result(study_file, run_cli) -> None:
    _, result = _tested(study_file, ensemble=2)
    code, out, err = run_cli("studies")
    assert code == 0, err
    assert any(line.split()[:2] == ["fake", "coarse"] and "✓" in line for line in out.splitlines())
    best = result.data["configs"][0]
    line = next(line for line in out.splitlines() if line.startswith("✓ fake final:"))
    assert f"test val_accuracy {best['mean']:.4f} ± {best['spread']:.4f}" in line and "evaluated 1 time(s)" in line
    assert "ensemble of 2: the averaged prediction needs a model workload" in line


def test_leaderboard_border_flags_reach_the_table_as_data(study_file) -> None:
    """The table's ↑/↓ come from the flags as data, never from the border column's text: a param named
    'a:b, c' on its high border still gets its arrow (its text 'a:b, c:high' would read as param 'c')."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from rich.console import Console

    from hpsearch.cli.render import leaderboard_table
    from hpsearch.leaderboard import border_sides

    name = "a:b, c"
    params = f'[params."{name}"]\nvalues = [1, 2, 4]\n\n[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n'
    spec = load_spec(study_file(params=params))
    info = start_coarse(Store(spec.name), spec, {})
    trial = optuna.trial.create_trial(
        params={name: 4, "lr": 0.01},
        distributions={name: CategoricalDistribution([1, 2, 4]), "lr": FloatDistribution(1e-4, 1.0, log=True)},
        value=0.9,
    )
    df = frame([info], [[trial]], top=1)
    assert df.loc[0, "border"] == "a:b, c:high"  # the text, as the CSV writes it
    assert border_sides(df) == [{name: "high"}]
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(leaderboard_table(df, spec.metric, info.space.names, "fake"), crop=False)
    assert "4↑" in console.export_text()
