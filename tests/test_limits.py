"""The stall rule and the log bound (hpsearch/limits.py), their study-file keys, and the bounded log file."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.limits import LOG_LIMIT, LimitOverrides, TrialLimits, parse_size, stall_limit, stall_reason
from hpsearch.spec import StudySpec, parse_spec
from hpsearch.workloads.logbound import BoundedLog

# ----------------------------------------------------------------------------- the stall rule


def test_stall_limit_is_factor_times_the_median_epoch_above_the_floor() -> None:
    limit = stall_limit([4.0, 5.0, 100.0], [], factor=10, floor=30)
    assert limit is not None and limit.seconds == 50.0  # the median, not the mean: one slow epoch does not lift it
    assert limit.why == "10 x the stage's median epoch of 5.0 s"


def test_stall_limit_never_below_the_floor() -> None:
    limit = stall_limit([0.1, 0.2, 0.3], [], factor=10, floor=60)
    assert limit is not None and limit.seconds == 60.0
    assert limit.why == "the floor; 10 x the stage's median epoch of 0.2 s is less"


def test_stall_limit_without_epochs_uses_the_median_trial() -> None:
    limit = stall_limit([], [20.0, 30.0, 40.0], factor=3, floor=1)
    assert limit is not None and limit.seconds == 90.0 and "median trial of 30 s" in limit.why


@pytest.mark.parametrize(("gaps", "durations", "factor"), [([], [], 10.0), ([1.0], [5.0], 0.0)])
def test_stall_limit_none_without_a_basis_or_when_off(gaps: list[float], durations: list[float], factor: float) -> None:
    assert stall_limit(gaps, durations, factor=factor, floor=0.0) is None


def test_stall_reason_says_how_long_it_was_silent_and_the_limit() -> None:
    limit = stall_limit([0.5], [], factor=10, floor=60)
    assert limit is not None
    assert (
        stall_reason(61.2, limit)
        == "stalled: no report for 61 s (limit 60 s: the floor; 10 x the stage's median epoch of 0.5 s is less)"
    )


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [(0, 0), (1234, 1234), ("10MB", 10_000_000), ("512 KiB", 524_288), ("1.5gb", 1_500_000_000), ("0", 0)],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text, "log_limit") == expected


@pytest.mark.parametrize("text", ["10XB", "-1", "ten", -5, True, 1.5])
def test_parse_size_rejects_what_is_no_size(text: object) -> None:
    with pytest.raises(HpsearchError, match="use bytes or a size such as 10MB"):
        parse_size(text, "log_limit")


def _spec(**top: object) -> StudySpec:
    return parse_spec(
        {"name": "s", "workload": "json:dumps", "metric": "m", "params": {"lr": {"low": 0.1, "high": 1.0}}, **top}
    )


def test_study_file_keys_set_the_limits_and_flags_override_them() -> None:
    assert _spec().limits == TrialLimits(10.0, 60.0, LOG_LIMIT)
    limits = _spec(stall_factor=5, stall_floor=2.5, log_limit="1MB").limits
    assert limits == TrialLimits(5.0, 2.5, 1_000_000)
    assert limits.with_overrides(LimitOverrides(stall_floor=0.0, log_limit="0")) == TrialLimits(5.0, 0.0, 0)
    assert limits.with_overrides(LimitOverrides()) == limits


@pytest.mark.parametrize(
    ("key", "value"), [("stall_factor", -1), ("stall_factor", "10"), ("stall_floor", True), ("log_limit", "lots")]
)
def test_study_file_bad_limit_is_a_one_line_error_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(SpecError) as raised:
        _spec(**{key: value})
    assert raised.value.key == key and "\n" not in str(raised.value)


def test_limit_overrides_reject_bad_values_before_any_trial() -> None:
    from hpsearch.cli.app import message

    with pytest.raises(HpsearchError) as raised:
        LimitOverrides(stall_floor=-1.0)
    assert message(raised.value) == "--stall-floor must be 0 or more, got -1.0"  # the command line names its flag
    with pytest.raises(HpsearchError, match="log_limit '12 parsecs': use bytes"):
        LimitOverrides(log_limit="12 parsecs")


def test_stored_spec_keeps_its_limits_and_an_old_one_gets_the_defaults() -> None:
    spec = _spec(stall_floor=5, log_limit=2048)
    assert StudySpec.from_dict(spec.to_dict()).limits == spec.limits
    old = spec.to_dict()
    del old["limits"]
    assert StudySpec.from_dict(old).limits == TrialLimits()


# ----------------------------------------------------------------------------- the bounded log


def _bounded(tmp_path: Path, limit: int, chunks: list[bytes]) -> bytes:
    import os

    path = tmp_path / "trial.log"
    log = BoundedLog(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), str(path), limit)
    for chunk in chunks:
        log.write(chunk)
    log.close()
    return path.read_bytes()


def test_bounded_log_under_its_limit_is_everything(tmp_path: Path) -> None:
    assert _bounded(tmp_path, 1000, [b"a\n" * 100, b"b\n" * 400]) == b"a\n" * 100 + b"b\n" * 400


def test_bounded_log_keeps_head_and_tail_and_says_what_it_left_out(tmp_path: Path) -> None:
    lines = [f"line {i:05d}\n".encode() for i in range(10_000)]  # 110,000 bytes
    text = _bounded(tmp_path, 2000, lines).decode()
    head, marker, tail = text.partition("[hpsearch: ")
    # The first half, as written; cut inside "line 00090\n", so the marker starts a line of its own.
    assert head == "".join(line.decode() for line in lines)[:1000] + "\n" and head.endswith("line 00090\n")
    left_out, _, tail = tail.partition("\n")
    assert tail.endswith("line 09999\n") and tail.startswith("line ")  # the last half, from a line's start
    assert len(tail) <= 1000
    assert (
        f"{110_000 - 1000 - len(tail):,} bytes left out here (log_limit 2 kB: first 1 kB and last 1 kB kept)]"
        == left_out
    )
    assert len(text) <= 2000 + len(marker + left_out) + 2


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_bounded_log_on_a_full_disk_says_so_once_and_goes_on() -> None:
    import os

    read, write = os.pipe()
    log = BoundedLog(os.open("/dev/full", os.O_WRONLY), "/dev/full", 100, err=write)
    for _ in range(5):
        log.write(b"x" * 60)  # no exception: the trial's output keeps flowing
    log.close()
    os.close(write)
    said = os.read(read, 10_000).decode()
    assert said.count("\n") == 1 and "cannot write the trial log /dev/full (" in said and "No space left" in said
