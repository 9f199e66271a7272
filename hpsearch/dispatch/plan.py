"""Planning: which worker processes a stage gets, from the devices of this machine.

Every visible CUDA GPU gets `per_device` workers (default 1), each seeing only
its own GPU (CUDA_VISIBLE_DEVICES), else the CPU gets `workers` of them (default
one per core), torch's threads split between them so the cores are not
oversubscribed. GPUs are found without importing torch.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from hpsearch.errors import DispatchError

AUTO = "auto"
NVIDIA_SMI_TIMEOUT_S = 10.0  # nvidia-smi can be slow on a busy multi-GPU box; a hang must not block the CLI


@dataclass(frozen=True)
class DispatchConfig:
    """How trials are spread over the machine, as given on the command line (None = default)."""

    devices: str = "auto"  # auto: every visible CUDA GPU, else the CPU
    per_device: int | None = None  # trials at once per GPU; default 1: a GPU runs one small trial well
    workers: int | None = None  # CPU worker processes; default one per core; 0 = in this process
    trial_timeout: float | None = None  # seconds; None = no limit
    # Trials trained together per worker (population mode); "auto" measures the best K; None = 1.
    population: int | str | None = None


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process to start: where it trains and how many threads torch may use there."""

    device: str  # what trial.device says: "cpu" or "cuda:0" (the only GPU the worker sees)
    visible: str | None  # CUDA_VISIBLE_DEVICES for the worker (a physical GPU id or UUID); None on CPU
    threads: int  # torch intra-op threads: the cores split between workers, so none are oversubscribed
    label: str  # for messages: "cpu", "cuda:2"


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """Ids of the CUDA GPUs this process may use, found WITHOUT importing torch.

    CUDA_VISIBLE_DEVICES when it is set (its entries: ids or UUIDs; empty or
    -1 hides every GPU), else one id per line of `nvidia-smi -L`; no
    nvidia-smi means no GPU.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [s.strip() for s in env.split(",") if s.strip()]
        # CUDA stops at the first invalid entry; -1 is the usual way to hide every GPU.
        return [] if not ids or ids[0] == "-1" else ids
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if listing.returncode != 0:
        return []
    return [str(i) for i, line in enumerate(row for row in listing.stdout.splitlines() if row.startswith("GPU "))]


def plan_workers(config: DispatchConfig, gpus: list[str] | None = None, cores: int | None = None) -> list[WorkerSlot]:
    """The worker processes for `config`: per GPU, `per_device` of them; on CPU, `workers` of them.

    `gpus` and `cores` default to what this machine has (visible_gpus(),
    cpu_cores()). Raises DispatchError for options the machine cannot meet.
    """
    gpus = visible_gpus() if gpus is None else gpus
    cores = cpu_cores() if cores is None else cores
    chosen = _choose_gpus(config.devices, gpus)
    if chosen:
        if config.workers not in (None, 0):
            raise DispatchError("$workers sets CPU workers; on GPUs use $per_device (or $devices cpu)")
        per_device = config.per_device or 1
        threads = max(cores // (len(chosen) * per_device), 1)
        return [
            WorkerSlot("cuda:0", gpus[index], threads, f"cuda:{index}") for index in chosen for _ in range(per_device)
        ]
    if config.per_device is not None:
        raise DispatchError("$per_device counts trials per GPU and no GPU is in use; on CPU use $workers N")
    workers = cores if config.workers is None else min(config.workers, cores)
    threads = max(cores // max(workers, 1), 1)
    return [WorkerSlot("cpu", None, threads, "cpu") for _ in range(workers)]


def capped_note(config: DispatchConfig, slots: list[WorkerSlot], cores: int | None = None) -> str:
    """One line when the CPU workers asked for were more than the cores (CPU-bound trials gain nothing
    from more processes than cores: each would get a slice of one), else ''."""
    cores = cpu_cores() if cores is None else cores
    asked = config.workers
    if asked is None or asked <= len(slots) or any(s.visible is not None for s in slots):
        return ""
    return f"note: $workers {asked} capped at {len(slots)}, the cores this process may use"


def _choose_gpus(devices: str, gpus: list[str]) -> list[int]:
    """Indices (into the visible GPUs) that `devices` selects; [] means the CPU."""
    devices = devices.strip().lower()
    if devices == "cpu":
        return []
    if devices == "auto":
        return list(range(len(gpus)))
    if not gpus:
        raise DispatchError(f"$devices {devices}: no CUDA GPU is visible (nvidia-smi finds none); use $devices cpu")
    if devices == "cuda":
        return list(range(len(gpus)))
    chosen: list[int] = []
    for item in devices.split(","):
        name, _, index = item.strip().partition(":")
        if name != "cuda" or not index.isdigit():
            raise DispatchError(
                f"$devices {devices}: {item.strip()!r} is not cuda:N; use auto, cpu, cuda or cuda:0,cuda:2"
            )
        if int(index) >= len(gpus):
            raise DispatchError(
                f"$devices {devices}: cuda:{index} does not exist; {len(gpus)} GPU(s) visible: "
                f"cuda:0..cuda:{len(gpus) - 1}"
            )
        if int(index) not in chosen:
            chosen.append(int(index))
    return chosen


def parse_population(value: int | str | None) -> int | str:
    """The population setting: a positive K, or 'auto' (measured by a worker). None means 1."""
    if value is None:
        return 1
    if isinstance(value, str) and value.strip().lower() == "auto":
        return AUTO
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise DispatchError(f"$population {value}: use a number of trials trained together (e.g. 32) or auto") from None
    if k < 1:
        raise DispatchError(f"$population {value}: must be 1 or more (1 = one trial per worker)")
    return k


def no_population_notice(workload: object) -> str:
    """Why $population was not applied: a command runs one process per trial; a function needs fn.population."""
    if getattr(workload, "kind", "function") == "command":
        return (
            "note: a command workload runs one trial per process; "
            "$population does not apply, running one trial per worker"
        )
    return f"note: workload {workload} has no population entry point (fn.population); running one trial per worker"
