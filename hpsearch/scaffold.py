"""A study file from a training script: its argparse flags become a command workload.

`plan` picks, from the script's help (helptext.py), the flags hpsearch
searches (SEARCHED: learning rate, weight decay, momentum, dropout, batch
size, on the recipe's ranges, widened to hold the script's default), the ones
it fills in per trial ({epochs}, {seed}, {device}, {split}), and leaves every
other flag off the command line, so the script's own default is what runs.
`render` writes the study file, with a CHECK comment wherever the user should
look. `scaffold` does all of it for the CLI, choosing the training subcommand
of a script that has subcommands.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from hpsearch.errors import HpsearchError
from hpsearch.helptext import HELP_TIMEOUT_S, Flag, HelpText, parse_help, read_help

TRAINING_SUBCOMMANDS = ("train", "fit", "training")  # picked when the script's help lists subcommands
TODO = "TODO_"  # a required value the help does not give: an unknown placeholder, refused before any trial
_METRIC = re.compile(
    r"\b((?:val|valid|validation)_(?:[a-z0-9]+_)*(?:accuracy|acc|loss|f1|auc|error|err|mse|mae|rmse|top1|top5|"
    r"perplexity|ppl|score|iou|map|bleu|r2))\b"
)
_LOWER_IS_BETTER = re.compile(r"loss|err|mse|mae|perplexity|ppl|nll")
_NOT_SEARCHED = {"h", "help", "version"}


class ScaffoldError(HpsearchError):
    """A study file init cannot write: nothing to search, no such subcommand, a file it would overwrite.
    (A help that cannot be read is helptext.ScriptHelpError.)"""


@dataclass(frozen=True)
class Concept:
    """A flag hpsearch knows how to search: its param, the spellings it answers to, the recipe's domain."""

    param: str
    what: str
    spellings: tuple[str, ...]
    why: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    values: tuple[float, ...] = ()
    limits: tuple[float, float] | None = None


SEARCHED = (  # the recipe's defaults (RECIPE.md), as the studies in studies/ write them
    Concept(
        "lr",
        "learning rate",
        ("lr", "lr0", "learning_rate", "learningrate", "base_lr", "init_lr", "initial_lr", "max_lr", "peak_lr"),
        "log scale: a linear draw wastes most samples on the top decade",
        low=1e-4,
        high=1.0,
        log=True,
    ),
    Concept(
        "weight_decay",
        "weight decay",
        ("wd", "weight_decay", "weightdecay", "l2", "l2_reg", "l2_penalty"),
        "zero has no logarithm: a value set includes it",
        values=(0, 1e-5, 1e-4, 1e-3),
    ),
    Concept(
        "momentum",
        "momentum",
        ("momentum", "mom", "sgd_momentum"),
        "the recipe's fixed set; refine never goes past 1",
        values=(0.5, 0.9, 0.95, 0.99),
        limits=(0, 1),
    ),
    Concept(
        "dropout",
        "dropout",
        ("dropout", "dropout_rate", "dropout_p", "dropout_prob", "drop_rate", "p_dropout"),
        "a fraction, on a linear scale",
        low=0.0,
        high=0.5,
    ),
    Concept(
        "batch_size",
        "batch size",
        ("batch_size", "batchsize", "bs", "train_batch_size"),
        "CHECK: it changes the steps per epoch and interacts with lr; fix it if memory decides it",
        values=(16, 32, 64, 128),
    ),
)
FILLED = {  # flags hpsearch fills in per trial: the built-in placeholder and the spellings it answers to
    "epochs": ("epochs", "epoch", "num_epochs", "n_epochs", "nepochs", "max_epochs", "train_epochs", "total_epochs"),
    "seed": ("seed", "random_seed", "rng_seed", "manual_seed"),
    "device": ("device",),
    "split": ("split", "eval_split"),
}
MISSING = {  # what the study loses when the script has no flag for a built-in
    "epochs": "no epochs flag: each trial trains as long as the script does; set [coarse] and [refine] epochs to that",
    "seed": "no seed flag: a trial cannot be repeated, and `hpsearch final` cannot vary it (it can read HPSEARCH_SEED)",
    "device": "no device flag: a GPU worker's script sees only its own GPU (CUDA_VISIBLE_DEVICES)",
    "split": "no split flag taking val and test: `hpsearch final` needs one to test on the test split",
}


