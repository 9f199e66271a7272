"""Any nn.Module as a population: K members trained at once, as one stacked model (torch.func).

`train_stacked(workload, members)` trains K trials of a model workload that
differ only in optimiser params. Each member is built as it would be alone
(build(params) under its own seed: the same initial weights), its weights
and buffers stacked along a new first dimension (torch.func.stack_module_state;
BatchNorm's running statistics are buffers, so each member keeps its own),
and one forward pass runs all K: a plain nn.Sequential of common layers as
fused ops (workloads/fused.py: batched matmuls, grouped convolutions), any
other model through torch.func.functional_call under vmap; each member on its
own mini-batch: the batches of its own data order (a generator seeded with its
seed, as alone). Dropout draws independent
masks per member (vmap randomness="different"): a member cannot replay a
solo trial's random stream there. The K losses are summed and
differentiated once; each member's gradient is its own loss's.

The optimisers are vectorised here (StackedSGD, StackedAdamW) with every
hyperparameter a [K, 1, ...] tensor, and follow torch.optim.SGD and
torch.optim.AdamW step for step (equal to a solo trial within float
rounding: see tests/test_model.py for the tolerance).

Each epoch every live member reports its own train_loss, val_loss,
val_accuracy and update_ratio (|w_after - w_before| / |w_before| of the
epoch's last step, averaged over its tensors). A member that is stopped
(diverged, pruned) is removed from the stack at the end of that epoch; the
others go on. What cannot be stacked: a model whose forward vmap cannot
trace (data-dependent control flow, in-place ops on unbatched tensors,
.item() calls): the first step raises, and the members then train one at a
time, with a note in the trial's log.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state, vmap

from hpsearch.errors import TrialStopped
from hpsearch.workloads.fused import fused_layers, run_fused
from hpsearch.workloads.population import Member, report_population


def train_stacked(workload: Any, members: Sequence[Member]) -> list[dict[str, float] | None]:
    """Train `members` (same non-optimiser params) together; one result per member (None: stopped).

    A population of one trains as a stack of one when the model fuses (as fast as alone, and it
    never builds a torch.optim optimizer, whose first use imports torch._dynamo: 1.5 s a process).
    """
    try:
        stack = _Stack(workload, members)
    except (RuntimeError, ValueError, TypeError) as e:  # e.g. build() returns instances of different classes
        if len(members) == 1:
            return [_solo(workload, members[0])]
        return _one_by_one(workload, members, f"{type(e).__name__}: {_first_line(e)}")
    if len(members) == 1 and stack.fused is None:  # vmap of one costs more than the trial alone
        return [_solo(workload, members[0])]
    try:
        return stack.train()
    except _CannotStack as e:
        return _one_by_one(workload, members, str(e))


def _one_by_one(workload: Any, members: Sequence[Member], why: str) -> list[dict[str, float] | None]:
    print(
        f"hpsearch: this model cannot be stacked ({why}); training its {len(members)} trials one at a time",
        file=sys.stderr,
    )
    return [_solo(workload, m) for m in members]


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else ""


class _CannotStack(Exception):
    pass


def _solo(workload: Any, member: Member) -> dict[str, float] | None:
    try:
        return workload(member)
    except TrialStopped:
        return None  # recorded on the member


class _Stack:
    def __init__(self, workload: Any, members: Sequence[Member]) -> None:
        self.workload = workload
        self.members = list(members)
        self.device = members[0].device
        first = dict(members[0].params)
        models = [workload.built(dict(m.params), m.seed, self.device) for m in members]
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        self.buffers = buffers
        self.base = copy.deepcopy(models[0]).to("meta")
        self.fused = fused_layers(models[0])  # None: not a plain Sequential of known layers, vmap it
        self.training = True
        values = [workload.optimizer_values(dict(m.params)) for m in members]
        self.optimizer = (StackedAdamW if workload.spec.optimizer == "adamw" else StackedSGD)(
            self.params, values, self.device
        )
        self.loss = workload.loss_module()
        self.batch_size = workload.batch_size(first)
        self.generators = [torch.Generator().manual_seed(m.seed) for m in members]
        self.evaluated = workload.eval_split(members[0])

    def forward(self, x: torch.Tensor, batched_inputs: bool = True) -> torch.Tensor:
        if self.fused is not None:
            if not batched_inputs:  # every member on the same examples
                x = x.expand(len(self.generators), *x.shape)
            with self.workload.autocast(self.device):
                return run_fused(self.fused, self.params, x, self.training)

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.base, (p, b), (xs,))

        with self.workload.autocast(self.device):
            return vmap(one, in_dims=(0, 0, 0 if batched_inputs else None), randomness="different")(
                self.params, self.buffers, x
            )

    def losses(self, out: torch.Tensor, y: torch.Tensor, batched_targets: bool = True) -> torch.Tensor:
        """Each member's mean loss over its batch, [K]: the built-in losses in one call, others by vmap."""
        out = out.float()
        k = out.shape[0]
        if not batched_targets:
            y = y.expand(k, *y.shape)
        loss = self.workload.spec.loss
        if loss == "cross_entropy" and y.dtype in (torch.int64, torch.int32) and out.ndim == 3:
            # over dim 1 of [K, C, B]: the classes outside the contiguous run (10x faster than [K*B, C] here)
            return F.cross_entropy(out.transpose(1, 2), y, reduction="none").mean(1)
        if loss == "mse" and out.shape == y.shape:
            return (out - y.float()).pow(2).reshape(k, -1).mean(1)
        return vmap(self.loss)(out, y)

    def train(self) -> list[dict[str, float] | None]:
        x_train, y_train = self.workload.splits(self.device)["train"]
        results: dict[int, dict[str, float]] = {}
        alive = list(range(len(self.members)))  # positions (in the caller's list) of the stacked members
        for epoch in range(self.members[0].epochs):
            self.base.train()
            self.training = True
            orders = torch.stack([torch.randperm(len(x_train), generator=g) for g in self.generators]).to(
                x_train.device
            )
            total = torch.zeros(len(alive), device=x_train.device)
            batches = list(orders.split(self.batch_size, dim=1))
            ratio = None
            for step, idx in enumerate(batches):  # idx: [K, B], each member's own batch
                try:
                    losses = self.losses(self.forward(x_train[idx]), y_train[idx])
                except Exception as e:  # vmap could not trace this model: say so, train them one by one
                    if epoch == 0 and step == 0:
                        raise _CannotStack(f"{type(e).__name__}: {_first_line(e)}") from e
                    raise
                grads = torch.autograd.grad(losses.sum(), list(self.params.values()))
                before = [p.detach().clone() for p in self.params.values()] if step == len(batches) - 1 else None
                self.optimizer.step(grads)
                if before is not None:
                    ratio = update_ratio(before, list(self.params.values()))
                total += losses.detach() * idx.shape[1]
            metrics = {"train_loss": (total / len(x_train)).tolist(), **self.evaluate()}
            if ratio is not None:
                metrics["update_ratio"] = ratio.tolist()
            live = report_population([self.members[i] for i in alive], epoch, metrics)
            for k, i in enumerate(alive):
                results[i] = {name: float(values[k]) for name, values in metrics.items() if name != "update_ratio"}
            if not all(live):
                keep = [k for k, ok in enumerate(live) if ok]
                alive = [alive[k] for k in keep]
                if not alive:
                    break
                self._keep(keep)
        return [results.get(i) if self.members[i].alive else None for i in range(len(self.members))]

    @torch.no_grad()
    def evaluate(self) -> dict[str, list[float]]:
        self.base.eval()
        self.training = False
        x, y = self.workload.splits(self.device)[self.evaluated]
        total = torch.zeros(len(self.generators), device=x.device)
        correct = torch.zeros(len(self.generators), device=x.device)
        classify = self.workload.spec.classification and y.dtype in (torch.int64, torch.int32)
        for xs, ys in zip(x.split(self.workload.eval_chunk), y.split(self.workload.eval_chunk)):
            out = self.forward(xs, batched_inputs=False)  # [K, B, ...]: every member on the same examples
            total += self.losses(out, ys, batched_targets=False) * len(xs)
            if classify:
                correct += (_classes(out) == ys).sum(1)
        metrics = {"val_loss": (total / len(x)).tolist()}
        if self.workload.spec.classification:
            metrics["val_accuracy"] = (correct / len(x)).tolist()
        return metrics

    def _keep(self, keep: list[int]) -> None:
        """Drop the stopped members from the stack: weights, buffers, optimiser state, generators."""
        index = torch.tensor(keep, device=next(iter(self.params.values())).device)
        self.params = {k: v.detach()[index].requires_grad_(True) for k, v in self.params.items()}
        self.buffers = {k: v[index] for k, v in self.buffers.items()}
        self.optimizer.keep(index, self.params)
        self.generators = [self.generators[k] for k in keep]


