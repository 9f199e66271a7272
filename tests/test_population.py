"""Population trials: the vectorized SGD equals torch.optim.SGD member by member; endings are classified.

Tolerance: float32, atol 1e-5 and rtol 1e-4 on every weight after STEPS
steps. The hand-written backward pass and the fused optimiser ops round
differently from autograd + torch.optim.SGD; the observed gap is ~1e-7.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import pytest

from hpsearch.errors import TrialStopped
from hpsearch.workloads.api import TrialContext, TrialRecord
from hpsearch.workloads.population import (
    Member,
    as_members,
    population_entry,
    report_population,
    run_population,
)

ATOL, RTOL = 1e-5, 1e-4
STEPS = 6

# (lr, momentum, weight_decay, nesterov): different momentums and weight decays per member.
CONFIGS = [
    (0.1, 0.9, 1e-4, False),
    (0.05, 0.0, 0.0, False),
    (0.2, 0.5, 1e-3, False),
    (0.1, 0.95, 1e-5, True),
    (0.3, 0.99, 0.0, True),
]


# ----------------------------------------------------------------------------- torch-free API


def _ctx(number: int, params: dict[str, Any] | None = None, epochs: int = 2, hook: Any = None) -> TrialContext:
    return TrialContext(TrialRecord(number, params or {"lr": 0.1}, epochs, number), _on_report=hook)


def test_population_entry_none_without_attribute() -> None:
    def train(trial: Any) -> float:
        return 1.0

    assert population_entry(train) is None
    train.population = lambda trials: [1.0 for _ in trials]  # type: ignore[attr-defined]
    assert population_entry(train) is train.population  # type: ignore[attr-defined]


def test_report_population_masks_stopped_member() -> None:
    def hook(epoch: int, metrics: dict[str, float], timing: Any = None) -> str | None:
        return "diverged" if metrics["train_loss"] > 10 else None

    members = as_members([_ctx(i, hook=hook) for i in range(3)])
    alive = report_population(members, 0, {"train_loss": [1.0, 99.0, 2.0]})
    assert alive == [True, False, True]
    assert members[1].stopped == "diverged"
    alive = report_population(members, 1, {"train_loss": [1.0, 1.0, 2.0]})
    assert alive == [True, False, True]
    # The stopped member reported its one epoch and no more.
    assert members[1].curves == {"train_loss": [99.0]}
    assert members[0].curves == {"train_loss": [1.0, 1.0]}
    with pytest.raises(TrialStopped):
        members[1].report(2, train_loss=1.0)


def test_run_population_classifies_each_member() -> None:
    def hook(epoch: int, metrics: dict[str, float], timing: Any = None) -> str | None:
        return "pruned by rule" if metrics["val_accuracy"] < 0.2 else None

    def pop(trials: list[Member]) -> list[Any]:
        for epoch in range(trials[0].epochs):
            report_population(trials, epoch, {"val_accuracy": [0.5, 0.1, 0.7, 0.9]})
        trials[2].stop("diverged")
        return [{"val_accuracy": 0.5}, {"val_accuracy": 0.1}, None, float("nan")]

    outcomes = run_population(pop, [_ctx(i, hook=hook) for i in range(4)], "val_accuracy")
    assert [(o.state, o.reason) for o in outcomes] == [
        ("complete", ""),
        ("pruned", "pruned by rule"),
        ("pruned", "diverged"),
        ("pruned", "diverged"),
    ]
    assert outcomes[0].metrics == {"val_accuracy": 0.5, "population": 4}  # its population's size, kept with its metrics
    assert outcomes[0].curves == {"val_accuracy": [0.5, 0.5]}
    assert outcomes[1].curves == {"val_accuracy": [0.1]}


def test_run_population_crash_fails_members_still_training() -> None:
    def pop(trials: list[Member]) -> list[Any]:
        trials[0].stop("diverged")
        raise ValueError("shape mismatch")

    outcomes = run_population(pop, [_ctx(i) for i in range(3)], "val_accuracy")
    assert [(o.state, o.reason) for o in outcomes] == [
        ("pruned", "diverged"),
        ("fail", "ValueError: shape mismatch"),
        ("fail", "ValueError: shape mismatch"),
    ]


def test_run_population_wrong_number_of_results_fails() -> None:
    outcomes = run_population(lambda trials: [1.0], [_ctx(i) for i in range(2)], "val_accuracy")
    assert {o.state for o in outcomes} == {"fail"}
    assert "1 results for 2 trials" in outcomes[0].reason


def test_run_population_rejects_mixed_epochs() -> None:
    with pytest.raises(ValueError, match="epochs"):
        run_population(lambda trials: [], [_ctx(0, epochs=1), _ctx(1, epochs=2)], "val_accuracy")


def test_import_population_does_not_import_torch() -> None:
    code = "import sys, hpsearch.workloads.population; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- vectorized SGD vs torch


torch = pytest.importorskip("torch")


def _solo_weights(seed: int, lr: float, momentum: float, wd: float, nesterov: bool, batches: list) -> Any:
    from hpsearch.workloads.digits import make_mlp

    torch.manual_seed(seed)
    net = make_mlp()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=wd, nesterov=nesterov)
    for xb, yb in batches:
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.nn.utils.parameters_to_vector(net.parameters()).detach()  # the population's flat layout


def _train_population(configs: list[tuple[float, float, float, bool]]) -> tuple[Any, Any, list[list]]:
    """Train the configs together for STEPS steps, each member on its own shuffled batches."""
    from hpsearch.workloads.digits import load_digits_split
    from hpsearch.workloads.digits_population import PopulationSGD, PopulationTrainer, StackedMLP

    x, y = load_digits_split()["train"]
    seeds = list(range(len(configs)))
    orders = [torch.randperm(len(x), generator=torch.Generator().manual_seed(100 + s)) for s in seeds]
    batches = [[(x[o[i * 64 : (i + 1) * 64]], y[o[i * 64 : (i + 1) * 64]]) for i in range(STEPS)] for o in orders]
    model = StackedMLP.from_seeds(seeds, hidden=128)
    opt = PopulationSGD(
        model.flat,
        lr=[c[0] for c in configs],
        momentum=[c[1] for c in configs],
        weight_decay=[c[2] for c in configs],
        nesterov=[c[3] for c in configs],
    )
    trainer = PopulationTrainer(model, opt)
    for i in range(STEPS):
        xb = torch.stack([batches[k][i][0] for k in range(len(configs))])  # [K, 64, 64]
        yb = torch.stack([batches[k][i][1] for k in range(len(configs))])  # [K, 64]
        trainer.step(xb, yb)
    return model, opt, batches


@pytest.mark.torch
def test_population_sgd_matches_torch_sgd_per_member() -> None:
    model, opt, batches = _train_population(CONFIGS)
    assert bool(opt.alive.all())
    for k, (lr, momentum, wd, nesterov) in enumerate(CONFIGS):
        solo = _solo_weights(k, lr, momentum, wd, nesterov, batches[k])
        torch.testing.assert_close(model.flat[k], solo, atol=ATOL, rtol=RTOL, msg=f"member {k}")


@pytest.mark.torch
def test_population_diverging_member_is_masked_and_does_not_poison_others() -> None:
    configs = [CONFIGS[0], (1e9, 0.9, 0.0, False), CONFIGS[3]]
    model, opt, batches = _train_population(configs)
    assert opt.alive.view(-1).tolist() == [True, False, True]
    for k in (0, 2):
        lr, momentum, wd, nesterov = configs[k]
        solo = _solo_weights(k, lr, momentum, wd, nesterov, batches[k])
        torch.testing.assert_close(model.flat[k], solo, atol=ATOL, rtol=RTOL, msg=f"member {k}")


@pytest.mark.torch
def test_mlp_population_reports_like_solo_mlp() -> None:
    from hpsearch.workloads import digits
    from hpsearch.workloads.digits_population import mlp_population

    params = [
        {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},
        {"lr": 0.02, "momentum": 0.5, "weight_decay": 0.0},
        {"lr": 0.5, "momentum": 0.0, "weight_decay": 1e-3},
    ]
    solo = [digits.mlp(TrialContext(TrialRecord(i, p, 2, 7 + i))) for i, p in enumerate(params)]
    contexts = [TrialContext(TrialRecord(i, p, 2, 7 + i)) for i, p in enumerate(params)]
    together = mlp_population(contexts)
    for k in range(len(params)):
        assert together[k] is not None
        assert together[k].keys() == solo[k].keys()
        for name in solo[k]:
            assert together[k][name] == pytest.approx(solo[k][name], rel=1e-4, abs=1e-5), (k, name)
        assert len(contexts[k].curves["val_accuracy"]) == 2


@pytest.mark.torch
def test_run_population_digits_diverged_member_pruned_others_complete() -> None:
    from hpsearch.workloads.digits import mlp  # opts in via mlp.population

    entry = population_entry(mlp)
    assert entry is not None
    params = [{"lr": 0.1, "momentum": 0.9}, {"lr": 1e9, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5}]
    contexts = [_ctx(i, p, epochs=2) for i, p in enumerate(params)]
    outcomes = run_population(entry, contexts, "val_accuracy")
    assert [(o.state, o.reason) for o in outcomes] == [("complete", ""), ("pruned", "diverged"), ("complete", "")]
    assert outcomes[0].metrics["val_accuracy"] > 0.5
    assert len(outcomes[1].curves["train_loss"]) == 1  # it reported the epoch it diverged in, then stopped
    assert len(outcomes[2].curves["train_loss"]) == 2


@pytest.mark.torch
def test_population_shared_batches_match_torch_sgd_per_member() -> None:
    """Shared-order mode: one [B, 64] batch broadcast to every member; each is still torch.optim.SGD on it."""
    from hpsearch.workloads.digits import load_digits_split
    from hpsearch.workloads.digits_population import PopulationSGD, PopulationTrainer, StackedMLP

    x, y = load_digits_split()["train"]
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(100))
    batches = [(x[order[i * 64 : (i + 1) * 64]], y[order[i * 64 : (i + 1) * 64]]) for i in range(STEPS)]
    model = StackedMLP.from_seeds(range(len(CONFIGS)), hidden=128)
    opt = PopulationSGD(
        model.flat,
        lr=[c[0] for c in CONFIGS],
        momentum=[c[1] for c in CONFIGS],
        weight_decay=[c[2] for c in CONFIGS],
        nesterov=[c[3] for c in CONFIGS],
    )
    trainer = PopulationTrainer(model, opt)
    for xb, yb in batches:
        trainer.step(xb, yb)  # [64, 64], [64]: the same batch for all
    for k, (lr, momentum, wd, nesterov) in enumerate(CONFIGS):
        solo = _solo_weights(k, lr, momentum, wd, nesterov, batches)
        torch.testing.assert_close(model.flat[k], solo, atol=ATOL, rtol=RTOL, msg=f"member {k}")


@pytest.mark.torch
def test_stacked_mlp_from_seeds_equals_make_mlp_bit_for_bit() -> None:
    from hpsearch.workloads.digits import make_mlp
    from hpsearch.workloads.digits_population import StackedMLP

    seeds = [0, 3, 12345]
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        nets.append(make_mlp(32))
    assert torch.equal(StackedMLP.from_seeds(seeds, 32).flat, StackedMLP.from_modules(nets).flat)


def _shared_order_run(monkeypatch: pytest.MonkeyPatch, env: str | None, **kwargs: Any) -> list[dict[str, float]]:
    from hpsearch.workloads.digits_population import SHARED_ORDER_ENV, mlp_population

    if env is None:
        monkeypatch.delenv(SHARED_ORDER_ENV, raising=False)
    else:
        monkeypatch.setenv(SHARED_ORDER_ENV, env)
    params = [{"lr": 0.1, "momentum": 0.9}, {"lr": 0.05, "momentum": 0.5, "weight_decay": 1e-4}]
    contexts = [TrialContext(TrialRecord(i, p, 1, 7 + i)) for i, p in enumerate(params)]
    return mlp_population(contexts, **kwargs)


@pytest.mark.torch
def test_mlp_population_shared_order_member_equals_solo_of_first_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.workloads import digits

    shared = _shared_order_run(monkeypatch, None, shared_order=True)
    # Member 0 owns the shared seed, so it sees exactly its solo trial's batches.
    solo = digits.mlp(TrialContext(TrialRecord(0, {"lr": 0.1, "momentum": 0.9}, 1, 7)))
    for name in solo:
        assert shared[0][name] == pytest.approx(solo[name], rel=1e-4, abs=1e-5), name
    own = _shared_order_run(monkeypatch, None)  # default: each member its own order
    assert shared[1]["train_loss"] != pytest.approx(own[1]["train_loss"], rel=1e-6)


@pytest.mark.torch
def test_mlp_population_shared_order_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = _shared_order_run(monkeypatch, None, shared_order=True)
    assert _shared_order_run(monkeypatch, "1") == explicit
    assert _shared_order_run(monkeypatch, "0") == _shared_order_run(monkeypatch, None, shared_order=False)


def _clocks(monkeypatch: pytest.MonkeyPatch, seconds):
    """Injected clocks (not real ones): each call of the returned pop_fn's population of k advances
    CPU time and wall time by seconds(k, run) = (cpu, wall). Returns pop_fn and the runs per k."""
    from hpsearch.workloads import population

    cpu, wall, runs = [0.0], [0.0], {}

    def pop_fn(contexts):
        k = len(contexts)
        runs[k] = runs.get(k, 0) + 1
        c, w = seconds(k, runs[k])
        cpu[0] += c
        wall[0] += w
        return [None] * k

    monkeypatch.setattr(population.time, "process_time", lambda: cpu[0])
    monkeypatch.setattr(population.time, "perf_counter", lambda: wall[0])
    return pop_fn, runs


def test_choose_population_size_times_each_k_more_than_once_and_keeps_the_fastest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One disturbed probe (a slow first run at K=2) must not decide: the faster repeat counts. A timing
    that took LONG_PROBE_S is not repeated (a slow spell moves a long timing less)."""
    from hpsearch.workloads import population

    # run 1 is the warm-up at K=1; then K=1 takes 0.1875 s (disturbed), then 0.125 s; K=2 the same
    cost = {(1, 2): 0.1875, (2, 1): 0.1875}
    pop_fn, runs = _clocks(monkeypatch, lambda k, run: (cost.get((k, run), 0.125),) * 2)
    choice = population.choose_population_size(pop_fn, {"lr": 0.1}, max_k=2)
    assert runs[2] == population.PROBE_REPEATS  # each K timed PROBE_REPEATS times
    assert choice.throughput[1] == pytest.approx(1 / 0.125) and choice.throughput[2] == pytest.approx(
        2 / 0.125
    )  # the faster runs
    pop_fn, runs = _clocks(monkeypatch, lambda k, run: (population.LONG_PROBE_S,) * 2)
    population.choose_population_size(pop_fn, {"lr": 0.1}, max_k=2)
    assert runs == {1: 2, 2: 1}  # the warm-up and one timing each


