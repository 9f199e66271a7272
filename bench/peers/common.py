"""bench/peers, the shared part: `hpsearch search` against the strongest tuners at equal trial-epochs (issue 29).

Every runner (run_search.py, run_optuna.py, run_smac.py, run_dehb.py, run_neps.py) imports this module,
in its own virtual environment (`make bench-peers`), and so trains the same code on the same splits:

- mnist1d: the paper's small 1-D CNN (studies/mnist1d_train.py's `fit`, studies/mnist1d_data.py's splits:
  3,000 train / 1,000 val of the 4,000 training sequences; test only when scoring), SGD, batch 100;
- digits: hpsearch's built-in digits MLP (hpsearch.workloads.digits.mlp, bench/quality.py's workload);
- hartmann6: the multi-fidelity Hartmann-6 (bench/hartmann.py, mf-prior-bench's "good" preset).

The space of each is written once here (SPACES) and translated by each runner into its tool's terms;
for the two networks it is the study files' (studies/mnist1d_fn.toml, studies/digits_mlp.toml): lr
log-uniform in [1e-4, 1], weight_decay in {0, 1e-5, 1e-4, 1e-3} (log-spaced, zero listed: zero has no
logarithm), momentum in {0.5, 0.9, 0.95, 0.99}. Epochs are the fidelity, 1..max_epochs.

The charge (Ledger): trial-epochs actually run. Every evaluation trains from scratch; an evaluation
stopped early (a pruned trial) pays for the epochs it ran; no evaluation is started unless its full
length fits in what is left of the budget (the rule hpsearch's coordinator follows too), so no method
ever spends more than the budget. Each runner writes one JSON file (write_result): the configuration
it ranks first, the epochs it spent, its tool's version and every setting chosen for it, and the log of
its evaluations. bench/peers/score.py scores them.

    .venv/bin/python bench/peers/common.py --prepare     # the MNIST-1D cache, and the versions installed
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per training, for every method alike (2 shared cores)
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
for _path in (ROOT, ROOT / "studies", ROOT / "bench"):  # after installed packages: bench/ holds loop.py, storage.py...
    if str(_path) not in sys.path:
        sys.path.append(str(_path))

RESULTS = ROOT / "bench" / "results" / "peers"
PEERS_VENV = ROOT / ".venv-peers"
# The seed split: settings may be chosen on SETTINGS_SEEDS; SCORED_SEEDS are never looked at while choosing.
SETTINGS_SEEDS = range(0, 10)
SCORED_SEEDS = range(100, 120)
RETRAIN_SEEDS = (10_000, 10_001, 10_002)  # score.py's retrains of each pick, the same for every method


@dataclass(frozen=True)
class Float:
    name: str
    low: float
    high: float
    log: bool = False
    limits: tuple[float, float] | None = None  # the domain hpsearch's refine may widen to (its study-file key)


@dataclass(frozen=True)
class Values:
    name: str
    values: tuple[float, ...]
    limits: tuple[float, float] | None = None


Param = Float | Values
NETWORK_SPACE: tuple[Param, ...] = (
    Float("lr", 1e-4, 1.0, log=True),
    Values("weight_decay", (0.0, 1e-5, 1e-4, 1e-3)),
    Values("momentum", (0.5, 0.9, 0.95, 0.99), limits=(0.0, 1.0)),
)
HARTMANN_SPACE: tuple[Param, ...] = tuple(Float(f"x{j}", 0.0, 1.0, limits=(0.0, 1.0)) for j in range(6))


@dataclass(frozen=True)
class Workload:
    """One benchmark problem: its space, its fidelity (epochs 1..max_epochs), its default budget."""

    name: str
    space: tuple[Param, ...]
    max_epochs: int
    budget: int  # trial-epochs per search in the full run
    metric: str  # what each epoch reports (hpsearch's study metric)
    maximize: bool

    def loss(self, value: float) -> float:
        """What minimisers see: 1 - accuracy, or f itself; a value that is not finite is the worst."""
        if not math.isfinite(value):
            return 1.0 if self.maximize else 0.0
        return 1.0 - value if self.maximize else value


WORKLOADS = {
    "mnist1d": Workload("mnist1d", NETWORK_SPACE, 20, 400, "val_accuracy", True),
    "digits": Workload("digits", NETWORK_SPACE, 15, 360, "val_accuracy", True),
    "hartmann6": Workload("hartmann6", HARTMANN_SPACE, 20, 400, "f", False),
}

OnEpoch = Callable[[int, float], None]  # (epoch 1.., the metric): may raise Stop to end the run there


def train(
    workload: str, params: dict[str, Any], epochs: int, seed: int, split: str = "val", on_epoch: OnEpoch | None = None
) -> float:
    """Train `params` from scratch for `epochs` and return the last epoch's metric (on `split`)."""
    report = on_epoch or (lambda epoch, value: None)
    if workload == "hartmann6":
        import hartmann

        values = hartmann.curve(params, epochs, seed)
        for epoch, value in enumerate(values, 1):
            report(epoch, value)
        return values[-1]
    import torch

    torch.set_num_threads(1)
    if workload == "mnist1d":
        from mnist1d_train import fit

        p = {k: float(v) for k, v in params.items()}

        def on(epoch: int, metrics: dict[str, float]) -> None:
            report(epoch, metrics["val_accuracy"])

        metrics = fit(p["lr"], p["weight_decay"], p["momentum"], epochs, seed, "cpu", split, report=on)
        return float(metrics["val_accuracy"])
    if workload == "digits":
        from hpsearch.workloads.digits import mlp

        return float(mlp(_DigitsTrial(params, epochs, seed, split, report))["val_accuracy"])
    raise ValueError(f"unknown workload {workload!r}; one of {', '.join(WORKLOADS)}")


