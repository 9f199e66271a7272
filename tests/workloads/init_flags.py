"""A training script whose flags are spelled otherwise, as `hpsearch init` meets one (no import of hpsearch).

--learning-rate (with -l), --weight_decay, --dropout, --batch-size and
--num_epochs, defaults shown by ArgumentDefaultsHelpFormatter, some outside
the recipe's ranges (lr 3e-5, weight decay 0.01, batch size 256); a required
--data-dir whose value no help can give; a --device whose choices hpsearch's
cuda:0 is not among, and a --split without test. It reports val_accuracy.
"""

import argparse
import json
import math

parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("--data-dir", required=True, help="folder of the data")
parser.add_argument("-l", "--learning-rate", type=float, default=3e-5, help="Adam's step size")
parser.add_argument("--weight_decay", type=float, default=0.01, help="AdamW's decoupled weight decay")
parser.add_argument("--dropout", type=float, default=0.1, help="dropout before the head")
parser.add_argument("--batch-size", type=int, default=256, help="examples per step")
parser.add_argument("--num_epochs", type=int, default=20, help="epochs to train")
parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train")
parser.add_argument("--split", choices=["train", "val"], default="val", help="what to evaluate on")
parser.add_argument("--amp", action="store_true", help="mixed precision")
parser.add_argument("--hidden", type=int, default=128, help="hidden units")
args = parser.parse_args()

score = math.exp(-((math.log10(args.learning_rate) + 3) ** 2))
for epoch in range(1, args.num_epochs + 1):
    print(json.dumps({"epoch": epoch, "train_loss": 1 - score, "val_accuracy": score * epoch / args.num_epochs}))
