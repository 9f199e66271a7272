"""Model workloads: hpsearch builds the user's model and owns the optimiser and the loop.

    [workload]
    model = "net.py:build"     # build(params) -> torch.nn.Module (reads the params it wants: width, dropout)
    data = "net.py:data"       # data() -> (train, val) or (train, val, test)
    loss = "cross_entropy"     # cross_entropy | mse | "file.py:fn" (fn(outputs, targets) -> scalar)
    batch_size = 64            # or a param named batch_size
    optimizer = "sgd"          # sgd: lr, momentum, weight_decay, nesterov | adamw: lr, weight_decay, beta1, beta2, eps

One trial (`ModelWorkload.__call__`): the model is built under the trial's
seed (torch.manual_seed), moved to the trial's device with the data, and
trained for trial.epochs epochs of mini-batches in an order drawn from a
generator seeded with the trial's seed; the optimiser takes its
hyperparameters from the trial's params (a missing one takes its default,
workload.OPTIMIZERS). Each epoch reports train_loss (the mean over the
epoch's batches), val_loss and, for cross_entropy, val_accuracy; the last
epoch's are returned. `trial.watch` is called for the workload, so the
update:weight ratios, `sanity` and `lr-find` need nothing more. With
`precision = "bf16"` the forward pass runs under CUDA autocast (on a CPU the
trial trains in fp32). On `trial.split == "test"` the evaluation uses the
third split (an error when data() returns none), under the same names, and
the workload keeps that run's predictions on the test split and its trained
weights in `kept` (a TestRun, on the CPU: final.py's ensemble and best.pt).

Data: each split is an (inputs, targets) pair of tensors or a torch Dataset
of (input, target) items; a Dataset is read into tensors once per process
(the loop indexes tensors, which is what lets a population draw K batches at
once). Data are loaded once per process and device.

`ModelWorkload.population` is the population entry point (workloads/
population.py protocol): members that differ only in optimiser params train
together in one stacked model (workloads/stacked.py); others form separate
groups, trained one group after another.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpsearch.durations import parse_duration
from hpsearch.workloads.population import as_members
from hpsearch.workloads.spec import OPTIMIZERS, ModelSpec

EVAL_CHUNK = 4096  # examples per forward pass when evaluating (bounds memory on large splits)
SPLITS = ("train", "val", "test")


@dataclass
class TestRun:
    """What a trial on the test split leaves (final.py): the model's raw outputs on that split,
    (n_test, *output shape) float32, and its trained weights, both on the CPU."""

    outputs: torch.Tensor
    state_dict: dict[str, torch.Tensor]

    def save(self, path: Path) -> Path:
        """The weights as torch.save(state_dict): load with build(params).load_state_dict(torch.load(path))."""
        torch.save(self.state_dict, path)
        return path


class ModelWorkload:
    """A model workload: callable with a trial (one trial), `population` for several (see module doc).
    workloads/stacked.py trains its populations through the methods below (it takes any such object)."""

    eval_chunk = EVAL_CHUNK

    def __init__(self, spec: ModelSpec, load: Callable[[str], Callable[..., Any]]) -> None:
        """`load("file.py:fn")` imports a function (workloads.loader.load_workload)."""
        self.spec = spec
        self.build = load(spec.model)
        self.data_fn = load(spec.data)
        self.loss_fn: Callable[..., Any] | None = None if spec.loss in ("cross_entropy", "mse") else load(spec.loss)
        self._data: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {}  # device -> split -> tensors
        self.kept: TestRun | None = None  # the last test-split trial's predictions and weights
        self.population = self._population

    def __repr__(self) -> str:
        return f"ModelWorkload({self.spec.model!r})"

    # -- the parts, shared with the stacked trainer

    def splits(self, device: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The data's splits as (inputs, targets) tensors on `device` (data() is called once per process)."""
        if device not in self._data:
            if self._data:
                cpu = next(iter(self._data.values()))
            else:
                returned = self.data_fn()
                if not isinstance(returned, (tuple, list)) or len(returned) not in (2, 3):
                    raise ValueError(
                        f"data() must return (train, val) or (train, val, test), got {_describe(returned)}"
                    )
                cpu = {name: _as_tensors(split, name) for name, split in zip(SPLITS, returned)}
            self._data[device] = {name: (x.to(device), y.to(device)) for name, (x, y) in cpu.items()}
        return self._data[device]

    def eval_split(self, trial: Any) -> str:
        split = getattr(trial, "split", "val")
        if split == "test" and "test" not in self.splits(trial.device):
            raise ValueError("data() returned no test split: return (train, val, test) to evaluate on test")
        return "test" if split == "test" else "val"

    def loss_module(self) -> nn.Module:
        """The loss as a module (the sanity checks and the LR range test hook its forward)."""
        if self.spec.loss == "cross_entropy":
            return nn.CrossEntropyLoss()
        if self.spec.loss == "mse":
            return nn.MSELoss()
        return _FunctionLoss(self.loss_fn)

    def optimizer_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The optimiser's hyperparameters from the trial's params, defaults filling the gaps."""
        values = {}
        for name, default in OPTIMIZERS[self.spec.optimizer].items():
            value = params.get(name, default)
            values[name] = bool(value) if isinstance(default, bool) else float(value)  # type: ignore[arg-type]  # lr: required
        return values

    def batch_size(self, params: dict[str, Any]) -> int:
        return int(params.get("batch_size", self.spec.batch_size))

    def autocast(self, device: str) -> contextlib.AbstractContextManager[Any]:
        if self.spec.precision == "bf16" and str(device).startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def built(self, params: dict[str, Any], seed: int, device: str) -> nn.Module:
        """build(params) under `seed`, on `device`: the same initial weights for the same seed, alone or stacked."""
        if str(device).startswith("cuda"):
            torch.manual_seed(seed)  # build() may make its weights on the GPU
        else:  # the CPU generator alone: torch.manual_seed also seeds every lazy backend (~1 ms, per member)
            torch.random.default_generator.manual_seed(seed)
        model = self.build(dict(params))
        if not isinstance(model, nn.Module):
            raise TypeError(f"build(params) must return a torch.nn.Module, got {type(model).__name__}")
        return model.to(device)

    # -- one trial

    def __call__(self, trial: Any) -> dict[str, float]:
        params, device = dict(trial.params), trial.device
        model = self.built(params, trial.seed, device)
        optimizer = make_optimizer(self.spec.optimizer, model.parameters(), self.optimizer_values(params))
        loss_fn = self.loss_module()
        trial.watch(model, optimizer, loss_fn)
        data = self.splits(device)
        x_train, y_train = data["train"]
        if getattr(trial, "subset", None):
            x_train, y_train = x_train[: trial.subset], y_train[: trial.subset]
        evaluated = self.eval_split(trial)
        batch_size = self.batch_size(params)
        generator = torch.Generator().manual_seed(trial.seed)
        saver = Saver(trial, self.spec.checkpoint_every, model, optimizer, generator)
        start = saver.restore()  # a resumed trial: where its last checkpoint left it
        metrics: dict[str, float] = start.metrics
        outputs: list[torch.Tensor] = []
        for epoch in range(start.epoch, trial.epochs):
            model.train()
            at_start = generator.get_state()  # a checkpoint within the epoch draws its order again from here
            order = torch.randperm(len(x_train), generator=generator).to(x_train.device)
            total, steps = torch.full((), start.total, device=x_train.device), start.steps
            for batch, idx in enumerate(order.split(batch_size)):
                if epoch == start.epoch and batch < start.batch:
                    continue  # trained before the checkpoint this run resumed from
                with self.autocast(device):
                    loss = loss_fn(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach().float() * len(idx)
                steps += 1
                saver.within(epoch, batch + 1, at_start, float(total), steps)
            start = Resume()
            keep = outputs if evaluated == "test" and epoch == trial.epochs - 1 else None
            metrics = {
                "train_loss": float(total) / len(x_train),
                **self.evaluate(model, *data[evaluated], device, keep),
            }
            saver.after(epoch, metrics)  # before the report, which may end the trial: every reported epoch is saved
            trial.report(epoch, iterations=steps, **metrics)
        if outputs:
            self.kept = TestRun(
                torch.cat(outputs), {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            )
        return metrics

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str, keep: list[torch.Tensor] | None = None
    ) -> dict[str, float]:
        """val_loss (the mean over the split) and, for cross_entropy, val_accuracy; the outputs go into `keep`
        (on the CPU, float32) when given."""
        model.eval()
        loss_fn = self.loss_module()
        total, correct = 0.0, 0
        for xs, ys in zip(x.split(self.eval_chunk), y.split(self.eval_chunk)):
            with self.autocast(device):
                out = model(xs)
            if keep is not None:
                keep.append(out.detach().float().cpu())
            total += float(loss_fn(out.float(), ys)) * len(xs)
            if self.spec.classification and ys.dtype in (torch.int64, torch.int32):
                correct += int((out.argmax(-1) == ys).sum())
        metrics = {"val_loss": total / len(x)}
        if self.spec.classification:
            metrics["val_accuracy"] = correct / len(x)
        return metrics

    @torch.no_grad()
    def ensemble_metrics(self, outputs: Sequence[Sequence[torch.Tensor]]) -> dict[str, float]:
        """The test metrics of the averaged prediction: `outputs[c][r]` is run r of configuration c (TestRun.outputs).
        Each configuration's runs are averaged first, then the configurations (equal weight per configuration):
        softmax probabilities for cross_entropy, raw outputs for mse and a file loss. Same names as one trial's."""
        y = self.splits("cpu")["test"][1]
        if self.spec.classification:
            mean = torch.stack([torch.stack([o.softmax(-1) for o in runs]).mean(0) for runs in outputs]).mean(0)
            log_p = mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
            if y.dtype not in (torch.int64, torch.int32):  # class probabilities as targets
                return {"val_loss": float(-(y * log_p).sum(-1).mean()), "val_accuracy": 0.0}
            return {
                "val_loss": float(nn.functional.nll_loss(log_p, y)),
                "val_accuracy": float((mean.argmax(-1) == y).float().mean()),
            }
        mean = torch.stack([torch.stack(list(runs)).mean(0) for runs in outputs]).mean(0)
        return {"val_loss": float(self.loss_module()(mean, y))}

    # -- several trials

    def _population(self, trials: Sequence[Any]) -> list[dict[str, float] | None]:
        """Train the trials together: one stacked model per group of trials that differ only in optimiser params."""
        from hpsearch.workloads.stacked import train_stacked

        members = as_members(trials)
        results: list[dict[str, float] | None] = [None] * len(members)
        for group in groups(members, self.spec.optimizer):
            for index, result in zip(group, train_stacked(self, [members[i] for i in group])):
                results[index] = result
        return results


