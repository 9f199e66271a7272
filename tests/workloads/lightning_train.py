import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from hpsearch.integrations.lightning import fit


class Classifier(L.LightningModule):
    def __init__(self, lr, momentum=0.0, weight_decay=0.0, hidden=32):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(20, hidden), nn.ReLU(), nn.Linear(hidden, 4))
        self.loss_fn = nn.CrossEntropyLoss()

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)  # the epoch's mean: the divergence rule reads it
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", self.loss_fn(logits, y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        h = self.hparams
        return torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)


class Blobs(L.LightningDataModule):
    """Four Gaussian blobs in 20 dimensions, split 75/25: the same data in every trial (seed 0)."""

    def __init__(self, n=400, batch_size=50):
        super().__init__()
        self.n, self.batch_size = n, batch_size

    def setup(self, stage):
        g = torch.Generator().manual_seed(0)
        y = torch.randint(0, 4, (self.n,), generator=g)
        x = torch.randn(4, 20, generator=g)[y] * 1.5 + torch.randn(self.n, 20, generator=g) * 2.0
        split = int(0.75 * self.n)
        self.train_set = TensorDataset(x[:split], y[:split])
        self.val_set = TensorDataset(x[split:], y[split:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=len(self.val_set))


def train(trial):
    L.seed_everything(trial.seed)  # the model's initial weights and the batches' order
    model = Classifier(lr=trial.params["lr"], momentum=trial.params.get("momentum", 0.0))
    # One Trainer for the trial: trial.epochs epochs on trial.device, each epoch reported (pruning
    # and divergence stop it cleanly); returns the last epoch's metrics: val_loss, val_accuracy, train_loss.
    return fit(trial, model, datamodule=Blobs())
