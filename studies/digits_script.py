"""A plain PyTorch training script with argparse flags: an MLP on scikit-learn's bundled digits.

It knows nothing of hpsearch: studies/digits_script.toml runs it once per trial
and reads the JSON line it prints after each epoch. The data are split once
(60% train, 20% val, 20% test); --split picks the one it evaluates on, and
each line says which, so `hpsearch final` can check it tested on test.
"""

import argparse
import json

import torch
from sklearn.datasets import load_digits

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--weight-decay", type=float, default=1e-4)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--device", default="cpu")
parser.add_argument("--split", default="val", choices=["val", "test"])
args = parser.parse_args()

torch.manual_seed(args.seed)
x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32).to(args.device), torch.tensor(y).to(args.device)
order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))  # the same split in every trial
train, val, test = order[:1078], order[1078:1437], order[1437:]
held_out = test if args.split == "test" else val  # the test split is only for `hpsearch final`
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(args.device)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
loss_fn = torch.nn.CrossEntropyLoss()
for epoch in range(1, args.epochs + 1):
    for batch in train[torch.randperm(len(train))].split(64):
        optimizer.zero_grad()
        loss = loss_fn(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = model(x[held_out])
        val_loss, val_accuracy = loss_fn(out, y[held_out]).item(), (out.argmax(1) == y[held_out]).float().mean().item()
    # Named as the study's metric on either split; "split" says which one it was.
    print(
        json.dumps(
            {
                "epoch": epoch,
                "split": args.split,
                "train_loss": loss.item(),
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
            }
        )
    )
