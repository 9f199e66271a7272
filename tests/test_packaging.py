"""The install: the Optuna range pyproject.toml declares is the one `make test` runs the suite on."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_packaging_oldest_optuna_tested_is_the_declared_lower_bound() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [optuna] = [d for d in deps if d.startswith("optuna")]
    lower = re.search(r">=\s*([\d.]+)", optuna).group(1)  # type: ignore[union-attr]
    tested = re.search(r"^OLDEST_OPTUNA \?= ([\d.]+)", (ROOT / "Makefile").read_text(), re.M).group(1)  # type: ignore[union-attr]
    assert tuple(map(int, tested.split(".")))[: len(lower.split("."))] == tuple(map(int, lower.split(".")))
