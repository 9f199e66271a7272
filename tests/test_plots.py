"""hpsearch curves and the plots: PNGs written with the Agg backend, terminal sparklines, clean CLI start-up."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpsearch.report.plots import TrialCurves, plot_curves, sparkline

RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def searched(study_file: Callable[..., Path], run_cli: RunCli) -> Path:
    code, _, err = run_cli("coarse", study_file(coarse="trials = 6\nepochs = 3\nseed = 0"), "-q")
    assert code == 0, err
    return study_file()


def test_curves_writes_png_and_prints_sparklines(searched: Path, run_cli: RunCli, tmp_path: Path) -> None:
    code, out, err = run_cli("curves", "fake", "--top", "3")
    assert code == 0, err
    png = tmp_path / "results" / "fake" / "curves-coarse.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.count("trial ") == 3  # one label per trial
    assert out.count("train ") == 3 and out.count("val ") == 3
    assert any(c in out for c in "▁▂▃▄▅▆▇█")


def test_curves_out_path_and_unknown_stage(searched: Path, run_cli: RunCli, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "c.png"
    assert run_cli("curves", "fake", "--out", target)[0] == 0
    assert target.stat().st_size > 5_000
    code, _, err = run_cli("curves", "fake", "--stage", "refine-9")
    assert code == 2 and err.startswith("Error:") and "refine-9" in err


def test_plot_curves_uses_agg(tmp_path: Path) -> None:
    t = TrialCurves(1, "coarse", 1, 0.9, {"lr": 0.01}, {"train_loss": [2.0, 1.0, 0.5], "val_loss": [2.1, 1.2, 0.8]})
    path = plot_curves([t], tmp_path / "c.png")
    import matplotlib

    assert matplotlib.get_backend().lower() == "agg"
    assert path.stat().st_size > 5_000


def test_sparkline_scales_between_bounds() -> None:
    assert sparkline([1.0, 10.0, 100.0], 1.0, 100.0) == "▁▅█"
    assert sparkline([float("nan")], 1.0, 2.0) == "×"


def test_cli_import_loads_neither_torch_nor_matplotlib() -> None:
    code = "import sys, hpsearch.cli; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("command", ["sanity", "lr-find", "curves", "report"])
def test_instrument_commands_have_help_with_example(command: str, run_cli: RunCli) -> None:
    code, out, _ = run_cli(command, "--help")
    assert code == 0
    assert "Example: hpsearch " + command in out


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_scatter_wraps_params_into_rows_and_draws_string_params(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np

    from hpsearch.report import plots
    from hpsearch.space import Choice, Range, Space

    space = Space(
        (
            Range("lr", 1e-4, 1.0, log=True),
            Choice("momentum", (0.5, 0.9, 0.99)),
            Range("weight_decay", 1e-6, 1e-2, log=True),
            Choice("activation", ("relu", "tanh", "gelu")),
            Choice("batch_size", (16, 32, 64)),
            Range("dropout", 0.0, 0.5),
            Range("warmup", 0, 10, type="int"),
        )
    )
    rows = [
        {
            "val_accuracy": 0.5 + i / 20,
            "lr": 10 ** (-4 + i / 2),
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "activation": ("relu", "tanh", "gelu")[i % 3],
            "batch_size": np.int64((16, 32, 64)[i % 3]),
            "dropout": 0.1,
            "warmup": np.int64(i),
        }  # an Int64 column's ints are numpy's
        for i in range(8)
    ]
    seen: dict[str, Any] = {}
    save = plots._save

    def spy(fig: Any, path: str | Path) -> Path:
        seen["axes"] = {ax.get_xlabel(): ax for ax in fig.axes if ax.get_visible()}
        seen["hidden"] = sum(not ax.get_visible() for ax in fig.axes)
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    path = plots.plot_scatter(rows, space, "val_accuracy", tmp_path / "s.png", title="7 params")
    axes = seen["axes"]
    assert len(axes) == 7 and seen["hidden"] == 2  # a 3 x 3 grid, two places left empty
    activation = axes["activation"]
    assert [t.get_text() for t in activation.get_xticklabels()] == ["relu", "tanh", "gelu"]
    assert sum(len(c.get_offsets()) for c in activation.collections) == 8 + 1  # every trial, and the best starred
    assert len(axes["batch_size (log)"].collections[0].get_offsets()) == 8  # numpy ints are numbers
    width, height = _png_size(path)
    assert width < 1600 and height > 900, (width, height)  # three plots to a row, not seven in one


def test_plot_scatter_of_string_params_only(tmp_path: Path) -> None:
    from hpsearch.report.plots import plot_scatter
    from hpsearch.space import Choice, Space

    rows = [{"loss": 1.0 / (i + 1), "optimizer": ("sgd", "adam")[i % 2]} for i in range(4)]
    path = plot_scatter(
        rows, Space((Choice("optimizer", ("sgd", "adam")),)), "loss", tmp_path / "s.png", direction="minimize"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _drawn_ticks(
    monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]], space: Any, tmp_path: Path
) -> dict[str, list[tuple[float, str]]]:
    """Render plot_scatter and read back, per panel, the (position, label) of each labelled tick in view."""
    from hpsearch.report import plots

    seen: dict[str, list[tuple[float, str]]] = {}
    save = plots._save

    def spy(fig: Any, path: str | Path) -> Path:
        fig.canvas.draw()
        for ax in fig.axes:
            if ax.get_visible():
                low, high = sorted(ax.get_xlim())
                ticks = zip(ax.xaxis.get_majorticklocs(), ax.get_xticklabels())
                seen[ax.get_xlabel()] = [(x, t.get_text()) for x, t in ticks if low <= x <= high and t.get_text()]
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    plots.plot_scatter(rows, space, "val_accuracy", tmp_path / "s.png")
    return seen


def test_plot_scatter_labels_a_narrow_log_range_with_distinct_precise_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refine stage's lr over [0.146, 0.232] was labelled `0.2 0.2 0.2 0.2`."""
    from hpsearch.space import Range, Space

    space = Space((Range("lr", 0.146, 0.232, log=True), Range("weight_decay", 3e-5, 4e-5, log=True)))
    rows = [{"val_accuracy": 0.8 + i / 100, "lr": 0.146 * 1.05**i, "weight_decay": 3e-5 + i * 1e-6} for i in range(9)]
    ticks = _drawn_ticks(monkeypatch, rows, space, tmp_path)
    for name in ("lr (log)", "weight_decay (log)"):
        labels = [label for _, label in ticks[name]]
        assert len(labels) >= 2 and len(set(labels)) == len(labels), (name, labels)
        for x, label in ticks[name]:  # each label is its tick's value, not a rounding of it
            assert float(label.replace("−", "-")) == pytest.approx(x, rel=1e-9), (name, labels)


def test_plot_scatter_gives_zero_a_labelled_place_on_a_log_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """weight_decay = 0 was drawn left of 1e-5 with no tick for it."""
    from hpsearch.space import Choice, Range, Space

    space = Space((Range("lr", 1e-4, 1.0, log=True), Choice("weight_decay", (0, 1e-5, 1e-4, 1e-3))))
    rows = [
        {"val_accuracy": 0.5 + i / 20, "lr": 10 ** (-4 + i / 2), "weight_decay": (0, 1e-5, 1e-4, 1e-3)[i % 4]}
        for i in range(8)
    ]
    ticks = _drawn_ticks(monkeypatch, rows, space, tmp_path)
    decay = ticks["weight_decay (log)"]
    labels = [label for _, label in decay]
    assert len(set(labels)) == len(labels) == 4
    assert "0" in labels
    at = {label: x for x, label in decay}
    assert at["0"] < min(x for label, x in at.items() if label != "0")  # 0 left of every positive value
    lr = [label for _, label in ticks["lr (log)"]]
    assert len(set(lr)) == len(lr) >= 3
