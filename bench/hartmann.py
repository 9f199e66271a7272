"""The multi-fidelity Hartmann-6 function: a known optimum, and short runs that mislead (bench/peers).

The Hartmann-6 function (Dixon & Szegő 1978), minimised on [0, 1]^6:

    f(x) = - sum_{i=1..4} alpha_i exp( - sum_{j=1..6} A_ij (x_j - P_ij)^2 )

    alpha = (1.0, 1.2, 3.0, 3.2)
    A = [[10,   3,    17,   3.5, 1.7, 8 ],
         [0.05, 10,   17,   0.1, 8,   14],
         [3,    3.5,  1.7,  10,  17,  8 ],
         [17,   8,    0.05, 10,  0.1, 14]]
    P = 1e-4 * [[1312, 1696, 5569, 124,  8283, 5886],
                [2329, 4135, 8307, 3736, 1004, 9991],
                [2348, 1451, 3522, 2883, 3047, 6650],
                [4047, 8828, 8732, 5743, 1091, 381 ]]

Global minimum f(x*) = -3.32237 at x* = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573).

Its multi-fidelity form (Kandasamy, Dasarathy, Schneider & Póczos, "Multi-fidelity Bayesian Optimisation
with Continuous Approximations", ICML 2017, the BOCA paper) lowers the weights at a fidelity z in [0, 1]:

    f(x, z) = - sum_i alpha'_i(z) exp( - sum_j A_ij (x_j - P_ij)^2 ),   alpha'(z) = alpha - delta (1 - z)

so f(x, 1) = f(x). Kandasamy et al. take delta = (0.1, 0, 0, 0) for a one-dimensional fidelity (the
first weight only): checked against their code, dragonfly/dragonfly, dragonfly/utils/
euclidean_synthetic_functions.py, get_mf_hartmann_function_data (which maximises -f). That bias barely
moves the ranking (Spearman 1.00 between z = 0 and z = 1 over 3,000 random points: short runs do not
mislead). The PriorBand paper (Mallik et al., NeurIPS 2023) uses the same form through mf-prior-bench
(automl/mf-prior-bench, src/mfpbench/synthetic/hartmann/generators.py, MFHartmann6, checked against it):
the bias on all four weights, delta = b (1, 1, 1, 1), z on a log scale of the fidelity, and a one-sided
noise that also fades with z:

    f(x, z) + |N(0, 1)| * s * (1 - z)

with presets named by how well low fidelities rank: "good" b = 2.5, s = 2.0; "moderate" 3.0, 3.0; "bad"
3.5, 4.0; "terrible" 4.0, 5.0. bench/peers runs the "good" preset (GOOD), where short runs mislead:
Spearman between epoch 1 and epoch 20 about 0, at epoch 7 about 0.4, at epoch 15 about 0.8, and at low
fidelity the weights of the first two bumps turn negative, so the basin of x* looks worse than that of
the second local minimum (-3.2032 near (0.405, 0.882, 0.846, 0.574, 0.139, 0.038)).

Epochs are the fidelity: epoch e of E (1..20) is z = ln(e) / ln(E) (mf-prior-bench's log scale, with
epoch 1 as its lowest fidelity). Unlike mf-prior-bench, whose noise is fixed per (point, fidelity), the
noise here is drawn from the trial's seed: a re-run with another seed sees other noise, as a training
run would. The TRUE value of a configuration is f(x) at full fidelity, without noise.
Torch-free; numpy only; no hpsearch import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
P = 1e-4 * np.array(
    [
        [1312, 1696, 5569, 124, 8283, 5886],
        [2329, 4135, 8307, 3736, 1004, 9991],
        [2348, 1451, 3522, 2883, 3047, 6650],
        [4047, 8828, 8732, 5743, 1091, 381],
    ]
)
X_STAR = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
F_STAR = -3.32237  # f(X_STAR), as published (Surjanovic & Bingham's library: -3.32237)
NAMES = tuple(f"x{j}" for j in range(6))  # the parameters' names in bench/peers' spaces
MAX_EPOCHS = 20


@dataclass(frozen=True)
class Fidelity:
    """How a low fidelity differs: alpha'(z) = alpha - delta (1 - z), plus |N(0, 1)| * noise * (1 - z)."""

    delta: tuple[float, float, float, float]
    noise: float = 0.0
    name: str = ""


KANDASAMY = Fidelity((0.1, 0.0, 0.0, 0.0), 0.0, "kandasamy2017")  # BOCA's one-dimensional fidelity
GOOD = Fidelity((2.5, 2.5, 2.5, 2.5), 2.0, "priorband-good")  # mf-prior-bench's mfh6_good, run by bench/peers
BAD = Fidelity((3.5, 3.5, 3.5, 3.5), 4.0, "priorband-bad")


def hartmann6(x: tuple[float, ...] | list[float] | np.ndarray, alpha: np.ndarray = ALPHA) -> float:
    """f(x) with weights `alpha` (default: the function's own, its full fidelity), to be minimised."""
    point = np.asarray(x, dtype=float)  # [6]
    inner = np.sum(A * (point[None, :] - P) ** 2, axis=1)  # [4]
    return float(-np.dot(alpha, np.exp(-inner)))


def fidelity(epoch: int, max_epochs: int = MAX_EPOCHS) -> float:
    """z in [0, 1] of epoch 1..max_epochs: ln(epoch) / ln(max_epochs) (1 -> 0, max_epochs -> 1)."""
    if not 1 <= epoch <= max_epochs:
        raise ValueError(f"epoch {epoch} outside 1..{max_epochs}")
    return math.log(epoch) / math.log(max_epochs)


def mf_hartmann6(
    x: tuple[float, ...] | list[float] | np.ndarray, z: float, form: Fidelity = GOOD, seed: int | None = None
) -> float:
    """f(x, z) of `form`, plus its noise drawn with `seed` (no noise when seed is None or z == 1)."""
    value = hartmann6(x, ALPHA - np.asarray(form.delta) * (1.0 - z))
    if seed is None or form.noise == 0.0 or z >= 1.0:
        return value
    return value + abs(float(np.random.default_rng(seed).normal())) * form.noise * (1.0 - z)


def true_value(params: dict[str, float]) -> float:
    """The score of a configuration {x0..x5}: f at full fidelity, without noise (lower is better)."""
    return hartmann6([float(params[name]) for name in NAMES])


def curve(
    params: dict[str, float], epochs: int, seed: int, form: Fidelity = GOOD, max_epochs: int = MAX_EPOCHS
) -> list[float]:
    """What a trial of `epochs` epochs reports: f(x, z(e)) with noise for e = 1..epochs, each epoch's noise
    drawn from (seed, e)."""
    x = [float(params[name]) for name in NAMES]
    return [mf_hartmann6(x, fidelity(e, max_epochs), form, seed=abs(seed) * 1000 + e) for e in range(1, epochs + 1)]
