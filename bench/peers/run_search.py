"""`hpsearch search` on a bench/peers workload, through the library, in the main .venv.

The study is written from common's space (the same box every peer searches: for the networks, the
study files' studies/mnist1d_fn.toml and studies/digits_mlp.toml params) with [refine] epochs =
max_epochs (the longest fidelity, the length `score.py` retrains), [coarse] seed = the run's seed, and
the rest at hpsearch's defaults: `search` plans its stages from the budget (recipe.plan_stages: coarse
TPE at a third of refine's length, then refine stages while the best moves), trials one at a time in
this process (InlineExecutor), no pruner. Its workload is bench/peers/workloads.py, which trains through
common.Ledger, so hpsearch's own count (recipe.spent) and the ledger's are both written. The pick is
search's best configuration (repeats.ranked_configs of its last stage, as `hpsearch final` takes it);
`pick_pooled` (a measurement, not scored) is the best of every run at the final length, all stages pooled.
`search` may widen a range whose best lies on its border (a log range beyond [1e-4, 1], a value set by
one value): the peers cannot, by design of their spaces.

    .venv/bin/python bench/peers/run_search.py --method search --workload mnist1d --seed 0 --budget 20
    .venv/bin/python bench/peers/run_search.py --method search_population --workload mnist1d --seed 0
"""

from __future__ import annotations

import tempfile
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import common

from hpsearch.dispatch import DispatchConfig, make_executor
from hpsearch.repeats import ranked_configs
from hpsearch.search.recipe import search, spent
from hpsearch.spec import parse_spec
from hpsearch.store.storage import StageInfo, Store


def params_table(space: tuple[common.Param, ...]) -> dict[str, dict[str, Any]]:
    """The space as a study file's [params] tables."""
    table: dict[str, dict[str, Any]] = {}
    for p in space:
        entry: dict[str, Any] = (
            {"low": p.low, "high": p.high, "log": p.log} if isinstance(p, common.Float) else {"values": list(p.values)}
        )
        if p.limits is not None:
            entry["limits"] = list(p.limits)
        table[p.name] = entry
    return table


# --method search_population: the same search on MNIST-1D's model workload, studies/mnist1d_cnn.toml's
# [workload] table (hpsearch builds the same CNN and trains it with SGD at batch 100 on the same
# splits), with --population auto, so that trials that differ only in optimiser values train together
# as one vectorized model (hpsearch/population/). Only MNIST-1D has its network as a model workload here.
MODEL_STUDIES = {"mnist1d": common.ROOT / "studies" / "mnist1d_cnn.toml"}


def model_workload(name: str) -> dict[str, Any]:
    """The study file's [workload] table, its files named by absolute path (the spec here lives elsewhere)."""
    study = MODEL_STUDIES[name]
    table = dict(tomllib.loads(study.read_text())["workload"])
    for key in ("model", "data"):
        table[key] = str(study.parent / table[key])
    return table


def main() -> None:
    args = common.arguments(__doc__.splitlines()[0], ("search", "search_population"), "search")
    population = args.method == "search_population"
    if population and args.workload not in MODEL_STUDIES:
        raise SystemExit(f"search_population runs on {', '.join(MODEL_STUDIES)} only")
    workload = common.WORKLOADS[args.workload]
    ledger = common.Ledger(workload, args.budget, args.seed)
    common.ACTIVE.append(ledger)
    data = {
        "name": f"peers_{args.workload}",
        "workload": model_workload(args.workload) if population else f"{common.HERE / 'workloads.py'}:{args.workload}",
        "metric": workload.metric,
        "direction": "maximize" if workload.maximize else "minimize",
        "params": params_table(workload.space),
        "coarse": {"seed": args.seed},
        "refine": {"epochs": workload.max_epochs},
    }
    spec = parse_spec(data, common.HERE / "workloads.py")
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        store = Store(spec.name, directory=Path(folder))

        def stage_ended(stage: StageInfo) -> None:
            if population:  # the model workload trains outside the ledger: hpsearch's own count is the charge
                ledger.spent = spent(store)
            configs = ranked_configs(store.trials(stage), spec.direction)
            ledger.track(dict(configs[0].params) if configs else None)

        executor = make_executor(DispatchConfig("cpu", workers=0, population="auto" if population else None))
        result = search(
            store, spec, {"seed": args.seed}, args.budget, executor, say=lines.append, stage_ended=stage_ended
        )
        counted = spent(store)
        last = store.stages()[-1].settings.epochs  # every run at the final length, all stages pooled
        pooled = ranked_configs(
            [t for st in store.stages() if st.settings.epochs == last for t in store.trials(st)], spec.direction
        )
        pick_pooled = dict(pooled[0].params) if pooled else None
        stages = [f"{s.name}: {s.settings.trials} x {s.settings.epochs} epochs" for s in store.stages()]
    pick = dict(result.best.params) if result.best is not None else None
    if population:
        ledger.spent = counted
    settings = {
        "plan": "auto (recipe.plan_stages from the budget)",
        "refine_epochs": workload.max_epochs,
        "executor": "InlineExecutor('cpu'): " + ("--population auto" if population else "one trial at a time"),
        "workload": "model workload (studies/mnist1d_cnn.toml's)" if population else "function (workloads.py)",
        "pruner": "none",
        "params": data["params"],
    }
    tool = {"hpsearch": metadata.version("hpsearch"), "optuna": metadata.version("optuna")}
    common.write_result(
        args,
        args.method,
        ledger,
        pick,
        tool,
        settings,
        hpsearch_spent=counted,
        stages=stages,
        decisions=lines,
        pick_pooled=pick_pooled,
    )


if __name__ == "__main__":
    main()
