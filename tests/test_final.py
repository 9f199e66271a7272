"""final (final.py): test once on the test split, stored apart from the search, refused without a test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpsearch.errors import HpsearchError
from hpsearch.search.final import FinalRefused, final, stored_final
from hpsearch.search.recipe import search
from hpsearch.search.stages import plan_refine
from hpsearch.spec import load_spec
from hpsearch.store.storage import Store

RECIPE = Path(__file__).parent / "workloads" / "recipe.py"


def _searched(study_file, tmp_path: Path, workload: str = "noisy_peak") -> Store:
    spec = load_spec(
        study_file(
            workload=f"{RECIPE}:{workload}", coarse="trials = 8\nepochs = 1\nseed = 0", refine="trials = 5\nepochs = 2"
        )
    )
    store = Store(spec.name, tmp_path / "r")
    search(store, spec, say=lambda line: None)
    return store


def test_final_tests_once_and_a_second_final_reads_the_stored_result(study_file, tmp_path: Path) -> None:
    store = _searched(study_file, tmp_path)
    first = final(store, seeds=2)
    assert first.ran and first.evaluations == 1
    entry = first.data["configs"][0]
    assert [r["metrics"]["split_seen"] for r in entry["runs"]] == [1.0, 1.0]  # the workload saw split == "test"
    assert len({r["seed"] for r in entry["runs"]}) == 2
    assert first.data["epochs"] == store.stage(None).settings.epochs
    second = final(store, seeds=5)
    assert not second.ran and second.data == first.data
    warned: list[str] = []
    third = final(store, seeds=1, again=True, warn=warned.append)
    assert third.ran and third.evaluations == 2 and "evaluated 1 time" in warned[0]
    assert stored_final(store)["evaluations"] == 2


def test_final_writes_the_best_configuration(study_file, tmp_path: Path) -> None:
    store = _searched(study_file, tmp_path)
    result = final(store, seeds=1)
    toml, js = result.files
    params = result.data["configs"][0]["params"]
    assert json.loads(js.read_text()) == params
    assert f"lr = {json.dumps(params['lr'])}" in toml.read_text()


def test_final_is_kept_apart_from_the_search(study_file, tmp_path: Path) -> None:
    store = _searched(study_file, tmp_path)
    before = [s.name for s in store.stages()]
    final(store, seeds=1)
    assert [s.name for s in store.stages()] == before  # no stage: refine, search and rankings never see it
    info, _flags, _ = plan_refine(store, None, {})
    assert info.name == f"refine-{len(before)}"


def test_final_ensemble_tests_the_top_configurations(study_file, tmp_path: Path) -> None:
    store = _searched(study_file, tmp_path)
    result = final(store, seeds=1, ensemble=2)
    assert [e["rank"] for e in result.data["configs"]] == [1, 2]
    assert result.data["configs"][0]["params"] != result.data["configs"][1]["params"]


def test_final_is_refused_without_a_test_split(study_file, tmp_path: Path) -> None:
    store = _searched(study_file, tmp_path, workload="no_test_split")
    with pytest.raises(FinalRefused, match="no test split") as caught:
        final(store, seeds=1)
    assert caught.value.exit_code == 2
    assert stored_final(store) is None  # nothing stored: the guard does not count a refused run


def test_final_of_an_empty_study_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(HpsearchError):
        final(Store("nothing", tmp_path / "r", create=False))


def test_final_builtin_digits_evaluates_on_its_test_split() -> None:
    """The built-in digits workloads honour trial.split: `final` measures them on the untouched 20%."""
    from hpsearch.workloads import digits
    from hpsearch.workloads.api import TrialContext, TrialRecord

    def run(split: str) -> dict:
        return digits.mlp(TrialContext.open(TrialRecord(0, {"lr": 0.1, "momentum": 0.9}, 1, 0, split=split), "cpu"))

    val, test = run("val"), run("test")
    assert val["train_loss"] == test["train_loss"]  # the same training
    assert val["val_loss"] != test["val_loss"]  # evaluated on another split


# ----------------------------------------------------------------------------- model workloads: ensemble, weights

MODELS = Path(__file__).parent / "workloads" / "models.py"
REGRESSION = """
import torch
from torch import nn


