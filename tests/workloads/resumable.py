"""Torch-free workloads that keep a checkpoint and are stopped on their first run (the resume tests).

Each appends one line per epoch it trains to RUNS_FILE (env HPSEARCH_TEST_RUNS: 'trial attempt epoch'),
so a test counts the epochs every run of a trial trained. No hpsearch import.
"""

import os
import signal

STOP_AT = 7  # the epoch at which a first run is stopped


def _train(trial, stop):
    state = trial.load_checkpoint() or {"epoch": 0, "w": 0.0}
    runs = os.environ.get("HPSEARCH_TEST_RUNS")
    for epoch in range(state["epoch"], trial.epochs):
        if trial.attempt == 1 and epoch == STOP_AT:
            stop()
        state["w"] += trial.params["lr"]
        state["epoch"] = epoch + 1
        if runs:
            with open(runs, "a") as f:
                f.write(f"{trial.number} {trial.attempt} {epoch} {trial.seed} {trial.checkpoint_dir}\n")
        trial.save_checkpoint(state)
        trial.report(epoch, train_loss=1.0 / (1.0 + state["w"]), val_accuracy=state["w"] / (1.0 + state["w"]))
    return {"val_accuracy": state["w"] / (1.0 + state["w"])}


def interrupted(trial):
    """Ctrl-C in the middle of epoch STOP_AT of the first run of the stage's first trial."""

    def stop():
        if trial.number == 0:
            raise KeyboardInterrupt

    return _train(trial, stop)


def killed(trial):
    """Its worker process SIGKILLed (an OOM killer, a scheduler) in epoch STOP_AT of its first run."""
    return _train(trial, lambda: os.kill(os.getpid(), signal.SIGKILL))


def always_killed(trial):
    """Killed in epoch STOP_AT of every run: it runs out of attempts."""

    def stop():
        os.kill(os.getpid(), signal.SIGKILL)

    state = trial.load_checkpoint() or {"epoch": 0}
    for epoch in range(state["epoch"], trial.epochs):
        if epoch == STOP_AT:
            stop()
        state["epoch"] = epoch + 1
        trial.save_checkpoint(state)
        trial.report(epoch, train_loss=1.0, val_accuracy=0.5)
    return {"val_accuracy": 0.5}


def preempted(trial):
    """In a worker process: sends SIGUSR1 to its coordinator (the command: SLURM's warning before a
    preemption) in epoch STOP_AT of its first run, then waits to be ended with its worker."""
    import time

    def stop():
        os.kill(os.getppid(), signal.SIGUSR1)
        time.sleep(60)

    return _train(trial, stop)


def steady(trial):
    """HPSEARCH_TEST_EPOCH_S seconds per epoch (default 0.5), a checkpoint after each: the SLURM tests
    preempt a task while it trains. Each runs line also names SLURM_RESTART_COUNT."""
    import time

    epoch_s = float(os.environ.get("HPSEARCH_TEST_EPOCH_S", "0.5"))
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    state = trial.load_checkpoint() or {"epoch": 0, "w": 0.0}
    runs = os.environ.get("HPSEARCH_TEST_RUNS")
    for epoch in range(state["epoch"], trial.epochs):
        time.sleep(epoch_s)
        state["w"] += trial.params["lr"]
        state["epoch"] = epoch + 1
        trial.save_checkpoint(state)
        if runs:
            with open(runs, "a") as f:
                f.write(f"{trial.number} {trial.attempt} {epoch} {restarts} {trial.checkpoint_dir}\n")
        trial.report(epoch, train_loss=1.0 / (1.0 + state["w"]), val_accuracy=state["w"] / (1.0 + state["w"]))
    return {"val_accuracy": state["w"] / (1.0 + state["w"])}
