"""A model workload: hpsearch builds this model, owns the optimiser and the training loop.

studies/digits_model.toml names `build` and `data`; nothing here imports hpsearch.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn


def build(params):
    """The model for one trial; it may read the params that are not the optimiser's (here: hidden)."""
    hidden = int(params.get("hidden", 128))
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def data():
    """(train, val, test) as (inputs, targets) tensor pairs: the same fixed split in every trial."""
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (x[:1080], y[:1080]), (x[1080:1440], y[1080:1440]), (x[1440:], y[1440:])