def groups(trials: Sequence[Any], optimizer: str) -> list[list[int]]:
    """Indices of the trials, grouped by every param the optimiser does not read (width, dropout,
    batch_size...): only optimiser params may differ within a stacked model. First-seen order."""
    optimizer_params = set(OPTIMIZERS[optimizer])
    found: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for index, trial in enumerate(trials):
        key = tuple(sorted((k, repr(v)) for k, v in trial.params.items() if k not in optimizer_params))
        found.setdefault(key, []).append(index)
    return list(found.values())


def make_optimizer(kind: str, parameters: Iterator[nn.Parameter], values: dict[str, Any]) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW(
            parameters,
            lr=values["lr"],
            betas=(values["beta1"], values["beta2"]),
            eps=values["eps"],
            weight_decay=values["weight_decay"],
        )
    return torch.optim.SGD(
        parameters,
        lr=values["lr"],
        momentum=values["momentum"],
        weight_decay=values["weight_decay"],
        nesterov=values["nesterov"] and values["momentum"] > 0,
    )


class _FunctionLoss(nn.Module):
    """A loss function from a file, as a module (hooks need one)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.fn(outputs, targets)


def _as_tensors(split: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An (inputs, targets) pair of tensors, or a Dataset of (input, target) items, as two tensors."""
    if isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, torch.Tensor) for t in split):
        x, y = split
    elif hasattr(split, "__getitem__") and hasattr(split, "__len__"):
        items = [split[i] for i in range(len(split))]
        if not items:
            raise ValueError(f"data(): the {name} split is empty")
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.stack([torch.as_tensor(item[1]) for item in items])
    else:
        raise ValueError(
            f"data(): the {name} split must be an (inputs, targets) pair of tensors or a Dataset, "
            f"got {_describe(split)}"
        )
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"data(): the {name} split has {len(x)} inputs and {len(y)} targets; give as many of each, at least one"
        )
    return x, y


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


