"""hpsearch report: one self-contained HTML file with lineage, spaces, leaderboards, border flags and plots."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from tests.conftest import SIX_PARAMS

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




def _sections(page: str) -> dict[str, str]:
    """The page's <h2> sections by their title."""
    return {part.split("</h2>", 1)[0]: part for part in page.split("<h2>")[1:]}


def test_report_best_config_failed_trials_and_many_params(study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path) -> None:
    import html
    import json
    import tomllib

    from optuna.trial import TrialState

    from hpsearch.storage import Store
    from hpsearch.trials import LOG_TAIL_ATTR, REASON_ATTR, ranked_trials

    spec = study_file(workload="crash_high_lr", coarse="trials = 10\nepochs = 2\nseed = 0", params=SIX_PARAMS)
    assert run_cli("coarse", spec, "-q")[0] == 0  # crash_high_lr fails for lr > 0.1
    assert run_cli("refine", "fake", "-q")[0] == 0
    # One more failed trial that kept the last lines of its output, as a worker records them.
    store = Store("fake", create=False)
    coarse = store.stage("coarse")
    study = store.study(coarse)
    trial = study.ask(fixed_distributions=coarse.space.distributions())
    trial.set_user_attr(REASON_ATTR, "RuntimeError: CUDA error: out of memory")
    trial.set_user_attr(LOG_TAIL_ATTR, 'epoch 1 loss 2.30\n  File "<train.py>", line 7\nRuntimeError: CUDA error: out of memory')
    study.tell(trial, state=TrialState.FAIL)

    code, _, err = run_cli("report", "fake")
    assert code == 0, err
    page = (tmp_path / "results" / "fake" / "report.html").read_text()
    sections = _sections(page)
    assert list(sections)[:4] == ["Best configuration", "Final test", "coarse", "refine-1"]  # it opens with the best

    # 1. The best over all stages (THE ranking), exact, as TOML and JSON that parse back to its params.
    stages = store.stages()
    every = [(info.name, t) for info in stages for t in store.trials(info)]
    best = ranked_trials([t for _, t in every], "maximize")[0]
    best_stage = next(name for name, t in every if t is best)
    toml_text = html.unescape(re.search(r"<pre class='toml'>(.*?)</pre>", page, re.DOTALL).group(1))
    assert tomllib.loads(toml_text) == best.params
    assert isinstance(tomllib.loads(toml_text)["activation"], str) and "[params" not in toml_text
    assert json.loads(html.unescape(re.search(r"<pre class='json'>(.*?)</pre>", page, re.DOTALL).group(1))) == best.params
    assert f"{best_stage} trial {best.number}, val_accuracy = {best.value:.6g}" in toml_text

    # 2. Every failed trial of each stage, with its reason; the kept output tail in a <pre>, escaped.
    failed = {info.name: store.trials(info, states=(TrialState.FAIL,)) for info in stages}
    assert len(failed["coarse"]) >= 2  # not only those among the leaderboard's top rows
    for name, trials in failed.items():
        if trials:
            listed = sections[name].split(f"<h3>Failed trials ({len(trials)})</h3>", 1)[1]
            for t in trials:
                assert f"<b>trial {t.number}</b>" in listed and html.escape(t.user_attrs[REASON_ATTR]) in listed
    assert "<pre class='log'>epoch 1 loss 2.30\n  File &quot;&lt;train.py&gt;&quot;, line 7\n" in sections["coarse"]

    # 3. Six params stay readable: the string param is plotted too, wide tables scroll sideways.
    assert re.search(r"alt='val_accuracy against each parameter of coarse: [^']*activation", page)
    assert "<div class='scroll'><table>" in sections["coarse"]


def test_report_shows_the_stored_final_result(study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path) -> None:
    from hpsearch.final import stored_final
    from hpsearch.storage import Store

    recipe = Path(__file__).parent / "workloads" / "recipe.py"
    assert run_cli("coarse", study_file(workload=f"{recipe}:noisy_peak", coarse="trials = 6\nepochs = 1\nseed = 0"), "-q")[0] == 0
    assert run_cli("report", "fake")[0] == 0
    page = (tmp_path / "results" / "fake" / "report.html").read_text()
    assert "Not tested yet" in _sections(page)["Final test"]
    code, _, err = run_cli("final", "fake", "--seeds", "2")
    assert code == 0, err
    assert run_cli("report", "fake")[0] == 0
    final = _sections((tmp_path / "results" / "fake" / "report.html").read_text())["Final test"]
    best = stored_final(Store("fake", create=False))["configs"][0]
    assert f"test val_accuracy {best['mean']:.4f}" in final and "test split evaluated 1 time(s)" in final
    assert final.count("<tr>") == 2  # the header and the one configuration tested
