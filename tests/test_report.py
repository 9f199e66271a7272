"""hpsearch report: one self-contained HTML file with lineage, spaces, leaderboards, border flags and plots."""

from __future__ import annotations

import html
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

from tests.conftest import SIX_PARAMS

RunCli = Callable[..., tuple[int, str, str]]


def test_report_after_coarse_and_refine(study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path) -> None:
    assert run_cli("coarse", study_file(coarse="trials = 8\nepochs = 3\nseed = 0"), "-q")[0] == 0
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


def test_report_best_config_failed_trials_and_many_params(
    study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    from hpsearch.search.stages import best_configuration
    from hpsearch.store.storage import Store
    from hpsearch.trials import LOG_TAIL_ATTR, REASON_ATTR

    spec = study_file(workload="crash_high_lr", coarse="trials = 10\nepochs = 2\nseed = 0", params=SIX_PARAMS)
    assert run_cli("coarse", spec, "-q")[0] == 0  # crash_high_lr fails for lr > 0.1
    assert run_cli("refine", "fake", "-q")[0] == 0
    # One more failed trial that kept the last lines of its output, as a worker records them.
    store = Store("fake", create=False)
    coarse = store.stage("coarse")
    study = store.study(coarse)
    trial = study.ask(fixed_distributions=coarse.space.distributions())
    trial.set_user_attr(REASON_ATTR, "RuntimeError: CUDA error: out of memory")
    trial.set_user_attr(
        LOG_TAIL_ATTR, 'epoch 1 loss 2.30\n  File "<train.py>", line 7\nRuntimeError: CUDA error: out of memory'
    )
    study.tell(trial, state=TrialState.FAIL)

    code, _, err = run_cli("report", "fake")
    assert code == 0, err
    page = (tmp_path / "results" / "fake" / "report.html").read_text()
    sections = _sections(page)
    assert list(sections)[:4] == ["Best configuration", "Final test", "coarse", "refine-1"]  # it opens with the best

    # 1. THE best configuration (configs.best_configuration), exact, as TOML and JSON that parse back to its params.
    stages = store.stages()
    info, best = best_configuration(store)
    toml_text = html.unescape(re.search(r"<pre class='toml'>(.*?)</pre>", page, re.DOTALL).group(1))
    assert tomllib.loads(toml_text) == best.params
    assert isinstance(tomllib.loads(toml_text)["activation"], str) and "[params" not in toml_text
    assert (
        json.loads(html.unescape(re.search(r"<pre class='json'>(.*?)</pre>", page, re.DOTALL).group(1))) == best.params
    )
    assert toml_text.startswith(f"# fake: {info.name} trial") and best.describe("val_accuracy") in toml_text

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
    from hpsearch.search.final import stored_final
    from hpsearch.store.storage import Store

    recipe = Path(__file__).parent / "workloads" / "recipe.py"
    assert (
        run_cli("coarse", study_file(workload=f"{recipe}:noisy_peak", coarse="trials = 6\nepochs = 1\nseed = 0"), "-q")[
            0
        ]
        == 0
    )
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


def _coarse_with(store, spec, runs: list[tuple[float, float, bool]]) -> None:
    """A coarse stage whose completed trials are `runs`: (lr, value, re-run?), told in that order."""
    import optuna

    from hpsearch.search.stages import start_coarse
    from hpsearch.trials import REPEAT_ATTR

    info = start_coarse(store, spec, {})
    study = store.study(info)
    dists = info.space.distributions()
    first: dict[float, int] = {}
    for number, (lr, value, rerun) in enumerate(runs):
        attrs = {REPEAT_ATTR: first[lr]} if rerun else {}
        first.setdefault(lr, number)
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr": lr, "momentum": 0.9},
                distributions=dists,
                value=value,
                user_attrs=attrs,
            )
        )


