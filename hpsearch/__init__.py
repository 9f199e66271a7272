"""hpsearch: coarse-to-fine hyperparameter search for PyTorch models.

The library API, importable as `from hpsearch import load_spec, Store, start_coarse, run_stage`:

    spec = load_spec("studies/digits_mlp.toml")
    store = Store(spec.name)
    info = start_coarse(store, spec, {})
    result = run_stage(store, info, make_executor(DispatchConfig(workers=2)))
    print(frame([info], [result.trials]).head())

Importing hpsearch never imports torch (nor Optuna, until a name that needs
it is used): the CLI starts fast, and torch is loaded only where trials train.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; loaded on first use (PEP 562).
_EXPORTS = {
    # the study file
    "load_spec": "hpsearch.spec",
    "parse_spec": "hpsearch.spec",
    "StudySpec": "hpsearch.spec",
    "StageSpec": "hpsearch.spec",
    "Direction": "hpsearch.direction",
    "Space": "hpsearch.space",
    "Range": "hpsearch.space",
    "Choice": "hpsearch.space",
    "Strategy": "hpsearch.strategy",
    "Pruner": "hpsearch.pruner",
    # the search
    "Store": "hpsearch.store.storage",
    "StageInfo": "hpsearch.store.storage",
    "start_coarse": "hpsearch.search.stages",
    "plan_refine": "hpsearch.search.stages",
    "run_stage": "hpsearch.search.stages",
    "join_stage": "hpsearch.search.stages",
    "Coordinator": "hpsearch.search.coordinator",
    "StageResult": "hpsearch.search.coordinator",
    "TrialEvent": "hpsearch.search.coordinator",
    "derive_space": "hpsearch.refine",
    "check_borders": "hpsearch.border",
    "BorderFlag": "hpsearch.border",
    "ranked_trials": "hpsearch.trials",
    "DispatchConfig": "hpsearch.dispatch",
    "make_executor": "hpsearch.dispatch",
    "InlineExecutor": "hpsearch.dispatch",
    "PoolExecutor": "hpsearch.dispatch",
    # results
    "frame": "hpsearch.leaderboard",
    "leaderboard": "hpsearch.leaderboard",
    "write_csv": "hpsearch.leaderboard",
    "study_summaries": "hpsearch.leaderboard",
    "build_report": "hpsearch.report.html",
    # workloads
    "TrialRecord": "hpsearch.workloads.api",
    "TrialContext": "hpsearch.workloads.api",
    "TrialOutcome": "hpsearch.workloads.api",
    "TrialStatus": "hpsearch.workloads.api",
    "run_trial": "hpsearch.workloads.function",
    "load_workload": "hpsearch.workloads.loader",
    "Workload": "hpsearch.workloads.spec",
    "CommandWorkload": "hpsearch.workloads.command",
    "emit": "hpsearch.workloads.command",
    "ModelWorkload": "hpsearch.workloads.model",
    "report_population": "hpsearch.workloads.population",
    # instruments
    "run_sanity": "hpsearch.instruments.sanity",
    "find_lr_range": "hpsearch.instruments.lr_range",
    # errors
    "HpsearchError": "hpsearch.errors",
    "SpecError": "hpsearch.errors",
    "WorkloadError": "hpsearch.errors",
    "StorageError": "hpsearch.errors",
    "StudyNotFound": "hpsearch.errors",
    "StageFailed": "hpsearch.errors",
    "DispatchError": "hpsearch.errors",
    "TrialStopped": "hpsearch.errors",
    "TrialFailed": "hpsearch.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hpsearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
