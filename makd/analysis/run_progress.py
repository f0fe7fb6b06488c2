"""Progress of a batch of training runs: which run of how many is going, the time left estimated from the runs
finished so far, and what each finished run cost (wall and CPU seconds).

The estimate is list scheduling with every run taking the mean wall time of the finished ones: each running run
frees its slot after what is left of that mean, and each queued run then takes the slot that frees first. Runs
of one study differ by a few percent in cost, so this is as good as an estimate gets from the runs themselves;
before the first run finishes there is none.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunCost:
    """What one finished run cost: wall seconds from start to exit, and the CPU seconds (user + system) of its
    process and the processes it waited for. Single-threaded, the CPU seconds hardly depend on the machine's load."""

    wall_seconds: float
    cpu_seconds: float


@dataclass
class RunProgress:
    """Counts `total` runs, `jobs` at a time: `started` returns the line to print, `status` what is done and left."""

    total: int
    jobs: int = 1
    clock: Callable[[], float] = time.perf_counter
    costs: dict[str, RunCost] = field(default_factory=dict)  # label -> cost, in the order the runs finished
    _running: dict[str, float] = field(default_factory=dict)  # label -> start time
    _started: int = 0

    def started(self, label: str, verb: str = "training") -> str:
        self._started += 1
        self._running[label] = self.clock()
        return f"run {self._started}/{self.total} {label}: {verb}"

    def skipped(self, label: str) -> None:
        """`label` will not run here (another process holds it): it leaves the count."""
        self.total -= 1

    def finished(self, label: str, cpu_seconds: float, ok: bool = True) -> RunCost:
        """Record that `label` ended (`ok`: with its result; a failed run's cost is not kept); returns its cost."""
        cost = RunCost(self.clock() - self._running.pop(label), cpu_seconds)
        if ok:
            self.costs[label] = cost
        return cost

    def status(self) -> str:
        """'3/9 finished, about 4m10s left' (no estimate before the first run finished)."""
        left = self.seconds_left()
        estimate = "" if left is None else f", about {format_duration(left)} left"
        return f"{len(self.costs)}/{self.total} finished{estimate}"

    def seconds_left(self) -> float | None:
        """Seconds until every run is finished, or None while no run has finished."""
        if not self.costs:
            return None
        mean = sum(c.wall_seconds for c in self.costs.values()) / len(self.costs)
        now = self.clock()
        # When each of the `jobs` slots frees: a running run after the rest of the mean, an idle slot now.
        slots = [max(0.0, mean - (now - start)) for start in self._running.values()]
        slots += [0.0] * max(0, self.jobs - len(slots))
        heapq.heapify(slots)
        queued = self.total - self._started
        for _ in range(max(0, queued)):
            heapq.heappush(slots, heapq.heappop(slots) + mean)
        return max(slots) if slots else 0.0


def format_duration(seconds: float) -> str:
    """62.4 -> '1m02s', 7.6 -> '8s'."""
    seconds = int(round(seconds))
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