@dataclass(frozen=True)
class Scaffold:
    """The study file to write, as data: `render` turns it into TOML."""

    name: str
    command: tuple[str, ...]
    metric: str
    direction: str
    metric_from: str  # where the metric came from, for its comment
    searched: tuple[tuple[Concept, Flag, str], ...]  # the concept (fitted to the default), its flag, a note
    filled: tuple[tuple[str, Flag], ...]
    left: tuple[Flag, ...]
    todo: tuple[tuple[str, str], ...]  # (flag or positional, its placeholder): required, and no value shown
    source: str  # the help's command line, for the header
    missing: tuple[str, ...] = field(default=())


def looked_for() -> str:
    """What a script needs for hpsearch to search it, spelled as flags."""
    spelled = [f"{c.what} ({', '.join('--' + s.replace('_', '-') for s in c.spellings)})" for c in SEARCHED]
    return "; ".join(spelled) + ", with - or _ alike"


def pick_subcommand(help_text: HelpText, wanted: str | None, shown: str) -> str:
    """The subcommand that trains: `wanted`, else the one named like TRAINING_SUBCOMMANDS."""
    choices = help_text.subcommands
    if wanted is not None:
        if wanted not in choices:
            raise ScaffoldError(f"`{shown}` has no subcommand {wanted!r}; its subcommands: {', '.join(choices)}")
        return wanted
    found = [c for c in choices if c.lower() in TRAINING_SUBCOMMANDS]
    if not found:
        raise ScaffoldError(
            f"`{shown}` lists subcommands {', '.join(choices)} and none is named "
            f"{' or '.join(TRAINING_SUBCOMMANDS)}; pick the one that trains with $subcommand"
        )
    return found[0]


def plan(
    levels: Sequence[tuple[tuple[str, ...], HelpText]],
    prefix: Sequence[str],
    name: str,
    metric: str | None = None,
    direction: str | None = None,
    source: str = "",
) -> Scaffold:
    """The study file for the script: `prefix` is the program and script, `levels` each subcommand's
    words with the help that lists its flags (the script's own first, with no words). Raises
    ScaffoldError when no flag is one hpsearch searches."""
    command, searched, filled, left, todo = list(prefix), [], [], [], []
    taken: set[str] = set()
    for words, help_text in levels:
        command += words
        for positional in help_text.positionals:
            command.append(f"{{{TODO}{_ident(positional)}}}")
            todo.append((positional, command[-1]))
        for flag in help_text.flags:
            if flag.keys & _NOT_SEARCHED:
                continue
            concept = next((c for c in SEARCHED if flag.keys & set(c.spellings)), None)
            builtin = next((b for b, names in FILLED.items() if flag.keys & set(names)), None)
            if concept and concept.param not in taken and flag.metavar:
                fitted, note = fit(concept, flag.default)
                searched.append((fitted, flag, note))
                command += [flag.name, f"{{{concept.param}}}"]
                taken.add(concept.param)
            elif builtin and builtin not in taken and _fills(builtin, flag):
                filled.append((builtin, flag))
                command += [flag.name, f"{{{builtin}}}"]
                taken.add(builtin)
            elif flag.required:
                command += [flag.name, f"{{{TODO}{_ident(flag.name)}}}"] if flag.metavar else [flag.name]
                todo += [(flag.name, command[-1])] if flag.metavar else []
            else:
                left.append(flag)
    if not searched:
        raise ScaffoldError(
            f"{prefix[-1]}: no flag hpsearch knows how to search; looked for {looked_for()}; "
            "write the study file by hand (README: Use your existing script)"
        )
    text = " ".join(h.text for _, h in levels)
    dests = {k for _, h in levels for f in h.flags for k in f.keys}
    hints = [m for m in _METRIC.findall(text) if m not in dests]
    chosen = metric or (hints[0] if hints else "val_accuracy")
    metric_from = "given" if metric else "from the script's help" if hints else "hpsearch's default"
    direction = direction or ("minimize" if _LOWER_IS_BETTER.search(chosen) else "maximize")
    missing = tuple(b for b in FILLED if b not in taken)
    return Scaffold(
        name, tuple(command), chosen, direction, metric_from, tuple(searched), tuple(filled), tuple(left),
        tuple(todo), source, missing,
    )  # fmt: skip


