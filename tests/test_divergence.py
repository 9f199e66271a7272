"""THE divergence rule and THE training-loss key."""

from __future__ import annotations

import math

from hpsearch.divergence import DIVERGED, DivergenceCheck, final_value_diverged, loss_keys


def test_divergence_loss_keys_one_rule() -> None:
    assert loss_keys(["val_loss", "train_loss", "loss"]) == ("train_loss", "val_loss")
    assert loss_keys(["loss", "val_accuracy"]) == ("loss", None)
    assert loss_keys(["nll_loss", "val_loss"]) == ("nll_loss", "val_loss")
    assert loss_keys(["val_loss", "test_loss"]) == (None, "val_loss")  # no training loss among them
    assert loss_keys(["accuracy"]) == (None, None)


def test_divergence_nan_or_three_times_the_first_training_loss() -> None:
    check = DivergenceCheck()
    assert check({"train_loss": 2.3, "val_loss": 2.2}) is None
    assert check({"train_loss": 6.8, "val_loss": 9.0}) is None  # below 3x the first (6.9); val is not the key
    assert check({"train_loss": 7.0}) == DIVERGED
    assert DivergenceCheck()({"train_loss": 1.0, "val_loss": math.nan}) == DIVERGED
    assert DivergenceCheck()({"accuracy": 0.1}) is None


def test_divergence_final_value() -> None:
    assert final_value_diverged(math.inf) and final_value_diverged(math.nan)
    assert not final_value_diverged(0.5) and not final_value_diverged(None)


def test_divergence_either_sign_a_falling_negative_loss_never_diverges() -> None:
    falling = DivergenceCheck()
    assert all(falling({"train_loss": -1.0 - 3 * epoch}) is None for epoch in range(10))  # -1 -> -28
    rising = DivergenceCheck()
    assert rising({"train_loss": -2.0}) is None
    assert rising({"train_loss": 1.9}) is None  # below -2 + 2 * |-2| = 2
    assert rising({"train_loss": 2.1}) == DIVERGED
    near_zero = DivergenceCheck()
    assert near_zero({"train_loss": 0.0}) is None and near_zero({"train_loss": 0.001}) is None
