"""The end of the recipe: retrain the best configuration with other seeds, test it once, keep the result.

`final` takes the best configurations of the study's latest stage
(stages.best_configuration: the noise-aware ranking's, in the latest stage with
a completed trial; the one `search` names and the report heads with), retrains each `seeds`
times for `epochs` (default: that stage's), in worker processes where the
machine has room or one after another in this process (final_runs.py: the
same results either way), with every trial record's `split = "test"`
(function workloads read `trial.split`, command workloads `{split}` /
$HPSEARCH_SPLIT, model workloads evaluate on data()'s third split), and
stores the result beside the study in an Optuna study of its own,
`<name>.final`, which is no stage: refine, search, the border checks and
every ranking never read it. A command without {split} is refused unless
its script is said to read $HPSEARCH_SPLIT (`split_from_env`): it would
test on validation. A run whose workload reports a split other than "test"
fails (final_runs.py); when every run fails, nothing is stored.

The test split is looked at once: a second `final` returns the stored result
without running anything, unless `again` (the stored `evaluations` count says
how many times the test split was evaluated). The best configuration is
written as `best.toml` and `best.json` in the study's results folder; for a
model workload also `best.pt`, the trained weights (torch.save(state_dict))
of the best configuration's run with the best test metric.

Ensemble (`ensemble` K > 1, model workloads): every successful run keeps its
raw outputs on the test split (workloads/model.py TestRun); each
configuration's runs are averaged, then the K configurations with equal
weight (softmax probabilities for cross_entropy, raw outputs for mse and a
file loss), and the averaged prediction is scored under the trial's metric
names. Every seed run counts, not only the best one: picking the best seed
would choose by the test split. A function or command workload returns no
predictions: each configuration is reported on its own.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from hpsearch.direction import Direction
from hpsearch.errors import HpsearchError
from hpsearch.repeats import ranked_configs
from hpsearch.search.stages import best_configuration
from hpsearch.store.storage import FINAL_STUDY, LOGS_DIR, StageInfo, Store, results_dir
from hpsearch.trials import derive_seed
from hpsearch.workloads.api import TrialStatus

if TYPE_CHECKING:
    from hpsearch.search.final_runs import Progress, SeedResult

FINAL_ATTR = "hpsearch_final"  # the stored result, on the `<name>.final` Optuna study
WEIGHTS_FILE = "best.pt"
NO_ENSEMBLE = "the averaged prediction needs a model workload (a function or command returns no predictions)"


class FinalRefused(HpsearchError):
    """The final run cannot test: the workload has no test split, or every run failed."""


class SplitUnknown(FinalRefused):
    """A command workload has no {split} (and the script is not said to read $HPSEARCH_SPLIT)."""


@dataclass
class FinalResult:
    """What `final` stored: one entry per configuration, its test metric per seed, mean and spread."""

    data: dict[str, Any]
    ran: bool  # whether this call evaluated the test split (False: the stored result)
    files: list[Path]

    @property
    def evaluations(self) -> int:
        return int(self.data.get("evaluations", 0))


def stored_final(store: Store) -> dict[str, Any] | None:
    """The stored final result of the study, or None when `final` never ran."""
    name = f"{store.name}.{FINAL_STUDY}"
    for summary in store.storage.get_all_studies():
        if summary.study_name == name:
            return summary.user_attrs.get(FINAL_ATTR)
    return None


def final(
    store: Store,
    epochs: int | None = None,
    seeds: int = 3,
    ensemble: int = 1,
    again: bool = False,
    device: str = "auto",
    warn: Callable[[str], None] | None = None,
    workers: int | None = None,
    split_from_env: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> FinalResult:
    """Test the best `ensemble` configurations `seeds` times each (module docstring); store and return it.

    Without `again`, a stored result is returned as is (the test split stays untouched). `workers`:
    processes for the runs (None: as many as the machine has room for; 0 or 1: this process; the
    results are the same). `split_from_env`: a command without {split} reads $HPSEARCH_SPLIT.
    `progress` hears the plan, then each run's start and end. Raises SplitUnknown when a command
    cannot be told the split, FinalRefused when every run failed (e.g. a model workload's data()
    has no test split, or the workload reported evaluating on validation).
    """
    from hpsearch.search.final_runs import RunsPlanned, SeedRun, plan_processes, run_seeds
    from hpsearch.workloads.api import TrialRecord

    stored = stored_final(store)
    if stored is not None and not again:
        return FinalResult(stored, False, write_best(store, stored))
    if seeds < 1 or ensemble < 1:
        raise HpsearchError("$seeds and $ensemble must be at least 1")
    found = best_configuration(store)  # THE best: the one `search` names and the report heads with
    stage = found[0] if found is not None else store.stage(None)
    _check_split_known(stage, split_from_env)
    if stored is not None and warn is not None:
        warn(
            f"the test split of {store.name!r} was evaluated {stored.get('evaluations', 0)} time(s) before; "
            "every look at it makes the test figure less honest"
        )
    configs = ranked_configs(store.trials(stage), stage.spec.direction)[:ensemble]
    if not configs:
        raise HpsearchError(f"stage {stage.name} of {store.name!r} has no completed trials; run the search first")
    epochs = epochs or stage.settings.epochs
    logs = (results_dir(store.directory) / store.name / LOGS_DIR / FINAL_STUDY).resolve()
    logs.mkdir(parents=True, exist_ok=True)
    pairs = [(rank, config, i) for rank, config in enumerate(configs, 1) for i in range(seeds)]
    runs = [
        SeedRun(
            rank,
            i,
            TrialRecord(
                number=n,
                params=dict(config.params),
                epochs=epochs,
                seed=derive_seed("final", stage.settings.seed, rank, i),
                stage=FINAL_STUDY,
                study=store.name,
                metric=stage.spec.metric,
                log_path=str(logs / f"trial-{n}.log"),
                workdir=stage.spec.folder,
                split="test",
                log_limit=stage.spec.limits.log_limit,
            ),
        )
        for n, (rank, config, i) in enumerate(pairs)
    ]
    slots = plan_processes(workers, len(runs), device)
    # Loaded here only when it trains here, or scores the ensemble here (a model workload's data()).
    model = stage.spec.workload.kind == "model"
    fn = _load(stage) if not slots or (model and ensemble > 1) else None
    hear = progress or (lambda event: None)
    hear(RunsPlanned(len(runs), len(configs), slots, logs))
    results = run_seeds(stage.spec.workload, runs, slots, device, hear, fn)
    entries, outputs, best = _collect(configs, results, stage.spec.metric, stage.spec.direction, ensemble > 1)
    reasons = [f["reason"] for e in entries for f in e["failed"]]
    if not any(e["runs"] for e in entries):
        raise FinalRefused(f"every final run of {store.name!r} failed, nothing was tested: {reasons[0]}")
    data = {
        "stage": stage.name,
        "epochs": epochs,
        "seeds": seeds,
        "metric": stage.spec.metric,
        "direction": stage.spec.direction.value,
        "configs": entries,
        "failed": reasons,
        "evaluations": (stored or {}).get("evaluations", 0) + 1,
        "ensemble": _ensemble(fn, outputs, len(configs), stage.spec.metric, model),
        "weights": None if best is None else {"file": WEIGHTS_FILE, "seed": best[1], "value": best[0]},
    }
    weights = results_dir(store.directory) / store.name / WEIGHTS_FILE
    weights.unlink(missing_ok=True)  # a best.pt of an earlier final belongs to another run
    if best is not None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        best[2].save(weights)
    study = optuna.create_study(storage=store.storage, study_name=f"{store.name}.{FINAL_STUDY}", load_if_exists=True)
    study.set_user_attr(FINAL_ATTR, data)
    return FinalResult(data, True, write_best(store, data))


def _collect(
    configs: list[Any], results: list[SeedResult], metric: str, direction: Direction, ensemble: bool
) -> tuple[list[dict[str, Any]], list[list[Any]], tuple[float, int, Any] | None]:
    """Each configuration's entry (its runs' values, failures, mean and spread); the test outputs of
    every successful run when `ensemble` (outputs[c][r]: configuration c's run r); and the best
    configuration's run with the best value that left a TestRun, as (value, seed, TestRun), or None."""
    entries, outputs, best = [], [], None
    for rank, config in enumerate(configs, 1):
        done: list[dict[str, Any]] = []
        failed, kept = [], []
        for result in (r for r in results if r.run.rank == rank):
            value, seed = result.metrics.get(metric), result.run.record.seed
            if result.state != TrialStatus.COMPLETE or value is None or not math.isfinite(value):
                failed.append({"seed": seed, "reason": result.reason or str(result.state)})  # stored: its text
                continue
            done.append({"seed": seed, "value": value, "metrics": result.metrics})
            if result.kept is not None:
                if ensemble:
                    kept.append(result.kept.outputs)
                if rank == 1 and (best is None or direction.better(value, best[0])):
                    best = (value, seed, result.kept)
        if kept:
            outputs.append(kept)
        values = [r["value"] for r in done]
        entries.append(
            {
                "rank": rank,
                "params": config.params,
                "val_mean": config.mean,
                "val_n": config.n,
                "runs": done,
                "failed": failed,
                "mean": statistics.fmean(values) if values else None,
                "spread": statistics.stdev(values) if len(values) > 1 else None,
            }
        )
    return entries, outputs, best


def _check_split_known(stage: StageInfo, split_from_env: bool) -> None:
    """Refuse a command that cannot be told to evaluate on the test split (it would test on validation)."""
    from hpsearch.workloads.spec import placeholders, resolve

    command = stage.spec.workload.command
    if not command or split_from_env:
        return
    if ("builtin", "split") not in {resolve(name, stage.space.names) for name in placeholders(command)}:
        raise SplitUnknown(
            f"{stage.spec.path}: the command `{stage.spec.workload}` has no {{split}}, so the final run cannot tell "
            "the script to evaluate on the test split and would report validation as test; add {split} to the "
            "command, as the argument that picks the split it evaluates on, or pass $split_from_env if the script "
            "reads $HPSEARCH_SPLIT"
        )


def _ensemble(fn: Any, outputs: list[list[Any]], k: int, metric: str, model: bool) -> dict[str, Any] | None:
    """The ensemble's entry (module docstring): None for one configuration."""
    if k < 2:
        return None
    if not model or not outputs:
        return {
            "k": k,
            "runs": 0,
            "metrics": {},
            "value": None,
            "reason": NO_ENSEMBLE if not model else "no run succeeded",
        }
    metrics = fn.ensemble_metrics(outputs)
    value = metrics.get(metric)
    reason = "" if value is not None else f"no {metric} for a prediction (it scores {', '.join(metrics)})"
    return {"k": len(outputs), "runs": sum(map(len, outputs)), "metrics": metrics, "value": value, "reason": reason}


def _load(stage: StageInfo) -> Callable[..., Any]:
    """The workload, loaded once for every run here (a model workload's data() is read once)."""
    from hpsearch.workloads.loader import load_workload

    return load_workload(stage.spec.workload)


def write_best(store: Store, data: dict[str, Any]) -> list[Path]:
    """The best configuration as best.toml and best.json in the study's results folder; their paths."""
    folder = results_dir(store.directory) / store.name
    folder.mkdir(parents=True, exist_ok=True)
    best = data["configs"][0]
    head = f"# {store.name}: best of {data['stage']}, test {data['metric']} = {_fmt(best['mean'])}"
    lines = [
        head + (f" ± {_fmt(best['spread'])}" if best["spread"] is not None else "") + f" ({len(best['runs'])} seeds)"
    ]
    lines += [
        f"{k if re.fullmatch(r'[A-Za-z0-9_-]+', k) else json.dumps(k)} = {json.dumps(v)}"
        for k, v in best["params"].items()
    ]
    toml, js = folder / "best.toml", folder / "best.json"
    toml.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(best["params"], indent=2) + "\n")
    weights = folder / WEIGHTS_FILE
    return [toml, js] + ([weights] if data.get("weights") and weights.is_file() else [])


def summary(data: dict[str, Any]) -> str:
    """The stored result in one line (leaderboard, studies, report): the best configuration's test metric
    mean ± spread, the ensemble's, and how many times the test split was evaluated."""
    best, ens, looks = data["configs"][0], data.get("ensemble"), data.get("evaluations", 0)
    text = _fmt(best["mean"]) + (f" ± {_fmt(best['spread'])}" if best["spread"] is not None else "")
    line = f"final: test {data['metric']} {text} ({len(best['runs'])} seed(s), from {data['stage']})"
    if ens:
        shown = f"{_fmt(ens['value'])} ({ens['runs']} runs averaged)" if ens["value"] is not None else ens["reason"]
        line += f"; ensemble of {ens['k']}: {shown}"
    return line + f"; test split evaluated {looks} time(s)"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
