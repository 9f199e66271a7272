"""Built-in workloads on scikit-learn's bundled 8x8 digits (1797 images, no download).

`mlp` (64-128-10 with ReLU) and `cnn` (two 3x3 convs and a linear head) train
with plain SGD: the trial's lr, weight_decay and momentum, no learning-rate
decay (the recipe's refine stage), cross-entropy loss. The data are split once
with a fixed seed into train (60%), val (20%) and test (20%); the search sees
only train and val; `hpsearch final` (trial.split == "test") evaluates on test,
reporting under the same names.

Each epoch reports train_loss, train_accuracy, val_loss and val_accuracy.
Both call `trial.watch(...)` and honour `trial.subset`, so every instrument
(update:weight ratios, `hpsearch sanity`, `hpsearch lr-find`) works on them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hpsearch.workloads.digits_data import BATCH_SIZE, SPLIT_SEED, load_digits_split, make_cnn, make_mlp

__all__ = ["BATCH_SIZE", "METRICS", "SPLIT_SEED", "cnn", "fit", "load_digits_split", "make_cnn", "make_mlp", "mlp"]

METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


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


mlp.metrics = METRICS  # type: ignore[attr-defined]  # a function attribute: the metrics it reports
mlp.population = mlp_population  # type: ignore[attr-defined]  # a function attribute: opts in to population mode
cnn.metrics = METRICS  # type: ignore[attr-defined]  # a function attribute, as for mlp


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
    # `hpsearch final` asks for the test split (trial.split == "test"); the names stay val_*.
    evaluated = "test" if getattr(trial, "split", "val") == "test" else "val"
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
        val_loss, val_acc = evaluate(model, *data[evaluated])
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
