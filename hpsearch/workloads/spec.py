"""What the study file says the workload is: a function to call, or a command line to run.

    workload = "train.py:train"                       # shorthand for the function kind
    [workload]
    function = "train.py:train"                       # hpsearch calls train(trial)
    [workload]
    command = "python train.py --lr {lr} --epochs {epochs} --seed {seed}"   # hpsearch runs it
    [workload]
    model = "net.py:build"                            # hpsearch owns the loop: build(params) -> nn.Module
    data = "net.py:data"                              # data() -> (train, val[, test])

A command is split into arguments once (POSIX shell rules; or given as a
list), then each `{name}` in an argument is replaced by that value, so a
value never splits or joins arguments and nothing passes through a shell.
`{name}` is a param of the study, or one of the built-ins (BUILTINS), also
spelled `{hpsearch.epochs}`: a param named like a built-in takes the short
form. `{{` and `}}` are literal braces. Nothing here starts a process or
imports user code (workloads/command.py and workloads/model.py do); the
parsers check what the study file names exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpsearch.errors import SpecError

Resolver = Callable[[str, Path, str], str]

# What a command may ask for besides the params: the trial's settings, as the script sees them.
BUILTINS = ("epochs", "seed", "trial", "stage", "study", "device", "split", "checkpoint_dir", "attempt")
BUILTIN_PREFIX = "hpsearch."
PYTHON_NAMES = ("python", "python3")  # as a command's program: the interpreter hpsearch runs in
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")

_SHELL_SAFE = re.compile(r"[\w@%+=:,./{}-]+")  # what a shell reads as itself; {name} placeholders included


class TemplateError(ValueError):
    """A command line that cannot be filled in: an unknown placeholder or a lone brace."""


LOSSES = ("cross_entropy", "mse")  # a model workload's built-in losses (else "file.py:fn")
OPTIMIZERS = {  # a model workload's optimisers and the params they read, with their defaults
    "sgd": {"lr": None, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
    "adamw": {"lr": None, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ModelSpec:
    """A model workload: hpsearch builds the model, owns the optimiser and the loop (workloads/model.py).
    `model`, `data` and a file `loss` are resolved "module:function" paths."""

    model: str
    data: str
    loss: str = "cross_entropy"
    batch_size: int = 64
    optimizer: str = "sgd"
    precision: str = "fp32"
    # Checkpoints (workloads/model.py): "auto" (after epochs, at least 1 s apart and at most 5% of the time),
    # every N epochs (0: none), or "10m", "1h": also within an epoch.
    checkpoint_every: int | str = "auto"

    @property
    def classification(self) -> bool:
        return self.loss == "cross_entropy"

    def optimizer_params(self) -> dict[str, Any]:
        """The params the optimiser reads, with defaults (None: required); the rest go to build()."""
        return OPTIMIZERS[self.optimizer]


def ungrouped_ranges(workload: Workload, space: Any) -> list[str]:
    """The params that make every population of a model workload a population of one: non-optimiser
    params drawn from a range (two trials almost never share a value, and only optimiser params may
    differ inside a stacked model)."""
    if workload.model is None:
        return []
    optimizer = set(OPTIMIZERS[workload.model.optimizer])
    return [p.name for p in space if p.name not in optimizer and hasattr(p, "low")]


@dataclass(frozen=True)
class Workload:
    """One of the kinds: `function` ("package.module:function" or "/abs/file.py:function"), `command`
    (the argument list, placeholders unfilled) or `model`."""

    function: str = ""
    command: tuple[str, ...] = ()
    model: ModelSpec | None = None

    @property
    def kind(self) -> str:
        return "command" if self.command else "model" if self.model else "function"

    def __str__(self) -> str:
        """How messages name it: the function path, the command line as a shell would read it, the model."""
        if self.model:
            return f"model {self.model.model}"
        if not self.command:
            return self.function
        # As the study file wrote it: quoted only where a shell needs quotes (shlex.join would write '{lr}').
        return " ".join(a if _SHELL_SAFE.fullmatch(a) else shlex.quote(a) for a in self.command)

    def to_data(self) -> str | dict[str, Any]:
        """As stored with a stage (and sent to a worker): a function stays the plain string of old."""
        if self.model:
            return {"model": asdict(self.model)}
        return {"command": list(self.command)} if self.command else self.function

    @classmethod
    def from_data(cls, data: str | Mapping[str, Any]) -> Workload:
        if isinstance(data, str):
            return cls(function=data)
        if "command" in data:
            return cls(command=tuple(data["command"]))
        if "model" in data:
            return cls(model=ModelSpec(**data["model"]))
        return cls(function=data["function"])

    def to_arg(self) -> str:
        """One command-line argument for a worker process (a function path, or JSON)."""
        data = self.to_data()
        return data if isinstance(data, str) else json.dumps(data)

    @classmethod
    def from_arg(cls, text: str) -> Workload:
        return cls.from_data(json.loads(text) if text.startswith("{") else text)


def parse_command(text: str) -> tuple[str, ...]:
    """A command line split into arguments as a POSIX shell would (quotes kept together).
    Raises TemplateError for unbalanced quotes."""
    try:
        argv = tuple(shlex.split(text))
    except ValueError as e:
        raise TemplateError(f"cannot split {text!r} into arguments ({e}); balance its quotes") from None
    if not argv:
        raise TemplateError('is empty; give the program and its arguments, e.g. "python train.py {lr} {epochs}"')
    return argv


def placeholders(argv: Iterable[str]) -> list[str]:
    """The placeholder names the arguments use, in order of first use. Raises TemplateError for a
    lone `{` or `}` (a literal brace is written `{{` or `}}`)."""
    names: list[str] = []
    for arg in argv:
        for m in _PLACEHOLDER.finditer(arg):
            token = m.group(0)
            if token in ("{", "}"):
                raise TemplateError(f"argument {arg!r} has a lone {token!r}; write {token * 2} for a literal brace")
            if m.group(1) is not None and m.group(1) not in names:
                names.append(m.group(1))
    return names


def resolve(name: str, params: Iterable[str]) -> tuple[str, str]:
    """What `{name}` stands for: ("param", its name) or ("builtin", which). Raises TemplateError."""
    params = list(params)
    for candidate in (name, name.strip()):
        if candidate in params:
            return "param", candidate
        if candidate in BUILTINS:
            return "builtin", candidate
        if candidate.startswith(BUILTIN_PREFIX) and candidate[len(BUILTIN_PREFIX) :] in BUILTINS:
            return "builtin", candidate[len(BUILTIN_PREFIX) :]
    known = ", ".join(f"{{{p}}}" for p in params)
    builtins = ", ".join(f"{{{b}}}" for b in BUILTINS)
    raise TemplateError(
        f"unknown placeholder {{{name}}}; use a param ({known}) or a built-in ({builtins}); "
        "write {{ and }} for literal braces"
    )


def check_command(argv: Iterable[str], params: Iterable[str]) -> list[str]:
    """Validate every placeholder against the params; returns the params the command never uses."""
    params = list(params)
    used = {resolve(name, params) for name in placeholders(argv)}
    return [p for p in params if ("param", p) not in used]


def render(argv: Iterable[str], params: Mapping[str, Any], builtins: Mapping[str, Any]) -> list[str]:
    """The arguments with every placeholder replaced by its value (format_value)."""

    def value(m: re.Match[str]) -> str:
        token = m.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if m.group(1) is None:
            raise TemplateError(f"a lone {token!r}; write {token * 2} for a literal brace")
        kind, name = resolve(m.group(1), params)
        return format_value(params[name] if kind == "param" else builtins[name])

    return [_PLACEHOLDER.sub(value, arg) for arg in argv]


def format_value(value: Any) -> str:
    """How a value is written into an argument: floats exactly (shortest round-trip form, 0.001,
    1e-05), ints as digits, booleans as true/false, strings as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# ----------------------------------------------------------------------------- parsing the study file's table


