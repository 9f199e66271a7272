"""NePS (neural-pipeline-search) on a bench/peers workload: the optimizer NePS picks for the space.

Run in .venv-peers/neps (`make bench-peers`), through NePS's AskAndTell wrapper so that common.Ledger
charges every epoch. The space is a neps.SearchSpace (lr HPOFloat, log; value sets HPOCategorical;
epochs HPOInteger(1, max_epochs, is_fidelity=True)) without priors, and the optimizer is NePS's "auto"
choice for it, as `neps.run` makes it: for a fidelity and no prior, its hyperband (eta 3, uniform
sampler; rungs at 2, 6 and 20 epochs for 20). PriorBand needs a prior the user believes in, and ifBO a pretrained model
downloaded at run time (never here): neither runs. Each sampled (configuration, epochs) is trained
from scratch; NePS is told the loss (1 - val_accuracy, or f) and the epochs as its cost. NePS seeds
from the global random generators (random, numpy, torch), seeded with the run's seed; torch's state
is kept across each training, which reseeds it. The pick is NePS's best trial as neps.status reports
it: the lowest loss of any successful trial, at any fidelity.

    .venv-peers/neps/bin/python bench/peers/run_neps.py --workload mnist1d --seed 0 --budget 20
"""

from __future__ import annotations

import json
import random
from importlib import metadata
from typing import Any

import common
import numpy as np

FIDELITY = "epochs"


def search_space(workload: common.Workload) -> Any:
    import neps

    elements: dict[str, Any] = {}
    for p in workload.space:
        if isinstance(p, common.Float):
            elements[p.name] = neps.HPOFloat(lower=p.low, upper=p.high, log=p.log)
        else:
            elements[p.name] = neps.HPOCategorical(choices=list(p.values))
    elements[FIDELITY] = neps.HPOInteger(lower=1, upper=workload.max_epochs, is_fidelity=True)
    return neps.SearchSpace(elements)


def main() -> None:
    args = common.arguments(__doc__.splitlines()[0])
    import neps
    import torch
    from neps.optimizers import load_optimizer

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    workload = common.WORKLOADS[args.workload]
    ledger = common.Ledger(workload, args.budget, args.seed)
    optimizer, info = load_optimizer("auto", search_space(workload))
    asker = neps.AskAndTell(optimizer=optimizer)
    best: tuple[float, dict[str, Any]] | None = None
    while True:
        trial = asker.ask()
        config = dict(trial.config)
        epochs = int(config.pop(FIDELITY))
        if not ledger.fits(epochs):
            break
        state = torch.get_rng_state()
        evaluation = ledger.evaluate(config, epochs)
        torch.set_rng_state(state)
        loss = workload.loss(evaluation.value)
        asker.tell(trial, {"objective_to_minimize": loss, "cost": evaluation.ran})
        if best is None or loss < best[0]:
            best = (loss, config)
            ledger.track(best[1])
    settings = {
        "optimizer": f"{info['name']} (NePS's 'auto' for a space with a fidelity and no prior)",
        "neps_info": json.loads(json.dumps({k: v for k, v in info.items() if k != "name"}, default=str)),
        "fidelity": f"epochs: HPOInteger(1, {workload.max_epochs}, is_fidelity=True); each trained from scratch",
        "space": "neps.SearchSpace: lr HPOFloat (log), value sets HPOCategorical, no priors",
        "incumbent": "the lowest loss of any successful trial, at any fidelity (neps.status)",
    }
    pick = best[1] if best is not None else None
    tool = {"neural-pipeline-search": metadata.version("neural-pipeline-search")}
    common.write_result(args, "neps", ledger, pick, tool, settings)


if __name__ == "__main__":
    main()
