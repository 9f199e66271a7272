"""Warm starts: configurations a coarse stage runs first, and the study file's known-good values.

Sources (README, "Warm starts and known-good values"):

- a file (`read_file`): the best.toml / best.json that `final` writes (one table of params), a
  TOML file of `[[configs]]` tables, or a JSON list of objects. Every value must be one the study's
  space takes (inside its range, in its set): anything else is refused, naming the value, before
  any trial runs. The file is what the user chose to run: it is run as written or not at all.
- another study's top configurations (search/warm_starts.py reads them; `fit` puts each into this
  space): a value outside a range is clipped to it, a number not in a set takes the set's nearest
  value, anything else the param's midpoint, each change said in a note. The other study searched
  other ranges: refusing its configurations would make the flag useless exactly when it is wanted.
- `good` values in the study file (`parse_good`, validated when the file is read): one trial at
  the good values first, and GOOD_SHARE of the stage's trials drawn near them (`near_points`).

A param a configuration lacks takes the space's midpoint (Space.midpoint: what probes train
with), said in a note. Pure: no storage, no Optuna (spec.py imports this module).
"""

from __future__ import annotations

import json
import math
import random
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import HpsearchError, SpecError
from hpsearch.space import Choice, Param, Range, Space, Value, fmt

GOOD_KEY = "good"  # [params.lr] good = 0.01
GOOD_SHARE = 0.25  # of a coarse stage's trials (rounded down) drawn near the good values
NEAR_FACTOR = 3.0  # a log range near a good value: good / 3 .. good * 3
NEAR_SPAN = 0.1  # a linear range near a good value: good ± 10% of the range's span
GOOD_SOURCE = "good value"  # the warm_start column of the trial at the good values
NEAR_SOURCE = "near good value"  # ... of a trial drawn near them
CONFIGS_KEY = "configs"  # a TOML file's [[configs]] tables (or a JSON object's "configs" list)


class WarmStartError(HpsearchError):
    """A warm-start file or study that cannot be used: the message names the value and the fix."""


@dataclass(frozen=True)
class WarmStart:
    """One configuration to run first. `params` holds every param of the space, except for a point
    near good values: only the params with a good value (the sampler draws the others)."""

    params: dict[str, Value]
    source: str  # the leaderboard's warm_start column: "file:best.toml", "study:old/coarse#12", "good value"


def value_problem(param: Param, value: Any) -> str | None:
    """Why `value` is not a value of `param` ('is outside [1.0e-04, 1] (log)'), or None when it is one."""
    if isinstance(param, Choice):
        return None if _member(param, value) is not None else f"is not in {param.describe()}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is not a number (the range {param.describe()})"
    if not math.isfinite(value) or not param.low <= value <= param.high:
        return f"is outside {param.describe()}"
    if param.is_int and value != int(value):
        return f"is not a whole number (the int range {param.describe()})"
    return None


def as_value(param: Param, value: Any) -> Value:
    """A value `value_problem` accepted, as the param holds it: an int range's as an int, a set's own element."""
    if isinstance(param, Choice):
        found = _member(param, value)
        return value if found is None else found
    return int(value) if param.is_int else float(value)


def _member(choice: Choice, value: Any) -> Value | None:
    """The element of the set equal to `value` (1 matches 1.0, a bool only a bool), or None."""
    for v in choice.values:
        if isinstance(v, bool) or isinstance(value, bool):
            if isinstance(v, bool) and isinstance(value, bool) and v == value:
                return v
        elif isinstance(v, str) or isinstance(value, str):
            if v == value:
                return v
        elif isinstance(value, (int, float)) and v == value:
            return v
    return None


def parse_good(params: dict[str, Any], space: Space, file: str | Path) -> dict[str, Value]:
    """The study file's `good` values ([params.lr] good = 0.01), checked against each param's range or
    set. Raises SpecError naming params.<name>.good."""
    good: dict[str, Value] = {}
    for p in space:
        data = params.get(p.name)
        if not isinstance(data, dict) or GOOD_KEY not in data:
            continue
        value = data[GOOD_KEY]
        if (problem := value_problem(p, value)) is not None:
            raise SpecError(
                file,
                f"params.{p.name}.{GOOD_KEY}",
                f"{value!r} {problem}; give a known-good value inside the param's range (or one of its values)",
            )
        good[p.name] = as_value(p, value)
    return good


def read_file(path: str | Path, space: Space) -> tuple[list[WarmStart], list[str]]:
    """The configurations of a warm-start file, each checked against `space` (module docstring), and
    notes (params a configuration lacks, filled with midpoints). Raises WarmStartError naming the
    first bad value (and how many more there are)."""
    path = Path(path)
    items, keyed = _load(path, space)
    problems: list[str] = []
    starts: list[WarmStart] = []
    missing: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{CONFIGS_KEY}[{i}]" if keyed else ""
        prefix = f"{where}." if where else ""
        if not isinstance(item, dict):
            problems.append(f"{where or 'the file'} must be a table of params, e.g. {{lr = 0.01}}")
            continue
        params: dict[str, Value] = {}
        for name, value in item.items():
            if name not in space.names:
                problems.append(f"{prefix}{name}: no such param in the study (its params: {', '.join(space.names)})")
            elif (problem := value_problem(space[name], value)) is not None:
                problems.append(f"{prefix}{name} = {value!r} {problem}")
            else:
                params[name] = as_value(space[name], value)
        for p in space:
            if p.name not in params and p.name not in item:
                missing[p.name] = missing.get(p.name, 0) + 1
                params[p.name] = p.midpoint()
        starts.append(WarmStart(params, f"file:{path}" + (f"#{i}" if keyed else "")))
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise WarmStartError(
            f"{path}: {problems[0]}{more}; give values the study's space takes, or widen the study file's params"
        )
    notes = [
        f"{path}: {n} of {len(starts)} configuration(s) lack {name}: its midpoint {fmt(space[name].midpoint())} is used"
        for name, n in missing.items()
    ]
    return starts, notes


