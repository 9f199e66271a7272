"""An example user workload: plain PyTorch, no import of hpsearch.

hpsearch calls `train(trial)` once per trial. The trial carries:
    trial.params   this trial's values, e.g. {"lr": 0.01, "weight_decay": 1e-4, "momentum": 0.9}
    trial.epochs   how many epochs to train (the stage decides: short in coarse, long in refine)
    trial.device   "cuda:0" when a GPU is visible, else "cpu"
    trial.seed     seed this trial's randomness with it
    trial.report(epoch, **metrics)   once per epoch: the loss curves (may stop a diverging trial);
                                     optional iterations=N (steps this epoch) for per-iteration timing
    trial.watch(model, optimizer, loss_fn)   optional, once: lets hpsearch record update:weight
                   ratios and run `hpsearch sanity` / `hpsearch lr-find` on this workload
    trial.subset   optional: when set (sanity check), train on only that many examples
Return a dict of final metrics (it must contain the study's `metric`), or one float.

The data are made here from a fixed seed (four Gaussian blobs in 20-D):
nothing is downloaded.
"""

import math

import torch
from torch import nn


def make_data(seed: int = 0, n: int = 2000, dim: int = 20, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.randint(0, classes, (n,), generator=g)
    x = centers[y] + torch.randn(n, dim, generator=g) * 2.0
    split = int(0.75 * n)
    return (x[:split], y[:split]), (x[split:], y[split:])


def train(trial):
    torch.manual_seed(trial.seed)
    (x_train, y_train), (x_val, y_val) = make_data()
    if getattr(trial, "subset", None):  # `hpsearch sanity` overfits a tiny subset
        x_train, y_train = x_train[: trial.subset], y_train[: trial.subset]
    x_train, y_train = x_train.to(trial.device), y_train.to(trial.device)
    x_val, y_val = x_val.to(trial.device), y_val.to(trial.device)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4)).to(trial.device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=trial.params["lr"],
        momentum=trial.params.get("momentum", 0.0),
        weight_decay=trial.params.get("weight_decay", 0.0),
    )
    loss_fn = nn.CrossEntropyLoss()
    if hasattr(trial, "watch"):  # optional: the instruments hook into these three
        trial.watch(model, optimizer, loss_fn)
    for epoch in range(trial.epochs):
        model.train()
        order = torch.randperm(len(x_train), device=trial.device)
        total, correct = 0.0, 0
        for start in range(0, len(order), 50):
            idx = order[start : start + 50]
            logits = model(x_train[idx])
            loss = loss_fn(logits, y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y_train[idx]).sum())
        model.eval()
        with torch.no_grad():
            logits = model(x_val)
            val_loss = loss_fn(logits, y_val).item()
            val_accuracy = (logits.argmax(1) == y_val).float().mean().item()
        trial.report(
            epoch,
            iterations=math.ceil(len(x_train) / 50),  # optional: progress then shows ms per iteration
            train_loss=total / len(x_train),
            train_accuracy=correct / len(x_train),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )
    return {"val_accuracy": val_accuracy, "val_loss": val_loss}
