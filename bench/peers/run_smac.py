"""SMAC3's MultiFidelityFacade (Hyperband intensifier, random-forest model) on a bench/peers workload.

Run in .venv-peers/smac (`make bench-peers`), through SMAC's ask/tell interface so that common.Ledger
charges every epoch: SMAC asks for (configuration, budget), the budget is rounded to whole epochs and
trained from scratch, SMAC is told the loss (1 - val_accuracy, or f). Settings, each SMAC's default
for this facade (its multi-fidelity example): eta 3, one seed per configuration, incumbent =
"highest_observed_budget"; min_budget 1 and max_budget max_epochs epochs; n_trials = the budget (an
upper bound on evaluations: every one costs at least an epoch), which also sizes SMAC's random
initial design (10 per hyperparameter, at most a quarter of n_trials). The pick is SMAC's incumbent.

    .venv-peers/smac/bin/python bench/peers/run_smac.py --workload mnist1d --seed 0 --budget 20
"""

from __future__ import annotations

import tempfile
from importlib import metadata

import common


def main() -> None:
    args = common.arguments(__doc__.splitlines()[0])
    from smac import MultiFidelityFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    workload = common.WORKLOADS[args.workload]
    ledger = common.Ledger(workload, args.budget, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        scenario = Scenario(
            common.configspace(workload.space, args.seed),
            output_directory=f"{folder}/smac3_output",
            n_trials=args.budget,
            min_budget=1,
            max_budget=workload.max_epochs,
            seed=args.seed,
        )

        def target(config: object, seed: int = 0, budget: float = 1.0) -> float:  # SMAC checks its signature
            raise RuntimeError("run through ask/tell")

        intensifier = MultiFidelityFacade.get_intensifier(scenario)  # eta 3, as the facade's default
        smac = MultiFidelityFacade(scenario, target, intensifier=intensifier, overwrite=True, logging_level=40)
        while True:
            info = smac.ask()
            epochs = max(1, round(info.budget))
            if not ledger.fits(epochs):
                break
            params = dict(info.config)
            seed = ledger.seed_for(len(ledger.evaluations)) if info.seed is None else int(info.seed)
            evaluation = ledger.evaluate(params, epochs, seed=seed)
            smac.tell(info, TrialValue(cost=workload.loss(evaluation.value), time=0.0))
            incumbent = smac.intensifier.get_incumbent()
            ledger.track(None if incumbent is None else dict(incumbent))
        incumbent = smac.intensifier.get_incumbent()
    pick = dict(incumbent) if incumbent is not None else None
    settings = {
        "facade": "MultiFidelityFacade (Hyperband intensifier, random forest)",
        "eta": 3,
        "n_seeds": 1,
        "incumbent_selection": "highest_observed_budget",
        "min_budget": 1,
        "max_budget": workload.max_epochs,
        "n_trials": args.budget,
        "deterministic": False,
        "budget rounding": "round(budget) epochs, trained from scratch",
        "space": "ConfigSpace: lr UniformFloat (log), value sets as OrdinalHyperparameter",
    }
    common.write_result(args, "smac", ledger, pick, {"smac": metadata.version("smac")}, settings)


if __name__ == "__main__":
    main()
