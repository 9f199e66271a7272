"""Benchmark: population mode end to end, whole commands, `--population auto` against `--population 1`.

Each figure is a whole `hpsearch coarse` command (interpreter start, imports,
data, dispatch, the trials, the leaderboard) timed from outside, with the
default workers, a fresh results folder each run, min and median of --runs
runs, the variants interleaved so a slow spell hits them alike. Workloads:
- digits: the built-in digits MLP (`hpsearch.workloads.digits:mlp`, its hand-written stacked trainer);
- model-mlp: the same MLP as a model workload (studies/digits_model.py: the generic stacked path);
- model-cnn: a small CNN (two 3x3 convs) as a model workload.

    .venv/bin/python bench/endtoend.py --trials 1024,256 --epochs 4 --runs 3
    .venv/bin/python bench/endtoend.py --trials 256 --workloads model-cnn --runs 1
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HPSEARCH = Path(sys.executable).parent / "hpsearch"
SPACE = """
[params.lr]
low = 1e-4
high = 1.0
log = true

[params.weight_decay]
values = [0, 1e-5, 1e-4, 1e-3]

[params.momentum]
values = [0.5, 0.9, 0.95, 0.99]
"""
CNN = """
import torch
from torch import nn
import sys
sys.path.insert(0, {studies!r})
from digits_model import data  # noqa: F401  (the same split as the MLP)


def build(params):
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 10))
"""


def study(folder: Path, workload: str) -> Path:
    if workload == "digits":
        head = 'workload = "hpsearch.workloads.digits:mlp"\n'
    elif workload == "model-mlp":
        studies = ROOT / "studies"
        head = f'[workload]\nmodel = "{studies}/digits_model.py:build"\ndata = "{studies}/digits_model.py:data"\n'
    else:
        (folder / "cnn.py").write_text(CNN.format(studies=str(ROOT / "studies")))
        head = f'[workload]\nmodel = "{folder}/cnn.py:build"\ndata = "{folder}/cnn.py:data"\n'
    path = folder / f"{workload}.toml"
    top, _, table = head.partition("[workload]")
    path.write_text(f'name = "e2e"\nmetric = "val_accuracy"\n{top}' + (f"[workload]{table}" if table else "") + SPACE)
    return path


def run(path: Path, trials: int, epochs: int, population: str, folder: Path) -> float:
    results = folder / f"r{time.time_ns()}"
    cmd = [
        str(HPSEARCH),
        "coarse",
        str(path),
        "--trials",
        str(trials),
        "--epochs",
        str(epochs),
        "--population",
        population,
        "--dir",
        str(results),
        "-q",
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    k = [line for line in done.stderr.splitlines() if line.startswith("population: K =")]
    if k:
        print(f"    {path.stem} {trials}x{epochs} {population}: {elapsed:.1f}s; {k[0]}", flush=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", default="1024,256")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workloads", default="digits,model-mlp,model-cnn")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for workload in args.workloads.split(","):
            path = study(folder, workload)
            for trials in (int(t) for t in args.trials.split(",")):
                times: dict[str, list[float]] = {"1": [], "auto": []}
                for _ in range(args.runs):
                    for population in times:
                        times[population].append(run(path, trials, args.epochs, population, folder))
                one, auto = times["1"], times["auto"]
                rows.append((workload, trials, min(one), statistics.median(one), min(auto), statistics.median(auto)))
                print(
                    f"{workload} {trials}x{args.epochs}: --population 1 min {min(one):.1f}s, "
                    f"auto min {min(auto):.1f}s, {min(one) / min(auto):.2f}x",
                    flush=True,
                )
    print("\n| workload | trials x epochs | --population 1 min / median s | auto min / median s | speed-up (min) |")
    print("|---|---|---|---|---|")
    for workload, trials, one_min, one_med, auto_min, auto_med in rows:
        print(
            f"| {workload} | {trials} x {args.epochs} | {one_min:.1f} / {one_med:.1f} "
            f"| {auto_min:.1f} / {auto_med:.1f} | {one_min / auto_min:.2f}x |"
        )


if __name__ == "__main__":
    main()
