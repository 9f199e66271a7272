"""Shared fixtures: a temporary results folder and study files written on the fly."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from hpsearch import cli

pytest_plugins = ["tests.postgres", "tests.slurm"]  # the postgres_url / postgres_db, slurm_cluster / slurm fixtures

TESTS = Path(__file__).parent

# A shell without job control (`make test &` from a script, nohup) starts the suite with SIGINT ignored, and
# every child it spawns would inherit that: the tests that press Ctrl-C on a CLI process (send SIGINT) would
# wait forever. A handler, unlike SIG_IGN, is reset to the default in a child, which Python then turns into
# KeyboardInterrupt, as in a terminal.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
FAKE = TESTS / "workloads" / "fake.py"
# A wide space as real studies have: log and linear ranges, numeric and string sets (tables, report).
SIX_PARAMS = textwrap.dedent(
    """
    [params.lr]
    low = 1e-4
    high = 1.0
    log = true

    [params.momentum]
    values = [0.5, 0.9, 0.95, 0.99]

    [params.weight_decay]
    low = 1e-6
    high = 1e-2
    log = true

    [params.activation]
    values = ["relu", "tanh", "gelu"]

    [params.batch_size]
    values = [16, 32, 64, 128]

    [params.dropout_rate]
    low = 0.0
    high = 0.5
    """
)


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads or writes the user's studies/ or storage by accident."""
    monkeypatch.setenv("HPSEARCH_DIR", str(tmp_path / "results"))
    monkeypatch.delenv("HPSEARCH_STORAGE", raising=False)


@pytest.fixture
def study_file(tmp_path: Path) -> Callable[..., Path]:
    """Write a study file: study_file(workload='peak_above', body_extra='...', **top-level overrides)."""

    def make(
        workload: str = "peak_above",
        name: str = "fake",
        coarse: str = 'strategy = "random"\ntrials = 12\nepochs = 2\nseed = 0',
        refine: str = 'strategy = "random"\ntrials = 6\nepochs = 3\ntop_k = 4',
        params: str | None = None,
        metric: str = "val_accuracy",
        direction: str = "maximize",
    ) -> Path:
        if params is None:
            params = textwrap.dedent(
                """
                [params.lr]
                low = 1e-4
                high = 1.0
                log = true

                [params.momentum]
                values = [0.5, 0.9, 0.95, 0.99]
                limits = [0, 1]
                """
            )
        path = tmp_path / f"{name}.toml"
        workload_path = workload if ":" in workload else f"{FAKE}:{workload}"
        path.write_text(
            f'name = "{name}"\nworkload = "{workload_path}"\nmetric = "{metric}"\ndirection = "{direction}"\n\n'
            f"[coarse]\n{coarse}\n\n[refine]\n{refine}\n\n{params}\n"
        )
        return path

    return make


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""

    def invoke(*args: str) -> tuple[int, str, str]:
        code = cli.run([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def pytest_report_header() -> str:
    import optuna

    return f"optuna {optuna.__version__} ({optuna.__file__})"