def _load(path: Path, space: Space) -> tuple[list[Any], bool]:
    """The file's configurations, and whether they came as a list (named configs[i] in messages)."""
    if not path.is_file():
        raise WarmStartError(
            f"{path}: no such file; give $start_with the best.toml that `hpsearch final` writes, "
            "or a TOML/JSON file of configurations"
        )
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise WarmStartError(f"{path}: cannot be read ({e}); give a TOML or JSON file") from None
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise WarmStartError(f"{path}: not valid {kind} ({e}); fix the syntax") from None
    keyed = isinstance(data, dict) and isinstance(data.get(CONFIGS_KEY), list) and CONFIGS_KEY not in space.names
    items = data[CONFIGS_KEY] if keyed else data if isinstance(data, list) else [data]
    if not items or items == [{}]:
        raise WarmStartError(f"{path}: holds no configuration; write params as lr = 0.01, or [[configs]] tables")
    return items, keyed or isinstance(data, list)


def fit(space: Space, params: dict[str, Any], label: str) -> tuple[dict[str, Value], list[str]]:
    """Another study's configuration put into `space` (module docstring), and a note per change."""
    out: dict[str, Value] = {}
    notes: list[str] = []
    for p in space:
        if p.name not in params:
            out[p.name] = p.midpoint()
            notes.append(f"{label}: has no {p.name}: its midpoint {fmt(out[p.name])} fills in")
            continue
        value = params[p.name]
        if value_problem(p, value) is None:
            out[p.name] = as_value(p, value)
            continue
        out[p.name] = _nearest(p, value)
        notes.append(f"{label}: {p.name} = {fmt(value)} is not in {p.describe()}: {fmt(out[p.name])} instead")
    if dropped := [n for n in params if n not in space.names]:
        notes.append(f"{label}: {', '.join(dropped)} left out (not a param of this study)")
    return out, notes


def _nearest(p: Param, value: Any) -> Value:
    """The value of `p` closest to a value outside it: clipped into a range, the nearest number of a
    numeric set (in log space for a log-spaced one), else the midpoint."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(p, Range) and number:
        clipped = min(max(float(value), float(p.low)), float(p.high))
        return min(max(int(round(clipped)), int(p.low)), int(p.high)) if p.is_int else clipped
    if isinstance(p, Choice) and p.numeric and number:
        geometric = p.log_spaced and value > 0

        def scale(v: float) -> float:
            return (math.log10(v) if v > 0 else -math.inf) if geometric else v

        return min(p.ordered, key=lambda v: abs(scale(float(v)) - scale(float(value))))
    return p.midpoint()


def good_point(space: Space, good: dict[str, Value]) -> dict[str, Value]:
    """The point a coarse stage tries first: every good value, the midpoint of the params without one."""
    return {p.name: good.get(p.name, p.midpoint()) for p in space}


def near(param: Param, good: Value) -> Param:
    """The part of `param` a point near its good value is drawn from: a log range good / 3 .. good * 3,
    a linear one good ± 10% of its span (clipped to the range, ints rounded inward); a numeric set
    the good value and its neighbours; a set of strings the good value alone."""
    if isinstance(param, Choice):
        if not param.numeric:
            return Choice(param.name, (good,))
        ordered = list(param.ordered)
        i = ordered.index(good)
        return Choice(param.name, tuple(ordered[max(i - 1, 0) : i + 2]))
    g = float(good)
    if param.log:
        lo, hi = g / NEAR_FACTOR, g * NEAR_FACTOR
    else:
        span = float(param.high) - float(param.low)
        lo, hi = g - NEAR_SPAN * span, g + NEAR_SPAN * span
    lo, hi = max(lo, float(param.low)), min(hi, float(param.high))
    if param.is_int:
        return Range(param.name, math.ceil(lo), math.floor(hi), log=param.log, type="int")
    return Range(param.name, lo, hi, log=param.log)


def near_points(space: Space, good: dict[str, Value], n: int, seed: int) -> list[dict[str, Value]]:
    """n points drawn near the good values (`near`: log-uniform on log ranges, uniform otherwise), each
    holding only the params with a good value; the sampler draws the others."""
    rng = random.Random(seed)
    parts: Sequence[Param] = [near(p, good[p.name]) for p in space if p.name in good]
    points: list[dict[str, Value]] = []
    for _ in range(n):
        point: dict[str, Value] = {}
        for p in parts:
            if isinstance(p, Choice):
                point[p.name] = rng.choice(p.values)
                continue
            value = min(max(p.unscale(rng.uniform(p.scale(p.low), p.scale(p.high))), p.low), p.high)
            point[p.name] = min(max(int(round(value)), int(p.low)), int(p.high)) if p.is_int else value
        points.append(point)
    return points
