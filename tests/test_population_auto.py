"""`--population auto`: the decision over measured rates (pick_k), the probing (choose_k), and the texts.

Every timing here is given, never measured: the rule is tested as a pure
function of trials/second per K (a wall clock in a unit test is noise).
"""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from hpsearch.workloads import population
from hpsearch.workloads.population import EXPLORE_K, MIN_GAIN, PROBE_TRIALS, choose_k, pick_k

ROOT = Path(__file__).resolve().parent.parent


def _timer(seconds: dict[int, float]):
    """time_k from a table of seconds per population of k."""
    return lambda k: seconds[k]


# ----------------------------------------------------------------------------- pick_k: the decision


def test_pick_k_flat_first_doubling_then_gains_takes_8() -> None:
    assert pick_k({1: 10.0, 2: 10.0, 4: 13.0, 8: 17.0}) == 8


def test_pick_k_flat_throughout_takes_1() -> None:
    assert pick_k({1: 10.0, 2: 10.3, 4: 9.9, 8: 10.5}) == 1  # nothing beats K=1 by 8%


def test_pick_k_a_tie_goes_to_the_larger_k_a_clear_loss_does_not() -> None:
    # The MNIST-1D CNN's probes in one run of the stage: K=8 within 8% of K=4, the fastest.
    rates = {1: 8.9, 2: 9.9, 4: 11.5, 8: 10.9}
    assert pick_k(rates) == 8
    assert pick_k({**rates, 16: 11.5 / MIN_GAIN - 0.01}) == 8  # more than 8% slower than the best: not taken
    assert pick_k({**rates, 16: 11.2}) == 16


def test_pick_k_without_rates_takes_1() -> None:
    assert pick_k({}) == 1


# ----------------------------------------------------------------------------- choose_k: what is probed


def test_choose_k_probes_past_a_flat_first_doubling_and_takes_8() -> None:
    """The bug: 1->2 flat ended the probes and K=1 was chosen, while K=8 ran the stage 1.7x faster."""
    choice = choose_k(_timer({1: 0.1, 2: 0.2, 4: 0.31, 8: 0.47}))
    assert sorted(choice.throughput) == [1, 2, 4, 8]
    assert choice.k == 8
    assert "K=16 would take longer than 8 trials at K=1" in choice.stopped_because  # 2 x 0.47 s > 8 x 0.1 s
    # K=4 no faster than K=1 (a noisy probe) does not end the doubling below K = 8
    assert sorted(choose_k(_timer({1: 0.1, 2: 0.2, 4: 0.43, 8: 0.47})).throughput) == [1, 2, 4, 8]


def test_choose_k_a_flat_doubling_past_explore_k_ends_the_probes() -> None:
    choice = choose_k(_timer({1: 0.1, 2: 0.2, 4: 0.31, 8: 0.35, 16: 0.8}))  # 16: 0.87x of 8's trials/second
    assert sorted(choice.throughput) == [1, 2, 4, 8, 16] and choice.k == 8
    assert "K=16 gained only 0.88x" in choice.stopped_because


def test_choose_k_flat_throughout_probes_up_to_explore_k_and_takes_1() -> None:
    choice = choose_k(lambda k: 0.1 * k)
    assert sorted(choice.throughput) == [k for k in (1, 2, 4, 8) if k <= EXPLORE_K]
    assert choice.k == 1


def test_choose_k_past_explore_k_never_probes_a_population_slower_than_probe_trials_solo_trials() -> None:
    """A CPU-bound stack (the MNIST-1D CNN: K=8 1.25x the trials/second of K=1) gains, but K=16 would cost
    12.8 trials at K=1: not probed. A stack that scales (a GPU) goes on."""
    choice = choose_k(_timer({1: 0.1, 2: 0.19, 4: 0.35, 8: 0.64}))
    assert sorted(choice.throughput) == [1, 2, 4, 8] and choice.k == 8
    assert f"K=16 would take longer than {PROBE_TRIALS} trials at K=1" in choice.stopped_because
    scales = choose_k(lambda k: 0.1 + 0.001 * k, max_k=64)
    assert sorted(scales.throughput) == [1, 2, 4, 8, 16, 32, 64] and scales.k == 64


