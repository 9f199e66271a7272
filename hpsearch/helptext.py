"""A script's help text, read without importing the script: its options, positionals and subcommands.

`read_help` runs the script with --help in its own process group, with stdin
closed and a time limit (its top level may train, or wait for input), and
ends whatever it left running. `parse_help` reads argparse's help layout
(click's reads too): an item line per option at a small indent, its help
beside it or below at a deeper one; the usage line says which options and
positionals are required (those outside brackets) and lists subparsers as
`{train,eval} ...`. Nothing here knows what hpsearch searches (scaffold.py does).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hpsearch.errors import HpsearchError

HELP_TIMEOUT_S = 10.0  # a script importing torch at its top takes a few seconds before argparse runs
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DEFAULT = re.compile(r"\(default:?\s*([^()]*)\)|\[default:?\s*([^\[\]]*)\]")


class ScriptHelpError(HpsearchError):
    """A script whose help cannot be read: it fails, hangs, or prints no usage line."""


@dataclass(frozen=True)
class Flag:
    """One option of the script, as its help shows it. `metavar` is "" for a switch (store_true)."""

    names: tuple[str, ...]
    metavar: str = ""
    help: str = ""
    required: bool = False

    @property
    def name(self) -> str:
        """The spelling the command line uses: the first long option."""
        return next((n for n in self.names if n.startswith("--")), self.names[0])

    @property
    def keys(self) -> set[str]:
        """Its names as compared: lowercase, '-' as '_', and `--model.lr` as lr (jsonargparse, LightningCLI)."""
        return {n.lstrip("-").lower().replace("-", "_").rsplit(".", 1)[-1] for n in self.names}

    @property
    def default(self) -> str | None:
        """The default its help shows (ArgumentDefaultsHelpFormatter, click), else None."""
        m = _DEFAULT.search(self.help)
        value = (m.group(1) if m.group(1) is not None else m.group(2)).strip() if m else None
        return None if value in (None, "", "None") else value

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.metavar[1:-1].split(",")) if self.metavar.startswith("{") else ()


@dataclass(frozen=True)
class HelpText:
    """What a help text says: the options, the required positional arguments, the subcommands."""

    flags: tuple[Flag, ...]
    positionals: tuple[str, ...] = ()
    subcommands: tuple[str, ...] = ()
    text: str = ""


def read_help(argv: Sequence[str], cwd: Path, timeout: float = HELP_TIMEOUT_S, shown: str = "") -> str:
    """The help text `argv` (ending in --help) prints, run in `cwd` with stdin closed, in its own process
    group, which is ended after `timeout` seconds. Raises ScriptHelpError when it times out, fails or is
    silent, naming the command as `shown` (the user's spelling of it; default: `argv`)."""
    from hpsearch import procs

    shown = shown or " ".join(argv)
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "PYTHON_COLORS": "0", "TERM": "dumb"}
    try:
        proc = procs.spawn(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, errors="replace")  # fmt: skip
    except OSError as e:
        raise ScriptHelpError(f"cannot run `{shown}`: {e.strerror}; give the interpreter with $python") from None
    out, err, timed_out = "", "", False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        procs.end_group(proc)  # and anything it left running, or still runs
    if timed_out:
        with contextlib.suppress(subprocess.TimeoutExpired):  # closes the pipes (unless a process left the group)
            proc.communicate(timeout=1)
        raise ScriptHelpError(
            f"`{shown}` did not finish in {timeout:g} s; raise $timeout if its imports are slow, or move the "
            "script's work under `if __name__ == '__main__':` after parse_args()"
        )
    if proc.returncode != 0:
        last = (err.strip().splitlines() or ["no message"])[-1]
        raise ScriptHelpError(f"`{shown}` exited with code {proc.returncode}: {last}")
    if not re.search(r"^\s*usage:", out, re.I | re.M):
        raise ScriptHelpError(f"`{shown}` printed no usage line: hpsearch reads the flags of an argparse script's help")
    return out


def parse_help(text: str) -> HelpText:
    """The options, required positionals and subcommands of an argparse help text (click's reads too)."""
    lines = _ANSI.sub("", text).expandtabs().splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().lower().startswith("usage:")), 0)
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    usage = " ".join(line.strip() for line in lines[start:end])
    items: list[list[str]] = []  # [kind, first line, help...]; kind: "flag", "positional" or "sub"
    section = ""
    for line in lines[end:]:
        indent, stripped = len(line) - len(line.lstrip()), line.strip()
        if not stripped:
            continue
        if indent == 0:
            section = stripped.lower()
        elif indent < 8 and stripped.startswith("-"):
            items.append(["flag", stripped])
        elif indent < 8 and "positional" in section:
            sub = bool(items) and items[-1][0] in ("positional", "sub") and indent > 2
            items.append(["sub" if sub else "positional", stripped])
        elif items:
            items[-1].append(stripped)
    flags = tuple(_flag(item[1], " ".join(item[2:]), usage) for item in items if item[0] == "flag")
    subs = [item[1].split()[0] for item in items if item[0] == "sub"]
    if not subs and (m := re.search(r"\{([^{}]+)\}\s+\.\.\.", usage)) and _depth(usage, m.start()) == 0:
        subs = m.group(1).split(",")
    groups = {i - 1 for i, item in enumerate(items) if item[0] == "sub"}  # the positional listing the subcommands
    positionals = tuple(
        name
        for i, item in enumerate(items)
        if item[0] == "positional" and i not in groups and not (name := item[1].split()[0]).startswith("{")
        if _required(usage, name, last=True)
    )
    return HelpText(flags, positionals, tuple(subs), text)


def _flag(first: str, more: str, usage: str) -> Flag:
    invocation, *rest = re.split(r"\s{2,}", first, maxsplit=1)
    help_text = " ".join([*rest, more]).strip()
    names, metavar = [], ""
    for part in invocation.split(", "):
        if m := re.match(r"(-{1,2}[^\s=,]+)[\s=]?(.*)", part.strip()):
            names.append(m.group(1))
            metavar = m.group(2).strip() or metavar
    required = any(_required(usage, n) for n in names) or "[required]" in help_text
    return Flag(tuple(names) or (invocation,), metavar, help_text, required)


def _required(usage: str, name: str, last: bool = False) -> bool:
    """Whether the usage line shows `name` outside brackets (argparse writes optional ones as [--x X])."""
    found = list(re.finditer(rf"(?<![\w-]){re.escape(name)}(?![\w-])", usage.split(":", 1)[-1]))
    return bool(found) and _depth(usage.split(":", 1)[-1], found[-1 if last else 0].start()) == 0


def _depth(text: str, index: int) -> int:
    return text[:index].count("[") - text[:index].count("]")
