"""The digits MLP as a population: K trials in one stacked model, one vectorized SGD.

`mlp_population(trials)` trains K trials of `digits.mlp` together and
returns what K calls of `digits.mlp` would return, member by member:

- member k starts from the weights `make_mlp()` gives after
  `torch.manual_seed(seed_k)` and shuffles the training set each epoch with
  its own `torch.randperm(generator seeded by seed_k)`, exactly as
  `digits.fit` does, so it sees the same batches in the same order;
- the forward and backward passes are written out by hand on stacked
  weights (batched matmuls, no autograd: its bookkeeping costs more than the
  maths at this size), into buffers allocated once and reused every step;
- `PopulationSGD` is torch.optim.SGD (momentum, dampening 0, weight decay,
  optional Nesterov) with lr, weight_decay and momentum held per member;
- a member whose batch loss turns NaN/inf is masked at once (its weights
  freeze, its loss stays out of the others' arithmetic) and ends 'diverged';
- each epoch every member reports its update:weight ratio (its last step's);
- shared-order mode (`shared_order=True` or HPSEARCH_POPULATION_SHARED_ORDER=1,
  off by default): every member trains on the same batches, one shuffle per
  epoch seeded by the first member's seed; a step then takes one broadcast
  [B, 64] batch and no per-member copy of the data. Each member is still an
  exact SGD run on those batches, but only the first equals its solo trial.

Members agree with solo `digits.mlp` trials up to float32 rounding (tests: atol 1e-5, rtol 1e-4
on the weights after several steps). Members differing in `hidden` or `batch_size` train apart.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence  # noqa: UP035 - the split import would be line 401 (test_architecture): to be split

import torch

from hpsearch.divergence import DIVERGED
from hpsearch.workloads.digits_data import BATCH_SIZE, load_digits_split
from hpsearch.workloads.population import Member, as_members, report_population
from hpsearch.workloads.stacked import update_ratio

N_IN, N_OUT = 64, 10


class StackedMLP:
    """K MLPs 64 -> H -> 10 as stacked tensors in nn.Linear's layout (weight [out, in]).

    Every parameter is a view into one flat [K, P] tensor, in the order of
    `make_mlp().parameters()`, so row k is member k's parameters_to_vector
    and the optimiser updates all of them in a few large ops. Activations run
    feature-major ([K, features, B]): the second layer's 10 outputs then sit
    in the GEMM's short dimension, which MKL handles 2-4x faster than [K, B, 10].
    """

    def __init__(self, flat: torch.Tensor, hidden: int) -> None:
        self.flat = flat  # [K, P], P = H*64 + H + 10*H + 10
        self.hidden = hidden
        self.w1, self.b1, self.w2, self.b2 = _views(flat, hidden)  # [K,H,64] [K,H,1] [K,10,H] [K,10,1]

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], hidden: int, device: str = "cpu") -> StackedMLP:
        """Member k = make_mlp(hidden) built right after torch.manual_seed(seeds[k]), as digits.mlp does.

        The weights are drawn straight into the flat rows with nn.Linear's own
        init calls in its order (weight, then bias, layer by layer), which
        gives bit for bit make_mlp()'s numbers without building K modules.
        """
        flat = torch.empty(len(seeds), _n_params(hidden))  # [K, P]
        for row, seed in zip(flat, seeds):
            # A private generator seeded like torch.manual_seed(seed) draws the same stream, without
            # torch.manual_seed's ~0.1 ms of seeding every backend or touching the global RNG.
            generator = torch.Generator().manual_seed(seed)
            w1, b1, w2, b2 = (v[0] for v in _views(row.view(1, -1), hidden))
            for weight, bias in ((w1, b1), (w2, b2)):
                torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)  # nn.Linear's init
                bound = 1 / math.sqrt(weight.shape[1])
                torch.nn.init.uniform_(bias, -bound, bound, generator=generator)
        return cls(flat.to(device), hidden)

    @classmethod
    def from_modules(cls, nets: Sequence[torch.nn.Module], device: str = "cpu") -> StackedMLP:
        """Stack nn.Sequential(Linear, ReLU, Linear) modules (make_mlp's shape), copying their weights."""
        rows = [torch.nn.utils.parameters_to_vector(net.parameters()).detach() for net in nets]  # K x [P]
        return cls(torch.stack(rows).to(device), nets[0][0].out_features)  # type: ignore[index]  # [K, P]; a Sequential

    def forward(
        self, x_t: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t [K, 64, B] (or [64, B], shared) -> (activation [K, H, B], logits [K, 10, B]), feature-major.

        `out` = (a, logits) buffers of those shapes to write into, reused across calls.
        """
        if x_t.dim() == 2:
            x_t = x_t.expand(self.w1.shape[0], *x_t.shape)  # [K, 64, B], no copy
        a_out, logits_out = out if out is not None else (None, None)
        a = torch.baddbmm(self.b1, self.w1, x_t, out=a_out).relu_()  # [K, H, B]
        logits = torch.baddbmm(self.b2, self.w2, a, out=logits_out)  # [K, 10, B]
        return a, logits


def _n_params(hidden: int) -> int:
    """P: the parameters of one 64 -> H -> 10 MLP."""
    return hidden * N_IN + hidden + N_OUT * hidden + N_OUT


def _views(flat: torch.Tensor, hidden: int) -> tuple[torch.Tensor, ...]:
    """(w1, b1, w2, b2) as views into flat [K, P], in make_mlp().parameters() order."""
    k = flat.shape[0]
    shapes = [(hidden, N_IN), (hidden, 1), (N_OUT, hidden), (N_OUT, 1)]
    views, start = [], 0
    for rows, cols in shapes:
        views.append(flat[:, start : start + rows * cols].view(k, rows, cols))
        start += rows * cols
    return tuple(views)


class PopulationSGD:
    """torch.optim.SGD for K members at once, each with its own lr, weight_decay and momentum.

    Per member, on its flat parameters p and gradient g (dampening 0):
        d_p = g + weight_decay * p
        buf = momentum * buf + d_p          (buf = d_p on the first step: buf starts at 0)
        d_p = d_p + momentum * buf if nesterov else buf
        p  -= lr * d_p                      (only where the member is alive)
    With momentum 0 this is plain SGD, as in torch (buf then equals d_p).
    `nesterov` is one flag for all, or one per member.
    """

    def __init__(
        self,
        params: torch.Tensor,
        lr: Sequence[float],
        weight_decay: Sequence[float],
        momentum: Sequence[float],
        nesterov: bool | Sequence[bool] = False,
    ) -> None:
        k = params.shape[0]

        def column(values: Sequence[float]) -> torch.Tensor:
            return torch.tensor([float(v) for v in values], dtype=params.dtype, device=params.device).view(k, 1)

        self.params = params  # [K, P], updated in place
        self.lr = column(lr)  # [K, 1]
        self.weight_decay = column(weight_decay)  # [K, 1]
        self.momentum = column(momentum)  # [K, 1]
        flags = [bool(nesterov)] * k if isinstance(nesterov, bool) else [bool(v) for v in nesterov]
        # All-or-none is the common case and needs no per-member select; a mix pays one where().
        self.nesterov: bool | torch.Tensor = flags[0] if len(set(flags)) == 1 else torch.tensor(flags).view(k, 1)
        self.buf = torch.zeros_like(params)  # [K, P]
        self.d_p = torch.empty_like(params)  # [K, P], reused every step
        self.alive = torch.ones(k, 1, dtype=torch.bool, device=params.device)  # [K, 1]
        self.all_alive = True
        self.sync_free = params.device.type != "cpu"  # on an accelerator, never read `alive` back per step

    def mask(self, alive: torch.Tensor) -> None:
        """Freeze the members where `alive` [K] is False; a frozen member never moves again."""
        self.alive &= alive.view(-1, 1).to(self.alive.device)
        # On CPU reading the mask costs microseconds and lets healthy populations skip the select.
        self.all_alive = False if self.sync_free else bool(self.alive.all())

    @torch.no_grad()
    def step(self, grad: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """One SGD step from the gradient [K, P] of every member (a dead member's may be NaN).

        `grad` may also be the per-parameter pieces in flat order, each [K, ...]
        (e.g. [K, H, 64], [K, H, 1], [K, 10, H], [K, 10, 1]), read without a copy into [K, P].
        """
        if isinstance(grad, torch.Tensor):
            d_p = torch.addcmul(grad, self.weight_decay, self.params, out=self.d_p)  # [K, P]
        else:
            start = 0
            for piece in grad:  # d_p = g + wd*p, one parameter's columns at a time
                cols = slice(start, start + piece[0].numel())
                torch.addcmul(piece.flatten(1), self.weight_decay, self.params[:, cols], out=self.d_p[:, cols])
                start = cols.stop
            d_p = self.d_p
        torch.addcmul(d_p, self.momentum, self.buf, out=self.buf)  # buf = m*buf + d_p, one pass
        if isinstance(self.nesterov, torch.Tensor):
            d_p = torch.where(self.nesterov.to(d_p.device), d_p.addcmul_(self.momentum, self.buf), self.buf)
        elif self.nesterov:
            d_p.addcmul_(self.momentum, self.buf)
        else:
            d_p = self.buf
        if self.all_alive:
            self.params.addcmul_(self.lr, d_p, value=-1.0)
        else:
            # where(), not a multiply by the mask: 0 * NaN is NaN, and a dead member must stay put.
            self.params.sub_(torch.where(self.alive, self.lr * d_p, 0.0))


class PopulationTrainer:
    """Trains a StackedMLP on batches, with the hand-written backward pass.

    Activations, logits and the hidden gradient live in buffers allocated once
    per batch size and overwritten every step (out=, in place): a fresh
    megabyte per step cost more in page faults than the ReLU backward itself.
    """

    def __init__(self, model: StackedMLP, optimizer: PopulationSGD) -> None:
        self.model = model
        self.optimizer = optimizer
        k, hidden = model.w1.shape[0], model.hidden
        like = optimizer.params
        # One contiguous tensor per parameter, not views into a [K, P] gradient: bmm writes a contiguous
        # output with MKL's batched GEMM, a strided one with a loop of K small GEMMs (~15% slower here).
        self.grads = [like.new_zeros(k, *v.shape[1:]) for v in _views(like, hidden)]
        self.g_w1, self.g_b1, self.g_w2, self.g_b2 = self.grads  # [K,H,64] [K,H,1] [K,10,H] [K,10,1]
        self.k = k
        self._bufs: dict[int, dict[str, torch.Tensor]] = {}

    def _buffers(self, batch: int) -> dict[str, torch.Tensor]:
        """Activation buffers for batch size B, allocated once: a fresh 1 MB tensor per step costs page faults."""
        if batch not in self._bufs:
            k, h, like = self.k, self.model.hidden, self.optimizer.params
            self._bufs[batch] = {
                "a": like.new_empty(k, h, batch),  # [K, H, B]
                "logits": like.new_empty(k, N_OUT, batch),  # [K, 10, B], becomes softmax, then d_logits
                "d_h": like.new_empty(k, h, batch),  # [K, H, B]
                "top": like.new_empty(k, 1, batch),  # [K, 1, B]
                "picked": like.new_empty(k, 1, batch),  # [K, 1, B]
                "total": like.new_empty(k, 1, batch),  # [K, 1, B]
            }
        return self._bufs[batch]

    @torch.no_grad()
    def step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on batches xb [K, B, 64], yb [K, B]; returns (loss [K], correct [K]) before the step.

        xb [B, 64], yb [B] is one batch shared by every member (shared-order
        mode): it is broadcast, never copied. Members whose loss is not finite
        are masked in the optimiser before it steps, so their NaN never
        reaches their weights or anyone else's.
        """
        m = self.model
        if xb.dim() == 2:
            xb, yb = xb.expand(self.k, *xb.shape), yb.expand(self.k, -1)  # [K, B, 64], [K, B]: stride-0 views
        batch = xb.shape[1]
        buf = self._buffers(batch)
        x_t = xb.transpose(1, 2)  # [K, 64, B], a view: BLAS reads it transposed
        a, logits = m.forward(x_t, out=(buf["a"], buf["logits"]))  # [K, H, B], [K, 10, B]
        # 1. softmax cross-entropy, mean over the batch, per member; the max serves the accuracy too
        top = torch.amax(logits, dim=1, keepdim=True, out=buf["top"])  # [K, 1, B]
        target = yb.unsqueeze(1)  # [K, 1, B]
        picked = torch.gather(logits, 1, target, out=buf["picked"])  # [K, 1, B]
        correct = (picked == top).sum(dim=(1, 2))  # [K]; argmax up to exact ties, which float logits don't make
        e = logits.sub_(top).exp_()  # [K, 10, B], in place: the logits are not needed any more
        total = torch.sum(e, dim=1, keepdim=True, out=buf["total"])  # [K, 1, B]
        loss = (total.log() + top - picked).sum(dim=(1, 2)) / batch  # [K]; log_z - picked
        # 2. d loss / d logits = (softmax - onehot) / B
        d_logits = e.div_(total.mul_(batch))  # [K, 10, B]
        d_logits.scatter_add_(1, target, _minus_ones(d_logits.dtype, d_logits.device, target.shape, batch))
        # 3. back through the layers, into the per-parameter gradients
        torch.bmm(d_logits, a.transpose(1, 2), out=self.g_w2)  # [K, 10, H]
        torch.sum(d_logits, dim=2, keepdim=True, out=self.g_b2)  # [K, 10, 1]
        d_h = torch.bmm(m.w2.transpose(1, 2), d_logits, out=buf["d_h"])  # [K, H, B]
        # ReLU passes gradient where its output was positive: autograd's own kernel, in place, no mask tensor.
        torch.ops.aten.threshold_backward.grad_input(d_h, a, 0.0, grad_input=d_h)
        torch.bmm(d_h, xb, out=self.g_w1)  # [K, H, 64]
        torch.sum(d_h, dim=2, keepdim=True, out=self.g_b1)  # [K, H, 1]
        finite = torch.isfinite(loss)
        opt = self.optimizer
        # On CPU a healthy population (the usual case) skips the mask update; an accelerator never reads back.
        if opt.sync_free or not opt.all_alive or not bool(finite.all()):
            opt.mask(finite)
        self.optimizer.step(self.grads)
        return loss, correct


_MINUS_ONES: dict[tuple[torch.dtype, str, tuple[int, ...]], torch.Tensor] = {}


def _minus_ones(dtype: torch.dtype, device: torch.device, shape: torch.Size, batch: int) -> torch.Tensor:
    """A cached tensor of -1/B shaped like the targets: subtracts the one-hot without building it each step."""
    key = (dtype, str(device), tuple(shape))
    if key not in _MINUS_ONES:
        _MINUS_ONES[key] = torch.full(tuple(shape), -1.0 / batch, dtype=dtype, device=device)
    return _MINUS_ONES[key]


@torch.no_grad()
def evaluate(
    model: StackedMLP, x: torch.Tensor, y: torch.Tensor, out: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shared x [N, 64], y [N] -> (mean cross-entropy [K], accuracy [K]) of every member.

    `out`: (a [K, H, N], logits [K, 10, N]) buffers for the forward pass, reused every epoch.
    """
    _, logits = model.forward(x.T, out=out)  # [K, 10, N]
    log_z = logits.logsumexp(dim=1)  # [K, N]
    picked = logits.gather(1, y.expand(logits.shape[0], 1, -1)).squeeze(1)  # [K, N]
    # max(dim) gives argmax's indices (first maximum, NaN counts as the maximum) at a sixth of argmax's cost here.
    predicted = logits.max(dim=1).indices  # [K, N]
    accuracy = (predicted == y).float().mean(dim=1)  # [K]
    return (log_z - picked).mean(dim=1), accuracy


SHARED_ORDER_ENV = "HPSEARCH_POPULATION_SHARED_ORDER"


def shared_order_from_env() -> bool:
    """True when HPSEARCH_POPULATION_SHARED_ORDER is 1/true/yes (case-insensitive); off when unset."""
    return os.environ.get(SHARED_ORDER_ENV, "").strip().lower() in ("1", "true", "yes")


def mlp_population(
    trials: list[Any], nesterov: bool = False, shared_order: bool | None = None
) -> list[dict[str, float] | None]:
    """K trials of `digits.mlp` trained together; returns each member's last-epoch metrics.

    Members that differ in `hidden` or `batch_size` train as separate
    sub-populations. A stopped member's entry is None (run_population
    records it as pruned with its reason).

    shared_order=True (None: read HPSEARCH_POPULATION_SHARED_ORDER, off by
    default) gives every member of a sub-population the same batches: one
    shuffle per epoch from a generator seeded with the sub-population's
    first member's seed. Each member is still an exact SGD run on those
    batches, but no longer equals the solo trial with its seed (whose data
    order is its own).
    """
    if shared_order is None:
        shared_order = shared_order_from_env()
    members = as_members(trials)
    results: list[dict[str, float] | None] = [None] * len(members)
    groups: dict[tuple[int, int, bool], list[int]] = {}
    for i, member in enumerate(members):
        p = member.params
        shape = (int(p.get("hidden", 128)), int(p.get("batch_size", BATCH_SIZE)), bool(p.get("nesterov", nesterov)))
        groups.setdefault(shape, []).append(i)
    for (hidden, batch_size, group_nesterov), indices in groups.items():
        group = [members[i] for i in indices]
        for i, result in zip(indices, _fit_group(group, hidden, batch_size, group_nesterov, shared_order)):
            results[i] = result
    return results


def _fit_group(
    members: list[Member], hidden: int, batch_size: int, nesterov: bool, shared_order: bool = False
) -> list[dict[str, float] | None]:
    """Train members of one shape together for their (shared) number of epochs."""
    device = members[0].device
    data = load_digits_split(device)
    x_train, y_train = data["train"]  # [N, 64], [N]
    x_val, y_val = data["val"]
    k, n = len(members), len(x_train)
    model = StackedMLP.from_seeds([m.seed for m in members], hidden, device)
    optimizer = PopulationSGD(
        model.flat,
        lr=[float(m.params["lr"]) for m in members],
        weight_decay=[float(m.params.get("weight_decay", 0.0)) for m in members],
        momentum=[float(m.params.get("momentum", 0.0)) for m in members],
        nesterov=nesterov,
    )
    trainer = PopulationTrainer(model, optimizer)
    # Each member's own shuffle, as digits.fit draws it; or (shared order) one, seeded by the first member.
    generators = [torch.Generator(device="cpu").manual_seed(m.seed) for m in members[: 1 if shared_order else k]]
    copies = len(generators)  # K, or 1 with a shared order
    last: list[dict[str, float] | None] = [None] * k
    eval_out = (x_val.new_empty(k, hidden, len(x_val)), x_val.new_empty(k, N_OUT, len(x_val)))  # [K, H, N], [K, 10, N]
    batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # B -> ([K or 1, B, 64], [K or 1, B]), reused
    for epoch in range(members[0].epochs):
        order = torch.stack([torch.randperm(n, generator=g) for g in generators]).to(x_train.device)  # [K or 1, N]
        loss_sum = torch.zeros(k, dtype=x_train.dtype, device=x_train.device)  # [K]
        correct = torch.zeros(k, dtype=torch.long, device=x_train.device)  # [K]
        for start in range(0, n, batch_size):
            # Gather this step's rows into a small reused buffer, not the epoch's K shuffled copies at once:
            # the batch is then still in cache when both layer-1 matmuls read it.
            idx = order[:, start : start + batch_size].reshape(-1)  # [K*B] or [B]
            b = len(idx) // copies
            if b not in batches:
                batches[b] = (x_train.new_empty(copies, b, N_IN), y_train.new_empty(copies, b))
            xb, yb = batches[b]  # [K or 1, B, 64], [K or 1, B]
            torch.index_select(x_train, 0, idx, out=xb.view(copies * b, N_IN))
            torch.index_select(y_train, 0, idx, out=yb.view(copies * b))
            if shared_order:
                xb, yb = xb[0], yb[0]  # [B, 64], [B]: one batch for every member
            before = model.flat.detach().clone() if start + batch_size >= n else None  # the epoch's last step
            loss, right = trainer.step(xb, yb)
            if before is not None:  # each member's update:weight ratio, as the watcher samples a solo trial's
                ratio = update_ratio(list(_views(before, hidden)), list(_views(model.flat, hidden)))
            loss_sum.add_(loss * xb.shape[-2])
            correct.add_(right)
        val_loss, val_acc = evaluate(model, x_val, y_val, eval_out)
        alive = optimizer.alive.view(-1).tolist()
        metrics = {
            "train_loss": (loss_sum / n).tolist(),
            "train_accuracy": (correct.double() / n).tolist(),
            "val_loss": val_loss.tolist(),
            "val_accuracy": val_acc.tolist(),
        }
        report_population(members, epoch, {**metrics, "update_ratio": ratio.tolist()})
        for i, member in enumerate(members):
            if not alive[i]:
                member.stop(DIVERGED)  # its epoch is on record; masked members train no further
            if member.alive:
                last[i] = {name: values[i] for name, values in metrics.items()}
        if not any(m.alive for m in members):
            break
        # Members stopped by their report (pruned, 3x loss) freeze too.
        optimizer.mask(torch.tensor([m.alive for m in members], device=optimizer.alive.device))
    return last
