"""What the study file says the workload is: a function to call, or a command line to run.

    workload = "train.py:train"                       # shorthand for the function kind
    [workload]
    function = "train.py:train"                       # hpsearch calls train(trial)
    [workload]
    command = "python train.py --lr {lr} --epochs {epochs} --seed {seed}"   # hpsearch runs it

A command is split into arguments once (POSIX shell rules; or given as a
list), then each `{name}` in an argument is replaced by that value, so a
value never splits or joins arguments and nothing passes through a shell.
`{name}` is a param of the study, or one of the built-ins (BUILTINS), also
spelled `{hpsearch.epochs}`: a param named like a built-in takes the short
form. `{{` and `}}` are literal braces. Pure: nothing here starts a process
(workloads/command.py does).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# What a command may ask for besides the params: the trial's settings, as the script sees them.
BUILTINS = ("epochs", "seed", "trial", "stage", "study", "device", "split")
BUILTIN_PREFIX = "hpsearch."
PYTHON_NAMES = ("python", "python3")  # as a command's program: the interpreter hpsearch runs in
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A command line that cannot be filled in: an unknown placeholder or a lone brace."""


@dataclass(frozen=True)
class Workload:
    """One of the kinds: `function` ("package.module:function" or "/abs/file.py:function") or `command`
    (the argument list, placeholders unfilled)."""

    function: str = ""
    command: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "command" if self.command else "function"

    def __str__(self) -> str:
        """How messages name it: the function path, or the command line as a shell would read it."""
        return shlex.join(self.command) if self.command else self.function

    def to_data(self) -> str | dict[str, Any]:
        """As stored with a stage (and sent to a worker): a function stays the plain string of old."""
        return {"command": list(self.command)} if self.command else self.function

    @classmethod
    def from_data(cls, data: str | Mapping[str, Any]) -> Workload:
        if isinstance(data, str):
            return cls(function=data)
        if "command" in data:
            return cls(command=tuple(data["command"]))
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
        raise TemplateError("is empty; give the program and its arguments, e.g. \"python train.py {lr} {epochs}\"")
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
