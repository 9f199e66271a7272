"""The study file: typed, validated once when read, with errors that name the file, key and fix.

A study file (TOML) names the study, its workload, the metric, the search
space and the settings of the coarse and refine stages. See README.md for the
format; `load_spec` is the only way in.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hpsearch.direction import Direction
from hpsearch.errors import SpecError
from hpsearch.limits import KEYS as LIMIT_KEYS
from hpsearch.limits import TrialLimits, parse_limits
from hpsearch.space import Choice, Param, Range, Space
from hpsearch.strategy import Strategy
from hpsearch.warm_start import GOOD_KEY, parse_good
from hpsearch.workloads.spec import Workload, check_command, parse_command_value, parse_model


@dataclass(frozen=True)
class StageSpec:
    """Settings of one stage. Defaults follow the recipe: coarse = many short trials."""

    strategy: Strategy = Strategy.random
    trials: int = 30  # many trials: the coarse stage is about breadth
    epochs: int = 2  # a few epochs are informative enough to rank settings coarsely
    seed: int = 0  # every random choice takes an explicit seed
    top_k: int = 5  # best trials the border check and the next refine look at
    # Failed trials are replaced until `trials` finished; a run gives up after this many failures
    # (None: as many as `trials`), so a broken workload cannot burn the machine forever.
    max_failures: int | None = None
    # Trial-epochs the stage may spend (a pruned or failed trial counts the epochs it ran); None: no
    # limit but its trials. With a pruner, the only way to know a stage's cost beforehand.
    budget: int | None = None

    def with_overrides(self, **overrides: Any) -> StageSpec:
        """This stage with CLI flags applied (None means 'not given')."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "strategy" in given:
            given["strategy"] = Strategy(given["strategy"])
        return replace(self, **given)

    def target(self, space: Space) -> int:
        """How many finished trials the stage wants: its trials, or the whole grid of `space` if smaller."""
        if self.strategy == Strategy.grid:
            return min(self.trials, len(space.grid()))
        return self.trials

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["strategy"] = self.strategy.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageSpec:
        return cls(**{**d, "strategy": Strategy(d["strategy"])})  # stored before `budget`: its default


METRIC_EPOCHS = ("last", "best")  # a trial's value: its last epoch's metric, or its best epoch's
SEARCH_PLANS = ("auto", "study")  # search's stage settings: planned from the budget, or the study file's


# Refine trains longer around the best: the recipe's 10-20 epochs, fewer trials.
REFINE_DEFAULTS = StageSpec(trials=20, epochs=15)


@dataclass(frozen=True)
class StudySpec:
    name: str
    workload: Workload  # a function or a command (a plain string is taken as a function path)
    metric: str
    direction: Direction
    space: Space
    coarse: StageSpec = field(default_factory=StageSpec)
    refine: StageSpec = REFINE_DEFAULTS
    path: str = "<memory>"  # the study file it came from, as given, for messages
    # The study file's folder, absolute: trials run there, and relative paths resolve from it. "" = none.
    folder: str = ""
    budget: int | None = None  # trial-epochs of the whole `search` (recipe.py); None: coarse + two refines
    metric_epoch: str = "last"  # "last": a trial's metric is its last epoch's; "best": its best epoch's
    # "auto": `search` plans its stages from the budget and [refine] epochs (search/plan.py plan_stages);
    # "study": it runs the [coarse] and [refine] tables as written
    search_plan: str = "auto"
    # Stall rule and log bound of its trials (limits.py); the flags of the commands that run trials override them
    limits: TrialLimits = TrialLimits()
    good: dict[str, Any] = field(default_factory=dict, hash=False)  # known-good values: coarse starts there (warm_start.py)
    trackers: dict[str, str] = field(default_factory=dict, hash=False)  # [trackers] as written: trackers/settings.py

    def __post_init__(self) -> None:
        if isinstance(self.workload, str):  # library callers and old code pass "module:function"
            object.__setattr__(self, "workload", Workload(function=self.workload))

    def unused_params(self) -> list[str]:
        """Params a command workload never names (it may still read them from $HPSEARCH_PARAMS)."""
        return check_command(self.workload.command, self.space.names) if self.workload.command else []

    def to_dict(self, with_space: bool = True) -> dict[str, Any]:
        """As stored; a stage stores its space once, beside the spec (with_space=False)."""
        d: dict[str, Any] = {
            "name": self.name,
            "workload": self.workload.to_data(),
            "metric": self.metric,
            "direction": self.direction.value,
            "coarse": self.coarse.to_dict(),
            "refine": self.refine.to_dict(),
            "path": self.path,
            "folder": self.folder,
            "budget": self.budget,
            "metric_epoch": self.metric_epoch,
            "search_plan": self.search_plan,
            "limits": self.limits.to_dict(),
            "good": dict(self.good),
            "trackers": dict(self.trackers),
        }
        if with_space:
            d["space"] = self.space.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], space: Space | None = None) -> StudySpec:
        """Read a stored spec; `space` replaces (or stands in for) the stored one."""
        return cls(
            name=d["name"],
            workload=Workload.from_data(d["workload"]),
            metric=d["metric"],
            direction=Direction(d["direction"]),
            space=space if space is not None else Space.from_dict(d["space"]),
            coarse=StageSpec.from_dict(d["coarse"]),
            refine=StageSpec.from_dict(d["refine"]),
            path=d.get("path", "<storage>"),
            folder=d.get("folder", ""),
            budget=d.get("budget"),
            metric_epoch=d.get("metric_epoch", "last"),
            search_plan=d.get("search_plan", "auto"),
            limits=TrialLimits.from_dict(d.get("limits")),
            good=dict(d.get("good") or {}),
            trackers=dict(d.get("trackers") or {}),
        )


