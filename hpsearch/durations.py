"""Durations as people write them ('90', '30m', '1h30m', '2h'): --timeout and the like."""

from __future__ import annotations

import re

from hpsearch.errors import HpsearchError


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '30m', '2h', '1h30m', '1d'. Raises HpsearchError for anything else."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}
    parts = re.fullmatch(r"\s*((?:\d+(?:\.\d+)?[smhd]?\s*)+)", text or "")
    if not parts:
        raise HpsearchError(f"$timeout {text!r}: use seconds or a duration such as 90s, 30m, 2h, 1h30m")
    found = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", parts.group(1))
    if len(found) > 1 and any(u == "" for _, u in found):
        raise HpsearchError(f"$timeout {text!r}: give every part a unit, e.g. 1h30m")
    seconds = sum(float(n) * units[u] for n, u in found)
    if seconds <= 0:
        raise HpsearchError(f"$timeout {text!r}: must be longer than 0 seconds")
    return seconds
