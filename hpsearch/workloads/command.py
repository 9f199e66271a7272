"""Command workloads: the user's own script, one process per trial, its JSON lines heard as reports.

The command (workloads/spec.py fills in its placeholders) runs in the
trial's folder, in its own process group (procs.spawn), with the trial in
its environment: HPSEARCH_TRIAL, HPSEARCH_STAGE, HPSEARCH_STUDY,
HPSEARCH_SPLIT, HPSEARCH_EPOCHS, HPSEARCH_SEED, HPSEARCH_DEVICE,
HPSEARCH_CHECKPOINT_DIR (the trial's own folder, created, the same on every
run of it: a resumed run finds there what the interrupted one saved; also
the `{checkpoint_dir}` placeholder), HPSEARCH_ATTEMPT (1, or 2 and more for a
resumed run) and HPSEARCH_PARAMS (the params as JSON), plus PYTHONUNBUFFERED=1 so a Python
script's prints arrive as it makes them. A worker's CUDA_VISIBLE_DEVICES
(its one GPU) is inherited. `python` / `python3` as the program mean the
interpreter hpsearch runs in.

The protocol: every line of the script's stdout that is a JSON object is a
report; one with an `epoch` key is that epoch's (curves, divergence,
pruning: `trial.report`, which may stop the trial), and the trial's final
metrics are the last value seen of each key. Numbers only: other values are
ignored, except a "split" other than "test" in a run asked for the test split
(`final`): that run fails (api.wrong_split), the script is stopped. `iterations`
(optimiser steps in the epoch) feeds the progress display. Every line, JSON
or not, goes to the trial's log as printed.

Endings: exit code 0 with the study's metric seen -> the metrics (a NaN
there is diverged, as for functions); non-zero -> FAIL `exit code 3: <last
stderr line>`; killed by a signal -> FAIL `signal 9 (SIGKILL)`; no metric ->
FAIL saying what was expected. A stop (divergence, pruner), an interrupt or
an exception here ends the script's whole group: SIGTERM, STOP_GRACE_S,
SIGKILL. The group is ended after a normal exit too, so no data-loader child
outlives its trial.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from hpsearch.errors import TrialFailed
from hpsearch.procs import end_group, spawn
from hpsearch.workloads.api import SPLIT_LABEL, TrialContext, as_number, wrong_split
from hpsearch.workloads.spec import PYTHON_NAMES, render

STOP_GRACE_S = 1.0  # a stopped script gets this long between SIGTERM and SIGKILL
POLL_S = 0.05  # how often the reader looks whether the script exited while a child keeps its pipes open
RESERVED = ("epoch", "iterations")  # keys of a report line that are not metrics


def emit(**values: Any) -> None:
    """Print one report line for hpsearch: `hpsearch.emit(epoch=3, val_loss=0.41)`.

    The same as `print(json.dumps({...}), flush=True)`, with numpy numbers and
    0-d tensors turned into floats; for scripts run as a command workload.
    """
    line = {k: (v if k == "epoch" else as_number(v)) for k, v in values.items()}
    print(json.dumps(line), flush=True)


class CommandWorkload:
    """A command line as a workload: calling it with a trial runs the command once for that trial."""

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = argv

    def __repr__(self) -> str:
        return f"CommandWorkload({list(self.argv)!r})"

    def arguments(self, trial: TrialContext, checkpoints: str = "") -> list[str]:
        """The command line of `trial`: its placeholders filled in (`checkpoints`: its checkpoint folder)."""
        builtins = {
            "checkpoint_dir": checkpoints or trial.record.checkpoint_dir,
            "attempt": trial.attempt,
            "epochs": trial.epochs,
            "seed": trial.seed,
            "trial": trial.number,
            "stage": trial.stage,
            "study": trial.study,
            "device": trial.device,
            "split": trial.split,
        }
        argv = render(self.argv, trial.params, builtins)
        if argv[0] in PYTHON_NAMES:
            argv[0] = sys.executable
        return argv

    def environment(self, trial: TrialContext, checkpoints: str = "") -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HPSEARCH_CHECKPOINT_DIR=checkpoints or trial.record.checkpoint_dir,
            HPSEARCH_ATTEMPT=str(trial.attempt),
            HPSEARCH_TRIAL=str(trial.number),
            HPSEARCH_STAGE=trial.stage,
            HPSEARCH_STUDY=trial.study,
            HPSEARCH_SPLIT=trial.split,
            HPSEARCH_EPOCHS=str(trial.epochs),
            HPSEARCH_SEED=str(trial.seed),
            HPSEARCH_DEVICE=trial.device,
            HPSEARCH_PARAMS=json.dumps(trial.params),
            PYTHONUNBUFFERED="1",
        )
        return env

    def __call__(self, trial: TrialContext) -> dict[str, float]:
        with contextlib.ExitStack() as stack:
            folder = trial.checkpoint_dir  # the trial's own, created; a run outside a stage gets a passing one
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            checkpoints = str(folder) if folder else stack.enter_context(tempfile.TemporaryDirectory())
            return self._run(trial, checkpoints)

    def _run(self, trial: TrialContext, checkpoints: str) -> dict[str, float]:
        argv = self.arguments(trial, checkpoints)
        try:
            proc = spawn(
                argv,
                die_with_parent=True,
                env=self.environment(trial, checkpoints),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        except OSError as e:
            raise TrialFailed(f"cannot run {argv[0]}: {e.strerror or e}") from None
        metrics: dict[str, float] = {}
        last_error = ""
        try:
            for is_stdout, line in _lines(proc):
                print(line, file=sys.stdout if is_stdout else sys.stderr)
                if not is_stdout:
                    last_error = line.strip() or last_error
                elif (report := parse_report(line)) is not None:
                    if (wrong := wrong_split(_split_of(line), trial.split)) is not None:
                        raise TrialFailed(wrong)  # a final run that evaluates on validation: stop it now
                    epoch, iterations, values = report
                    metrics.update(values)
                    if epoch is not None:
                        trial.report(epoch, iterations, **values)  # raises TrialStopped to stop it
            code = proc.wait()
        finally:
            end_group(proc, STOP_GRACE_S)  # a stopped script, and whatever a finished one left running
        return _ending(code, last_error, metrics, trial.metric)


def parse_report(line: str) -> tuple[int | None, int | None, dict[str, float]] | None:
    """(epoch or None, iterations or None, numeric values) of a JSON-object line, else None."""
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    values = {str(k): float(v) for k, v in data.items() if k not in RESERVED and _is_number(v)}
    epoch = int(data["epoch"]) if _is_number(data.get("epoch")) else None
    iterations = int(data["iterations"]) if _is_number(data.get("iterations")) else None
    return epoch, iterations, values


def _split_of(line: str) -> Any:
    """The "split" a report line names, or None (a line is parsed again only when it has one)."""
    return json.loads(line.strip()).get(SPLIT_LABEL) if f'"{SPLIT_LABEL}"' in line else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ending(code: int, last_error: str, metrics: dict[str, float], metric: str) -> dict[str, float]:
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        raise TrialFailed(f"signal {-code}{name}" + (f": {last_error}" if last_error else ""))
    if code != 0:
        raise TrialFailed(f"exit code {code}" + (f": {last_error}" if last_error else ""))
    if metric not in metrics and not metrics:
        raise TrialFailed(
            f'the command printed no "{metric}": print a JSON line such as {{"epoch": 1, "{metric}": 0.9}} on stdout'
        )
    # Other metrics but not the study's: a wrong `metric` in the study file, not a failing trial. It ends
    # complete, and the coordinator stops the stage at once with one line naming the key (as for a function).
    return metrics


def _lines(proc: subprocess.Popen[bytes]) -> Iterator[tuple[bool, str]]:
    """(is_stdout, line) as the process writes them, until it exits and its pipes are drained.

    Both pipes are read together (a script that fills stderr cannot block on
    it), and reading stops once the process exited even if a child it left
    running still holds the pipes open (its group is ended after).
    """
    assert proc.stdout is not None and proc.stderr is not None
    pending = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
    out = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        for fd in pending:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            events = sel.select(POLL_S)
            if not events and proc.poll() is not None:
                break  # exited; what is left open belongs to a straggler
            for key, _ in events:
                fd = key.fd
                try:
                    chunk = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(fd)
                    continue
                *lines, pending[fd] = (pending[fd] + chunk).split(b"\n")
                for raw in lines:
                    yield fd == out, raw.decode("utf-8", errors="replace").rstrip("\r")
    for fd, rest in pending.items():
        if rest:
            yield fd == out, rest.decode("utf-8", errors="replace").rstrip("\r")
    proc.stdout.close()
    proc.stderr.close()
