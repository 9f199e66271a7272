"""Model workloads for the tests: build(params) functions and data() on small generated data."""

import torch
from torch import nn


def mlp(params):
    width = int(params.get("width", 16))
    return nn.Sequential(nn.Linear(8, width), nn.Tanh(), nn.Linear(width, 3))


def bn(params):
    return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def dropout(params):
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(float(params.get("dropout", 0.3))), nn.Linear(32, 3))


def cnn(params):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)
    )


def untraceable(params):
    class Branchy(nn.Module):  # data-dependent control flow: vmap cannot trace it
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 3), nn.Linear(8, 3)

        def forward(self, x):
            return self.a(x) if float(x.sum()) > 0 else self.b(x)

    return Branchy()


def not_a_module(params):
    return "oops"


def _blobs(n, seed, dim=8):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, dim, generator=g) * 2.0
    y = torch.randint(0, 3, (n,), generator=g)
    return centers[y] + torch.randn(n, dim, generator=g), y


def data():
    return _blobs(192, 1), _blobs(96, 2), _blobs(96, 3)


def data_no_test():
    return _blobs(192, 1), _blobs(96, 2)


def images():
    x, y = _blobs(128, 4, dim=16)
    xv, yv = _blobs(64, 5, dim=16)
    return (x.view(-1, 1, 4, 4), y), (xv.view(-1, 1, 4, 4), yv)


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def datasets():
    (x, y), (xv, yv), _ = data()
    return Pairs(x, y), Pairs(xv, yv)


def regression():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(160, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    xv = torch.randn(64, 8, generator=g)
    return (x, x @ w), (xv, xv @ w)


def l1(outputs, targets):
    return (outputs - targets).abs().mean()


def convnet(params):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(float(params.get("dropout", 0.0))),
        nn.Linear(4 * 2 * 2, 3),
    )
