"""Built-in workloads on scikit-learn's bundled 8x8 digits (1797 images, no download).

`mlp` (64-128-10 with ReLU) and `cnn` (two 3x3 convs and a linear head) train
with plain SGD: the trial's lr, weight_decay and momentum, no learning-rate
decay (the recipe's refine stage), cross-entropy loss. The data are split once
with a fixed seed into train (60%), val (20%) and test (20%); the search sees
only train and val, never test.

Each epoch reports train_loss, train_accuracy, val_loss and val_accuracy.
Both call `trial.watch(...)` and honour `trial.subset`, so every instrument
(update:weight ratios, `hpsearch sanity`, `hpsearch lr-find`) works on them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from sklearn.datasets import load_digits  # imported with the workload: worker start-up, not the first trial
from torch import nn

SPLIT_SEED = 0  # fixed: every trial, every stage and every run see the same split
BATCH_SIZE = 64  # default; a study may search `batch_size` too
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@lru_cache(maxsize=None)
def load_digits_split(device: str = "cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train/val/test tensors on `device`, loaded once per process."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32) / 16.0  # pixel values are 0..16
    y = torch.tensor(y, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    x, y = x[order], y[order]
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    parts = {
        "train": (x[:n_train], y[:n_train]),
        "val": (x[n_train : n_train + n_val], y[n_train : n_train + n_val]),
        "test": (x[n_train + n_val :], y[n_train + n_val :]),
    }
    return {k: (a.to(device), b.to(device)) for k, (a, b) in parts.items()}


def make_mlp(hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),  # [B, 64] -> [B, 1, 8, 8]
        nn.Conv2d(1, 16, 3, padding=1),  # -> [B, 16, 8, 8]
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),  # -> [B, 32, 8, 8]
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> [B, 32, 4, 4]
        nn.Flatten(),  # -> [B, 512]
        nn.Linear(512, 10),
    )


def mlp(trial: Any) -> dict[str, float]:
    """The digits MLP: 64 -> hidden (default 128) -> 10."""
    torch.manual_seed(trial.seed)
    return fit(make_mlp(int(trial.params.get("hidden", 128))), trial)


def cnn(trial: Any) -> dict[str, float]:
    """A small conv net on the 8x8 digits."""
    torch.manual_seed(trial.seed)
    return fit(make_cnn(), trial)


def mlp_population(trials: list[Any]) -> list[dict[str, float] | None]:
    """K digits-MLP trials trained together in one stacked model (`--population K`): see digits_population."""
    from hpsearch.workloads.digits_population import mlp_population as train_together

    return train_together(trials)


mlp.metrics = METRICS  # type: ignore[attr-defined]
mlp.population = mlp_population  # type: ignore[attr-defined]  # opts in to population mode
cnn.metrics = METRICS  # type: ignore[attr-defined]


def fit(model: nn.Module, trial: Any) -> dict[str, float]:
    """Train `model` with SGD for trial.epochs epochs, reporting per-epoch curves."""
    data = load_digits_split(trial.device)
    x_train, y_train = data["train"]
    subset = getattr(trial, "subset", None)
    if subset:  # the sanity check's tiny subset: [subset, 64], [subset]
        x_train, y_train = x_train[:subset], y_train[:subset]
    model = model.to(trial.device)
    p = trial.params
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=float(p["lr"]),
        momentum=float(p.get("momentum", 0.0)),
        weight_decay=float(p.get("weight_decay", 0.0)),
        nesterov=bool(p.get("nesterov", False)),  # a study may search nesterov = [true, false]
    )
    loss_fn = nn.CrossEntropyLoss()
    if hasattr(trial, "watch"):  # update:weight ratios, sanity checks and lr-find hook in here
        trial.watch(model, optimizer, loss_fn)
    batch_size = int(p.get("batch_size", BATCH_SIZE))
    generator = torch.Generator(device="cpu").manual_seed(trial.seed)
    metrics: dict[str, float] = {}
    for epoch in range(trial.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(x_train.device)
        total, correct, seen, steps = 0.0, 0, 0, 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            xb, yb = x_train[idx], y_train[idx]  # [B, 64], [B]
            logits = model(xb)  # [B, 10]
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(idx)
            steps += 1
        val_loss, val_acc = evaluate(model, *data["val"])
        metrics = {
            "train_loss": total / seen,
            "train_accuracy": correct / seen,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
        }
        trial.report(epoch, iterations=steps, **metrics)  # iterations: progress shows ms per step
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    return float(nn.functional.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean())
