"""bench/hartmann.py: the published optimum at full fidelity, and low fidelities that mislead."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import hartmann

SECOND = (0.4047, 0.8824, 0.8464, 0.574, 0.1393, 0.0385)  # the second local minimum, f = -3.2032


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def test_hartmann_published_optimum_at_full_fidelity() -> None:
    assert hartmann.hartmann6(hartmann.X_STAR) == pytest.approx(-3.32237, abs=1e-5)
    assert hartmann.true_value(dict(zip(hartmann.NAMES, hartmann.X_STAR))) == pytest.approx(hartmann.F_STAR, abs=1e-5)
    for form in (hartmann.KANDASAMY, hartmann.GOOD, hartmann.BAD):  # z = 1: every form is f itself, noise-free
        assert hartmann.mf_hartmann6(hartmann.X_STAR, 1.0, form, seed=7) == hartmann.hartmann6(hartmann.X_STAR)


def test_hartmann_optimum_is_the_lowest_point_found() -> None:
    rng = np.random.default_rng(0)
    star = np.array(hartmann.X_STAR)
    for _ in range(200):  # every nearby point is higher
        near = np.clip(star + rng.uniform(-0.01, 0.01, 6), 0, 1)
        assert hartmann.hartmann6(near) > hartmann.F_STAR - 1e-6
    values = [hartmann.hartmann6(x) for x in rng.random((5000, 6))]
    assert min(values) > hartmann.F_STAR
    assert hartmann.hartmann6(SECOND) == pytest.approx(-3.2032, abs=1e-4)


def test_hartmann_kandasamy_form_lowers_the_first_weight_only() -> None:
    x = hartmann.P[0]  # the first bump's centre: its term is alpha_1 exactly
    low = hartmann.mf_hartmann6(x, 0.0, hartmann.KANDASAMY)
    assert low - hartmann.hartmann6(x) == pytest.approx(0.1, abs=1e-3)
    assert hartmann.mf_hartmann6(x, 0.5, hartmann.KANDASAMY) - hartmann.hartmann6(x) == pytest.approx(0.05, abs=1e-3)
    far = hartmann.P[3]  # the fourth bump's centre: the first weight barely reaches it
    assert hartmann.mf_hartmann6(far, 0.0, hartmann.KANDASAMY) == pytest.approx(hartmann.hartmann6(far), abs=1e-3)


def test_hartmann_low_fidelity_is_biased_and_misleads() -> None:
    # Noise-free, the first epoch prefers the second basin to x*'s; full length, x* wins.
    assert hartmann.mf_hartmann6(SECOND, 0.0) < hartmann.mf_hartmann6(hartmann.X_STAR, 0.0)
    assert hartmann.hartmann6(hartmann.X_STAR) < hartmann.hartmann6(SECOND)
    # Over random points, epoch 1 barely ranks them as the truth does; later epochs rank them better.
    points = np.random.default_rng(1).random((1000, 6))
    truth = np.array([hartmann.hartmann6(x) for x in points])
    first = np.array([hartmann.curve(dict(zip(hartmann.NAMES, x)), 1, seed=i)[0] for i, x in enumerate(points)])
    late = np.array([hartmann.curve(dict(zip(hartmann.NAMES, x)), 15, seed=i)[-1] for i, x in enumerate(points)])
    assert spearman(first, truth) < 0.2
    assert spearman(late, truth) > 0.6
    assert np.all(first > truth)  # biased: a short run always looks worse than the configuration is


def test_hartmann_noise_comes_from_the_seed_and_fades() -> None:
    params = dict(zip(hartmann.NAMES, hartmann.X_STAR))
    a, b = hartmann.curve(params, 20, seed=1), hartmann.curve(params, 20, seed=2)
    assert a == hartmann.curve(params, 20, seed=1)  # the same seed, the same curve
    assert a[0] != b[0]
    assert a[-1] == b[-1] == hartmann.hartmann6(hartmann.X_STAR)  # epoch 20: z = 1, no noise
    noise_free = [hartmann.mf_hartmann6(hartmann.X_STAR, hartmann.fidelity(e)) for e in range(1, 21)]
    assert all(v >= f for v, f in zip(a, noise_free))  # one-sided, as mf-prior-bench's


def test_hartmann_epochs_map_to_fidelity_on_a_log_scale() -> None:
    assert hartmann.fidelity(1) == 0.0
    assert hartmann.fidelity(20) == 1.0
    assert hartmann.fidelity(5, 25) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="outside"):
        hartmann.fidelity(21)