def _fills(builtin: str, flag: Flag) -> bool:
    """Whether hpsearch's value fits the flag: it takes a value, and one the flag's choices allow."""
    needs = {"split": {"val", "test"}, "device": {"cpu", "cuda:0"}}.get(builtin, set())
    return bool(flag.metavar) and (not flag.choices or needs <= set(flag.choices))


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name.lstrip("-")).lower()


def fit(concept: Concept, default: str | None) -> tuple[Concept, str]:
    """The recipe's domain widened to hold the script's default (when its help shows one), and a note."""
    try:
        value = float(default) if default is not None else math.nan
    except ValueError:
        value = math.nan
    if math.isnan(value) or value < 0 or (concept.limits and value > concept.limits[1]):
        return concept, ""
    if concept.values:
        if value in concept.values:
            return concept, ""
        ints = value == int(value) and all(isinstance(v, int) for v in concept.values)  # batch sizes stay ints
        values = tuple(sorted({*concept.values, int(value) if ints else value}))
        return replace(concept, values=values), f"the script's default {default} added"
    low, high = concept.low, concept.high
    if concept.log and value > 0:
        low, high = min(low, 10 ** math.floor(math.log10(value))), max(high, 10 ** math.ceil(math.log10(value)))
    elif not concept.log:
        low, high = min(low, value), max(high, value)
    if (low, high) == (concept.low, concept.high):
        return concept, ""
    return replace(concept, low=low, high=high), f"widened to hold the default {default}"


def number(value: float) -> str:
    """A number as TOML reads it, short: 0, 1e-4, 0.95, 1.0, 64."""
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0.0"
    if abs(value) < 1e-2:
        mantissa, exponent = f"{value:e}".split("e")
        short = f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return short if float(short) == value else repr(value)
    return repr(float(value))


def render(s: Scaffold, study_file: str) -> str:
    """The study file's TOML: the command, the searched params' tables, a CHECK comment where to look."""
    from hpsearch.workloads.spec import PYTHON_NAMES, Workload

    command, own = str(Workload(command=s.command)), s.command[0] in PYTHON_NAMES
    lines = [
        f"# A study of the script, written by `hpsearch init` from `{s.source}`.",
        "# Read each CHECK, then: hpsearch coarse " + study_file + f" && hpsearch refine {s.name}",
        f"name = {_string(s.name)}",
        f"metric = {_string(s.metric)}   # {s.metric_from}",
        "# CHECK: the script prints the metric in a JSON line per epoch, e.g. "
        f'{{"epoch": 1, "{s.metric}": 0.9}} (README: How the script reports)',
        f"direction = {_string(s.direction)}",
        "",
        "[workload]   # runs in this file's folder" + ("; `python` is hpsearch's own interpreter" if own else ""),
        f"command = {_string(command)}",
    ]
    if s.filled:
        lines.append("# hpsearch fills in per trial: " + ", ".join(f"{{{b}}} ({f.name})" for b, f in s.filled))
    lines += [f"# CHECK: {MISSING[b]}" for b in s.missing]
    lines += [f"# TODO: {t} is required and its help shows no value: write it in place of {p}" for t, p in s.todo]
    if s.left:
        lines.append("# Left off the command line, so the script's own default runs (the help shows a default only")
        lines.append("# with ArgumentDefaultsHelpFormatter; its text may not be the value). To search one, add")
        lines.append("# `--flag {name}` to the command and a [params.name] table:")
        lines += [f"#   {f.name}" + (f" {f.metavar}" if f.metavar else "") + _shown(f.default) for f in s.left]
    lines += [
        "",
        "[coarse]   # wide ranges, short trials, many of them",
        "trials = 30",
        "epochs = 2",
        "",
        "[refine]   # narrowed around the best coarse trials, trained longer (no lr decay)",
        "trials = 20",
        "epochs = 15",
    ]
    for c, f, note in s.searched:
        lines += ["", f"[params.{c.param}]   # {f.name}{_shown(f.default)}: {c.why}" + (f"; {note}" if note else "")]
        if c.values:
            lines.append(f"values = [{', '.join(number(v) for v in c.values)}]")
        else:
            lines += [f"low = {number(c.low)}", f"high = {number(c.high)}"] + (["log = true"] if c.log else [])
        if c.limits:
            lines.append(f"limits = [{number(c.limits[0])}, {number(c.limits[1])}]")
    return "\n".join(lines) + "\n"