def test_choose_k_a_flat_doubling_ends_the_probes_once_they_took_the_budget() -> None:
    """A model whose epoch is long: after a flat doubling the probes stop once they took budget_s."""
    choice = choose_k(lambda k: 1.0 * k**1.2, budget_s=3.0)  # 1 s at K=1, 2.3 s at K=2: 3.3 s > 3 s
    assert choice.k == 1 and sorted(choice.throughput) == [1, 2]
    assert "probes took 3.3s" in choice.stopped_because
    # The caller's clock decides when it gives one (choose_population_size: the probes' wall time).
    assert sorted(choose_k(lambda k: 0.1 * k, spent=lambda: 60.0).throughput) == [1, 2]


def test_choose_k_doubles_on_while_it_pays_then_takes_the_largest_within_min_gain() -> None:
    # 1 s fixed plus 0.25 s per trial: doubling k gains 2 (1 + k/4) / (1 + k/2): 1.2x from 8 to 16, 1.11x from 16 to 32.
    choice = choose_k(lambda k: 1.0 + 0.25 * k, max_k=1024, min_gain=1.15)
    assert sorted(choice.throughput) == [1, 2, 4, 8, 16, 32]
    assert choice.k == 32  # 11% faster than 16: within 15% of the best, and the largest
    assert "K=32" in choice.stopped_because


def test_choose_k_stops_at_memory_and_max_k() -> None:
    def timer(k: int) -> float:
        if k >= 8:
            raise RuntimeError("CUDA out of memory")
        return 1.0

    assert choose_k(timer).k == 4
    assert choose_k(lambda k: 1.0, max_k=32).k == 32
    assert choose_k(lambda k: 1.0, fits=lambda k: k <= 2).k == 2


def test_choose_population_size_counts_what_the_probes_took_against_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up and each timing's repeated runs (MIN_PROBE_S) cost more than the timings say: the budget
    reads the probes' clock (CPU time on a CPU). Every population of k takes k/64 s (flat): after K=4 the
    probes took 0.375 s, while their timings sum to 0.11 s."""
    clock = [0.0]

    def pop_fn(contexts: list) -> list:
        clock[0] += len(contexts) / 64
        return [None] * len(contexts)

    monkeypatch.setattr(population.time, "process_time", lambda: clock[0])
    monkeypatch.setattr(population.time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(population, "MIN_PROBE_S", 0.1)
    monkeypatch.setattr(population, "PROBE_BUDGET_S", 0.3)
    choice = population.choose_population_size(pop_fn, {"lr": 0.1})
    assert sorted(choice.throughput) == [1, 2, 4] and choice.k == 1


def test_choose_k_times_every_k_again_in_a_second_pass_and_keeps_the_fastest() -> None:
    """A slow spell during K=8's first timing must not hide its gain: the second pass (largest K first)
    times it again, and the fastest timing counts."""
    calls: list[int] = []
    first = {1: 0.1, 2: 0.2, 4: 0.4, 8: 1.6}  # K=8 disturbed: it looks slower than K=4 and ends the probes
    again = {1: 0.1, 2: 0.2, 4: 0.4, 8: 0.5}

    def time_k(k: int) -> float:
        calls.append(k)
        return (first if calls.count(k) == 1 else again)[k]

    choice = choose_k(time_k, repeats=2)
    assert calls == [1, 2, 4, 8, 8, 4, 2, 1]
    assert choice.throughput[8] == pytest.approx(16.0) and choice.k == 8
    calls.clear()
    choice = choose_k(time_k, repeats=2, long_s=0.4)  # timings of 0.4 s or more are not repeated
    assert calls == [1, 2, 4, 8, 2, 1] and choice.k == 1  # then the disturbed K=8 stands


# ----------------------------------------------------------------------------- the texts agree with the code


def test_population_texts_state_the_rule_the_code_applies() -> None:
    """--help said 15% where the README and the code said 8%: the three texts now state the code's rule."""
    from hpsearch.cli.options import RunOptions

    gain = f"within {round((MIN_GAIN - 1) * 100)}% of the fastest"
    help_text = typing.get_type_hints(RunOptions, include_extras=True)["population"].__metadata__[0].help
    texts = {
        "--help": help_text,
        "README.md": (ROOT / "README.md").read_text(),
        "docs": (ROOT / "docs" / "population.md").read_text(),
    }
    for name, text in texts.items():
        assert gain in text, name
        assert f"up to K = {EXPLORE_K}" in text, name
    assert "15%" not in texts["--help"] + texts["README.md"]
