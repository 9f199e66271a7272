"""The report on a phone and on a desktop, measured in a real headless browser (skipped without chromium).

A user's report at 390 px wide cut its tables after 5 columns and shrank its
plots to unreadable. The page must never scroll sideways itself: each table
and plot scrolls inside its own box, and plots keep a readable width.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import SIX_PARAMS

RunCli = Callable[..., tuple[int, str, str]]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
READABLE = 700  # px: a plot narrower than this shows three panels too small to read on a phone

# Loads the report into an iframe of the given width (srcdoc: same origin, so it can be measured),
# then writes what it measured into the page, where --dump-dom shows it.
MEASURE = """<!DOCTYPE html><html><body style='margin:0'>
<iframe id='f' style='border:0;width:%dpx;height:2000px' srcdoc="%s"></iframe>
<script>
document.getElementById('f').addEventListener('load', () => {
  const win = document.getElementById('f').contentWindow, doc = win.document;
  const box = (el) => { for (let p = el.parentElement; p; p = p.parentElement)
    if (win.getComputedStyle(p).overflowX === 'auto') return p; return null; };
  const size = (el) => { const b = box(el); return {w: el.getBoundingClientRect().width, box: b && b.clientWidth}; };
  const out = {page: doc.documentElement.scrollWidth, view: doc.documentElement.clientWidth,
    tables: [...doc.querySelectorAll('table')].map(size), images: [...doc.querySelectorAll('img')].map(size)};
  const pre = document.createElement('pre'); pre.id = 'measure'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script></body></html>"""


def _measure(report: Path, width: int, tmp_path: Path) -> dict:
    page = tmp_path / f"measure-{width}.html"
    page.write_text(MEASURE % (width, html.escape(report.read_text(), quote=True)), encoding="utf-8")
    run = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1400,2200",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"<pre id=\"measure\">(.*?)</pre>", run.stdout, re.DOTALL)
    assert found, run.stdout[-2000:] + run.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture
def report(study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path) -> Path:
    """A report with wide tables (six params and the diagnostics) and plots."""
    assert run_cli("coarse", study_file(coarse="trials = 6\nepochs = 3\nseed = 0", params=SIX_PARAMS), "-q")[0] == 0
    code, _, err = run_cli("report", "fake")
    assert code == 0, err
    return tmp_path / "results" / "fake" / "report.html"


def test_report_markup_fits_a_phone(report: Path) -> None:
    """Without a browser: a viewport meta tag, every table and every plot in a box that scrolls sideways."""
    page = report.read_text()
    assert re.search(r"<meta name='viewport' content='width=device-width, initial-scale=1'>", page)
    assert page.count("<table>") == page.count("<div class='scroll'><table>") > 0
    assert page.count("<img ") == page.count("<div class='plot'><img ") > 0
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL).group(1)
    assert re.search(r"\.scroll \{[^}]*overflow-x: auto", style) and re.search(r"\.plot \{[^}]*overflow-x: auto", style)
    assert re.search(r"\.plot img \{[^}]*min-width: 720px", style)


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_report_in_a_browser_at_phone_and_desktop_width(report: Path, tmp_path: Path) -> None:
    phone = _measure(report, 390, tmp_path)
    assert phone["view"] <= 390 and phone["page"] <= phone["view"], phone  # the page never scrolls sideways
    assert phone["tables"] and phone["images"]
    wide = [t for t in phone["tables"] if t["w"] > phone["view"]]
    assert wide, phone  # the leaderboard is wider than a phone...
    assert all(t["box"] is not None and t["box"] <= phone["view"] for t in wide), phone  # ...and scrolls in its box
    assert all(i["w"] >= READABLE and i["box"] is not None and i["box"] <= phone["view"] for i in phone["images"]), (
        phone
    )

    desktop = _measure(report, 1280, tmp_path)
    assert desktop["page"] <= desktop["view"], desktop
    assert all(i["w"] <= i["box"] for i in desktop["images"]), desktop  # plots fit: nothing to scroll on a desktop
