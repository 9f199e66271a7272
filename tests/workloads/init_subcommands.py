"""A training script with subcommands (`train`, `eval`), as `hpsearch init` meets one (no import of hpsearch).

`train` takes the learning rate as --lr0 and weight decay as --wd, and prints
one JSON line per epoch; its help names val_loss, the metric init picks. The
score peaks at lr0 = 0.1. `eval` takes a required checkpoint and is never
searched.
"""

import argparse
import json
import math

parser = argparse.ArgumentParser(description="Train or evaluate a toy model.")
parser.add_argument("--verbose", action="store_true", help="say more")
commands = parser.add_subparsers(dest="command", required=True)
train = commands.add_parser(
    "train",
    help="train a model",
    description="Train; prints JSON lines with val_loss and val_accuracy.",
    formatter_class=argparse.ArgumentDefaultsHelpFormatter,
)
train.add_argument("--lr0", type=float, default=0.01, help="initial learning rate")
train.add_argument("--wd", type=float, default=5e-4, help="weight decay")
train.add_argument("--epochs", type=int, default=3, help="epochs to train")
train.add_argument("--seed", type=int, default=0, help="random seed")
train.add_argument("--split", choices=["val", "test"], default="val", help="the split to evaluate on")
train.add_argument("--width", type=int, default=16, help="hidden units")
evaluate = commands.add_parser("eval", help="evaluate a checkpoint")
evaluate.add_argument("checkpoint")
args = parser.parse_args()

if args.command == "train":
    score = math.exp(-((math.log10(args.lr0) + 1) ** 2)) * (1 - args.wd)
    for epoch in range(1, args.epochs + 1):
        loss = 1.0 - score * epoch / args.epochs
        line = {"epoch": epoch, "split": args.split, "train_loss": loss, "val_loss": loss, "val_accuracy": 1 - loss}
        print(json.dumps(line))
