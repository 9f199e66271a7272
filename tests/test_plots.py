"""hpsearch curves and the plots: PNGs written with the Agg backend, terminal sparklines, clean CLI start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from hpsearch import cli
from hpsearch.report.plots import TrialCurves, plot_curves, sparkline

RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def searched(study_file: Callable[..., Path], run_cli: RunCli) -> Path:
    code, _, err = run_cli("coarse", study_file(coarse='trials = 6\nepochs = 3\nseed = 0'), "-q")
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
