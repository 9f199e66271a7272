"""Torch-free workloads for the issue-16 tests (seeds, pruning at the last epoch, epochs ran, momentum).

No hpsearch import: like a user's workload.
"""


def by_lr(trial):
    """val_accuracy = lr at every epoch (0-based epochs, as range(trial.epochs) gives them)."""
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - trial.params["lr"], val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}


def by_lr_from_1(trial):
    """by_lr, numbering its epochs 1..epochs."""
    for epoch in range(1, trial.epochs + 1):
        trial.report(epoch, train_loss=1.0 - trial.params["lr"], val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}


def late_bloomer(trial):
    """Every trial ties (0.5) until its last epoch, where val_accuracy = lr: only the last report tells."""
    for epoch in range(trial.epochs):
        score = trial.params["lr"] if epoch == trial.epochs - 1 else 0.5
        trial.report(epoch, train_loss=1.0 - score, val_accuracy=score)
    return {"val_accuracy": trial.params["lr"]}


def silent(trial):
    """Completes without a single report."""
    return {"val_accuracy": trial.params["lr"]}


def crash_after_2(trial):
    """Reports two epochs, then crashes when lr > 0.1 (else completes)."""
    for epoch in range(trial.epochs):
        if epoch == 2 and trial.params["lr"] > 0.1:
            raise RuntimeError("CUDA error: illegal memory access (simulated)")
        trial.report(epoch, train_loss=1.0 - trial.params["lr"], val_accuracy=trial.params["lr"])
    return {"val_accuracy": trial.params["lr"]}


def momentum_high(trial):
    """val_accuracy rises with momentum: the best trials crowd momentum's HIGH border."""
    score = trial.params["momentum"]
    for epoch in range(trial.epochs):
        trial.report(epoch, train_loss=1.0 - score, val_accuracy=score)
    return {"val_accuracy": score}