def build(params):
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _split(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, torch.stack([x[:, 0] * x[:, 1], x[:, 2].sin()], 1)


def data():
    return _split(96, 1), _split(48, 2), _split(48, 3)
"""


def _model_store(tmp_path: Path, loss: str = "cross_entropy") -> Store:
    """A coarse stage of 4 one-epoch trials of a tiny model workload (models.py's mlp; REGRESSION for another loss)."""
    from hpsearch.search.stages import run_stage, start_coarse

    if loss != "cross_entropy":
        (tmp_path / "reg.py").write_text(REGRESSION)
        model, data, metric, direction = (
            f"{tmp_path / 'reg.py'}:build",
            f"{tmp_path / 'reg.py'}:data",
            "val_loss",
            "minimize",
        )
    else:
        model, data, metric, direction = f"{MODELS}:mlp", f"{MODELS}:data", "val_accuracy", "maximize"
    path = tmp_path / "m.toml"
    path.write_text(
        f'name = "m"\nmetric = "{metric}"\ndirection = "{direction}"\n\n'
        f'[workload]\nmodel = "{model}"\ndata = "{data}"\nloss = "{loss}"\nbatch_size = 32\n\n'
        "[coarse]\ntrials = 4\nepochs = 1\nseed = 0\n\n[params.lr]\nlow = 1e-2\nhigh = 0.5\nlog = true\n"
    )
    spec = load_spec(path)
    store = Store(spec.name, tmp_path / "r")
    run_stage(store, start_coarse(store, spec, {}))
    return store


def _retrained(store: Store, entry: dict) -> list:
    """Each final run of a configuration trained again by hand on the test split: (its ModelWorkload, its metrics)."""
    from hpsearch.workloads.api import TrialContext, TrialRecord
    from hpsearch.workloads.loader import load_workload

    found = []
    for run in entry["runs"]:
        workload = load_workload(store.stage(None).spec.workload)
        metrics = workload(
            TrialContext.open(TrialRecord(0, dict(entry["params"]), 1, run["seed"], split="test"), "cpu")
        )
        assert metrics == pytest.approx(run["metrics"])  # the same run: final's figures are this training's
        found.append((workload, metrics))
    return found


def test_final_ensemble_scores_the_averaged_softmax_of_every_run(tmp_path: Path) -> None:
    import torch

    store = _model_store(tmp_path)
    result = final(store, seeds=2, ensemble=2)
    ensemble = result.data["ensemble"]
    assert ensemble["k"] == 2 and ensemble["runs"] == 4 and ensemble["reason"] == ""
    # By hand: softmax of each run's test outputs, averaged per configuration, then over the configurations.
    probs = []
    for entry in result.data["configs"]:
        runs = [w for w, _ in _retrained(store, entry)]
        probs.append(torch.stack([w.kept.outputs.softmax(-1) for w in runs]).mean(0))
    y = runs[0].splits("cpu")["test"][1]
    mean = torch.stack(probs).mean(0)
    assert ensemble["value"] == pytest.approx(float((mean.argmax(-1) == y).float().mean()))
    assert ensemble["metrics"]["val_loss"] == pytest.approx(
        float(-mean[torch.arange(len(y)), y].log().mean()), rel=1e-5
    )


@pytest.mark.parametrize("loss", ["mse", f"{MODELS}:l1"])
def test_final_ensemble_of_a_regression_averages_the_raw_outputs(tmp_path: Path, loss: str) -> None:
    import torch

    store = _model_store(tmp_path, loss=loss)
    result = final(store, seeds=2, ensemble=2)
    outputs, losses = [], []
    for entry in result.data["configs"]:
        runs = _retrained(store, entry)
        outputs.append(torch.stack([w.kept.outputs for w, _ in runs]).mean(0))
        losses += [m["val_loss"] for _, m in runs]
    y = runs[0][0].splits("cpu")["test"][1]
    mean = torch.stack(outputs).mean(0)
    by_hand = torch.nn.functional.mse_loss(mean, y) if loss == "mse" else (mean - y).abs().mean()
    value = result.data["ensemble"]["value"]
    assert value == pytest.approx(float(by_hand), rel=1e-5)
    assert value <= sum(losses) / len(losses)  # the loss of the mean prediction, not the mean of the losses (convexity)


def test_final_saves_the_best_runs_weights_loadable_into_build(tmp_path: Path, run_cli) -> None:
    import torch

    from tests.workloads.models import data, mlp

    store = _model_store(tmp_path)
    result = final(store, seeds=2)
    pt = result.files[-1]
    assert pt.name == "best.pt" and pt.parent == result.files[0].parent
    best = result.data["configs"][0]
    top = max(best["runs"], key=lambda r: r["value"])
    assert result.data["weights"] == {"file": "best.pt", "seed": top["seed"], "value": top["value"]}
    model = mlp(best["params"])
    model.load_state_dict(torch.load(pt))  # the documented way: build(params), then load_state_dict
    x, y = data()[2]
    with torch.no_grad():
        assert float((model(x).argmax(-1) == y).float().mean()) == pytest.approx(top["value"])
    assert final(store).files == result.files  # the stored result names the same files
    code, out, err = run_cli("final", "m", "--dir", tmp_path / "r")
    assert code == 0 and f"wrote {pt}" in out and "stored result" in err


def test_final_ensemble_of_a_function_workload_reports_each_config_and_says_why(
    study_file, tmp_path: Path, run_cli
) -> None:
    store = _searched(study_file, tmp_path)
    code, out, err = run_cli("final", store.name, "--dir", tmp_path / "r", "--seeds", "1", "--ensemble", "2")
    assert code == 0, err
    ensemble = stored_final(store)["ensemble"]
    assert ensemble["value"] is None and "needs a model workload" in ensemble["reason"]
    assert out.count("needs a model workload") == 1 and "best.pt" not in out
    assert not (tmp_path / "r" / store.name / "best.pt").exists()


# ----------------------------------------------------------------------------- the split: refused, checked

SCRIPT = """
import argparse, json, os, random
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--split", default=os.environ.get("HPSEARCH_SPLIT", "val"))
p.add_argument("--claim", default="")  # report this split whatever it was given (a script that ignores --split)
a = p.parse_args()
value = 0.9 if a.split == "test" else 0.5 + random.Random(a.seed).random() / 10
print(json.dumps({"epoch": 1, "split": a.claim or a.split, "val_accuracy": value}))
"""


def _command_store(tmp_path: Path, args: str) -> Store:
    """A coarse stage of 2 one-epoch trials of the command `python script.py ARGS` (SCRIPT)."""
    from hpsearch.search.stages import run_stage, start_coarse

    (tmp_path / "script.py").write_text(SCRIPT)
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "c"\nmetric = "val_accuracy"\ndirection = "maximize"\n\n'
        f'[workload]\ncommand = "python script.py {args}"\n\n'
        "[coarse]\ntrials = 2\nepochs = 1\nseed = 0\n\n[params.lr]\nlow = 1e-3\nhigh = 1.0\nlog = true\n"
    )
    spec = load_spec(path)
    store = Store(spec.name, tmp_path / "r")
    run_stage(store, start_coarse(store, spec, {}))
    return store


def test_final_refuses_a_command_without_split(tmp_path: Path, run_cli) -> None:
    store = _command_store(tmp_path, "--lr {lr} --seed {seed}")
    code, out, err = run_cli("final", "c", "--dir", tmp_path / "r", "--seeds", "1", "--epochs", "1")
    assert code == 2 and out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("Error: ") and "python script.py --lr {lr} --seed {seed}" in line and "c.toml" in line
    assert "add `--split {split}` to the command" in line and "--split-from-env" in line and "$HPSEARCH_SPLIT" in line
    assert stored_final(store) is None and not (tmp_path / "r" / "c" / "logs" / "final").exists()  # nothing ran


def test_final_split_from_env_runs_a_command_that_reads_hpsearch_split(tmp_path: Path, run_cli) -> None:
    store = _command_store(tmp_path, "--lr {lr} --seed {seed}")
    code, _, err = run_cli("final", "c", "--dir", tmp_path / "r", "--seeds", "2", "--split-from-env")
    assert code == 0, err
    assert [r["value"] for r in stored_final(store)["configs"][0]["runs"]] == [0.9, 0.9]  # the script saw test


def test_final_a_command_that_reports_split_val_fails_its_runs(tmp_path: Path) -> None:
    store = _command_store(tmp_path, "--lr {lr} --seed {seed} --split {split} --claim val")
    with pytest.raises(FinalRefused, match='reported split "val", not "test": it evaluated on validation'):
        final(store, seeds=2)
    assert stored_final(store) is None


SPLIT_FUNCTION = '''
import os


def train(trial):
    """Says the split it evaluated on in a final run only (the search's trial.report takes numbers only):
    SPLIT_MODE honest says "test", reports_val reports "val", returns_val returns "split": "val"."""
    mode, test = os.environ["SPLIT_MODE"], trial.split == "test"
    said = "test" if mode == "honest" else "val"
    trial.report(0, val_accuracy=0.7, **({"split": said} if test and mode != "returns_val" else {}))
    return {"val_accuracy": 0.7, **({"split": said} if test else {})}
'''


@pytest.mark.parametrize("mode", ["reports_val", "returns_val"])
def test_final_a_function_that_reports_split_val_fails_its_runs(
    study_file, tmp_path: Path, monkeypatch, mode: str
) -> None:
    from hpsearch.search.stages import run_stage, start_coarse

    (tmp_path / "splits.py").write_text(SPLIT_FUNCTION)
    spec = load_spec(study_file(workload=f"{tmp_path / 'splits.py'}:train", coarse="trials = 2\nepochs = 1\nseed = 0"))
    store = Store(spec.name, tmp_path / "r")
    monkeypatch.setenv("SPLIT_MODE", "honest")
    run_stage(store, start_coarse(store, spec, {}))
    assert [r["value"] for r in final(store, seeds=2, workers=0).data["configs"][0]["runs"]] == [
        0.7,
        0.7,
    ]  # "test": fine
    monkeypatch.setenv("SPLIT_MODE", mode)
    with pytest.raises(FinalRefused, match='reported split "val", not "test": it evaluated on validation'):
        final(store, seeds=2, workers=0, again=True)
    assert stored_final(store)["evaluations"] == 1  # the refused look stored nothing


def test_final_shipped_digits_script_evaluates_on_the_split_it_is_given() -> None:
    import subprocess
    import sys

    studies = Path(__file__).resolve().parent.parent / "studies"
    assert "{split}" in load_spec(studies / "digits_script.toml").workload.command[-1]

    def last_line(split: str) -> dict:
        args = [sys.executable, "digits_script.py", "--epochs", "1", "--split", split]
        return json.loads(
            subprocess.run(args, cwd=studies, capture_output=True, text=True, check=True).stdout.splitlines()[-1]
        )

    val, test = last_line("val"), last_line("test")
    assert (val["split"], test["split"]) == ("val", "test")
    assert val["train_loss"] == test["train_loss"] and val["val_loss"] != test["val_loss"]  # same training, other split


# ----------------------------------------------------------------------------- runs in parallel, progress, per seed

SEEDED = '''
import os, random


def seeded(trial):
    """A deterministic value per seed, and the process that trained it."""
    value = random.Random(trial.seed).random()
    trial.report(0, val_accuracy=value)
    return {"val_accuracy": value, "pid": float(os.getpid())}


def dies_once(trial):
    """The first run to start kills its process (no exception: a hard death); the others complete."""
    flag = os.path.join(os.path.dirname(__file__), "died")
    try:
        os.close(os.open(flag, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return seeded(trial)
    if trial.split == "test":
        os._exit(3)
    return seeded(trial)
'''


def _seeded_store(study_file, tmp_path: Path, workload: str = "seeded") -> Store:
    from hpsearch.search.stages import run_stage, start_coarse

    (tmp_path / "seeded.py").write_text(SEEDED)
    spec = load_spec(
        study_file(workload=f"{tmp_path / 'seeded.py'}:{workload}", coarse="trials = 3\nepochs = 1\nseed = 0")
    )
    store = Store(spec.name, tmp_path / "r")
    run_stage(store, start_coarse(store, spec, {}))
    return store


def test_final_in_worker_processes_equals_one_after_another(study_file, tmp_path: Path) -> None:
    import os

    store = _seeded_store(study_file, tmp_path)
    here = final(store, seeds=3, ensemble=2, workers=1).data
    pooled = final(store, seeds=3, ensemble=2, workers=2, again=True).data
    for data in (here, pooled):
        for entry in data["configs"]:
            for run in entry["runs"]:
                run["pid"] = run["metrics"].pop("pid")
    assert {r["pid"] for e in here["configs"] for r in e["runs"]} == {os.getpid()}
    assert len({r["pid"] for e in pooled["configs"] for r in e["runs"]} - {os.getpid()}) == 2  # two worker processes

    def strip(data):
        return [
            [(r["seed"], r["value"], r["metrics"]) for r in e["runs"]] + [e["mean"], e["spread"]]
            for e in data["configs"]
        ]

    assert strip(pooled) == strip(here)
    assert len({r["value"] for e in here["configs"] for r in e["runs"]}) == 6  # every seed its own value


def test_final_a_run_whose_process_dies_fails_and_the_others_go_on(study_file, tmp_path: Path) -> None:
    store = _seeded_store(study_file, tmp_path, "dies_once")
    (tmp_path / "died").unlink(missing_ok=True)  # the stage's first trial took the flag: the final's first run dies
    events: list = []
    result = final(store, seeds=4, workers=2, progress=events.append)
    entry = result.data["configs"][0]
    assert len(entry["runs"]) == 3 and [f["reason"] for f in entry["failed"]] == ["its process died (exit code 3)"]
    assert result.data["failed"] == ["its process died (exit code 3)"]
    ended = [e.result for e in events if type(e).__name__ == "RunEnded"]
    assert sorted(r.state for r in ended) == ["complete", "complete", "complete", "fail"]


def test_final_cli_shows_progress_logs_and_each_seeds_value(study_file, tmp_path: Path, run_cli) -> None:
    store = _seeded_store(study_file, tmp_path)
    code, out, err = run_cli("final", store.name, "--dir", tmp_path / "r", "--seeds", "3", "--workers", "2")
    assert code == 0, err
    logs = (tmp_path / "r" / store.name / "logs" / "final").resolve()
    assert f"logs: {logs}/trial-N.log" in err and "2 at a time in worker processes" in err
    runs = stored_final(store)["configs"][0]["runs"]
    for i, run in enumerate(runs):
        assert f"started: rank 1, seed {run['seed']}" in err
        assert f"ended: rank 1, seed {run['seed']}: val_accuracy {run['value']:.4f}" in err
        assert (logs / f"trial-{i}.log").is_file()
    assert " ".join(f"{r['value']:.4f}" for r in runs) in out  # the table's per-seed column
    again = run_cli("final", store.name, "--dir", tmp_path / "r")
    assert again[0] == 0 and " ".join(f"{r['value']:.4f}" for r in runs) in again[1] and "started" not in again[2]


def test_final_model_runs_in_worker_processes_bring_back_predictions_and_weights(tmp_path: Path) -> None:
    store = _model_store(tmp_path)
    here = final(store, seeds=2, ensemble=2, workers=0)
    pooled = final(store, seeds=2, ensemble=2, workers=2, again=True)

    def values(r):
        return [run["value"] for e in r.data["configs"] for run in e["runs"]]

    assert values(pooled) == pytest.approx(values(here), rel=1e-6)
    assert pooled.data["ensemble"]["runs"] == 4  # every run's test outputs came back
    assert pooled.data["ensemble"]["value"] == pytest.approx(here.data["ensemble"]["value"], rel=1e-6)
    assert pooled.data["weights"]["seed"] == here.data["weights"]["seed"] and pooled.files[-1].name == "best.pt"
