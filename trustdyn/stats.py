"""Statistics shared across the library: the interval level, (partial) correlations."""

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


def partial_pearson(x: ArrayLike, y: ArrayLike, control: ArrayLike) -> Correlation:
    """Return the Pearson correlation of ``x`` and ``y`` with ``control`` held fixed.

    Both sides are replaced by their residuals from a least-squares line in ``control``
    (over the triples where all three are finite); the p-value is the t test with
    ``n - 3`` degrees of freedom and the Fisher interval uses ``n - 1`` effective pairs.
    NaN with fewer than 4 triples or a side that ``control`` explains completely.
    """
    xs, ys, zs = (np.asarray(a, dtype=float) for a in (x, y, control))
    keep = np.isfinite(xs) & np.isfinite(ys) & np.isfinite(zs)
    n = int(keep.sum())
    if n < 4:
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    design = np.stack([np.ones(n), zs[keep]], axis=1)

    def residual(values: np.ndarray) -> np.ndarray:
        coef, *_ = np.linalg.lstsq(design, values, rcond=None)
        return values - design @ coef

    rx, ry = residual(xs[keep]), residual(ys[keep])
    scale = float(np.sqrt((rx @ rx) * (ry @ ry)))
    if scale <= 1e-12 * max(float(np.abs(xs[keep]).max() * np.abs(ys[keep]).max()), 1e-300):
        return Correlation(math.nan, math.nan, math.nan, math.nan, n)
    r = float(np.clip(rx @ ry / scale, -1.0, 1.0))
    dof = n - 3
    t = r * math.sqrt(dof / max(1.0 - r * r, 1e-300))
    lo, hi = fisher_interval(r, n - 1)
    return Correlation(r, lo, hi, float(2 * stats.t.sf(abs(t), dof)), n)
