"""Run bench/peers: every method on every workload for the given seeds, one process at a time.

Each run is its runner in its own interpreter (the main .venv for search and Optuna's methods,
.venv-peers/NAME for SMAC, DEHB and NePS: `make bench-peers`), one after another (the machine has 2
cores: one training process at a time), each writing OUT/WORKLOAD/METHOD/seedS.json; a result already
there is kept (the same command continues an interrupted run; --again runs it anew). Several run.py
processes may share one results folder (one per core: each takes a run by its .running file). Then score them
with bench/peers/score.py (run.py runs it, and bench/peers/anytime.py's plots, at the end).

    .venv/bin/python bench/peers/run.py --smoke     # the plumbing: seed 0, 20 trial-epochs
    .venv/bin/python bench/peers/run.py --quick     # seeds 0-1, 60 trial-epochs: a few minutes
    .venv/bin/python bench/peers/run.py             # the full run: held-out seeds 100-109, each workload's budget
    .venv/bin/python bench/peers/score.py --seeds scored    # again, alone (run.py ran it, and anytime.py)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import common

MAIN = Path(sys.executable)
RUNNERS = {  # method -> (interpreter, script and its fixed flags)
    "search": (MAIN, ["run_search.py", "--method", "search"]),
    "tpe_hyperband": (MAIN, ["run_optuna.py", "--method", "tpe_hyperband"]),
    "gp": (MAIN, ["run_optuna.py", "--method", "gp"]),
    "random_sh": (MAIN, ["run_optuna.py", "--method", "random_sh"]),
    "smac": (common.PEERS_VENV / "smac" / "bin" / "python", ["run_smac.py"]),
    "dehb": (common.PEERS_VENV / "dehb" / "bin" / "python", ["run_dehb.py"]),
    "neps": (common.PEERS_VENV / "neps" / "bin" / "python", ["run_neps.py"]),
    "search_population": (MAIN, ["run_search.py", "--method", "search_population"]),
}
ONLY_ON = {"search_population": {"mnist1d"}}  # the methods that apply to some workloads only


def seed_list(text: str) -> list[int]:
    """'100-119' or '0,1,5' -> the seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def claim(result: Path) -> bool:
    """Take the run of `result` for this process (its .running file holds our pid), unless a live process
    holds it: several run.py processes (one per core, or per machine on a shared disk) share the work."""
    marker = result.with_suffix(".running")
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)  # free: ours, unless another took it first
        os.write(handle, str(os.getpid()).encode())
        os.close(handle)
        return True
    except FileExistsError:
        pass
    try:
        holder = int(marker.read_text() or 0)
        os.kill(holder, 0)
        return holder == os.getpid()
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        marker.write_text(str(os.getpid()))  # its holder is gone (killed): take it over
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default=",".join(common.WORKLOADS), help="comma-separated")
    parser.add_argument("--methods", default=",".join(RUNNERS), help="comma-separated")
    parser.add_argument("--seeds", default="100-109", help="e.g. 100-109 (scored) or 0-9 (settings)")
    parser.add_argument("--budget", type=int, default=None, help="trial-epochs (default: each workload's)")
    parser.add_argument("--out", type=Path, default=None, help="default bench/results/peers (-smoke, -quick)")
    parser.add_argument("--again", action="store_true", help="run again where a result exists")
    parser.add_argument("--smoke", action="store_true", help="seed 0, budget 20")
    parser.add_argument("--quick", action="store_true", help="seeds 0-1, budget 60")
    parser.add_argument("--no-score", action="store_true", help="run only: no score.py, no anytime.py after")
    args = parser.parse_args()
    if args.smoke or args.quick:
        args.seeds, args.budget = ("0", 20) if args.smoke else ("0-1", 60)
    # a smoke or quick run writes apart: its small budget's results must not stand in for the full run's
    suffix = "-smoke" if args.smoke else "-quick" if args.quick else ""
    args.out = args.out or common.RESULTS.with_name(common.RESULTS.name + suffix)
    failed: list[str] = []
    start = time.perf_counter()
    for workload in args.workloads.split(","):
        for seed in seed_list(args.seeds):
            for method in args.methods.split(","):
                python, script = RUNNERS[method]
                if workload not in ONLY_ON.get(method, {workload}):
                    continue
                result = common.result_path(args.out, workload, method, seed)
                if (result.is_file() and not args.again) or not claim(result):
                    continue  # done, or another run.py is running it now
                command = [str(python), str(common.HERE / script[0]), *script[1:], "--workload", workload]
                command += ["--seed", str(seed), "--out", str(args.out)]
                if args.budget:
                    command += ["--budget", str(args.budget)]
                began = time.perf_counter()
                try:
                    done = subprocess.run(command, capture_output=True, text=True)
                finally:
                    result.with_suffix(".running").unlink(missing_ok=True)
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
    if not args.no_score:
        seeds = set(seed_list(args.seeds))
        chosen = "all"
        for name, chosen_seeds in (("scored", common.SCORED_SEEDS), ("settings", common.SETTINGS_SEEDS)):
            chosen = name if seeds <= set(chosen_seeds) else chosen
        folder = ["--results", str(args.out)]
        plots = [] if args.out == common.RESULTS else ["--out", str(args.out)]
        retrains = ["--retrains", "1"] if args.smoke or args.quick else []  # a look, not the figures
        for script, more in (("score.py", retrains), ("anytime.py", plots)):
            subprocess.run([str(MAIN), str(common.HERE / script), "--seeds", chosen, *folder, *more], check=False)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
