"""The watcher: what hpsearch sees inside a training loop once a workload calls `trial.watch(...)`.

A workload calls `trial.watch(model, optimizer, loss_fn)` once, after building
them. hpsearch then hooks, without any other change to the training loop:

- the optimizer's step (torch.optim.Optimizer.register_step_pre_hook /
  register_step_post_hook): a few steps per epoch are sampled to measure the
  update:weight ratio |w_after - w_before| / |w_before| per parameter tensor
  (the actual change, so lr, momentum and weight decay are all included),
  averaged over tensors; the last sample of each epoch becomes the trial's
  `update_ratio` curve. The instruments also steer the learning rate here
  (the LR range test sets it before each step).
- the loss module's forward (when `loss_fn` is an nn.Module, e.g.
  nn.CrossEntropyLoss()): every training loss (one computed with gradients)
  with its batch size, number of classes and accuracy. That is what the
  sanity checks and the LR range test read.

torch is imported only inside these methods: importing hpsearch never imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Called before each optimizer step with the step number (0-based); may set the lr.
StepHook = Callable[[int, Any], None]
# Called after each training loss with its record; may raise to end the trial.
LossHook = Callable[["LossRecord"], None]


@dataclass(frozen=True)
class LossRecord:
    """One training batch as the loss module saw it."""

    step: int  # optimizer steps taken before this loss was computed
    loss: float
    size: int  # examples in the batch
    classes: int  # C of a [B, C] logit tensor (2 for a single logit)
    correct: int | None  # argmax == target, when the targets are class indices


class Watcher:
    """Hooks on one model/optimizer/loss of a running trial (see the module docstring)."""

    def __init__(self, model: Any, optimizer: Any, loss_fn: Any = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.steps = 0  # optimizer steps taken
        self.losses: list[LossRecord] = []
        self.on_step: StepHook | None = None
        self.on_loss: LossHook | None = None
        self._handles: list[Any] = []
        self._snapshot: list[tuple[Any, Any]] | None = None
        self._ratio: float | None = None  # latest sampled update ratio
        self._epoch_steps: list[int] = []  # steps taken by the end of each reported epoch
        self._hook()

    @property
    def watches_loss(self) -> bool:
        return bool(self.loss_fn is not None and hasattr(self.loss_fn, "register_forward_hook"))

    def _hook(self) -> None:
        if not hasattr(self.optimizer, "register_step_pre_hook"):
            raise TypeError("trial.watch: optimizer must be a torch.optim.Optimizer")
        self._handles.append(self.optimizer.register_step_pre_hook(self._pre_step))
        self._handles.append(self.optimizer.register_step_post_hook(self._post_step))
        if self.watches_loss:
            self._handles.append(self.loss_fn.register_forward_hook(self._loss_forward))

    def close(self) -> None:
        """Remove every hook (the model may outlive the trial)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- update:weight ratio

    def _sample_now(self) -> bool:
        """Cheap sampling: steps 1, 2, 4, 8, ... of the first epoch (its length is unknown yet),
        then the last step of every later epoch (assuming epochs as long as the first)."""
        step = self.steps + 1  # 1-based number of the step about to run
        # The first epoch that took steps sets the epoch length (a report before training takes none).
        first = next((n for n in self._epoch_steps if n > 0), 0)
        if not first:
            return step & (step - 1) == 0
        return (step - first) % first == 0

    def _pre_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self.on_step is not None:
            self.on_step(self.steps, optimizer)
        if self._sample_now():
            self._snapshot = [
                (p, p.detach().clone())
                for group in optimizer.param_groups
                for p in group["params"]
                if p.grad is not None
            ]

    def _post_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.steps += 1
        if self._snapshot is None:
            return
        import torch

        ratios = []
        with torch.no_grad():
            for p, before in self._snapshot:
                norm = float(before.norm())
                if norm > 0:
                    ratios.append(float((p.detach() - before).norm()) / norm)
        self._snapshot = None
        if ratios and all(math.isfinite(r) for r in ratios):
            self._ratio = sum(ratios) / len(ratios)

    def end_epoch(self) -> float | None:
        """Called at each trial.report: the epoch's update ratio (its last sample), if any."""
        self._epoch_steps.append(self.steps)
        return self._ratio

    # -- training losses

    def _loss_forward(self, module: Any, inputs: Any, output: Any) -> None:
        if not getattr(output, "requires_grad", False) or output.numel() != 1:
            return  # validation losses (no_grad) and per-example losses are not training steps
        logits = inputs[0] if inputs else None
        target = inputs[1] if len(inputs) > 1 else None
        size = int(logits.shape[0]) if logits is not None and logits.ndim > 0 else 1
        classes = int(logits.shape[-1]) if logits is not None and logits.ndim >= 2 and logits.shape[-1] > 1 else 2
        correct = None
        if logits is not None and target is not None and logits.ndim == 2 and target.ndim == 1 and classes > 1:
            correct = int((logits.detach().argmax(1) == target).sum())
        record = LossRecord(self.steps, float(output.detach()), size, classes, correct)
        self.losses.append(record)
        if self.on_loss is not None:
            self.on_loss(record)
