"""The study journal survives torn, damaged and unwritable records; no completed trial is lost."""

from __future__ import annotations

import io
import os

import optuna
import pandas as pd
import pytest
from optuna.storages.journal import JournalFileBackend

from hpsearch.store import journal as journal_module


def _coarse(run_cli, spec, *extra: str) -> tuple[int, str, str]:
    return run_cli("coarse", spec, "-q", "--workers", "0", *extra)


def _board(run_cli) -> pd.DataFrame:
    code, out, err = run_cli("leaderboard", "fake", "--csv", "-")
    assert code == 0, err
    return pd.read_csv(io.StringIO(out))


@pytest.fixture
def journal(tmp_path):
    return tmp_path / "results" / "fake" / "optuna.journal"


def test_journal_torn_final_record_is_set_aside_before_the_next_write(run_cli, study_file, journal, caplog):
    spec = study_file(coarse="trials = 6\nepochs = 1")
    assert _coarse(run_cli, spec)[0] == 0
    size = journal.stat().st_size
    os.truncate(journal, size - 40)  # a write cut off: the last record has lost its end
    assert len(_board(run_cli)) >= 5  # what is whole still reads
    with caplog.at_level("WARNING", logger="hpsearch.store.journal"):
        code, _, err = _coarse(run_cli, spec, "--trials", "9")
    assert code == 0, err
    assert "set aside a torn final record (" in caplog.text
    [backup] = list(journal.parent.glob("optuna.journal.torn-*"))
    assert backup.stat().st_size == size - 40  # the original, as it was
    df = _board(run_cli)
    assert (df["state"] == "COMPLETE").sum() == 9  # nothing unreadable, the stage went on
    for line in journal.read_bytes().splitlines():
        assert line.startswith(b'{"op_code"')
    assert (
        len(
            optuna.load_study(
                study_name="fake.coarse", storage=optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
            ).trials
        )
        >= 9
    )


def test_journal_damaged_record_in_the_middle_names_the_line_and_repair_keeps_the_rest(run_cli, study_file, journal):
    spec = study_file(coarse="trials = 4\nepochs = 1")
    _coarse(run_cli, spec)
    lines = journal.read_bytes().splitlines(keepends=True)
    damaged = [*lines[:5], b"\x89garbage that is not json\n", lines[5][:20] + lines[6], *lines[7:]]
    journal.write_bytes(b"".join(damaged))
    for command in (["leaderboard", "fake"], ["studies"]):
        code, _, err = run_cli(*command)
        assert code == 2 and "optuna.journal: damaged record at line 6" in err, err
        assert "hpsearch repair fake" in err and "Traceback" not in err
    code, _, err = run_cli("repair", "fake")
    assert code == 0 and "dropped line(s) 6, 7" in err and "recovered 1 whole record" in err, err
    assert list(journal.parent.glob("optuna.journal.damaged-*"))
    df = _board(run_cli)
    assert (df["state"] == "COMPLETE").sum() == 4  # every trial is back
    code, _, err = run_cli("repair", "fake")
    assert code == 0 and "nothing changed" in err


def test_journal_random_bytes_appended_do_not_stop_any_command(run_cli, study_file, journal):
    spec = study_file(coarse="trials = 3\nepochs = 1")
    _coarse(run_cli, spec)
    with open(journal, "ab") as f:
        f.write(bytes(range(256))[:200])  # newlines and invalid UTF-8 among them
    code, out, err = run_cli("studies")
    assert code == 0 and "fake" in out, err
    assert len(_board(run_cli)) == 3
    assert _coarse(run_cli, spec, "--trials", "5")[0] == 0
    assert (_board(run_cli)["state"] == "COMPLETE").sum() == 5


def test_journal_full_disk_is_a_clear_error_and_nothing_written_is_lost(run_cli, study_file, journal, monkeypatch):
    spec = study_file(coarse="trials = 20\nepochs = 1")
    writes = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        writes["n"] += 1
        if writes["n"] > 8:  # about one fsync per trial: the disk fills during trial 8 or so
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(journal_module.os, "fsync", fsync)
    code, _, err = _coarse(run_cli, spec)
    assert code == 1
    assert (
        "optuna.journal: cannot write to the study journal: No space left on device" in err and "Traceback" not in err
    )
    monkeypatch.setattr(journal_module.os, "fsync", real_fsync)  # space freed
    before = _board(run_cli)
    done = (before["state"] == "COMPLETE").sum()
    assert done >= 1
    assert _coarse(run_cli, spec)[0] == 0  # the same command continues
    after = _board(run_cli)
    assert (after["state"] == "COMPLETE").sum() == 20
    assert set(before[before["state"] == "COMPLETE"]["trial"]) <= set(after["trial"])
