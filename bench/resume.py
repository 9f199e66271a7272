"""Benchmark: trials stopped mid-way and resumed from their checkpoints (issue 28), for each workload kind.

For a function workload (bench/resume_workloads.py:train), a command (the same as a script, keeping its
state in {checkpoint_dir}) and a model workload (studies/digits_model.toml: hpsearch saves it itself),
one 10-epoch digits trial:
- run whole;
- stopped (Ctrl-C) at its report of epoch STOP (after that epoch's checkpoint was saved), then run
  again as the trial's second run, with the same seed and checkpoint folder, as hpsearch resumes it.
Prints the epochs each trained in all (the whole run's 10 + what the stop cost) and the final metric
of both. A kill in the middle of an epoch loses that epoch too: at most one more.

Then the cost of the model workload's checkpoints at the default interval (each epoch): --trials
10-epoch trials with checkpoint_every = 1 and = 0, interleaved, in this process; the ratio of the
medians.

    .venv/bin/python bench/resume.py --trials 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from hpsearch.spec import load_spec  # noqa: E402
from hpsearch.workloads.api import TrialContext, TrialRecord  # noqa: E402
from hpsearch.workloads.command import CommandWorkload  # noqa: E402
from hpsearch.workloads.loader import load_workload  # noqa: E402
from hpsearch.workloads.model import ModelWorkload  # noqa: E402

EPOCHS, STOP = 10, 7
PARAMS = {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}


def workloads() -> dict[str, Any]:
    import resume_workloads

    spec = load_spec(ROOT / "studies" / "digits_model.toml").workload.model
    script = [
        "python",
        str(ROOT / "bench" / "resume_workloads.py"),
        "--lr",
        "{lr}",
        "--epochs",
        "{epochs}",
        "--seed",
        "{seed}",
        "--checkpoint-dir",
        "{checkpoint_dir}",
    ]
    return {
        "function": resume_workloads.train,
        "command": CommandWorkload(tuple(script)),
        "model, each epoch": ModelWorkload(dataclasses.replace(spec, checkpoint_every=1), load_workload),
        "model, auto": ModelWorkload(spec, load_workload),  # the default: checkpoint_every = "auto"
    }


def run(fn: Any, folder: Path, attempt: int, stop: int | None, seen: list[int]) -> dict[str, float] | None:
    """One run of the trial; `seen` gets each epoch it reported. None when stopped."""

    def hook(epoch: int, metrics: dict[str, float], timing: object) -> str | None:
        seen.append(epoch)
        if epoch == stop:
            raise KeyboardInterrupt
        return None

    record = TrialRecord(0, dict(PARAMS), EPOCHS, 3, metric="val_accuracy", checkpoint_dir=str(folder), attempt=attempt)
    try:
        return fn(TrialContext.open(record, "cpu", hook))
    except KeyboardInterrupt:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    print(f"a {EPOCHS}-epoch digits trial, stopped at its report of epoch {STOP} and resumed:")
    print(f"{'workload':>17} {'epochs':>7} {'whole: val_accuracy':>20} {'resumed':>9} {'equal':>6}")
    kinds = workloads()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, fn in kinds.items():
            whole_seen: list[int] = []
            whole = run(fn, Path(tmp) / kind / "whole", 1, None, whole_seen)
            seen: list[int] = []
            run(fn, Path(tmp) / kind / "cut", 1, STOP, seen)
            resumed = run(fn, Path(tmp) / kind / "cut", 2, None, seen)
            assert whole is not None and resumed is not None
            a, b = whole["val_accuracy"], resumed["val_accuracy"]
            print(f"{kind:>17} {len(seen):>7} {a:>20.4f} {b:>9.4f} {whole == resumed!s:>6}")
        model = kinds["model, auto"]
        times: dict[str | int, list[float]] = {"auto": [], 1: [], 0: []}
        order = list(times)
        for i in range(args.trials):
            order = order[1:] + order[:1]  # each setting first in turn: no setting gains from going last
            for every in order:
                model.spec = dataclasses.replace(model.spec, checkpoint_every=every)
                start = time.perf_counter()
                run(model, Path(tmp) / f"cost{i}-{every}", 1, None, [])
                times[every].append(time.perf_counter() - start)
    off = statistics.median(times[0])
    print(f"model workload, {args.trials} trials x {EPOCHS} epochs each way, median s (none: {off:.3f}):")
    for every in ("auto", 1):
        on = statistics.median(times[every])
        print(f"  checkpoint_every = {every!r:>6}: {on:.3f}   cost {on / off - 1:+.1%} (goal at the default: under 5%)")


if __name__ == "__main__":
    main()
