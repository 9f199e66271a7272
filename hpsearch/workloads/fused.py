"""Horizontally fused layers (as in HFTA, MLSys'21): K stacked members of one nn.Sequential in a few big ops.

vmap over functional_call works for any model but pays a dispatch per op
and per member-batched rule; a Sequential of the common layers is run
here directly on [K, B, ...] activations instead:

- nn.Linear: one batched matmul (torch.baddbmm) for all K members;
- nn.Conv2d (groups=1, zero padding): one grouped convolution over the K
  members' channels ([B, K*C, H, W], groups=K);
- nn.MaxPool2d / nn.AvgPool2d: on [K*B, C, H, W];
- activations (ReLU, Tanh, GELU, ...), nn.Dropout (independent masks per
  member, as each element draws its own), nn.Flatten(1, -1), nn.Unflatten(1, ...),
  nn.Identity.

Layout: a run of Linear, activation and Dropout layers on [K, B, features]
works feature-major, on contiguous [K, features, B] tensors (weight @ x^T):
a layer's few outputs (10 classes) then lie in the GEMM's long dimension,
and every elementwise op and its backward read and write one layout (on a
transposed view they write strided: 3-6x slower on a CPU). The other
layers take [K, B, ...] (a view, when the layer before was a Linear). The
output is a [K, B, ...] view, so a loss over classes reads [K, C, B]
without a copy (workloads/stacked.py).

`fused_layers(model)` returns the plan, or None for anything else (layers
with buffers such as BatchNorm, custom modules, nested containers): the
caller then uses vmap. The stacked parameters keep the model's own names
("0.weight", ...), as torch.func.stack_module_state writes them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ELEMENTWISE = (nn.ReLU, nn.Tanh, nn.GELU, nn.Sigmoid, nn.LeakyReLU, nn.SiLU, nn.ELU, nn.Softplus, nn.Identity, nn.Mish)

Layer = Callable[[dict[str, torch.Tensor], torch.Tensor, bool], torch.Tensor]


@dataclass(frozen=True)
class Step:
    """One layer of the plan: `run(params, x [K, B, ...], training) -> x`. `linear`: the Linear's name
    (run_fused may run it feature-major); `elementwise`: it runs on either layout."""

    run: Layer
    linear: str | None = None
    elementwise: bool = False


def fused_layers(model: nn.Module) -> list[Step] | None:
    """The model as a list of fused steps, or None if it is not a plain Sequential of supported layers."""
    if type(model) is not nn.Sequential or any(True for _ in model.buffers()):
        return None
    plan: list[Step] = []
    for name, layer in model.named_children():
        step = _fused(name, layer)
        if step is None:
            return None
        plan.append(step)
    return plan


def run_fused(plan: list[Step], params: dict[str, torch.Tensor], x: torch.Tensor, training: bool) -> torch.Tensor:
    feature_major = False  # x is [K, features, B] (see the module doc), not [K, B, ...]
    for step in plan:
        if step.linear is not None and (feature_major or x.ndim == 3):
            x = _linear_feature_major(x if feature_major else x.transpose(1, 2), params, step.linear)
            feature_major = True
        elif step.elementwise:
            x = step.run(params, x, training)
        else:
            x = step.run(params, x.transpose(1, 2) if feature_major else x, training)
            feature_major = False
    return x.transpose(1, 2) if feature_major else x


def _fused(name: str, layer: nn.Module) -> Step | None:
    if type(layer) is nn.Linear:
        return Step(lambda p, x, training: _linear(x, p[f"{name}.weight"], p.get(f"{name}.bias")), linear=name)
    if (
        type(layer) is nn.Conv2d
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    ):
        conv = layer
        return Step(lambda p, x, training: _conv2d(x, p[f"{name}.weight"], p.get(f"{name}.bias"), conv))
    if type(layer) in (nn.MaxPool2d, nn.AvgPool2d):
        pool = layer
        return Step(lambda p, x, training: _per_example(pool, x))
    if type(layer) is nn.Dropout:
        rate = float(layer.p)
        return Step(lambda p, x, training: F.dropout(x, rate, training), elementwise=True)
    if type(layer) is nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1:
        return Step(lambda p, x, training: x.flatten(2))
    if type(layer) is nn.Unflatten and layer.dim == 1:
        sizes = tuple(layer.unflattened_size)
        return Step(lambda p, x, training: x.unflatten(2, sizes))
    if type(layer) in ELEMENTWISE:
        return Step(lambda p, x, training: layer(x), elementwise=True)
    return None


def _linear_feature_major(xt: torch.Tensor, params: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """xt [K, in, B] -> weight [K, out, in] @ xt + bias [K, out, 1]: [K, out, B], contiguous."""
    weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
    return torch.bmm(weight, xt) if bias is None else torch.baddbmm(bias.unsqueeze(2), weight, xt)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [K, B, ..., in] @ weight [K, out, in]^T + bias [K, out]."""
    k, shape = x.shape[0], x.shape
    flat = x.reshape(k, -1, shape[-1])
    out = (
        torch.bmm(flat, weight.transpose(1, 2))
        if bias is None
        else torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
    )
    return out.reshape(*shape[:-1], weight.shape[1])


def _conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d) -> torch.Tensor:
    """x [K, B, C, H, W] through K members' convolutions as one grouped convolution."""
    k, b, c, h, w = x.shape
    grouped = x.transpose(0, 1).reshape(b, k * c, h, w)
    out = F.conv2d(
        grouped,
        weight.reshape(-1, *weight.shape[2:]),
        None if bias is None else bias.reshape(-1),
        conv.stride,
        conv.padding,
        conv.dilation,
        groups=k,
    )
    return out.reshape(b, k, weight.shape[1], *out.shape[2:]).transpose(0, 1)


def _per_example(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer without parameters that needs [N, C, H, W]: the K and B dimensions folded together."""
    k, b = x.shape[:2]
    out = layer(x.reshape(k * b, *x.shape[2:]))
    return out.reshape(k, b, *out.shape[1:])
