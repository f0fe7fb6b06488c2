"""Progress of a batch of runs (makd.analysis.run_progress): which run of how many, the time left from the runs
finished so far (list scheduling on `jobs` slots), and the costs kept per run; driven by a hand-set clock."""

from __future__ import annotations

import pytest

from makd.analysis.run_progress import RunCost, RunProgress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_at_a_time_counts_runs_and_estimates_from_the_mean():
    clock = Clock()
    progress = RunProgress(total=4, jobs=1, clock=clock)
    assert progress.started("baseline/seed0") == "run 1/4 baseline/seed0: training"
    assert progress.seconds_left() is None  # nothing finished: no estimate
    clock.now = 60.0
    assert progress.finished("baseline/seed0", cpu_seconds=57.4) == RunCost(60.0, 57.4)
    assert progress.status() == "1/4 finished, about 3m00s left"
    assert progress.started("makd/seed0", "resuming") == "run 2/4 makd/seed0: resuming"
    clock.now = 100.0  # 40 s into the second run: 20 s of it and two runs of 60 s are left
    assert progress.seconds_left() == pytest.approx(140.0)
    clock.now = 140.0
    progress.finished("makd/seed0", cpu_seconds=70.0)  # 80 s: the mean is now (60 + 80) / 2 = 70
    assert progress.seconds_left() == pytest.approx(140.0)
    assert progress.costs == {"baseline/seed0": RunCost(60.0, 57.4), "makd/seed0": RunCost(80.0, 70.0)}


def test_two_slots_share_the_queue():
    clock = Clock()
    progress = RunProgress(total=9, jobs=2, clock=clock)
    progress.started("a")
    progress.started("b")
    clock.now = 100.0
    progress.finished("a", 95.0)
    # b has run 100 s of a mean of 100: its slot frees now; 7 queued runs of 100 s on 2 slots end after 400 s.
    assert progress.seconds_left() == pytest.approx(400.0)
    progress.started("c")
    clock.now = 150.0
    progress.finished("b", 140.0)  # 150 s: mean 125; c has 75 s left, then 6 runs alternate on the 2 slots
    assert progress.seconds_left() == pytest.approx(75 + 3 * 125)


def test_failed_and_skipped_runs():
    clock = Clock()
    progress = RunProgress(total=3, jobs=1, clock=clock)
    progress.skipped("held/seed0")  # another process trains it: it leaves the count
    assert progress.started("a") == "run 1/2 a: training"
    clock.now = 5.0
    assert progress.finished("a", 4.0, ok=False) == RunCost(5.0, 4.0)
    assert progress.status() == "0/2 finished"  # a failed run's time says nothing about the others'
    assert progress.costs == {} and progress.seconds_left() is None


def test_format_duration():
    assert [format_duration(s) for s in (0, 7.6, 59.4, 62.4, 3725)] == ["0s", "8s", "59s", "1m02s", "62m05s"]
