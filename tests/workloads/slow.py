"""A torch-free workload that takes a while per epoch: for the multi-machine tests, where a
worker must still be mid-trial when it is killed. No hpsearch import.

EPOCH_S (env HPSEARCH_TEST_EPOCH_S, default 0.2) seconds of sleep per epoch.
"""

import math
import os
import time


def sleepy(trial):
    """val_accuracy peaks at lr = 1e-2; sleeps EPOCH_S per epoch, reporting each one."""
    epoch_s = float(os.environ.get("HPSEARCH_TEST_EPOCH_S", "0.2"))
    score = 1.0 - 0.05 * (math.log10(trial.params["lr"]) + 2.0) ** 2
    for epoch in range(trial.epochs):
        time.sleep(epoch_s)
        trial.report(epoch, train_loss=1.0 - score + 0.1 / (epoch + 1), val_accuracy=score)
    return {"val_accuracy": score, "pid": float(os.getpid())}
