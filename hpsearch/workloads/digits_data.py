"""The digits data and models shared by the built-in workloads (digits.py) and the stacked trainer
(digits_population.py): scikit-learn's bundled 8x8 digits (1797 images, no download), split once
with a fixed seed into train (60%), val (20%) and test (20%)."""

from __future__ import annotations

import gzip
import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

SPLIT_SEED = 0  # fixed: every trial, every stage and every run see the same split
BATCH_SIZE = 64  # default; a study may search `batch_size` too


@cache
def load_digits_split(device: str = "cpu") -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """train/val/test tensors on `device`, loaded once per process."""
    images, labels = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32) / 16.0  # pixel values are 0..16
    y = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    x, y = x[order], y[order]
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    parts = {
        "train": (x[:n_train], y[:n_train]),
        "val": (x[n_train : n_train + n_val], y[n_train : n_train + n_val]),
        "test": (x[n_train + n_val :], y[n_train + n_val :]),
    }
    return {k: (a.to(device), b.to(device)) for k, (a, b) in parts.items()}


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (images [1797, 64] float, labels [1797] int), as
    `sklearn.datasets.load_digits(return_X_y=True)` returns them, read from the file scikit-learn ships
    without importing scikit-learn (which costs about 2 s of every worker's start-up, scipy and all)."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    bundled = [Path(folder) / "datasets" / "data" / "digits.csv.gz" for folder in folders]
    found = next((path for path in bundled if path.is_file()), None)
    if found is None:  # a scikit-learn that keeps it elsewhere: its own loader
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    with gzip.open(found, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1], data[:, -1].astype(int)


def make_mlp(hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def make_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),  # [B, 64] -> [B, 1, 8, 8]
        nn.Conv2d(1, 16, 3, padding=1),  # -> [B, 16, 8, 8]
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),  # -> [B, 32, 8, 8]
        nn.ReLU(),
        nn.MaxPool2d(2),  # -> [B, 32, 4, 4]
        nn.Flatten(),  # -> [B, 512]
        nn.Linear(512, 10),
    )
