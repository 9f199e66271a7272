"""Population trials: K trials of one workload trained together, in one vectorized model.

A workload opts in by hanging a population entry point on its single-trial
function:

    def mlp(trial): ...                      # one trial, the ordinary API
    def mlp_population(trials): ...          # K trials at once
    mlp.population = mlp_population

`mlp_population(trials: list) -> list` receives K trial objects (each with
`.params`, `.epochs`, `.seed`, `.device`, `.report(epoch, **metrics)`), trains
them together and returns one result per trial, in order: a dict of metrics
or a float, exactly what `train(trial)` would return. Every member reports its
own per-epoch metrics; a member whose report raises TrialStopped (diverged,
pruned) is masked out from then on while the others go on. `report_population`
does that bookkeeping so trainers need no try/except.

`run_population` is the population twin of `workloads.function.run_trial`: it runs the
entry point and turns each member's ending into a TrialOutcome.
`choose_population_size` picks K for `--population auto` by measuring.

This module does not import torch: the dispatcher imports it in the CLI
process, and only workloads (imported in the training processes) load torch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hpsearch.errors import TrialStopped
from hpsearch.workloads.api import (
    TrialContext,
    TrialOutcome,
    TrialRecord,
    TrialStatus,
    exception_reason,
    report_together,
    result_outcome,
)

PopulationFn = Callable[[list[Any]], list[Any]]
POPULATION_KEY = "population"  # the metric each member's outcome gets: how many trials trained together

MIN_GAIN = 1.08  # 8%: a doubling that raises trials/second less is flat; K must beat K=1 by this to be taken
MAX_K = 256  # probes stop here even if throughput still grows: results come back K at a time
EXPLORE_K = 8  # below this K a flat doubling does not end the probes: 1->2 is often flat on a CPU, 1->8 not
PROBE_BUDGET_S = 5.0  # ...unless the probes already took this long (CPU time on a CPU; a minute-long epoch)
PROBE_TRIALS = 8  # past EXPLORE_K, no K is probed whose population would take longer than 8 trials at K=1
PROBE_EPOCHS = 1  # the timed probe runs: one epoch is enough to reach steady state on small models
PROBE_REPEATS = 2  # each K is timed this often (in separate passes) and the fastest run counts: one run is noisy
LONG_PROBE_S = 0.25  # ...unless its first timing took this long: slow spells move long ones less (CNN: half the cost)
OFF_CPU = 0.25  # a probe whose CPU time is under this share of its wall time waits on something else: wall time counts
MIN_PROBE_S = 0.1  # and each timing repeats its population until it took this long in all (0.1 s: the same K
# as 0.2 s in repeated probes, at half the cost)


def population_entry(fn: Callable[..., Any]) -> PopulationFn | None:
    """The workload's population entry point (`fn.population`), or None if it has none.

    A caller falls back to one trial per worker when this returns None.
    """
    entry = getattr(fn, "population", None)
    return entry if callable(entry) else None


# ----------------------------------------------------------------------------- members


class Member:
    """One trial of a population, as the population trainer sees it.

    It reads like the trial it wraps (params, epochs, seed, device, number,
    stage, study, curves) and remembers why it stopped: `stopped` is None
    while the member trains, else the reason ('diverged', 'pruned', ...).
    """

    def __init__(self, trial: Any) -> None:
        self.trial = trial
        self.stopped: str | None = None

    def __getattr__(self, name: str) -> Any:
        # Only reached for names Member does not define: params, epochs, seed, device, ...
        return getattr(self.trial, name)

    @property
    def alive(self) -> bool:
        return self.stopped is None

    def report(self, epoch: int, **metrics: float) -> None:
        """Report this member's epoch, as `trial.report` does; raises TrialStopped to stop it.

        Once stopped, every later report raises again: a masked member never
        reports more epochs.
        """
        if self.stopped is not None:
            raise TrialStopped(self.stopped)
        try:
            self.trial.report(epoch, **metrics)
        except TrialStopped as stop:
            self.stopped = stop.reason
            raise

    def stop(self, reason: str) -> None:
        """Stop this member from inside the trainer (e.g. its loss went NaN mid-epoch)."""
        if self.stopped is None:
            self.stopped = reason


def as_members(trials: Sequence[Any]) -> list[Member]:
    """The trials as Members: those that already are stay the same objects (run_population sees them)."""
    return [t if isinstance(t, Member) else Member(t) for t in trials]


def report_population(members: Sequence[Member], epoch: int, metrics: Mapping[str, Sequence[float]]) -> list[bool]:
    """Report one epoch for every live member; returns which members are still alive.

    `metrics` maps each metric name to K values, one per member (a list, or a
    tensor's `.tolist()`). Members already stopped are skipped; a member whose
    report raises TrialStopped is marked stopped and skipped from then on.
    """
    live = [(k, m) for k, m in enumerate(members) if m.alive]
    each = [{name: float(values[k]) for name, values in metrics.items()} for k, _ in live]
    contexts = [m.trial for _, m in live]
    reasons = report_together(contexts, epoch, each) if all(isinstance(c, TrialContext) for c in contexts) else None
    if reasons is not None:  # one message for the whole epoch (the worker's population contexts)
        for (_, member), reason in zip(live, reasons):
            if reason is not None:
                member.stop(reason)
        return [m.alive for m in members]
    for (_, member), values in zip(live, each):
        with contextlib.suppress(
            TrialStopped
        ):  # recorded on the member: the trainer masks it through the returned list
            member.report(epoch, **values)
    return [m.alive for m in members]


# ----------------------------------------------------------------------------- running


def check_population(contexts: Sequence[Any]) -> None:
    """Raise ValueError unless the trials can share one training loop: same epochs, same device."""
    if not contexts:
        raise ValueError("a population needs at least one trial")
    for attr in ("epochs", "device"):
        values = {getattr(c, attr) for c in contexts}
        if len(values) > 1:
            raise ValueError(f"a population's trials must share {attr}; got {sorted(map(str, values))}")


def run_population(pop_fn: PopulationFn, contexts: Sequence[TrialContext], metric: str) -> list[TrialOutcome]:
    """Run `pop_fn` on the trials together and classify each member's ending, as run_trial does.

    Each member ends 'complete' (its metrics), 'pruned' (its report raised
    TrialStopped, or the trainer stopped it, or its metric is not finite:
    reason 'diverged') or 'fail' (the trainer crashed or returned a wrong
    result; members already stopped stay pruned). Each member's duration_s
    is its share of the population's wall time, split evenly (the wall time
    / K): the members' durations add up to the time the population took.
    Each outcome's metrics get POPULATION_KEY: K, the trials trained together
    (unless the trainer returned that name itself), so the trial's row says
    so: a member equals its solo run per step up to float rounding, which
    chaotic training amplifies (docs/population.md, "How equal").
    Raises ValueError when the trials cannot share a loop (check_population).
    KeyboardInterrupt propagates (the caller records the trials).
    """
    check_population(contexts)
    members = [Member(c) for c in contexts]
    start = time.perf_counter()
    try:
        results = pop_fn(members)
        crash = ""
    except TrialStopped as stop:  # the trainer let a member's stop escape: the others cannot be told apart
        results, crash = None, f"population trainer did not catch TrialStopped({stop.reason!r}); use report_population"
    except Exception as e:  # one crash fails the members still training, never the search
        results, crash = None, exception_reason(e)
    if results is not None and (not isinstance(results, (list, tuple)) or len(results) != len(members)):
        got = len(results) if isinstance(results, (list, tuple)) else type(results).__name__
        results, crash = None, f"population trainer returned {got} results for {len(members)} trials"
    duration = (time.perf_counter() - start) / len(members)
    outcomes = []
    for k, (member, ctx) in enumerate(zip(members, contexts)):
        outcome = _member_outcome(member, ctx, None if results is None else results[k], crash, metric, duration)
        outcome.metrics.setdefault(POPULATION_KEY, len(members))  # kept with its metrics: a leaderboard column
        outcomes.append(outcome)
    return outcomes


def _member_outcome(
    member: Member, ctx: TrialContext, result: Any, crash: str, metric: str, duration: float
) -> TrialOutcome:
    def outcome(state: TrialStatus, metrics: dict[str, float] | None = None, reason: str = "") -> TrialOutcome:
        return TrialOutcome(state, metrics or {}, reason, ctx.curves, duration)

    if member.stopped is not None:
        return outcome(TrialStatus.PRUNED, reason=member.stopped)
    if crash:
        return outcome(TrialStatus.FAIL, reason=crash)
    return result_outcome(result, metric, ctx.curves, duration)


# ----------------------------------------------------------------------------- choosing K


@dataclass
class PopulationChoice:
    """What `choose_population_size` measured and chose."""

    k: int
    throughput: dict[int, float] = field(default_factory=dict)  # K -> trials per second
    stopped_because: str = ""


def pick_k(rates: Mapping[int, float], min_gain: float = MIN_GAIN) -> int:
    """The population size to train at, from measured trials/second per K: the decision of `auto`.

    K = 1 unless some K beat K = 1 by `min_gain`; else the largest K whose
    rate is within `min_gain` of the fastest. Ties go to the larger K because
    the probes do not see what a population amortises besides compute (its
    members' reports, journal writes and messages are one per population):
    on the MNIST-1D CNN, K = 4 and K = 8 probed 6% apart (11.5/s, 10.9/s)
    while K = 8 ran the 30-trial stage 1.2-1.6x faster. Pure: no timing here.
    """
    if not rates:
        return 1
    best = max(rates.values())
    if 1 in rates and best < min_gain * rates[1]:
        return 1
    return max(k for k, rate in rates.items() if rate * min_gain >= best)


def choose_k(
    time_k: Callable[[int], float],
    max_k: int = MAX_K,
    min_gain: float = MIN_GAIN,
    fits: Callable[[int], bool] | None = None,
    budget_s: float = PROBE_BUDGET_S,
    spent: Callable[[], float] | None = None,
    repeats: int = 1,
    long_s: float = math.inf,
) -> PopulationChoice:
    """Time K = 1, 2, 4, ... and pick K from the rates (`pick_k`).

    `time_k(k)` runs a short population of k trials and returns its seconds;
    it may raise MemoryError (or a RuntimeError saying 'out of memory') when k
    does not fit. `fits(k)` may veto a k before it is timed (a memory
    estimate). A doubling is flat when it does not raise the best
    trials/second so far by `min_gain`. The doubling stops before a k that
    exceeds max_k, does not fit, or (past EXPLORE_K) would take longer than
    PROBE_TRIALS trials at K = 1 (predicted: twice the previous timing; a
    CPU-bound stack, whose cost grows with K), and after a flat doubling at
    k >= EXPLORE_K, or below it once the probes took `budget_s`
    (`spent()`; default: the sum of the timings). A flat doubling below
    EXPLORE_K goes on: on a CPU, K = 2 often runs no faster than K = 1 while
    K = 8 does (the MNIST-1D CNN: 1->2 0.94x, K = 8 1.7x over the stage).
    Then every k probed whose timing took under `long_s` is timed
    `repeats - 1` more times, largest first, and its fastest timing counts: a
    slow spell of the machine then hits different k in different passes
    instead of both timings of one k. Torch-free: the timing is the caller's.
    """
    seconds: dict[int, float] = {}
    stopped = _double(time_k, seconds, max_k, min_gain, fits, budget_s, spent)
    for _ in range(repeats - 1):
        for k in sorted((k for k, t in seconds.items() if t < long_s), reverse=True):
            seconds[k] = min(seconds[k], max(time_k(k), 1e-9))
    rates = {k: k / t for k, t in seconds.items()}
    return PopulationChoice(pick_k(rates, min_gain), rates, stopped)


def _double(
    time_k: Callable[[int], float],
    seconds: dict[int, float],
    max_k: int,
    min_gain: float,
    fits: Callable[[int], bool] | None,
    budget_s: float,
    spent: Callable[[], float] | None,
) -> str:
    """choose_k's first pass: one timing per k = 1, 2, 4, ... into `seconds`; returns why it stopped."""
    best, k = 0.0, 1
    while True:
        if k > max_k:
            return f"reached max_k={max_k}"
        if k > EXPLORE_K and 2 * seconds[k // 2] > PROBE_TRIALS * seconds[1]:
            return f"K={k} would take longer than {PROBE_TRIALS} trials at K=1"
        if fits is not None and not fits(k):
            return f"K={k} would not fit in memory"
        try:
            seconds[k] = max(time_k(k), 1e-9)
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "out of memory" not in str(e).lower():
                raise
            return f"K={k} ran out of memory"
        rate = k / seconds[k]
        if k > 1 and rate < min_gain * best:  # a flat doubling
            why = f"K={k} gained only {rate / best:.2f}x over the best before it"
            if k >= EXPLORE_K:
                return why
            took = spent() if spent is not None else sum(seconds.values())
            if took >= budget_s:
                return f"{why} (probes took {took:.1f}s)"
        best = max(best, rate)
        k *= 2


def probe_contexts(
    params: Mapping[str, Any], k: int, epochs: int = PROBE_EPOCHS, device: str = "cpu"
) -> list[TrialContext]:
    """k throwaway trials with the same params and seeds 0..k-1, for timing probes (no reports kept)."""
    return [TrialContext.open(TrialRecord(i, dict(params), epochs, i, stage="probe"), device) for i in range(k)]


def choose_population_size(
    pop_fn: PopulationFn,
    params: Mapping[str, Any],
    device: str = "cpu",
    max_k: int = MAX_K,
    min_gain: float = MIN_GAIN,
    epochs: int = PROBE_EPOCHS,
    memory_fraction: float = 0.5,
) -> PopulationChoice:
    """K for `--population auto`: measured on this machine with this workload, never guessed.

    Runs `pop_fn` on K = 1, 2, 4, ... probe trials (all with `params`, e.g.
    the stage's first trial, for `epochs` epochs each), untimed warm-up at
    K=1 first; doubles through flat doublings up to K = EXPLORE_K (while the
    probes took under PROBE_BUDGET_S: of CPU time on a CPU, where the other
    workers slow the wall clock 2-3x, else of wall time), then while a doubling
    raises trials/second by `min_gain`, and takes the largest K within
    `min_gain` of the fastest (choose_k, pick_k). On a CUDA device a K whose
    predicted peak memory (twice the previous K's measured peak) exceeds
    `memory_fraction` of the free memory is not tried; on CPU the cap is
    max_k and a probe that runs out of memory. Each K is timed PROBE_REPEATS times in separate passes (the
    fastest counts; once if it took LONG_PROBE_S), each timing repeated until MIN_PROBE_S of wall time. On a CPU
    device the timings are this process's CPU time, not the wall clock: the other workers and
    the coordinator share the cores during the probe, and a probe descheduled for a moment once
    made K=2 look no faster than K=1 (K=1 chosen, 4x slower than K=32); wall time where the CPU
    time is under OFF_CPU of it (the work is elsewhere) and on a GPU (asynchronous kernels). Cost: about as
    much as training 2 * PROBE_REPEATS * K_probed trials for `epochs` epochs (K_probed >= EXPLORE_K on a
    quick workload).
    """
    peaks: dict[int, int] = {}
    cuda = str(device).startswith("cuda")
    clock = time.perf_counter if cuda else time.process_time  # as the timings: CPU time on a CPU
    started = clock()

    def time_once(k: int) -> float:
        """Seconds per population of k, over as many runs as make MIN_PROBE_S (one tiny run is all noise)."""
        runs, cpu, wall = 0, 0.0, 0.0
        while runs == 0 or wall < MIN_PROBE_S:
            contexts = probe_contexts(params, k, epochs, device)
            if cuda:
                import torch

                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            cpu_start, wall_start = time.process_time(), time.perf_counter()
            pop_fn(contexts)
            if cuda:
                torch.cuda.synchronize(device)
                peaks[k] = torch.cuda.max_memory_allocated(device)
            cpu += time.process_time() - cpu_start
            wall += time.perf_counter() - wall_start
            runs += 1
        # CPU time on a CPU (see the docstring), unless the work is not this process's (it waits: a
        # population entry of the user's that sleeps, reads, or runs a subprocess).
        return (wall if cuda or cpu < OFF_CPU * wall else cpu) / runs

    def fits(k: int) -> bool:
        if not cuda or k // 2 not in peaks:
            return True
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return 2 * peaks[k // 2] <= memory_fraction * free

    def spent() -> float:
        return clock() - started

    pop_fn(probe_contexts(params, 1, epochs, device))  # warm-up: data loading, lazy init, kernel caches
    return choose_k(time_once, max_k, min_gain, fits, PROBE_BUDGET_S, spent, PROBE_REPEATS, LONG_PROBE_S)