def _classes(out: torch.Tensor) -> torch.Tensor:
    """argmax over the last dim of [K, B, C]; over dim 1 of the contiguous [K, C, B] when `out` is its view
    (fused.py's layout: a strided argmax over 10 classes costs 10x more)."""
    if out.ndim == 3 and out.stride(-1) != 1 and out.transpose(1, 2).is_contiguous():
        return out.transpose(1, 2).argmax(1)
    return out.argmax(-1)


def update_ratio(before: list[torch.Tensor], after: list[torch.Tensor]) -> torch.Tensor:
    """Per member: the mean over its tensors of |after - before| / |before| (tensors with |before| = 0 skipped)."""
    ratios, counts = None, None
    for b, a in zip(before, after):
        norm = b.float().flatten(1).norm(dim=1)
        change = (a.detach() - b).float().flatten(1).norm(dim=1)
        valid = norm > 0
        r = torch.where(valid, change / torch.where(valid, norm, torch.ones_like(norm)), torch.zeros_like(norm))
        ratios = r if ratios is None else ratios + r
        counts = valid.float() if counts is None else counts + valid.float()
    assert ratios is not None and counts is not None
    return ratios / counts.clamp(min=1)


# ----------------------------------------------------------------------------- vectorised optimisers


class _Stacked:
    """Per-member hyperparameters as [K, 1, ...] tensors, broadcast against each stacked parameter."""

    def __init__(self, params: dict[str, torch.Tensor], values: list[dict[str, Any]], device: str) -> None:
        self.hyper = {name: torch.tensor([float(v[name]) for v in values], device=device) for name in values[0]}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._shape(params)

    def _shape(self, params: dict[str, torch.Tensor]) -> None:
        """Each hyperparameter viewed [K, 1, ...] for each parameter's shape, once (not per step)."""
        self.params = params
        self.shaped = {
            name: {h: v.view(-1, *([1] * (p.ndim - 1))).to(p.dtype) for h, v in self.hyper.items()}
            for name, p in params.items()
        }
        self.any = {h: bool((v != 0).any()) for h, v in self.hyper.items()}

    def keep(self, index: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        self.hyper = {k: v[index] for k, v in self.hyper.items()}
        self.state = {p: {k: v[index] for k, v in s.items()} for p, s in self.state.items()}
        self._shape(params)


class StackedSGD(_Stacked):
    """torch.optim.SGD (momentum, dampening 0, nesterov, weight decay), one set of values per member.

    A member with momentum 0 keeps a buffer equal to its gradient, which is
    torch's plain step; nesterov with momentum 0 is the plain step too.
    """

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        # Weight decay goes into this step's own gradients (autograd.grad) in place, unless autograd
        # handed one tensor to two parameters (`a + b` in a forward): then each gets its own copy.
        shared = len({g.data_ptr() for g in grads}) < len(grads)
        for (name, p), g in zip(self.params.items(), grads):
            h = self.shaped[name]
            if self.any["weight_decay"]:
                g = g.addcmul(h["weight_decay"], p) if shared else g.addcmul_(h["weight_decay"], p)
            state = self.state.setdefault(name, {})
            buf = state.get("momentum_buffer")
            if buf is None:  # the first step starts the buffer at the gradient
                buf = state["momentum_buffer"] = g.clone()
            else:  # buf = momentum * buf + g, in one pass over memory
                torch.addcmul(g, buf, h["momentum"], out=buf)
            direction = torch.where(h["nesterov"] > 0, g + h["momentum"] * buf, buf) if self.any["nesterov"] else buf
            p.addcmul_(h["lr"], direction, value=-1.0)


class StackedAdamW(_Stacked):
    """torch.optim.AdamW (decoupled weight decay, bias correction), one set of values per member."""

    def __init__(self, params: dict[str, torch.Tensor], values: list[dict[str, Any]], device: str) -> None:
        super().__init__(params, values, device)
        self.steps = 0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        self.steps += 1
        for (name, p), g in zip(self.params.items(), grads):
            h = self.shaped[name]
            lr, beta1, beta2 = h["lr"], h["beta1"], h["beta2"]
            if self.any["weight_decay"]:
                p.mul_(1 - lr * h["weight_decay"])
            state = self.state.setdefault(name, {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)})
            state["exp_avg"].lerp_(g, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(g, g * (1 - beta2))
            correction1 = 1 - beta1**self.steps
            correction2_sqrt = (1 - beta2**self.steps).sqrt()
            denom = state["exp_avg_sq"].sqrt() / correction2_sqrt + h["eps"]
            p.sub_(lr / correction1 * state["exp_avg"] / denom)
