"""DEHB (differential evolution + Hyperband) on a bench/peers workload.

Run in .venv-peers/dehb (`make bench-peers`; DEHB pins numpy < 2), through DEHB's ask/tell interface so
that common.Ledger charges every epoch: DEHB asks for (configuration, fidelity), the fidelity is rounded
to whole epochs and trained from scratch, DEHB is told the loss (1 - val_accuracy, or f) and the epochs
as its cost. Settings, each DEHB's default: eta 3, mutation factor 0.5, crossover 0.5, strategy
rand1_bin, one worker; min_fidelity 1 and max_fidelity max_epochs epochs (fidelities 2.2, 6.7, 20 at
eta 3 and 20 epochs). The pick is DEHB's incumbent (its best loss at any fidelity, as DEHB ranks).

    .venv-peers/dehb/bin/python bench/peers/run_dehb.py --workload mnist1d --seed 0 --budget 20
"""

from __future__ import annotations

import tempfile
from importlib import metadata

import common


def main() -> None:
    args = common.arguments(__doc__.splitlines()[0])
    from dehb import DEHB

    workload = common.WORKLOADS[args.workload]
    ledger = common.Ledger(workload, args.budget, args.seed)
    with tempfile.TemporaryDirectory() as folder:
        dehb = DEHB(
            cs=common.configspace(workload.space, args.seed),
            min_fidelity=1,
            max_fidelity=workload.max_epochs,
            eta=3,
            n_workers=1,
            seed=args.seed,
            output_path=folder,
            log_level="ERROR",
            save_freq=None,
        )
        while True:
            job = dehb.ask()
            epochs = max(1, round(float(job["fidelity"])))
            if not ledger.fits(epochs):
                break
            evaluation = ledger.evaluate(dict(job["config"]), epochs)
            dehb.tell(job, {"fitness": workload.loss(evaluation.value), "cost": evaluation.ran})
            if dehb.inc_config is not None:
                ledger.track(dict(dehb.get_incumbents()[0]))
        pick = dict(dehb.get_incumbents()[0]) if dehb.inc_config is not None else None
    settings = {
        "eta": 3,
        "mutation_factor": 0.5,
        "crossover_prob": 0.5,
        "strategy": "rand1_bin",
        "n_workers": 1,
        "min_fidelity": 1,
        "max_fidelity": workload.max_epochs,
        "fidelity rounding": "round(fidelity) epochs, trained from scratch",
        "incumbent": "DEHB's: the best loss seen at any fidelity",
        "space": "ConfigSpace: lr UniformFloat (log), value sets as OrdinalHyperparameter",
    }
    common.write_result(args, "dehb", ledger, pick, {"dehb": metadata.version("dehb")}, settings)


if __name__ == "__main__":
    main()
