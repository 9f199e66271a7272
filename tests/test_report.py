"""hpsearch report: one self-contained HTML file with lineage, spaces, leaderboards, border flags and plots."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

RunCli = Callable[..., tuple[int, str, str]]


def test_report_after_coarse_and_refine(study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path) -> None:
    assert run_cli("coarse", study_file(coarse='trials = 8\nepochs = 3\nseed = 0'), "-q")[0] == 0
    assert run_cli("refine", "fake", "-q")[0] == 0
    code, out, err = run_cli("report", "fake")
    assert code == 0, err
    path = tmp_path / "results" / "fake" / "report.html"
    assert out.strip() == str(path)
    page = path.read_text()
    assert "coarse → refine-1" in page  # lineage
    assert "old range" in page and "new range" in page  # how refine derived its space
    assert "HIGH border" in page  # peak_above's best lr crowds the top of the range
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 4  # scatter + curves, per stage
    assert not re.search(r"(src|href)=['\"]https?:", page)  # self-contained
    assert "update_ratio" in page and "notes" in page


def test_report_unknown_study_is_a_usage_error(run_cli: RunCli) -> None:
    code, _, err = run_cli("report", "nope")
    assert code == 2
    assert err.startswith("Error:") and "nope" in err