def test_report_headline_is_the_best_configuration_not_a_lucky_run(
    study_file: Callable[..., Path], tmp_path: Path
) -> None:
    """The report named one run (0.892) whose re-run scored 0.816, while search said 0.8740 over 2 runs."""
    from hpsearch.report.html import build_report
    from hpsearch.search.stages import best_configuration
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store
    from hpsearch.trials import ranked_trials

    spec = load_spec(study_file())
    store = Store(spec.name, tmp_path / "r")
    _coarse_with(
        store,
        spec,
        [
            (0.01, 0.871, False),
            (0.02, 0.892, False),
            (0.1, 0.80, False),
            (0.3, 0.72, False),
            (0.001, 0.70, False),
            (0.01, 0.877, True),
            (0.1, 0.70, True),
            (0.001, 0.80, True),  # re-runs: the noise is measured (sd 0.058)
        ],
    )
    lucky = ranked_trials(store.trials(store.stage("coarse")), "maximize")[0]
    assert (lucky.params["lr"], lucky.value) == (0.02, 0.892)  # one run beats the best configuration's mean
    _info, best = best_configuration(store)
    assert best.params["lr"] == 0.01 and best.n == 2

    page = build_report(store, tmp_path / "r").read_text()
    head = _sections(page)["Best configuration"]
    assert best.describe("val_accuracy") in head  # "val_accuracy 0.8740 ± ... (2 runs; noise sd ...)"
    assert "0.8740" in head and "2 runs; noise sd" in head
    assert "stage <b>coarse</b>" in head and "trials 0 (0.871), 5 (0.877)" in head
    toml_text = html.unescape(re.search(r"<pre class='toml'>(.*?)</pre>", head, re.DOTALL).group(1))
    assert tomllib.loads(toml_text) == {"lr": 0.01, "momentum": 0.9}
    assert (
        json.loads(html.unescape(re.search(r"<pre class='json'>(.*?)</pre>", head, re.DOTALL).group(1))) == best.params
    )
    assert "coarse trial 1, val_accuracy 0.8920. It is not the best configuration" in head  # the lucky run, explained


def test_report_labels_stage_settings_truthfully(
    study_file: Callable[..., Path], run_cli: RunCli, tmp_path: Path
) -> None:
    """The study file said random, 8 trials; search planned TPE and re-runs: the report said 'from the study file'."""
    from hpsearch.report.html import build_report
    from hpsearch.search.recipe import search
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store
    from hpsearch.trials import REPEAT_ATTR

    recipe = Path(__file__).parent / "workloads" / "recipe.py"
    spec = load_spec(
        study_file(
            workload=f"{recipe}:noisy_peak",
            coarse='strategy = "random"\ntrials = 8\nepochs = 1\nseed = 0',
            refine="trials = 5\nepochs = 2",
        )
    )
    store = Store(spec.name, tmp_path / "r")
    search(store, spec, budget=30, say=lambda line: None)
    coarse = store.stage("coarse")
    trials = store.trials(coarse)
    reruns = sum(REPEAT_ATTR in t.user_attrs for t in trials)
    assert reruns > 0 and coarse.settings.strategy.value == "tpe"
    line = re.search(
        r"<p class='settings'>(.*?)</p>", _sections(build_report(store, tmp_path / "r").read_text())["coarse"]
    ).group(1)
    assert line.startswith("planned by <code>search</code>") and "study file's [coarse] as written" in line
    assert f"tpe, {coarse.settings.trials - reruns} trials + {reruns} re-runs × 1 epochs" in line

    # Flags on `coarse` (no search): the study file's section, then what the flags set.
    path = study_file(name="flags", coarse='strategy = "random"\ntrials = 8\nepochs = 1\nseed = 0')
    assert run_cli("coarse", path, "--trials", "3", "-q")[0] == 0
    page = build_report(Store("flags"), tmp_path / "results").read_text()
    line = re.search(r"<p class='settings'>(.*?)</p>", _sections(page)["coarse"]).group(1)
    assert line.startswith("set by flags (the study file's [coarse]: random, 8 trials × 1 epochs)")
    assert "random, 3 trials × 1 epochs" in line and "re-run" not in line
    assert run_cli("coarse", study_file(name="plain", coarse="trials = 3\nepochs = 1\nseed = 0"), "-q")[0] == 0
    page = build_report(Store("plain"), tmp_path / "results").read_text()
    assert "<p class='settings'>the study file's [coarse] · random, 3 trials × 1 epochs" in page


def test_report_shows_a_command_as_the_study_file_wrote_it(tmp_path: Path) -> None:
    """shlex.join quoted the placeholders: the report showed `--lr '{lr}'`."""
    from hpsearch.report.html import build_report
    from hpsearch.search.stages import start_coarse
    from hpsearch.spec import load_spec
    from hpsearch.store.storage import Store

    command = "python train.py --lr {lr} --momentum={momentum} --epochs {epochs} --note 'two words'"
    path = tmp_path / "cmd.toml"
    (tmp_path / "train.py").write_text("")
    path.write_text(
        f'name = "cmd"\nmetric = "val_accuracy"\n\n[workload]\ncommand = {json.dumps(command)}\n\n'
        "[params.lr]\nlow = 1e-4\nhigh = 1.0\nlog = true\n\n[params.momentum]\nvalues = [0.5, 0.9]\n"
    )
    spec = load_spec(path)
    store = Store(spec.name, tmp_path / "r")
    start_coarse(store, spec, {})
    page = build_report(store, tmp_path / "r").read_text()
    assert f"<code>{html.escape(command)}</code>" in page
    assert "&#x27;{lr}&#x27;" not in page and "'{lr}'" not in page
