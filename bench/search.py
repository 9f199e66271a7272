"""Benchmark: `hpsearch search` with its workers kept from stage to stage, against new workers per stage.

The same command on the built-in digits MLP (`hpsearch search STUDY --budget B`,
default workers, a fresh results folder each run), timed from outside as a
whole command, both ways side by side, alternating, --runs times:
- kept: as shipped, one set of workers for every stage of the search;
- per stage: the same command with `PoolExecutor.keep_workers` held False,
  as before: each stage starts its own workers (torch import, data load and
  the first calls of torch.optim again, each stage).
Prints min and median seconds of each and the ratio.

    .venv/bin/python bench/search.py --budget 300 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from commands import study_file

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

RUN = """
import sys
import hpsearch.dispatch.pool as pool
if sys.argv[1] == "per-stage":
    pool.PoolExecutor.keep_workers = property(lambda self: False, lambda self, value: None)
sys.argv = ["hpsearch", "search", *sys.argv[2:]]
from hpsearch.cli.app import main
main()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"kept": [], "per-stage": []}
    stages = ""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spec = study_file(folder, 40, 2)
        for run in range(args.runs):
            for mode in times:
                out = folder / f"{mode}{run}"
                command = [
                    str(BIN / "python"),
                    "-c",
                    RUN,
                    mode,
                    str(spec),
                    "--budget",
                    str(args.budget),
                    "--dir",
                    str(out),
                    "-q",
                ]
                start = time.perf_counter()
                done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
                times[mode].append(time.perf_counter() - start)
                if done.returncode != 0:
                    raise SystemExit(f"{mode} failed: {done.stderr[-2000:]}")
            if not stages:
                from hpsearch.store.storage import Store

                stages = ", ".join(
                    info.name for info in Store("digits_40x2", folder / f"kept{run}", create=False).stages()
                )
    print(f"hpsearch search, digits MLP, --budget {args.budget} (stages: {stages}), {args.runs} runs (min / median s):")
    for mode, values in times.items():
        print(f"  {mode:<10} {min(values):6.2f} / {statistics.median(values):6.2f}")
    print(
        f"  kept workers: {min(times['per-stage']) / min(times['kept']):.2f}x faster (min), "
        f"{statistics.median(times['per-stage']) / statistics.median(times['kept']):.2f}x (median)"
    )


if __name__ == "__main__":
    main()
