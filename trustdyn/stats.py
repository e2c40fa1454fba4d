"""Statistics shared across the library: the interval level and correlations with intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

CI_LEVEL = 0.95
"""Coverage of every interval trustdyn stores or shows."""


@dataclass(frozen=True)
class Correlation:
    """A Pearson correlation with its two-sided p-value and Fisher-z interval.

    Attributes:
        r: Pearson r (NaN with fewer than 3 finite pairs or a constant side).
        lo: Lower end of the :data:`CI_LEVEL` interval (NaN with fewer than 4 pairs).
        hi: Upper end.
        p: Two-sided p-value of r = 0.
        n: Number of finite pairs.

    """

    r: float
    lo: float
    hi: float
    p: float
    n: int


def fisher_interval(r: float, n: int) -> tuple[float, float]:
    """Return the Fisher-z :data:`CI_LEVEL` interval of a Pearson ``r`` over ``n`` pairs.

    NaN for a non-finite ``r`` or fewer than 4 pairs.
    """
    if not math.isfinite(r) or n < 4:
        return math.nan, math.nan
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    half = stats.norm.ppf(0.5 + CI_LEVEL / 2) / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def pearson(x: ArrayLike, y: ArrayLike) -> Correlation:
    """Return the Pearson correlation over the pairs where both values are finite."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    n = int(keep.sum())
    if n < 3 or np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    result = stats.pearsonr(xs, ys)
    r = float(result.statistic)
    lo, hi = fisher_interval(r, n)
    return Correlation(r, lo, hi, float(result.pvalue), n)
