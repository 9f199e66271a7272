"""Run bench/peers: every method on every workload for the given seeds, one process at a time.

Each run is its runner in its own interpreter (the main .venv for search and Optuna's methods,
.venv-peers/NAME for SMAC, DEHB and NePS: `make bench-peers`), one after another (the machine has 2
cores: one training process at a time), each writing OUT/WORKLOAD/METHOD/seedS.json; a result already
there is kept (the same command continues an interrupted run; --again runs it anew). Then score them
with bench/peers/score.py.

    .venv/bin/python bench/peers/run.py --smoke                  # the plumbing: seed 0, 20 trial-epochs
    .venv/bin/python bench/peers/run.py --quick                  # seeds 0-1, 60 trial-epochs
    .venv/bin/python bench/peers/run.py --seeds 100-119          # the full run: held-out seeds, each workload's budget
    .venv/bin/python bench/peers/score.py --seeds scored
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import common

MAIN = Path(sys.executable)
RUNNERS = {  # method -> (interpreter, script and its fixed flags)
    "search": (MAIN, ["run_search.py"]),
    "tpe_hyperband": (MAIN, ["run_optuna.py", "--method", "tpe_hyperband"]),
    "gp": (MAIN, ["run_optuna.py", "--method", "gp"]),
    "random_sh": (MAIN, ["run_optuna.py", "--method", "random_sh"]),
    "smac": (common.PEERS_VENV / "smac" / "bin" / "python", ["run_smac.py"]),
    "dehb": (common.PEERS_VENV / "dehb" / "bin" / "python", ["run_dehb.py"]),
    "neps": (common.PEERS_VENV / "neps" / "bin" / "python", ["run_neps.py"]),
}


def seed_list(text: str) -> list[int]:
    """'100-119' or '0,1,5' -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(common.WORKLOADS), help="comma-separated")
    parser.add_argument("--methods", default=",".join(RUNNERS), help="comma-separated")
    parser.add_argument("--seeds", default="100-119", help="e.g. 100-119 (scored) or 0-9 (settings)")
    parser.add_argument("--budget", type=int, default=None, help="trial-epochs (default: each workload's)")
    parser.add_argument("--out", type=Path, default=common.RESULTS)
    parser.add_argument("--again", action="store_true", help="run again where a result exists")
    parser.add_argument("--smoke", action="store_true", help="seed 0, budget 20")
    parser.add_argument("--quick", action="store_true", help="seeds 0-1, budget 60")
    args = parser.parse_args()
    if args.smoke or args.quick:
        args.seeds, args.budget = ("0", 20) if args.smoke else ("0-1", 60)
    failed: list[str] = []
    start = time.perf_counter()
    for workload in args.workloads.split(","):
        for seed in seed_list(args.seeds):
            for method in args.methods.split(","):
                python, script = RUNNERS[method]
                if common.result_path(args.out, workload, method, seed).is_file() and not args.again:
                    continue
                command = [str(python), str(common.HERE / script[0]), *script[1:], "--workload", workload]
                command += ["--seed", str(seed), "--out", str(args.out)]
                if args.budget:
                    command += ["--budget", str(args.budget)]
                began = time.perf_counter()
                done = subprocess.run(command, capture_output=True, text=True)
                took = time.perf_counter() - began
                if done.returncode == 0:
                    print(
                        f"[{time.perf_counter() - start:6.0f} s] {done.stdout.strip().splitlines()[-1]} ({took:.0f} s)",
                        flush=True,
                    )
                else:
                    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                    failed.append(f"{method} on {workload}, seed {seed}: exit {done.returncode}: {tail}")
                    print(f"[{time.perf_counter() - start:6.0f} s] FAILED {failed[-1]}", flush=True)
    print(f"{len(failed)} failed" + "".join(f"\n  {line}" for line in failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
