"""MNIST-1D's CNN as a plain argparse script: one JSON line per epoch, evaluated on --split.

It knows nothing of hpsearch. Run by studies/mnist1d_cmd.toml with each trial's
values; also usable as a function workload (`train(trial)` below).
"""

import argparse
import json

import torch
from mnist1d_data import cnn, splits


def fit(lr, weight_decay, momentum, epochs, seed, device="cpu", split="val", report=None, batch_size=100):
    torch.manual_seed(seed)
    (x, y), (xe, ye) = splits(split)
    x, y, xe, ye = x.to(device), y.to(device), xe.to(device), ye.to(device)
    model = cnn().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    metrics = {}
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for batch in torch.randperm(len(x), device=device).split(batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            out = model(xe)
            metrics = {
                "train_loss": total / len(x),
                "val_loss": loss_fn(out, ye).item(),  # named as the study's metric on either split
                "val_accuracy": (out.argmax(1) == ye).float().mean().item(),
            }
        if report is not None:
            report(epoch, metrics)
    return metrics


def train(trial):
    """The function workload: the same training, reporting to hpsearch each epoch."""
    p = trial.params
    return fit(
        p["lr"],
        p["weight_decay"],
        p["momentum"],
        trial.epochs,
        trial.seed,
        trial.device,
        trial.split,
        report=lambda epoch, m: trial.report(epoch, **m),
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--split", default="val", choices=["val", "test"])
    args = parser.parse_args()

    def emit(epoch, m):
        print(json.dumps({"epoch": epoch, "split": args.split, **m}), flush=True)

    fit(args.lr, args.weight_decay, args.momentum, args.epochs, args.seed, args.device, args.split, report=emit)
