"""Options shared by several commands, written once, and the flag names of the library's settings.

Single options are Annotated aliases (DirOpt, StorageOpt, ...). The options
every stage-running command takes (coarse, refine, worker) are dataclasses,
`RunOptions` and `StageOverrides`, whose fields are the options; `@grouped`
spreads a group's fields into the command's signature (so Typer shows them
as ordinary options) and hands the command one object.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from hpsearch.pruner import Pruner
from hpsearch.strategy import Strategy

# The library names settings as they are called in code (errors.py); the CLI shows the flag.
FLAGS = {"directory": "--dir"}


def flag(setting: str) -> str:
    """The flag that sets a library setting: workers -> --workers, per_device -> --per-device."""
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


DirOpt = Annotated[
    Path | None,
    typer.Option("--dir", help="Folder holding one results folder per study [default: $HPSEARCH_DIR or ./studies]."),
]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage URL (sqlite:///x.db, postgresql://...) or .journal file, instead of --dir "
        "[default: $HPSEARCH_STORAGE].",
    ),
]
StageOpt = Annotated[
    str | None, typer.Option("--stage", help="coarse, refine-1, ... or all [default: the latest stage].")
]
SpecArg = Annotated[Path, typer.Argument(metavar="STUDY_FILE", help="The study file (.toml).")]
NameArg = Annotated[str, typer.Argument(help="The study's name (from its study file).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Device the workload trains on (cpu, cuda:0, ...).")]


@dataclass
class StageOverrides:
    """Stage settings given on the command line; None = the study file's (or the stored stage's)."""

    trials: Annotated[
        int | None, typer.Option("--trials", min=1, help="Trials of this stage (overrides the study file).")
    ] = None
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs per trial (overrides the study file).")
    ] = None
    strategy: Annotated[
        Strategy | None,
        typer.Option("--strategy", help="random (recipe default: beats grid when few params matter), grid, or tpe."),
    ] = None
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of the sampler and of every trial.")] = None
    top_k: Annotated[
        int | None, typer.Option("--top-k", min=1, help="Best trials the border check and the next refine look at.")
    ] = None
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures",
            min=1,
            help="Failed trials are replaced until the stage has its trials; give up after this many failures "
            "in one run (then exit 1; the same command continues) [default: the stage's trials].",
        ),
    ] = None

    def as_dict(self) -> dict[str, Any]:
        """What stages.start_coarse / plan_refine take: plain values, None where not given."""
        return {k: v.value if isinstance(v, Enum) else v for k, v in dataclasses.asdict(self).items()}


@dataclass
class RunOptions:
    """How a stage-running command dispatches its trials and shows them."""

    top: Annotated[int, typer.Option("--top", min=1, help="Rows of the leaderboard shown.")] = 10
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False
    devices: Annotated[
        str,
        typer.Option(
            "--devices",
            help="Where trials train: auto (every visible CUDA GPU, else the CPU), cpu, cuda (all GPUs), "
            "or a list such as cuda:0,cuda:2. Each GPU worker sees only its own GPU.",
        ),
    ] = "auto"
    per_device: Annotated[
        int | None, typer.Option("--per-device", min=1, help="Trials running at once on each GPU [default: 1].")
    ] = None
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=0,
            help="CPU worker processes [default: one per core]; torch's threads are split between them so the "
            "cores are not oversubscribed. 0 runs the trials one by one in this process (for debugging: no "
            "--trial-timeout, and a trial that hangs is not detected as stalled).",
        ),
    ] = None
    trial_timeout: Annotated[
        float | None,
        typer.Option(
            "--trial-timeout",
            min=0.001,
            metavar="SECONDS",
            help="Kill a trial running longer than this (its worker is replaced); recorded as FAIL: timeout.",
        ),
    ] = None
    stall_factor: Annotated[
        float | None,
        typer.Option(
            "--stall-factor",
            min=0,
            help="End a trial silent (no report) for this many times the stage's median epoch, never sooner than "
            "--stall-floor; recorded as FAIL: stalled, and replaced. 0 turns stall detection off (not detected "
            "with --workers 0) [default: the study file's stall_factor, else 10].",
        ),
    ] = None
    stall_floor: Annotated[
        float | None,
        typer.Option(
            "--stall-floor",
            min=0,
            metavar="SECONDS",
            help="The least silence called stalled [default: the study file's stall_floor, else 60].",
        ),
    ] = None
    log_limit: Annotated[
        str | None,
        typer.Option(
            "--log-limit",
            metavar="SIZE",
            help="Bytes of output each trial's log keeps, e.g. 10MB: the first and the last half, with a line "
            "saying how much was left out; 0 keeps all [default: the study file's log_limit, else 10MB].",
        ),
    ] = None
    population: Annotated[
        str | None,
        typer.Option(
            "--population",
            metavar="K|auto",
            help="Train K trials at once in one vectorized model per worker, for workloads with a population "
            "entry point (the built-in digits MLP and every model workload; others run one trial per worker, "
            "with a notice). auto: a worker times K = 1, 2, 4, ... up to K = 8 (further while each doubling gains "
            "8%) and keeps the largest K within 8% of the fastest; K = 1 if no K beats it by 8%.",
        ),
    ] = None
    pruner: Annotated[
        Pruner,
        typer.Option(
            "--pruner",
            help="Stop hopeless trials early from their per-epoch metric: none, median (worse than the median of "
            "earlier trials at the same epoch, after 5 trials) or hyperband. Diverged losses are always stopped.",
        ),
    ] = Pruner.none
    track: Annotated[
        list[str] | None,
        typer.Option(
            "--track",
            metavar="KIND=WHERE",
            help="Send every trial to an experiment tracker as it runs (repeatable): mlflow=URI (an MLflow "
            "tracking server, e.g. http://127.0.0.1:5000: a run per stage, a nested run per trial) or "
            "tensorboard=FOLDER (event files with HParams); mlflow_experiment=NAME names the experiment. Replaces "
            "that key of the study file's [trackers] table (KIND= turns it off) and keeps the others.",
        ),
    ] = None

    def as_arguments(self) -> list[str]:
        """These options as a command line gives them (those not at their defaults): for `hpsearch worker`
        run elsewhere (a SLURM task) with the same settings."""
        out: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            option = typing.get_args(typing.get_type_hints(RunOptions, include_extras=True)[f.name])[1]
            name = option.default  # Typer keeps an option's first flag there, the others in param_decls
            if isinstance(value, list):  # a repeatable option: once per value
                out += [part for item in value for part in (name, str(item))]
                continue
            out += [name] if value is True else [name, str(value.value if isinstance(value, Enum) else value)]
        return out

    def overrides(self) -> Any:
        """--stall-factor, --stall-floor, --log-limit as the executor takes them (limits.LimitOverrides)."""
        from hpsearch.limits import LimitOverrides

        return LimitOverrides(self.stall_factor, self.stall_floor, self.log_limit)


def grouped(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Spread the option groups among `fn`'s parameters (typed RunOptions / StageOverrides) into its signature.

    Typer then parses each field as an ordinary option; `fn` receives one
    object per group. The command's own parameters keep their order, first.
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    signature = inspect.signature(fn)
    groups = {name: hints[name] for name in signature.parameters if dataclasses.is_dataclass(hints.get(name))}
    own = [
        p.replace(annotation=hints.get(p.name, p.annotation))
        for n, p in signature.parameters.items()
        if n not in groups
    ]
    spread: list[inspect.Parameter] = []
    for cls in groups.values():
        field_hints = typing.get_type_hints(cls, include_extras=True)
        for f in dataclasses.fields(cls):
            spread.append(
                inspect.Parameter(
                    f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=field_hints[f.name]
                )
            )

    @functools.wraps(fn)
    def command(*args: Any, **kwargs: Any) -> Any:
        for name, cls in groups.items():
            kwargs[name] = cls(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(cls)})
        return fn(*args, **kwargs)

    del command.__wrapped__  # Typer must read the spread signature, not fn's
    command.__signature__ = signature.replace(parameters=own + spread)  # type: ignore[attr-defined]  # read by inspect
    command.__annotations__ = {p.name: p.annotation for p in own + spread}
    return command


BudgetOpt = Annotated[
    int | None,
    typer.Option(
        "--budget",
        min=1,
        metavar="EPOCHS",
        help="Trial-epochs to spend (a pruned or failed trial counts the epochs it ran): of the whole `search` "
        "[default: the study file's budget, else coarse plus two refine stages], or of one stage (coarse, refine).",
    ),
]
TimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="Start no trial after this wall-clock time (90s, 30m, 2h, 1h30m); running trials finish, and the "
        "same command continues the stage it ended.",
    ),
]
