"""Benchmark a change: one of bench/'s scripts on this checkout and on another commit, side by side.

Checks the commit out into a temporary git worktree, then runs the benchmark `--rounds` times for each,
alternating (base, head, base, head, ...: both see the same machine load), each with its own checkout
first on PYTHONPATH (its bench script, its package, its worker processes). Every figure the `--pick`
regular expression finds in the output (its first group, a number) is compared: the median over the
rounds of each, and head / base. Below 1.00 the change is faster (for times).

    .venv/bin/python bench/against.py 38b1a41 loop.py --trials 2000 --pick '^\\s+\\d+\\s+[\\d.]+\\s+([\\d.]+)'
    .venv/bin/python bench/against.py 38b1a41 commands.py --trials 64 --runs 1 \\
        --pick 'hpsearch \\(default workers\\)\\s+([\\d.]+)'
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(checkout: Path, script: str, args: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(
        [sys.executable, str(checkout / "bench" / script), *args],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the commit to compare against (e.g. the previous main)")
    parser.add_argument("--head", help="a commit to measure instead of this working tree (which may change meanwhile)")
    parser.add_argument("script", help="a script in bench/, e.g. loop.py")
    parser.add_argument("--pick", required=True, help="a regular expression whose first group is a figure")
    parser.add_argument("--rounds", type=int, default=3)
    args, rest = parser.parse_known_args()
    pick = re.compile(args.pick, re.MULTILINE)
    figures: dict[str, list[list[float]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory() as tmp:
        base, head = Path(tmp) / "base", Path(tmp) / "head" if args.head else ROOT
        for folder, rev in ((base, args.base), (head, args.head)):
            if rev:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), rev], check=True)
        try:
            for round_ in range(args.rounds):
                for name, checkout in (("base", base), ("head", head)):
                    out = run(checkout, args.script, rest)
                    found = [float(m.group(1)) for m in pick.finditer(out)]
                    if not found:
                        sys.exit(f"--pick found nothing in the {name} output:\n{out}")
                    figures[name].append(found)
                    print(f"round {round_ + 1}, {name}: {' '.join(f'{f:g}' for f in found)}", flush=True)
        finally:
            for folder in (base, head) if args.head else (base,):
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(folder)], check=False)
    against = args.head or "this working tree"
    print(f"{args.script} {' '.join(rest)}: median of {args.rounds} rounds, base {args.base} vs {against}")
    print(f"{'figure':>7} {'base':>10} {'head':>10} {'head/base':>10}")
    for i in range(min(len(f) for f in figures["base"] + figures["head"])):
        b = statistics.median(f[i] for f in figures["base"])
        h = statistics.median(f[i] for f in figures["head"])
        print(f"{i + 1:>7} {b:>10.3f} {h:>10.3f} {h / b if b else float('nan'):>10.2f}")


if __name__ == "__main__":
    main()