def test_choose_population_size_on_a_cpu_reads_cpu_time_not_the_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The other workers and the coordinator share the cores during the probe: a wall clock that
    says K=2 gains nothing (the prober was descheduled) must not decide, its CPU time does."""
    from hpsearch.workloads import population

    # each run: 1 s of CPU at K=1 and at K=2 (K=2 pays 2x); the wall clock says 2 s at K=2
    pop_fn, _ = _clocks(monkeypatch, lambda k, run: (1.0, 1.0 if k == 1 else 2.0))
    choice = population.choose_population_size(pop_fn, {"lr": 0.1}, max_k=2)
    assert choice.k == 2 and choice.throughput == {1: pytest.approx(1.0), 2: pytest.approx(2.0)}


def test_choose_population_size_uses_the_wall_clock_when_the_work_is_not_on_its_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A population entry that waits (sleeps, a subprocess) spends no CPU time here: wall time counts,
    and each timing still ends after MIN_PROBE_S of it."""
    from hpsearch.workloads import population

    pop_fn, _ = _clocks(monkeypatch, lambda k, run: (0.001, 1.0 if k == 1 else 4.0))  # K=2 loses
    choice = population.choose_population_size(pop_fn, {"lr": 0.1}, max_k=2)
    assert choice.k == 1 and choice.throughput == {1: pytest.approx(1.0), 2: pytest.approx(0.5)}