def parse_model(data: Mapping[str, Any], file: Path, names: Sequence[str], resolve: Resolver) -> ModelSpec:
    """A model workload's table: build and data functions, loss, batch size, optimiser, precision.
    `resolve(text, file, key)` checks a "file.py:fn" path and returns it resolved (spec.py's)."""
    for key in ("model", "data"):
        if not isinstance(data.get(key), str):
            example = "net.py:build" if key == "model" else "net.py:data"
            raise SpecError(file, f"workload.{key}", f'missing or not a string; add {key} = "{example}"')
    model = resolve(data["model"], file, "workload.model")
    source = resolve(data["data"], file, "workload.data")
    loss = data.get("loss", "cross_entropy")
    if not isinstance(loss, str):
        raise SpecError(file, "workload.loss", f'must be one of {", ".join(LOSSES)} or "file.py:fn", got {loss!r}')
    if loss not in LOSSES:
        if ":" not in loss:
            raise SpecError(
                file, "workload.loss", f'{loss!r} is not a loss; use one of {", ".join(LOSSES)} or "file.py:fn"'
            )
        loss = resolve(loss, file, "workload.loss")
    batch_size = data.get("batch_size", 64)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SpecError(
            file,
            "workload.batch_size",
            f"must be a positive integer (or search a param named batch_size), got {batch_size!r}",
        )
    optimizer = data.get("optimizer", "sgd")
    if optimizer not in OPTIMIZERS:
        raise SpecError(
            file, "workload.optimizer", f"{optimizer!r} is not an optimiser; use one of {', '.join(OPTIMIZERS)}"
        )
    precision = data.get("precision", "fp32")
    if precision not in PRECISIONS:
        raise SpecError(
            file, "workload.precision", f"{precision!r} is not a precision; use one of {', '.join(PRECISIONS)}"
        )
    if "lr" not in names:
        raise SpecError(
            file, "params", f"a model workload's {optimizer} optimiser needs a param named lr; add [params.lr]"
        )
    return ModelSpec(model, source, loss, batch_size, optimizer, precision, checkpoint_every(data, file))


