"""How many CPU threads torch uses in a training or stage-2 process: the cores it may run on, and what they give now.

torch starts one OpenMP thread per core of the machine. Two things make that wrong:
- the process may run on fewer cores than the machine has: an affinity mask (`taskset`, SLURM) or a cgroup CPU
  quota (a container, a Kubernetes pod, a SLURM job) that `os.cpu_count()` does not see;
- other processes keep the cores busy (a shared server, a second training). OpenMP threads then wait for each
  other at every parallel region: on the 2 shared cores of the development machine resnet20 trained at 30 img/s
  with torch's default 2 threads and at 250 img/s with 1 (docs/threads.md).

`choose_threads` takes the cores the process may use (affinity and quota) and, when there is more than one,
times a short fixed convolution step (forward + backward, about 0.5 s in all) at 1, 2, 4, ... threads, rounds
interleaved, and takes the fewest threads within 10 % of the fastest. An explicit count (the config's
NUM_THREADS, stage 2's --threads, or OMP_NUM_THREADS in the environment, which the study runner sets per
child) is used as given. `RateWatch` notices, epoch by epoch, when a run falls far below the rate it had.
The thread count changes float summation order only, as another machine would (bit-exact reruns need the same
count: set it explicitly).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

# Fewer threads win unless more are at least this much faster: an idle core now may be busy in a minute, and
# an oversubscribed OpenMP team loses far more than one thread too few does.
MORE_THREADS_MUST_GAIN = 1.1
PROBE_ROUNDS = 3
PROBE_SECONDS = 0.05  # per thread count and round (at least one step): the whole check stays near half a second
# A run whose epoch rate falls below this fraction of its best epoch's has lost its cores to other processes.
SLOWDOWN_FRACTION = 1 / 3


def cgroup_cpu_limit(
    root: str | os.PathLike = "/sys/fs/cgroup", proc_cgroup: str | os.PathLike = "/proc/self/cgroup"
) -> float | None:
    """The CPU quota of this process's cgroup in cores (quota / period), or None when it has none.

    cgroup v2: `cpu.max` ("max 100000" or "200000 100000"); v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us`
    (-1 = none). Read at the process's own cgroup path and at the mount's root (a container sees its own
    cgroup there); the smallest quota found counts.
    """
    root = Path(root)
    paths: list[str] = [""]
    try:
        for line in Path(proc_cgroup).read_text(encoding="utf-8").splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and (parts[1] == "" or "cpu" in parts[1].split(",")):
                paths.append(parts[2].lstrip("/"))
    except OSError:
        pass
    limits = []
    for relative in dict.fromkeys(paths):
        limits += _quota(root / relative / "cpu.max", None)
        limits += _quota(root / "cpu" / relative / "cpu.cfs_quota_us", root / "cpu" / relative / "cpu.cfs_period_us")
        limits += _quota(root / "cpu,cpuacct" / relative / "cpu.cfs_quota_us",
                         root / "cpu,cpuacct" / relative / "cpu.cfs_period_us")  # fmt: skip
    return min(limits) if limits else None


def _quota(quota_file: Path, period_file: Path | None) -> list[float]:
    """[cores] from one cgroup's quota file(s), [] when absent, unlimited or unreadable."""
    try:
        if period_file is None:  # v2: "quota period" in one file
            quota, period = quota_file.read_text(encoding="utf-8").split()[:2]
        else:
            quota = quota_file.read_text(encoding="utf-8").strip()
            period = period_file.read_text(encoding="utf-8").strip()
        if quota in ("max", "-1") or float(period) <= 0 or float(quota) <= 0:
            return []
        return [float(quota) / float(period)]
    except (OSError, ValueError):
        return []


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask (not the machine's count), capped by a cgroup CPU quota
    (rounded up: a quota of 1.5 cores keeps two threads busy three quarters of the time)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cpu_limit()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota - 1e-6)))
    return max(1, count)


class _Probe:
    """A fixed convolution step, forward and backward: small enough to time in milliseconds, parallel enough that
    an idle machine rewards more threads and a busy one shows OpenMP's waiting."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(16, 32, 32, 32, generator=generator, requires_grad=True)
        self.weight = torch.randn(32, 32, 3, 3, generator=generator, requires_grad=True)

    def step(self) -> None:
        torch.nn.functional.conv2d(self.images, self.weight, padding=1).relu().sum().backward()

    def rate(self, threads: int, seconds: float = PROBE_SECONDS) -> float:
        """Steps per second at `threads` threads (one untimed step first: thread start-up is not the rate)."""
        torch.set_num_threads(threads)
        self.step()
        steps, start = 0, time.perf_counter()
        while True:
            self.step()
            steps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return steps / elapsed


def candidate_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to `cores`, and `cores` itself."""
    counts, n = [], 1
    while n < cores:
        counts.append(n)
        n *= 2
    return [*counts, cores]


def measure_thread_rates(counts: list[int], rounds: int = PROBE_ROUNDS) -> dict[int, float]:
    """Median probe steps per second per thread count; rounds interleave the counts, so a load change hits all."""
    probe, samples = _Probe(), {n: [] for n in counts}
    before = torch.get_num_threads()
    with torch.enable_grad():
        for _ in range(rounds):
            for n in counts:
                samples[n].append(probe.rate(n))
    torch.set_num_threads(before)
    return {n: statistics.median(values) for n, values in samples.items()}


def fewest_good_threads(rates: dict[int, float]) -> int:
    """The fewest threads whose rate is within MORE_THREADS_MUST_GAIN of the best."""
    best = max(rates.values())
    return min(n for n, rate in rates.items() if rate * MORE_THREADS_MUST_GAIN >= best)


@dataclass
class ThreadChoice:
    """The threads a process uses and why; `rates` holds the measured probe steps/s per count (when measured)."""

    threads: int
    cores: int
    source: str  # "config", "environment", "measured", "one core", "cuda"
    rates: dict[int, float] = field(default_factory=dict)
    warning: str = ""
    reserved: int = 0  # cores left to other processes of the run (DataLoader workers)

    def line(self, setting: str) -> str:
        """One line for the log; `setting` names the key or option that fixes the count (e.g. "NUM_THREADS")."""
        what = f"{self.threads} torch thread{'s' if self.threads > 1 else ''} on {self.cores} usable core" + (
            "s" if self.cores > 1 else ""
        )
        if self.source == "measured":
            measured = ", ".join(f"{n}: {rate:.0f}" for n, rate in sorted(self.rates.items()))
            return (f"{what} (measured at start, probe steps/s by threads: {measured}; "
                    f"{setting} N fixes the count)")  # fmt: skip
        left = ""
        if self.reserved:
            left = ("the other core for the DataLoader worker" if self.reserved == 1
                    else f"the other {self.reserved} for the {self.reserved} DataLoader workers")  # fmt: skip
        reason = {"config": f"{setting} {self.threads}", "environment": "OMP_NUM_THREADS",
                  "one core": left or "one usable core", "cuda": "the model runs on the GPU"}[self.source]  # fmt: skip
        return f"{what} ({reason})"


def choose_threads(requested: int = 0, device_type: str = "cpu", reserved: int = 0) -> ThreadChoice:
    """The thread count for this process (not applied: see `apply`).

    requested: an explicit count (> 0), or 0 for the choice above. device_type "cuda": no probe (the CPU only
    feeds the GPU), the usable cores. reserved: cores other processes of this run keep busy (DataLoader
    workers), taken from the candidates.
    """
    cores = usable_cpus()
    if requested > 0:
        warning = ""
        if requested > cores:
            warning = (f"{requested} threads on {cores} usable cores: the threads will wait for each other; "
                       f"use at most {cores}")  # fmt: skip
        return ThreadChoice(requested, cores, "config", warning=warning)
    from_environment = _environment_threads()
    if from_environment:
        return ThreadChoice(from_environment, cores, "environment")
    reserved = min(max(0, reserved), cores - 1)
    available = cores - reserved
    if device_type == "cuda":
        return ThreadChoice(available, cores, "cuda", reserved=reserved)
    if available == 1:
        return ThreadChoice(1, cores, "one core", reserved=reserved)
    rates = measure_thread_rates(candidate_counts(available))
    return ThreadChoice(fewest_good_threads(rates), cores, "measured", rates, reserved=reserved)


def _environment_threads() -> int:
    """OMP_NUM_THREADS when it is a positive integer (torch read it at start-up), else 0."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 0


def apply(choice: ThreadChoice) -> None:
    torch.set_num_threads(choice.threads)


class RateWatch:
    """Epoch rates of one run: says when an epoch ran far below the best one so far (other processes took the
    cores). A run that chose its own thread count measures again and switches to fewer threads when they are
    faster now; a run given its count gets the fix in one line (once)."""

    def __init__(self, choice: ThreadChoice, setting: str = "NUM_THREADS") -> None:
        self.choice, self.setting = choice, setting
        self.best = 0.0
        self.warned = False

    def observe(self, epoch: int, images_per_second: float) -> str:
        """Empty when the rate is fine, else one line saying what happened and what was done or is to be done."""
        best, self.best = self.best, max(self.best, images_per_second)
        if best <= 0 or images_per_second >= best * SLOWDOWN_FRACTION or self.choice.threads == 1:
            return ""
        drop = (f"epoch {epoch} ran at {images_per_second:.0f} img/s, {best / max(images_per_second, 1e-9):.1f}x "
                f"below the best epoch's {best:.0f}: other processes are using the cores")  # fmt: skip
        if self.choice.source == "measured":
            rates = measure_thread_rates(candidate_counts(self.choice.threads))
            better = fewest_good_threads(rates)
            if better < self.choice.threads:
                self.choice = ThreadChoice(better, self.choice.cores, "measured", rates)
                apply(self.choice)
                self.best = 0.0  # the new count sets its own reference
                return f"{drop}; measured again: now {self.choice.line(self.setting)}"
        if self.warned:
            return ""
        self.warned = True
        if self.choice.source == "environment":
            fix = "stop it and resume with OMP_NUM_THREADS=1 in the environment"
        else:
            fix = f"stop it and run the same command with {self.setting} 1 --resume"
        return f"{drop}; {self.choice.threads} threads on a busy machine wait for each other at every step: {fix}"
