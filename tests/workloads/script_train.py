"""A user's own training script, as hpsearch's command workloads run it (no import of hpsearch).

Plain argparse; prints ordinary output between its JSON report lines. The
score peaks at lr = 0.1. --mode picks a misbehaviour for the fault tests:
  ok       train and report each epoch
  exit3    fail with exit code 3 after a message on stderr
  nan      report NaN from epoch 2 on, and go on for a minute (hpsearch must stop it)
  hang     start a child process, then hang (the trial timeout must end both)
  silent   report no metric at all
  kill9    kill itself with SIGKILL
Markers (the pids it started) go to --markers when given.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--epochs", type=int, default=2)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--mode", default="ok")
parser.add_argument("--markers", default="")
parser.add_argument("--sleep", type=float, default=float(os.environ.get("SCRIPT_SLEEP", "0")))
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

print(f"training with lr={args.lr} momentum={args.momentum} in {os.getcwd()}")
if args.markers:  # what the script saw, for the tests
    os.makedirs(args.markers, exist_ok=True)
    seen = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "device": args.device,
        "env": {k: v for k, v in os.environ.items() if k.startswith("HPSEARCH_") or k == "CUDA_VISIBLE_DEVICES"},
    }
    with open(os.path.join(args.markers, f"script-{os.getpid()}"), "w") as f:
        json.dump(seen, f)


def _on_term(signum, frame):
    if args.markers:
        open(os.path.join(args.markers, f"term-{os.getpid()}"), "w").close()
    sys.exit(143)


signal.signal(signal.SIGTERM, _on_term)

if args.mode == "exit3":
    print("loading data", flush=True)
    print("RuntimeError: CUDA out of memory (pretend)", file=sys.stderr)
    sys.exit(3)
if args.mode == "kill9":
    os.kill(os.getpid(), signal.SIGKILL)
if args.mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if args.markers:
        open(os.path.join(args.markers, f"child-{child.pid}"), "w").close()
    time.sleep(600)

score = math.exp(-((math.log10(args.lr) + 1) ** 2))
for epoch in range(1, args.epochs + 1):
    if args.sleep:
        time.sleep(args.sleep)
    print(f"epoch {epoch}: some progress bar text {{not json}}")
    if args.mode == "silent":
        continue
    loss = float("nan") if args.mode == "nan" and epoch >= 2 else 1.0 - score * epoch / args.epochs
    print(
        json.dumps({"epoch": epoch, "train_loss": loss, "val_loss": loss, "val_accuracy": score * epoch / args.epochs})
    )
    print("noise {on a line that is not json")
if args.mode == "nan":
    for epoch in range(args.epochs + 1, 600):  # would go on for a minute
        time.sleep(0.1)
        print(json.dumps({"epoch": epoch, "train_loss": float("nan"), "val_loss": float("nan")}))
print("done")