def checkpoint_every(data: Mapping[str, Any], file: Path) -> int | str:
    """The table's checkpoint_every: epochs (0: never) or a duration ("10m": also within long epochs)."""
    from hpsearch.durations import parse_duration
    from hpsearch.errors import HpsearchError

    value = data.get("checkpoint_every", "auto")
    if (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or value == "auto":
        return value
    try:
        if isinstance(value, str):
            parse_duration(value)
            return value
    except HpsearchError:
        pass
    why = f'must be "auto", epochs (1: each, 0: never) or a duration such as "10m", got {value!r}'
    raise SpecError(file, "workload.checkpoint_every", why)


def parse_command_value(value: Any, file: Path, names: Sequence[str], folder: str) -> tuple[str, ...]:
    """The study file's `command` (a string or a list), checked: placeholders, program, script."""
    key = "workload.command"
    try:
        if isinstance(value, str):
            argv = parse_command(value)
        elif isinstance(value, list) and value and all(isinstance(a, str) for a in value):
            argv = tuple(value)
        else:
            raise TemplateError(
                f'must be a command line or a list of arguments, e.g. ["python", "train.py"], got {value!r}'
            )
        check_command(argv, names)
    except TemplateError as e:
        raise SpecError(file, key, str(e)) from None
    _check_program(argv, Path(folder or "."), file, key)
    return argv


def _check_program(argv: tuple[str, ...], folder: Path, file: Path, key: str) -> None:
    """The program (and a python script) must exist: a typo is an error now, not N failed trials."""
    program = argv[0]
    if placeholders([program]):
        return
    if program in PYTHON_NAMES:
        script = argv[1] if len(argv) > 1 else ""
        if script.endswith(".py") and not placeholders([script]) and not (folder / script).is_file():
            raise SpecError(
                file, key, f"script {script} does not exist in {folder} (the command runs in the study file's folder)"
            )
    elif "/" in program:
        path = folder / program
        if not path.is_file():
            raise SpecError(
                file, key, f"program {program} does not exist in {folder} (the command runs in the study file's folder)"
            )
        if not os.access(path, os.X_OK):
            raise SpecError(
                file, key, f"program {program} is not executable; chmod +x it, or run it with its interpreter"
            )
    elif shutil.which(program) is None:
        raise SpecError(file, key, f"program {program!r} is not on PATH; give its full path")