TOP_KEYS = {"name", "workload", "metric", "direction", "coarse", "refine", "params", "description", "budget", "metric_epoch", "search_plan", "trackers", *LIMIT_KEYS}
TRACKER_KEYS = {"mlflow", "mlflow_experiment", "tensorboard"}  # [trackers]: a tracking URI, its experiment, an event-file folder
STAGE_KEYS = {"strategy", "trials", "epochs", "seed", "top_k", "max_failures", "budget"}
WORKLOAD_KEYS = {"function", "command", "model", "data", "loss", "batch_size", "optimizer", "precision", "checkpoint_every"}
MODEL_KEYS = {"data", "loss", "batch_size", "optimizer", "precision", "checkpoint_every"}  # only with model = ...
RANGE_KEYS = {"low", "high", "log", "type", "grid_points", "limits", GOOD_KEY}
CHOICE_KEYS = {"values", "limits", GOOD_KEY}
MAX_PARAMS = 1000  # each param is a storage write per trial: 1,000 cost a few seconds per trial on the journal
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file. Raises SpecError naming the file, key and fix."""
    path = Path(path)
    if path.is_dir():
        raise SpecError(path, "file", "is a folder, not a study file; pass the .toml study file itself")
    if not path.is_file():
        raise SpecError(path, "file", "no such study file; pass the path of a .toml study file (see studies/)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(path, "file", f"is not a text file (not UTF-8 at byte {e.start}); pass a .toml study file") from None
    except OSError as e:
        raise SpecError(path, "file", f"cannot be read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(path, "toml", f"not valid TOML ({e}); fix the syntax") from e
    return parse_spec(data, path)


def parse_spec(data: dict[str, Any], path: str | Path = "<memory>") -> StudySpec:
    """Validate the parsed contents of a study file (see load_spec)."""
    file = Path(path)
    _reject_unknown(data, TOP_KEYS, file, "")
    name = _required(data, "name", str, file)
    if not NAME_RE.match(name):
        raise SpecError(file, "name", f"{name!r} is not a valid study name; use letters, digits, '_', '-', '.'")
    metric = _required(data, "metric", str, file)
    direction_text = data.get("direction", Direction.maximize.value)
    try:
        direction = Direction(direction_text)
    except ValueError:
        raise SpecError(file, "direction", f"{direction_text!r} is not a direction; use \"maximize\" or \"minimize\"") from None

    refine = _stage(data.get("refine", {}), "refine", REFINE_DEFAULTS, file)
    coarse = _stage(data.get("coarse", {}), "coarse", StageSpec(top_k=refine.top_k), file)

    params = data.get("params")
    if not isinstance(params, dict) or not params:
        raise SpecError(file, "params", "no parameters to search; add e.g. [params.lr] with low, high and log = true")
    if len(params) > MAX_PARAMS:
        raise SpecError(
            file, "params", f"{len(params):,} parameters; hpsearch searches at most {MAX_PARAMS:,} (each is a storage "
            "write per trial): search the few that matter, and fix or derive the others in the workload",
        )
    for pname in params:
        _check_param_name(pname, metric, file)
    space = Space(tuple(_param(pname, pdata, file) for pname, pdata in params.items()))
    folder = str(file.resolve().parent) if file.is_file() else ""
    workload = _workload(data.get("workload"), file, space, folder)
    budget = data.get("budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise SpecError(file, "budget", f"must be a positive whole number of trial-epochs, got {budget!r}")
    metric_epoch = data.get("metric_epoch", "last")
    if metric_epoch not in METRIC_EPOCHS:
        raise SpecError(file, "metric_epoch", f'{metric_epoch!r}: use "last" (the last epoch\'s metric) or "best" (the best epoch\'s)')
    search_plan = data.get("search_plan", "auto")
    if search_plan not in SEARCH_PLANS:
        raise SpecError(file, "search_plan", f'{search_plan!r}: use "auto" (search plans its stages from the budget) '
                        'or "study" (search runs [coarse] and [refine] as written)')
    limits = parse_limits(data, file)
    trackers = data.get("trackers", {})
    if not isinstance(trackers, dict):
        raise SpecError(file, "trackers", 'must be a table: [trackers] with mlflow = "http://127.0.0.1:5000" and/or tensorboard = "runs"')
    _reject_unknown(trackers, TRACKER_KEYS, file, "trackers")
    if bad := [k for k, v in trackers.items() if not isinstance(v, str) or not v.strip()]:
        raise SpecError(file, f"trackers.{bad[0]}", f"must be a non-empty text, got {trackers[bad[0]]!r}")
    return StudySpec(name, workload, metric, direction, space, coarse, refine, str(path), folder, budget, metric_epoch, search_plan, limits, good=parse_good(params, space, file), trackers=dict(trackers))


def check_stage(stage: StageSpec, where: str, file: str | Path) -> StageSpec:
    """Validate stage settings (also those that came from CLI flags)."""
    for key in ("trials", "epochs", "top_k"):
        value = getattr(stage, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SpecError(file, f"{where}.{key}", f"must be a positive integer, got {value!r}")
    for key in ("max_failures", "budget"):
        value = getattr(stage, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(file, f"{where}.{key}", f"must be a positive integer, got {value!r}")
    if isinstance(stage.seed, bool) or not isinstance(stage.seed, int):
        raise SpecError(file, f"{where}.seed", f"must be an integer, got {stage.seed!r}")
    return stage


def _stage(data: Any, where: str, defaults: StageSpec, file: Path) -> StageSpec:
    if not isinstance(data, dict):
        raise SpecError(file, where, f"must be a table like [{where}]")
    _reject_unknown(data, STAGE_KEYS, file, where)
    values = dict(data)
    if "strategy" in values:
        try:
            values["strategy"] = Strategy(values["strategy"])
        except ValueError:
            choices = ", ".join(s.value for s in Strategy)
            raise SpecError(file, f"{where}.strategy", f"{values['strategy']!r} is not a strategy; use one of {choices}") from None
    return check_stage(replace(defaults, **values), where, file)


def _param(name: str, data: Any, file: Path) -> Param:
    key = f"params.{name}"
    if not isinstance(data, dict):
        raise SpecError(file, key, "must be a table with low/high (a range) or values (a set)")
    limits = _limits(data.get("limits"), f"{key}.limits", file)
    if "values" in data:
        _reject_unknown(data, CHOICE_KEYS, file, key, hint="a value set takes only values (and limits, good)")
        values = data["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(file, f"{key}.values", "must be a non-empty list, e.g. values = [0.5, 0.9, 0.99]")
        for v in values:
            if not isinstance(v, (int, float, str, bool)):
                raise SpecError(file, f"{key}.values", f"{v!r} is not a number or string")
        if len(set(map(repr, values))) != len(values):
            raise SpecError(file, f"{key}.values", "lists a value twice; list each value once")
        return Choice(name, tuple(values), limits)

    _reject_unknown(data, RANGE_KEYS, file, key)
    for bound in ("low", "high"):
        if bound not in data:
            raise SpecError(file, f"{key}.{bound}", "missing; a range needs low and high (or use values = [...])")
        if isinstance(data[bound], bool) or not isinstance(data[bound], (int, float)):
            raise SpecError(file, f"{key}.{bound}", f"must be a number, got {data[bound]!r}")
    low, high = data["low"], data["high"]
    log = data.get("log", False)
    if not isinstance(log, bool):
        raise SpecError(file, f"{key}.log", "must be true or false")
    ptype = data.get("type", "float")
    if ptype not in ("float", "int"):
        raise SpecError(file, f"{key}.type", f"{ptype!r} is not a type; use \"float\" or \"int\"")
    if not low < high:
        raise SpecError(file, key, f"low ({low}) must be below high ({high}); swap them or widen the range")
    if log and low <= 0:
        raise SpecError(
            file, f"{key}.low", f"a log range needs low > 0, got {low}; use e.g. low = 1e-6, or values = [0, 1e-5, ...] to include zero"
        )
    if ptype == "int":
        if low != int(low) or high != int(high):
            raise SpecError(file, key, "an int range needs whole-number low and high")
        low, high = int(low), int(high)
    grid_points = data.get("grid_points", 5)
    if isinstance(grid_points, bool) or not isinstance(grid_points, int) or grid_points < 2:
        raise SpecError(file, f"{key}.grid_points", f"must be an integer >= 2, got {grid_points!r}")
    lo_limit, hi_limit = limits
    if (lo_limit is not None and low < lo_limit) or (hi_limit is not None and high > hi_limit):
        raise SpecError(file, f"{key}.limits", f"the range [{low}, {high}] must lie within limits {list(limits)}")
    return Range(name, low, high, log=log, type=ptype, grid_points=grid_points, limits=limits)


def _check_param_name(name: str, metric: str, file: Path) -> None:
    """Any name TOML allows works (rank, state, epochs, "batch size", ...), except the few that cannot:
    the leaderboard holds params and the metric side by side, under their own names."""
    if not name.strip():
        raise SpecError(file, "params", "a parameter has an empty name; give it a name, e.g. [params.lr]")
    if name == metric:
        raise SpecError(file, f"params.{name}", f"has the name of the metric ({metric!r}); rename the parameter or the metric")


def _limits(data: Any, key: str, file: Path) -> tuple[float | None, float | None]:
    if data is None:
        return (None, None)
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)
        or not data[0] < data[1]
    ):
        raise SpecError(file, key, "must be [lowest, highest], the bounds refine never widens past, e.g. limits = [0, 1]")
    return (float(data[0]), float(data[1]))


def _required(data: dict[str, Any], key: str, kind: type, file: Path) -> Any:
    if key not in data:
        raise SpecError(file, key, f"missing; add {key} = ... at the top of the file")
    if not isinstance(data[key], kind) or (kind is str and not data[key].strip()):
        raise SpecError(file, key, f"must be a non-empty {kind.__name__}, got {data[key]!r}")
    return data[key]


def _reject_unknown(data: dict[str, Any], allowed: set[str], file: Path, where: str, hint: str = "") -> None:
    for key in data:
        if key in allowed:
            continue
        full = f"{where}.{key}" if where else key
        close = difflib.get_close_matches(key, sorted(allowed), n=1)
        fix = f"did you mean {close[0]!r}?" if close else f"allowed keys: {', '.join(sorted(allowed))}"
        raise SpecError(file, full, f"unknown key; {hint + '; ' if hint else ''}{fix}")


def _workload(data: Any, file: Path, space: Space, folder: str) -> Workload:
    """`workload = "file.py:fn"`, or a [workload] table with one of its kinds (function, command)."""
    if data is None:
        raise SpecError(file, "workload", 'missing; add workload = "train.py:train", or a [workload] table with command = "..."')
    if isinstance(data, str):
        return Workload(function=_resolve_function(data, file, "workload"))
    if not isinstance(data, dict):
        raise SpecError(file, "workload", f'must be "file.py:function" or a [workload] table, got {data!r}')
    _reject_unknown(data, WORKLOAD_KEYS, file, "workload")
    kinds = [k for k in ("function", "command", "model") if k in data]
    if len(kinds) != 1:
        raise SpecError(
            file, "workload", 'give exactly one of function = "train.py:train", command = "python train.py ..." '
            'or model = "net.py:build" (with data = "net.py:data")',
        )
    if kinds != ["model"] and (extra := sorted(MODEL_KEYS & set(data))):
        raise SpecError(file, f"workload.{extra[0]}", 'belongs to a model workload (model = "net.py:build"); remove it')
    if kinds == ["model"]:
        return Workload(model=parse_model(data, file, space.names, _resolve_function))
    if kinds == ["function"]:
        if not isinstance(data["function"], str):
            raise SpecError(file, "workload.function", f'must be "file.py:function", got {data["function"]!r}')
        return Workload(function=_resolve_function(data["function"], file, "workload.function"))
    return Workload(command=parse_command_value(data["command"], file, space.names, folder))


def _resolve_function(text: str, file: Path, key: str) -> str:
    """Make a file workload path absolute (it is relative to the study file) and check it exists."""
    from hpsearch.workloads.loader import check_workload

    module, sep, function = text.rpartition(":")
    if not sep or not module or not function:
        raise SpecError(file, key, f"{text!r} must be \"package.module:function\" or \"path/to/file.py:function\"")
    if module.endswith(".py"):
        source = Path(module)
        if not source.is_absolute():
            source = (file.parent / source).resolve()
        module = str(source)
    try:
        check_workload(module, function)
    except LookupError as e:
        raise SpecError(file, key, str(e)) from None
    return f"{module}:{function}"

