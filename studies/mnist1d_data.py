"""MNIST-1D (Greydanus & Kobak, ICML 2024), generated locally and cached: nothing is downloaded.

The `mnist1d` package's default downloads a pickle; `regenerate=True` builds the
same 4,000 train / 1,000 test sequences of 40 features (10 classes) from its
templates instead. The arrays are cached as `mnist1d.npz` in the results folder
($HPSEARCH_DIR, else this folder), so a trial after the first reads them back.
Validation is the last 1,000 of the 4,000 training examples; the test split is
only ever read when a trial's split is "test" (hpsearch final).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

TRAIN, VAL = 3000, 1000  # of the package's 4,000 training examples; its 1,000 test ones stay apart


def cache_file() -> Path:
    return Path(os.environ.get("HPSEARCH_DIR") or Path(__file__).parent) / "mnist1d.npz"


def arrays() -> dict[str, np.ndarray]:
    """x, y, x_test, y_test of the package's default dataset, generated once and cached."""
    path = cache_file()
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    from mnist1d.data import get_dataset_args, make_dataset

    made = make_dataset(get_dataset_args())  # regenerated from the package's templates: no download
    data = {k: np.asarray(made[k]) for k in ("x", "y", "x_test", "y_test")}
    check(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")  # written whole, then renamed: no half file
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **data)
    os.replace(tmp, path)
    return data


def check(data: dict[str, np.ndarray]) -> None:
    shapes = {k: v.shape for k, v in data.items()}
    expected = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}
    if shapes != expected or set(np.unique(data["y"])) != set(range(10)):
        raise ValueError(f"MNIST-1D has shapes {shapes}, expected {expected} with 10 classes")


def splits(split: str = "val"):
    """((x_train, y_train), (x_eval, y_eval)) as float32 / int64 torch tensors; eval is val or test."""
    import torch

    data = arrays()
    x, y = torch.tensor(data["x"], dtype=torch.float32), torch.tensor(data["y"], dtype=torch.long)
    train = (x[:TRAIN], y[:TRAIN])
    if split == "test":
        return train, (
            torch.tensor(data["x_test"], dtype=torch.float32),
            torch.tensor(data["y_test"], dtype=torch.long),
        )
    return train, (x[TRAIN : TRAIN + VAL], y[TRAIN : TRAIN + VAL])


def cnn(channels: int = 25):
    """The paper's small 1-D CNN (mnist1d's ConvBase): three strided convolutions and a linear layer."""
    from torch import nn

    return nn.Sequential(
        nn.Unflatten(1, (1, 40)),
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(channels * 5, 10),
    )
