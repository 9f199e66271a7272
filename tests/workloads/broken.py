"""Tiny torch workloads with one deliberate bug each, for the sanity checks. No hpsearch import.

All train a 10-class MLP on 200 random Gaussian points (fixed seed), batch 50.
"""

import torch
from torch import nn

CLASSES = 10


def _data(n=200, dim=16):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(CLASSES, dim, generator=g) * 2.0
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return centers[y] + torch.randn(n, dim, generator=g), y


class SoftmaxFirst(nn.Module):
    """The classic bug: softmax applied before CrossEntropyLoss (which applies log-softmax itself)."""

    def __init__(self):
        super().__init__()
        self.ce = nn.CrossEntropyLoss()

    def forward(self, logits, target):
        return self.ce(torch.softmax(logits, dim=1), target)


def _train(trial, loss_fn=None, init_scale=1.0, honour_subset=True, watch=True):
    torch.manual_seed(trial.seed)
    x, y = _data()
    if honour_subset and getattr(trial, "subset", None):
        x, y = x[: trial.subset], y[: trial.subset]
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, CLASSES))
    with torch.no_grad():
        model[2].weight.mul_(init_scale)
    optimizer = torch.optim.SGD(model.parameters(), lr=trial.params["lr"], momentum=trial.params.get("momentum", 0.0))
    loss_fn = loss_fn or nn.CrossEntropyLoss()
    if watch:
        trial.watch(model, optimizer, loss_fn)
    for epoch in range(trial.epochs):
        total = 0.0
        for start in range(0, len(x), 50):
            xb, yb = x[start : start + 50], y[start : start + 50]
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        trial.report(epoch, train_loss=total / len(x), val_accuracy=0.5)
    return {"val_accuracy": 0.5}


def good(trial):
    return _train(trial)


def softmax_before_ce(trial):
    """Initial loss looks fine (~log C), but the loss cannot go below ~1.46: overfit FAILs."""
    return _train(trial, loss_fn=SoftmaxFirst())


def huge_init(trial):
    """Output weights 30x too large: confident wrong guesses, initial loss far above log C: WARN."""
    return _train(trial, init_scale=30.0)


def ignores_subset(trial):
    return _train(trial, honour_subset=False)


def no_watch(trial):
    """A plain workload that never calls trial.watch: sanity SKIPs, searches still work."""
    return _train(trial, watch=False)


class _RaiseOnNan(nn.CrossEntropyLoss):
    def forward(self, logits, target):
        loss = super().forward(logits, target)
        if not torch.isfinite(loss):
            raise FloatingPointError("loss is nan")
        return loss


def raises_on_nan(trial):
    """Not a bug: a workload that raises when its loss blows up (lr-find must keep what it recorded)."""
    return _train(trial, loss_fn=_RaiseOnNan())
