"""A torch-free workload that opens a file by a relative path: trials run in the study file's folder.
No hpsearch import."""

import os


def reads_relative(trial):
    """val_accuracy is the number in ./data.txt (a relative path, as a user would write it)."""
    with open("data.txt") as f:
        return {"val_accuracy": float(f.read()), "pid": float(os.getpid())}