class _DigitsTrial:
    """The trial record hpsearch's digits workload reads (as bench/quality.py's)."""

    def __init__(self, params: dict[str, Any], epochs: int, seed: int, split: str, report: OnEpoch) -> None:
        self.params = {k: float(v) for k, v in params.items()}
        self.epochs, self.seed, self.split, self.device, self._report = epochs, seed, split, "cpu", report

    def report(self, epoch: int, **metrics: float) -> None:
        self._report(epoch + 1, metrics["val_accuracy"])


class Stop(Exception):
    """Raised by an on_epoch callback to end an evaluation there (a pruned trial)."""


class BudgetSpent(Exception):
    """The next evaluation does not fit in what is left of the budget."""


@dataclass
class Evaluation:
    number: int
    params: dict[str, Any]
    epochs: int  # asked for
    ran: int  # run, and charged
    value: float  # the metric at the last epoch run
    state: str  # "complete" or "stopped"
    seed: int
    seconds: float  # since the search started, when it ended


@dataclass
class Ledger:
    """The charge of one search: trial-epochs run, the evaluations, and the method's pick over time."""

    workload: Workload
    budget: int
    run_seed: int
    spent: int = 0
    evaluations: list[Evaluation] = field(default_factory=list)
    picks: list[dict[str, Any]] = field(default_factory=list)  # {"spent", "seconds", "params"} when it changes
    start: float = field(default_factory=time.perf_counter)

    @property
    def left(self) -> int:
        return self.budget - self.spent

    def fits(self, epochs: int) -> bool:
        return 0 < epochs <= self.left

    def seconds(self) -> float:
        return time.perf_counter() - self.start

    def seed_for(self, number: int) -> int:
        """The training seed of evaluation `number` of this search (never one of RETRAIN_SEEDS)."""
        return 1_000_000 + self.run_seed * 10_000 + number

    def evaluate(
        self, params: dict[str, Any], epochs: int, seed: int | None = None, on_epoch: OnEpoch | None = None
    ) -> Evaluation:
        """Train `params` from scratch for `epochs`, charging each epoch as it runs; `on_epoch` may raise
        Stop (the evaluation ends "stopped", its epochs paid). Raises BudgetSpent when it does not fit."""
        if not self.fits(epochs):
            raise BudgetSpent(f"{epochs} epochs asked, {self.left} left")
        number = len(self.evaluations)
        seed = self.seed_for(number) if seed is None else seed
        ran, last, state = 0, float("nan"), "stopped"

        def charge(epoch: int, value: float) -> None:
            nonlocal ran, last
            ran, last = epoch, value
            self.spent += 1
            if on_epoch is not None:
                on_epoch(epoch, value)

        try:
            last = train(self.workload.name, params, epochs, seed, "val", charge)
            state = "complete"
        except Stop:
            pass
        finally:  # also when the caller's on_epoch raised something else (hpsearch's TrialStopped): it ran
            clean = {k: _plain(v) for k, v in params.items()}
            self.evaluations.append(Evaluation(number, clean, epochs, ran, last, state, seed, round(self.seconds(), 3)))
        return self.evaluations[-1]

    def track(self, params: dict[str, Any] | None) -> None:
        """Note the method's current pick (its own ranking), when it changed."""
        clean = None if params is None else {k: _plain(v) for k, v in params.items()}
        if clean is not None and (not self.picks or self.picks[-1]["params"] != clean):
            self.picks.append({"spent": self.spent, "seconds": round(self.seconds(), 3), "params": clean})


