"""Summaries over seeds: mean ± sd, and the paired difference to a reference with a t confidence interval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class MeanSd:
    """Mean and sample sd (ddof 1; NaN for n < 2) of n values."""

    mean: float
    sd: float
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """Mean of (condition - reference) over the n seeds both have, with its two-sided t interval (NaN for n < 2)."""

    mean: float
    low: float
    high: float
    n: int


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
    t = 4.30, so an interval is wide unless the seeds agree).
    """
    seeds = sorted(s for s in condition if s in reference and _finite(condition[s]) and _finite(reference[s]))
    diffs = np.asarray([condition[s] - reference[s] for s in seeds], dtype=float)
    if diffs.size == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = float(diffs.mean())
    if diffs.size < 2:
        return PairedDifference(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf((1 + confidence) / 2, diffs.size - 1)) * float(diffs.std(ddof=1)) / math.sqrt(diffs.size)
    return PairedDifference(mean, mean - half, mean + half, int(diffs.size))


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)
