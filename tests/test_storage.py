"""Stored stage records: format versions load, the space is stored once."""

from __future__ import annotations

import optuna
import pytest

from hpsearch.errors import StorageError
from hpsearch.leaderboard import leaderboard
from hpsearch.search.stages import run_stage, start_coarse
from hpsearch.spec import load_spec
from hpsearch.store.storage import ATTR, STAGE_FORMAT, StageInfo, Store


def test_storage_stage_record_stores_the_space_once_with_a_format_version(study_file) -> None:
    spec = load_spec(study_file())
    info = StageInfo("coarse", 0, None, spec.coarse, spec.space, spec)
    d = info.to_dict()
    assert d["format"] == STAGE_FORMAT == 2
    assert "space" in d and "space" not in d["spec"]
    assert StageInfo.from_dict(d) == info


def test_storage_format_1_stage_written_by_an_older_hpsearch_still_loads_and_resumes(study_file) -> None:
    spec = load_spec(study_file(coarse="trials = 4\nepochs = 1"))
    store = Store(spec.name)
    info = StageInfo("coarse", 0, None, spec.coarse, spec.space, spec)
    old = info.to_dict()
    del old["format"]
    old["spec"]["space"] = spec.space.to_dict()  # format 1 kept a second copy of the space in the spec
    study = optuna.create_study(storage=store.storage, study_name=info.optuna_name, direction="maximize")
    study.set_user_attr(ATTR, old)

    [loaded] = store.stages()
    assert loaded == info
    resumed = start_coarse(store, spec, {})  # the same study file continues the old stage
    run_stage(store, resumed)
    assert len(leaderboard(store)) == 4


def test_storage_newer_format_is_refused_with_advice(study_file) -> None:
    spec = load_spec(study_file())
    d = StageInfo("coarse", 0, None, spec.coarse, spec.space, spec).to_dict()
    d["format"] = STAGE_FORMAT + 1
    with pytest.raises(StorageError, match="newer hpsearch"):
        StageInfo.from_dict(d)


def test_storage_creation_race_the_loser_runs_the_winners_stage(study_file) -> None:
    import threading

    spec = load_spec(study_file())
    store = Store(spec.name)
    info = StageInfo("coarse", 0, None, spec.coarse, spec.space, spec)
    # Another command has just created the study and has not written its record yet.
    study = optuna.create_study(storage=store.storage, study_name=info.optuna_name, direction="maximize")
    threading.Timer(0.3, lambda: study.set_user_attr(ATTR, info.to_dict())).start()
    stored = start_coarse(Store(spec.name), spec, {})
    assert stored == info and len(store.stages()) == 1


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_storage_delete_of_the_whole_study_deletes_its_final_study(study_file, run_cli, tmp_path, kind) -> None:
    """The `<name>.final` study goes with the study, in a shared storage too; another study's stays."""
    from pathlib import Path

    from hpsearch.search.final import final, stored_final

    url = str(tmp_path / "shared.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'shared.db'}"
    recipe = Path(__file__).parent / "workloads" / "recipe.py"
    stores = []
    for name in ("fake", "other"):
        spec = load_spec(
            study_file(name=name, workload=f"{recipe}:noisy_peak", coarse="trials = 3\nepochs = 1\nseed = 0")
        )
        store = Store(spec.name, url=url)
        run_stage(store, start_coarse(store, spec, {}))
        final(store, seeds=1)
        stores.append(store)
    code, _, err = run_cli("delete", "fake", "--storage", url, "--yes")
    assert code == 0 and "and its final result" in err, err
    names = {s.study_name for s in Store("other", url=url).storage.get_all_studies()}
    assert names == {"other.coarse", "other.final"}
    assert stored_final(Store("fake", url=url)) is None and stored_final(stores[1]) is not None
