"""MNIST-1D as a model workload: hpsearch builds the CNN, owns the optimiser and the loop."""

from mnist1d_data import TRAIN, VAL, arrays, cnn


def build(params):
    return cnn(int(params.get("channels", 25)))


def data():
    """(train, val, test) as (inputs, targets) tensor pairs; test is read only by `hpsearch final`."""
    import torch

    d = arrays()
    x, y = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"], dtype=torch.long)
    test = (torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"], dtype=torch.long))
    return (x[:TRAIN], y[:TRAIN]), (x[TRAIN : TRAIN + VAL], y[TRAIN : TRAIN + VAL]), test