@dataclass
class Resume:
    """Where a run starts: epoch 0 (a new trial), or where the checkpoint it resumes from was saved."""

    epoch: int = 0
    batch: int = 0  # batches of `epoch` already trained (a checkpoint within an epoch)
    total: float = 0.0  # their summed loss x batch size, and their optimiser steps
    steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # the last finished epoch's


AUTO_SHARE = 0.05  # checkpoint_every = "auto": saves take at most this share of a trial's time
AUTO_FLOOR_S = 1.0  # ... and come at least this far apart: work lost to a stop between two is under a second


class Saver:
    """A trial's checkpoints in the model loop: model, optimiser, the batch order's generator and torch's
    RNG, and where in the loop (trial.save_checkpoint: atomic). `every`: "auto" (after an epoch, unless less
    than AUTO_FLOOR_S passed since the last save, or the last save took over AUTO_SHARE of the time since it:
    epochs of a second or more are saved each, short ones every few, a trial of under a second never),
    N epochs (0: never), or a duration ("10m"): also within an epoch, at the first batch boundary past it.
    Off when the trial has no checkpoint folder (sanity, lr-find, final's test runs)."""

    def __init__(self, trial: Any, every: int | str, model: nn.Module, optimizer: Any, generator: Any) -> None:
        self.trial, self.model, self.optimizer, self.generator = trial, model, optimizer, generator
        on = getattr(trial, "checkpoint_dir", None) is not None and every not in (0, "0")
        self.auto = on and every == "auto"
        self.epochs = every if on and isinstance(every, int) else 1 if self.auto else 0
        self.seconds = parse_duration(every) if on and isinstance(every, str) and not self.auto else 0.0
        self.saved, self.cost = time.monotonic(), 0.0  # the last save: when it ended, how long it took

    def restore(self) -> Resume:
        state = self.trial.load_checkpoint() if self.epochs or self.seconds else None
        if not isinstance(state, dict) or "model" not in state:
            return Resume()
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        print(f"hpsearch: resumed from the checkpoint of epoch {state['epoch']}, batch {state['batch']}")
        return Resume(state["epoch"], state["batch"], state["total"], state["steps"], state["metrics"])

    def within(self, epoch: int, batch: int, at_start: torch.Tensor, total: float, steps: int) -> None:
        if self.seconds and time.monotonic() - self.saved >= self.seconds:
            self._save(epoch, batch, at_start, total, steps, {})

    def after(self, epoch: int, metrics: dict[str, float]) -> None:
        due = self.epochs and (epoch + 1) % self.epochs == 0
        if self.auto and time.monotonic() - self.saved < max(self.cost / AUTO_SHARE, AUTO_FLOOR_S):
            due = False  # short epochs: saving each would cost over AUTO_SHARE of the time, or save little
        if due or (self.seconds and time.monotonic() - self.saved >= self.seconds):
            self._save(epoch + 1, 0, self.generator.get_state(), 0.0, 0, metrics)

    def _save(self, epoch: int, batch: int, generator: torch.Tensor, total: float, steps: int, metrics: dict) -> None:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": generator,
            "rng": torch.get_rng_state(),
            "cuda_rng": cuda,
            "epoch": epoch,
            "batch": batch,
            "total": total,
            "steps": steps,
            "metrics": metrics,
        }
        start = time.monotonic()
        self.trial.save_checkpoint(state)
        self.saved = time.monotonic()
        self.cost = self.saved - start