ACTIVE: list[Ledger] = []  # the ledger of the search this process runs (workloads.py charges hpsearch's trials to it)


def _plain(value: Any) -> Any:
    """A JSON-able Python number or string (numpy scalars and ConfigSpace values included)."""
    if hasattr(value, "item"):
        value = value.item()
    return value


def configspace(space: tuple[Param, ...], seed: int) -> Any:
    """The space as a ConfigSpace (SMAC, DEHB): value sets as ordinals, their order kept."""
    from ConfigSpace import ConfigurationSpace, OrdinalHyperparameter, UniformFloatHyperparameter

    cs = ConfigurationSpace(seed=seed)
    for p in space:
        if isinstance(p, Float):
            cs.add(UniformFloatHyperparameter(p.name, p.low, p.high, log=p.log))
        else:
            cs.add(OrdinalHyperparameter(p.name, list(p.values)))
    return cs


def arguments(description: str, methods: tuple[str, ...] = (), default: str | None = None) -> argparse.Namespace:
    """The runners' shared flags: --workload, --seed, --budget, --out (and --method where one file runs several)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--seed", type=int, default=0, help="the search's seed (SETTINGS_SEEDS / SCORED_SEEDS)")
    parser.add_argument("--budget", type=int, default=None, help="trial-epochs (default: the workload's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (one JSON per method and seed)")
    if methods:
        parser.add_argument("--method", choices=methods, required=default is None, default=default)
    args = parser.parse_args()
    args.budget = args.budget or WORKLOADS[args.workload].budget
    return args


def seed_set(seed: int) -> str:
    return "settings" if seed in SETTINGS_SEEDS else "scored" if seed in SCORED_SEEDS else "other"


def result_path(out: Path, workload: str, method: str, seed: int) -> Path:
    return out / workload / method / f"seed{seed}.json"


def write_result(
    args: argparse.Namespace,
    method: str,
    ledger: Ledger,
    pick: dict[str, Any] | None,
    tool: dict[str, str],
    settings: dict[str, Any],
    **extra: Any,
) -> Path:
    """The runner's result file: its pick, its charge, its tool's version and settings, its evaluations."""
    versions = {name: _version(name) for name in ("numpy", "torch", "optuna", "scikit-learn")}
    data = {
        "method": method,
        "workload": args.workload,
        "seed": args.seed,
        "seed_set": seed_set(args.seed),
        "budget": args.budget,
        "spent": ledger.spent,
        "evaluations_run": len(ledger.evaluations),
        "seconds": round(ledger.seconds(), 2),
        "pick": None if pick is None else {k: _plain(v) for k, v in pick.items()},
        "tool": tool,
        "settings": settings,
        "versions": {"python": platform.python_version(), **{k: v for k, v in versions.items() if v}},
        "max_epochs": ledger.workload.max_epochs,
        **extra,
        "picks": ledger.picks,
        "evaluations": [asdict(e) for e in ledger.evaluations],
    }
    path = result_path(args.out, args.workload, method, args.seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (data["pick"] or {}).items())
    print(
        f"{method} on {args.workload}, seed {args.seed}: spent {ledger.spent}/{args.budget} trial-epochs in "
        f"{len(ledger.evaluations)} evaluations, {data['seconds']:.0f} s; pick {shown or 'none'} -> {path}"
    )
    return path


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def prepare() -> None:
    """Generate and check the MNIST-1D cache (the peers' venvs read it; only this venv has `mnist1d`), and
    print what each peer's venv holds."""
    import mnist1d_data

    data = mnist1d_data.arrays()
    mnist1d_data.check(data)
    print(f"MNIST-1D: {mnist1d_data.cache_file()} ({', '.join(f'{k} {v.shape}' for k, v in data.items())})")
    print(f"main venv: optuna {_version('optuna')}, torch {_version('torch')}, numpy {_version('numpy')}")
    wanted = {"smac": "smac", "dehb": "dehb", "neps": "neural-pipeline-search"}
    for venv, package in wanted.items():
        frozen = PEERS_VENV / venv / "versions.txt"
        lines = frozen.read_text().splitlines() if frozen.is_file() else []
        found = {line.split("==")[0].lower(): line.split("==")[1] for line in lines if "==" in line}
        keep = (package, "configspace", "numpy", "torch", "scikit-learn")
        print(
            f"{PEERS_VENV.name}/{venv}: "
            + (", ".join(f"{k} {found[k]}" for k in keep if k in found) or "not built (make bench-peers)")
        )


if __name__ == "__main__":
    if sys.argv[1:] != ["--prepare"]:
        sys.exit("usage: python bench/peers/common.py --prepare")
    prepare()
