"""Tiny torch regression workloads for the sanity checks and refine. No hpsearch import.

200 random points in 8 dimensions (fixed seed), a smooth float target
y = sin(x . w) + 0.1 noise, shape [N, 1]; train on the first 160, validate on
the last 40, full batches of up to 50. Each honours `trial.subset` and calls
`trial.watch(model, optimizer, loss_fn)`.
"""

import torch
from torch import nn

DIM = 8


def _data(n=200):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, DIM, generator=g)
    w = torch.randn(DIM, 1, generator=g) / DIM**0.5
    y = torch.sin(3 * x @ w) + 0.1 * torch.randn(n, 1, generator=g)  # [N, 1]
    return x, y


def _noise_targets(n=200):
    """Targets unrelated to the inputs: no linear model can fit 20 of them with 9 weights."""
    g = torch.Generator().manual_seed(1)
    x, _ = _data(n)
    return x, torch.randn(n, 1, generator=g)


class _MeanAndVariance(nn.Module):
    """An MLP predicting a mean and a (positive) variance per example."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 2))

    def forward(self, x):
        out = self.body(x)
        return out[:, :1], nn.functional.softplus(out[:, 1:]) + 1e-4


def _train(trial, model, loss_fn, data=_data, gaussian=False, adam=False):
    x, y = data()
    x_train, y_train, x_val, y_val = x[:160], y[:160], x[160:], y[160:]
    if getattr(trial, "subset", None):
        x_train, y_train = x_train[: trial.subset], y_train[: trial.subset]
    p = trial.params
    if adam:  # the Gaussian NLL's 1/variance gradients need Adam's per-weight step sizes
        optimizer = torch.optim.Adam(model.parameters(), lr=float(p["lr"]))
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=float(p["lr"]), momentum=float(p.get("momentum", 0.0)))
    trial.watch(model, optimizer, loss_fn)

    def loss_of(xb, yb):
        if gaussian:
            mean, var = model(xb)
            return loss_fn(mean, yb, var)
        return loss_fn(model(xb), yb)

    for epoch in range(trial.epochs):
        model.train()
        total = 0.0
        for start in range(0, len(x_train), 50):
            xb, yb = x_train[start : start + 50], y_train[start : start + 50]
            loss = loss_of(xb, yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(xb)
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_of(x_val, y_val))
        trial.report(epoch, train_loss=total / len(x_train), val_loss=val_loss)
    return {"val_loss": val_loss}


def mlp(trial):
    """8-64-1 MLP, MSE loss: memorises 20 examples easily."""
    torch.manual_seed(trial.seed)
    model = nn.Sequential(nn.Linear(DIM, 64), nn.Tanh(), nn.Linear(64, 1))
    return _train(trial, model, nn.MSELoss())


def gaussian(trial):
    """Mean and variance heads, Gaussian NLL, Adam: the loss goes negative as the variance shrinks."""
    torch.manual_seed(trial.seed)
    return _train(trial, _MeanAndVariance(), nn.GaussianNLLLoss(), gaussian=True, adam=True)


def linear_on_noise(trial):
    """A linear model on targets unrelated to the inputs: it cannot fit 20 of them, so overfit FAILs."""
    torch.manual_seed(trial.seed)
    return _train(trial, nn.Linear(DIM, 1), nn.MSELoss(), data=_noise_targets)
