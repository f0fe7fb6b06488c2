"""Summaries over seeds: mean ± sd, and the paired difference to a reference with a t confidence interval.

An interval is given only where it can mean something (`paired_difference`): from at least MIN_SEEDS_FOR_INTERVAL
seeds, and from differences that vary between seeds. With two seeds the t quantile is 12.7, so any interval spans
the whole table; with differences of zero spread the t interval collapses to the mean itself (two seeds on 200 test
images, where accuracy moves in 0.5-point steps, printed `-0.50 [-0.50, -0.50]`): a certainty the data do not have.
Then the difference carries the reason instead, and tables print it in place of the interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
MIN_SEEDS_FOR_INTERVAL = 3  # paired seeds an interval needs (t quantile 4.30 at 3, 12.71 at 2)


@dataclass(frozen=True)
class MeanSd:
    """Mean and sample sd (ddof 1; NaN for n < 2) of n values."""

    mean: float
    sd: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """Mean of (condition - reference) over the n seeds both have, with its two-sided t interval.

    `low` and `high` are NaN when no interval is given; `no_interval` then says why (fewer than
    MIN_SEEDS_FOR_INTERVAL seeds, or differences that do not vary), in words a table can print.
    """

    mean: float
    low: float
    high: float
    n: int
    no_interval: str = ""

    @property
    def has_interval(self) -> bool:
        return not math.isnan(self.low)


def mean_sd(values: Sequence[float]) -> MeanSd:
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if array.size == 0:
        return MeanSd(math.nan, math.nan, 0)
    sd = float(array.std(ddof=1)) if array.size > 1 else math.nan
    return MeanSd(float(array.mean()), sd, int(array.size))


def paired_difference(
    condition: Mapping[int, float], reference: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedDifference:
    """Pairs by seed (the keys): differences d_s = condition[s] - reference[s] for the seeds in both.

    Interval: mean(d) ± t_{(1+confidence)/2, n-1} * sd(d) / sqrt(n) (Student t over seeds: with 3 seeds
    t = 4.30, so an interval is wide unless the seeds agree). None (NaN bounds, `no_interval` says why) from fewer
    than MIN_SEEDS_FOR_INTERVAL pairs or when every pair differs by the same amount (sd 0, to rounding).
    """
    seeds = sorted(s for s in condition if s in reference and _finite(condition[s]) and _finite(reference[s]))
    diffs = np.asarray([condition[s] - reference[s] for s in seeds], dtype=float)
    if diffs.size == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, "no shared seed")
    mean = float(diffs.mean())
    if diffs.size < MIN_SEEDS_FOR_INTERVAL:
        why = f"n={diffs.size}: an interval needs {MIN_SEEDS_FOR_INTERVAL} seeds"
        return PairedDifference(mean, math.nan, math.nan, int(diffs.size), why)
    sd = float(diffs.std(ddof=1))
    # Differences equal to rounding (a metric in fixed steps, e.g. 0.5 points on 200 images): zero spread.
    if sd <= 1e-9 * max(1.0, abs(mean)):
        why = f"the {diffs.size} seeds all differ by {mean:+.2f}: zero spread, no interval"
        return PairedDifference(mean, math.nan, math.nan, int(diffs.size), why)
    half = float(stats.t.ppf((1 + confidence) / 2, diffs.size - 1)) * sd / math.sqrt(diffs.size)
    return PairedDifference(mean, mean - half, mean + half, int(diffs.size))


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)
