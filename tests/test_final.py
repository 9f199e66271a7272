"""final (final.py): test once on the test split, stored apart from the search, refused without a test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpsearch.errors import HpsearchError
from hpsearch.final import FinalRefused, final, stored_final
from hpsearch.recipe import search
from hpsearch.spec import load_spec
from hpsearch.stages import plan_refine
from hpsearch.storage import Store

RECIPE = Path(__file__).parent / "workloads" / "recipe.py"


def _searched(study_file, tmp_path: Path, workload: str = "noisy_peak") -> Store:
    spec = load_spec(study_file(workload=f"{RECIPE}:{workload}", coarse="trials = 8\nepochs = 1\nseed = 0", refine="trials = 5\nepochs = 2"))
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