def _shown(default: str | None) -> str:
    return f" (default: {default})" if default is not None else ""


def _string(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    import json

    return json.dumps(text)


@dataclass(frozen=True)
class Written:
    """What `scaffold` made: the study file's path (None: not written, the caller prints `text`)."""

    path: Path | None
    text: str
    scaffold: Scaffold


def study_name(script: Path, name: str | None = None) -> str:
    """The study's name: `name`, else the script's stem with what a name cannot hold as '_'.
    Raises ScaffoldError for a name a study file cannot take."""
    from hpsearch.spec import NAME_RE

    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", script.stem).lstrip(".-") or "study"
    if not NAME_RE.match(name):
        raise ScaffoldError(f"$name {name!r} is not a valid study name; use letters, digits, '_', '-', '.'")
    return name


def study_path(script: Path) -> Path:
    """Where the study file goes by default: next to the script, so its command reads `python train.py`."""
    return script.with_suffix(".toml")


def scaffold(
    script: Path,
    output: Path | None = None,
    to_stdout: bool = False,
    name: str | None = None,
    metric: str | None = None,
    direction: str | None = None,
    python: str = "python",
    subcommand: str | None = None,
    timeout: float = HELP_TIMEOUT_S,
    force: bool = False,
) -> Written:
    """Read `script`'s help (and its training subcommand's) and write the study file for it.

    The command runs in the study file's folder, so the script is named relative to it (to the current
    folder with to_stdout). `python` is the program the command names ("python": hpsearch's own
    interpreter); the help is read with the same. Raises ScaffoldError or helptext.ScriptHelpError."""
    import sys

    from hpsearch.workloads.spec import PYTHON_NAMES

    if not script.is_file():
        raise ScaffoldError(f"{script}: no such script; pass the path of the training script")
    path = None if to_stdout else (output or study_path(script))
    if path is not None and path.exists() and not force:
        raise ScaffoldError(f"{path} exists; pass $force to overwrite it, or $output for another file")
    name = study_name(script, name)
    folder = (path.parent if path is not None else Path.cwd()).absolute()
    program = python if python in PYTHON_NAMES or "/" not in python else str(Path(python).absolute())
    prefix = (program, os.path.relpath(script.absolute(), folder))
    runs = [sys.executable if python in PYTHON_NAMES else program, str(script.absolute())]
    wanted = subcommand.split() if subcommand else []
    levels: list[tuple[tuple[str, ...], HelpText]] = []
    words: tuple[str, ...] = ()
    while True:
        said = [*prefix, *(w for ws, _ in levels for w in ws), *words, "--help"]
        text = read_help([*runs, *said[2:]], script.parent.absolute(), timeout, " ".join(said))
        if levels and text == levels[-1][1].text:
            raise ScaffoldError(
                f"`{' '.join(said)}` prints the script's own help, not the subcommand's (the script takes "
                "required arguments before it); write the study file by hand"
            )
        levels.append((words, parse_help(text)))
        if not levels[-1][1].subcommands or len(levels) > 3:
            break
        words = (pick_subcommand(levels[-1][1], wanted.pop(0) if wanted else None, " ".join(said[:-1])),)
    if wanted:
        raise ScaffoldError(f"`{' '.join(prefix)}` has no subcommand {wanted[0]!r} to pick; drop $subcommand")
    source = " ".join([*prefix, *(w for ws, _ in levels for w in ws), "--help"])
    plan_ = plan(levels, prefix, name, metric, direction, source)
    text = render(plan_, str(path) if path is not None else "STUDY_FILE")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return Written(path, text, plan_)
