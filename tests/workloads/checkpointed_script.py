"""A training script (a command workload) that keeps its own checkpoint in --checkpoint-dir and, on the
first run of a trial, warns its parent of a preemption (SIGUSR1, as SLURM's --signal does) in epoch 3."""

import argparse
import json
import os
import signal
import time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--epochs", type=int, default=6)
parser.add_argument("--checkpoint-dir", required=True)
args = parser.parse_args()
assert args.checkpoint_dir == os.environ["HPSEARCH_CHECKPOINT_DIR"], "the placeholder and the environment agree"
path = os.path.join(args.checkpoint_dir, "state.json")
state = {"epoch": 0, "w": 0.0}
if os.path.exists(path):
    with open(path) as f:
        state = json.load(f)
for epoch in range(state["epoch"], args.epochs):
    if epoch == 3 and os.environ["HPSEARCH_ATTEMPT"] == "1":
        os.kill(os.getppid(), signal.SIGUSR1)
        time.sleep(30)  # ended with the stage
    state["w"] += args.lr
    state["epoch"] = epoch + 1
    with open(path + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(path + ".tmp", path)
    with open(os.environ["HPSEARCH_TEST_RUNS"], "a") as f:
        f.write(f"{os.environ['HPSEARCH_TRIAL']} {os.environ['HPSEARCH_ATTEMPT']} {epoch} 0 {args.checkpoint_dir}\n")
    print(
        json.dumps({"epoch": epoch, "train_loss": 1 / (1 + state["w"]), "val_accuracy": state["w"] / (1 + state["w"])})
    )
