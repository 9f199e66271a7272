"""A torch-free workload that prints a lot, on stdout and stderr, and starts a process that prints
too: for the log-capture tests. No hpsearch import, like a user's workload.
"""

import subprocess
import sys

LINES = 40


def train(trial):
    """Prints LINES lines to stdout and to stderr (numbered by trial), then a child prints 'child says hi'."""
    for i in range(LINES):
        print(f"trial {trial.number} stdout line {i}")
        print(f"trial {trial.number} stderr line {i}", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "print('child says hi')"], check=True)
    score = 1.0 - abs(trial.params["lr"] - 0.01)
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - score, val_accuracy=score)
    print(f"trial {trial.number} last words")
    return {"val_accuracy": score}
