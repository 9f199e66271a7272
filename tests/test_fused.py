"""Fused layers (workloads/fused.py): K stacked members of a Sequential give each member's own outputs and
gradients, whichever layout a layer runs in (feature-major Linear chains, [K, B, ...] convolutions)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import stack_module_state

from hpsearch.workloads.fused import fused_layers, run_fused

K, B = 3, 5


def _models() -> dict[str, nn.Sequential]:
    return {
        "mlp": nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 4)),
        "no bias, tanh, identity": nn.Sequential(
            nn.Linear(12, 8, bias=False), nn.Tanh(), nn.Identity(), nn.Linear(8, 3)
        ),
        "linear into a conv and back": nn.Sequential(
            nn.Linear(12, 32),
            nn.GELU(),
            nn.Unflatten(1, (2, 4, 4)),
            nn.Conv2d(2, 3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(12, 5),
            nn.Dropout(0.5),
            nn.Linear(5, 2),
        ),
    }


@pytest.mark.parametrize("name", list(_models()))
@pytest.mark.parametrize("shared_inputs", [False, True])
def test_fused_outputs_and_gradients_equal_each_member_alone(name: str, shared_inputs: bool) -> None:
    members = []
    for k in range(K):
        torch.manual_seed(k)
        members.append(_models()[name])
    plan = fused_layers(members[0])
    assert plan is not None
    params, _ = stack_module_state(members)
    params = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    x = torch.randn(B, 12) if shared_inputs else torch.randn(K, B, 12)
    stacked_in = x.expand(K, B, 12) if shared_inputs else x
    out = run_fused(plan, params, stacked_in, training=False)  # eval: Dropout is the identity
    assert out.shape[:2] == (K, B)
    out.square().sum().backward()
    for k, model in enumerate(members):
        model.eval()
        alone = model(x if shared_inputs else x[k])
        assert out[k].detach() == pytest.approx(alone.detach(), abs=1e-5)
        alone.square().sum().backward()
        for n, p in model.named_parameters():
            assert params[n].grad[k] == pytest.approx(p.grad, abs=1e-4), (name, n)


def test_fused_refuses_what_it_cannot_run() -> None:
    assert fused_layers(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))) is None  # buffers
    assert fused_layers(nn.Sequential(nn.Sequential(nn.Linear(4, 4)))) is None  # nested
    assert fused_layers(nn.Linear(4, 4)) is None  # not a Sequential