def test_mlp_population_members_report_their_own_update_ratio() -> None:
    """A member is a full trial: its row gets the update:weight ratio (and its hints) a solo trial gets."""
    from hpsearch.workloads import digits

    params = [{"lr": 0.3, "momentum": 0.9}, {"lr": 1e-3}]
    contexts = [TrialContext.open(TrialRecord(i, p, 2, i, metric="val_accuracy"), "cpu") for i, p in enumerate(params)]
    run_population(digits.mlp.population, contexts, "val_accuracy")
    ratios = [c.curves["update_ratio"] for c in contexts]
    assert all(len(r) == 2 and all(v > 0 for v in r) for r in ratios)
    assert ratios[0][-1] > 10 * ratios[1][-1]  # a 300x larger lr moves the weights far more


def test_choose_population_size_repeats_a_tiny_population_until_min_probe_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpsearch.workloads import population

    pop_fn, runs = _clocks(monkeypatch, lambda k, run: (0.0625, 0.0625))  # every run takes 0.0625 s, exact in binary
    population.choose_population_size(pop_fn, {"lr": 0.1}, max_k=1)
    runs_per_timing = math.ceil(population.MIN_PROBE_S / 0.0625)
    assert runs[1] == 1 + population.PROBE_REPEATS * runs_per_timing  # warm-up, then the repeated timings


def test_report_population_sends_an_epoch_of_every_live_member_in_one_call():
    from hpsearch.workloads.population import as_members, report_population

    calls = []

    def hook(entries):
        calls.append(entries)
        return ["pruned" if number == 0 else None for number, *_ in entries]

    contexts = [TrialContext.open(TrialRecord(n, {"lr": 0.1}, 2, n), "cpu", on_reports=hook) for n in range(3)]
    members = as_members(contexts)
    assert report_population(members, 0, {"val_accuracy": [0.1, 0.2, 0.3]}) == [False, True, True]
    assert report_population(members, 1, {"val_accuracy": [0.4, 0.5, 0.6]}) == [False, True, True]
    assert [[(n, epoch, m) for n, epoch, m, _ in entries] for entries in calls] == [
        [(0, 0, {"val_accuracy": 0.1}), (1, 0, {"val_accuracy": 0.2}), (2, 0, {"val_accuracy": 0.3})],
        [(1, 1, {"val_accuracy": 0.5}), (2, 1, {"val_accuracy": 0.6})],  # the stopped member reports no more
    ]
    assert members[0].stopped == "pruned" and contexts[2].curves == {"val_accuracy": [0.3, 0.6]}
