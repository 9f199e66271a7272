"""The digits MLP as a function workload and as a script that keep their own checkpoints (bench/resume.py):
what a user writes with trial.save_checkpoint / trial.load_checkpoint, or {checkpoint_dir}."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hpsearch.workloads.digits_data import load_digits_split


def _epochs(state: dict[str, Any] | None, lr: float, seed: int, epochs: int, save: Any, report: Any) -> dict:
    torch.manual_seed(seed)
    data = load_digits_split("cpu")
    x, y = data["train"]
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    start = 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        start = state["epoch"]
    metrics: dict[str, float] = {}
    for epoch in range(start, epochs):
        total = 0.0
        for idx in torch.randperm(len(x), generator=generator).split(64):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        with torch.no_grad():
            xv, yv = data["val"]
            out = model(xv)
            metrics = {
                "train_loss": total / len(x),
                "val_loss": float(nn.functional.cross_entropy(out, yv)),
                "val_accuracy": float((out.argmax(-1) == yv).float().mean()),
            }
        save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "epoch": epoch + 1,
            }
        )
        report(epoch, metrics)
    return metrics


def train(trial: Any) -> dict[str, float]:
    """The function workload: its state in the trial's checkpoint folder, saved before each report."""
    return _epochs(
        trial.load_checkpoint(),
        float(trial.params["lr"]),
        trial.seed,
        trial.epochs,
        trial.save_checkpoint,
        lambda epoch, metrics: trial.report(epoch, **metrics),
    )


def main() -> None:
    """The same as a script: python resume_workloads.py --lr 0.05 --epochs 10 --seed 3 --checkpoint-dir DIR."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--checkpoint-dir")
    args = parser.parse_args()
    path = os.path.join(args.checkpoint_dir, "state.pt")

    def save(state: dict) -> None:
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)

    state = torch.load(path, weights_only=False) if os.path.exists(path) else None
    _epochs(state, args.lr, args.seed, args.epochs, save, lambda e, m: print(json.dumps({"epoch": e, **m}), flush=True))


if __name__ == "__main__":
    main()
