"""The calibrated verdicts: a dataset becomes separable, a curve turns, a vector helps.

Each is a test with a stated error rate, measured on simulated studies by
``python -m bench verdicts``; the README gives the rules and the measured rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
"""Family-wise false-positive rate of one verdict on one dataset (all its layers)."""
ONSET_FRACTION = 0.8
"""Share of the checkpoints from the onset on that must pass, so that one cannot flip it."""
ONSET_MIN_RUN = 3
"""Fewest checkpoints from the onset on (the last checkpoint alone never makes an onset)."""
N_SURROGATES = 999
"""Surrogate series per turn test (p-values are multiples of 1/1000)."""


def dataset_alpha(n_datasets: int) -> float:
    """Return one dataset's level: :data:`ALPHA` shared (Bonferroni) over a study's datasets.

    So that a study's story, which reports every dataset, errs with probability at most
    :data:`ALPHA` per finding.
    """
    return ALPHA / max(int(n_datasets), 1)


@dataclass(frozen=True)
class Separability:
    """The probe verdict of one dataset over the pre-training checkpoints.

    Attributes:
        separates: ``[m]`` some layer beats chance (Bonferroni over layers).
        above_init: ``[m]`` some layer beats the first checkpoint's level at that layer
            (``False`` at the first checkpoint itself).
        best_layer: ``[m]`` the layer with the largest z against chance.
        z_crit: The one-sided critical z (``Φ⁻¹(1 − α / layers)``).
        first_separable: Index from which :data:`ONSET_FRACTION` of the checkpoints
            separate, or ``None``.
        onset: Index from which :data:`ONSET_FRACTION` of the checkpoints are above the
            first checkpoint's level, or ``None``: the dataset does not *become*
            separable during pre-training.

    """

    separates: np.ndarray
    above_init: np.ndarray
    best_layer: np.ndarray
    z_crit: float
    first_separable: int | None
    onset: int | None

    @property
    def at_init(self) -> bool:
        """Whether the first checkpoint already separates the dataset."""
        return bool(self.separates[0]) if self.separates.size else False

    @property
    def emerges(self) -> bool:
        """Whether separability rises above the first checkpoint's during pre-training."""
        return self.onset is not None


def _z(diff: np.ndarray, se: np.ndarray) -> np.ndarray:
    """``diff / se`` with NaN where the standard error is missing or zero."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = diff / se
    return np.where(np.isfinite(z) & (se > 0), z, np.nan)


def onset_index(passes: np.ndarray, *, fraction: float = ONSET_FRACTION,
                min_run: int = ONSET_MIN_RUN) -> int | None:
    """Return the first index from which ``fraction`` of the remaining entries pass.

    The index must itself pass and leave at least ``min_run`` entries, so neither a
    single late success nor a single late failure decides the onset.
    """
    passes = np.asarray(passes, dtype=bool)
    m = passes.size
    tail_share = np.cumsum(passes[::-1])[::-1] / np.arange(m, 0, -1)
    for i in range(max(0, m - min_run + 1)):
        if passes[i] and tail_share[i] >= fraction:
            return i
    return None


def separability_verdict(value: np.ndarray, se: np.ndarray, *, chance: float = 0.5,
                         alpha: float = ALPHA) -> Separability:
    """Decide, per checkpoint and for the dataset, where probes beat chance and the start.

    A checkpoint separates when some layer's balanced accuracy exceeds ``chance`` by more
    than ``z_crit`` standard errors, with ``z_crit`` Bonferroni-corrected over layers (a
    conservative max-over-layers null, so picking the best layer is paid for). It is above
    initialisation when some layer exceeds the first checkpoint's value at the same layer
    (or chance, if that is higher) by ``z_crit`` standard errors of the difference
    (independent errors assumed, which is conservative for paired test items).

    Args:
        value: ``[m, L]`` balanced accuracy per checkpoint (training order, the first row
            the reference, normally step 0) and layer.
        se: ``[m, L]`` its standard error (cluster bootstrap over test items).
        chance: Balanced accuracy of a probe that ignores the representation.
        alpha: Family-wise error over the layers of one checkpoint.

    """
    value, se = np.atleast_2d(np.asarray(value, float)), np.atleast_2d(np.asarray(se, float))
    if value.shape != se.shape:
        raise ValueError(f"value {value.shape} and se {se.shape} must have one shape")
    m, n_layers = value.shape
    z_crit = float(stats.norm.isf(alpha / max(n_layers, 1)))
    z_chance = _z(value - chance, se)
    # A first checkpoint below chance is below it by noise alone: a probe that ignores its
    # input cannot do worse than chance in expectation, so the reference is never lower.
    z_init = _z(value - np.maximum(value[:1], chance), np.sqrt(se**2 + se[:1] ** 2))
    z_init[0] = np.nan
    separates = np.nan_to_num(z_chance, nan=-np.inf).max(axis=1) > z_crit if m else \
        np.zeros(0, bool)
    above = np.nan_to_num(z_init, nan=-np.inf).max(axis=1) > z_crit if m else np.zeros(0, bool)
    best = np.nan_to_num(z_chance, nan=-np.inf).argmax(axis=1) if m else np.zeros(0, int)
    return Separability(separates=separates, above_init=above, best_layer=best,
                        z_crit=z_crit, first_separable=onset_index(separates),
                        onset=onset_index(above))


@dataclass(frozen=True)
class Turns:
    """The turn test of one dataset's curves (layers, estimators) over the checkpoints.

    Attributes:
        statistic: ``[K]`` rise-then-fall evidence per curve (see :func:`_rise_fall`);
            NaN for an undefined or flat curve.
        p_value: ``[K]`` max-over-curves surrogate p-value (family-wise over ``K``).
        turn_index: ``[K]`` checkpoint index where the rise ends (-1: none).
        ity_falls: ``[K]`` I(T;Y) falls significantly after the peak.

    """

    statistic: np.ndarray
    p_value: np.ndarray
    turn_index: np.ndarray
    ity_falls: np.ndarray

    def turns(self, alpha: float = ALPHA) -> np.ndarray:
        """``[K]`` curves that turn: p-value ≤ ``alpha`` and I(T;Y) not falling."""
        return (self.p_value <= alpha) & ~self.ity_falls


def _rise_fall(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest rise-then-fall evidence of each curve, from its changes ``d [..., n]``.

    For each split of the step-to-step changes into a first part (≥ 2 changes) and the
    rest (≥ 2), the smaller of the first part's mean change and minus the rest's, each in
    standard errors (pooled within-part spread); returns the largest over splits, and the
    index of the checkpoint where the first part ends.
    """
    n = d.shape[-1]
    split = np.arange(2, n - 1)  # changes in the first part
    before = np.cumsum(d, axis=-1)[..., 1:n - 2]  # their sum
    total = before[..., -1:] + d[..., n - 2:].sum(axis=-1, keepdims=True)
    after = total - before
    # Within-part sum of squares = Σd² − (Σ first)² / n_first − (Σ rest)² / n_rest.
    within = (d * d).sum(axis=-1, keepdims=True) - before**2 / split - after**2 / (n - split)
    sd = np.sqrt(np.maximum(within, 1e-300) / (n - 2))
    t = np.minimum(before / np.sqrt(split), -after / np.sqrt(n - split)) / sd
    return t.max(axis=-1), split[t.argmax(axis=-1)]


def turn_verdict(ixt: np.ndarray, ity: np.ndarray | None = None,
                 ity_se: np.ndarray | None = None, *, n_surrogates: int = N_SURROGATES,
                 seed: int = 0) -> Turns:
    """Test each curve for a rise followed by a sustained fall, against surrogate series.

    The statistic (:func:`_rise_fall`) asks for a run of rising changes followed by a run of
    falling ones. Surrogates keep the multiset of a curve's step-to-step changes but put
    them in a random order (the same order for every curve, so curves' dependence is
    kept). Under a random walk this null is exact; for stationary noise (white, AR(1)) it
    is conservative, since shuffled changes wander further than the series itself; a
    monotone trend keeps its drift. The p-value of a curve compares its statistic with the
    largest surrogate statistic over all curves, so it is family-wise over them.

    Args:
        ixt: ``[m, K]`` null-corrected I(X;T) per checkpoint (training order) and curve.
        ity: ``[m, K]`` null-corrected I(T;Y) of the same curves, if known.
        ity_se: ``[m, K]`` its standard errors (``None``: the spread of its changes).
        n_surrogates: Surrogate series.
        seed: Seeds the surrogate orders.

    """
    ixt = np.asarray(ixt, dtype=float)
    m, k = ixt.shape
    if m < 6:  # the statistic needs two changes on each side of the peak
        return Turns(np.full(k, np.nan), np.full(k, np.nan), np.full(k, -1), np.zeros(k, bool))
    valid = np.isfinite(ixt).all(axis=0) & (np.ptp(np.nan_to_num(ixt), axis=0) > 0)
    clean = np.where(valid, ixt, 0.0)
    steps = np.ascontiguousarray(np.diff(clean, axis=0).T)  # [K, m-1]
    observed, peak = _rise_fall(steps)  # [K]
    statistic = np.where(valid, observed, np.nan)
    turn_index = np.where(valid, peak, -1)
    rng = np.random.default_rng(seed)
    orders = np.argsort(rng.random((n_surrogates, m - 1)), axis=1)  # [B, m-1]
    surrogate, _ = _rise_fall(steps[:, orders])  # [K, B]: every curve shuffled alike
    surrogate_max = np.where(valid[:, None], surrogate, -np.inf).max(axis=0)  # [B]
    exceed = (surrogate_max[:, None] >= statistic[None, :]).sum(axis=0)
    p_value = np.where(valid, (1 + exceed) / (1 + n_surrogates), np.nan)
    falls = np.zeros(k, bool)
    if ity is not None:
        falls = _ity_falls(np.asarray(ity, float), ity_se, turn_index)
    return Turns(statistic, p_value, turn_index, falls)


def _ity_falls(ity: np.ndarray, ity_se: np.ndarray | None, turn_index: np.ndarray
               ) -> np.ndarray:
    """``[K]`` whether mean I(T;Y) after the turn lies 2 standard errors below it."""
    m, k = ity.shape
    out = np.zeros(k, bool)
    for j in range(k):
        t = int(turn_index[j])
        if t < 1 or t >= m - 1 or not np.isfinite(ity[t, j]):
            continue
        after = ity[t + 1:, j]
        if ity_se is not None and np.isfinite(ity_se[t:, j]).all():
            se = float(np.sqrt(np.asarray(ity_se)[t, j] ** 2
                               + np.mean(np.asarray(ity_se)[t + 1:, j] ** 2) / len(after)))
        else:
            se = float(np.std(np.diff(ity[:, j]), ddof=1)) if m > 2 else math.nan
        if np.isfinite(se) and se > 0:
            out[j] = bool(np.nanmean(after) < ity[t, j] - 2.0 * se)
    return out


@dataclass(frozen=True)
class TurnCurves:
    """A dataset's information curves as arrays, one column per (estimator, layer).

    Attributes:
        keys: ``[(estimator, layer)]`` per column.
        steps: ``[m]`` training steps of the rows.
        ixt: ``[m, K]`` null-corrected I(X;T) (NaN where undefined).
        ity: ``[m, K]`` null-corrected I(T;Y).
        ity_se: ``[m, K]`` standard errors of I(T;Y).

    """

    keys: list[tuple[str, int]]
    steps: np.ndarray
    ixt: np.ndarray
    ity: np.ndarray
    ity_se: np.ndarray


def turn_curves(info: pd.DataFrame) -> TurnCurves:
    """Pivot ``info_results`` rows of one dataset's pre-training checkpoints into curves.

    Args:
        info: Rows with ``step``, ``estimator``, ``layer``, ``quantity``, ``corrected`` and
            ``se`` (undefined estimates carry NaN).

    Raises:
        ValueError: when a step occurs twice for one curve (pass one dataset, no chat model).

    """
    def wide(quantity: str, column: str) -> pd.DataFrame:
        rows = info[info["quantity"] == quantity]
        if rows.duplicated(["step", "estimator", "layer"]).any():
            raise ValueError("turn_curves: repeated steps for one curve; pass one dataset's "
                             "pre-training checkpoints (no chat model, no duplicates)")
        return rows.pivot(index="step", columns=["estimator", "layer"], values=column)

    ixt = wide("I(X;T)", "corrected").sort_index()
    ity = wide("I(T;Y)", "corrected").reindex(index=ixt.index, columns=ixt.columns)
    ity_se = wide("I(T;Y)", "se").reindex(index=ixt.index, columns=ixt.columns)
    keys = [(str(column[0]), int(column[1])) for column in ixt.columns]
    return TurnCurves(keys=keys, steps=ixt.index.to_numpy(),
                      ixt=ixt.to_numpy(float), ity=ity.to_numpy(float),
                      ity_se=ity_se.to_numpy(float))


def turn_table(suite: str, dataset: str, info: pd.DataFrame, *, n_datasets: int,
               seed: int = 0) -> list[dict[str, Any]]:
    """Test every (estimator, layer) I(X;T) curve of a dataset; rows for ``info_turns``.

    One surrogate test covers all the dataset's curves (:func:`turn_verdict`), and a curve
    turns when its p-value is at most :func:`dataset_alpha` and I(T;Y) does not fall.

    Args:
        suite: Suite name.
        dataset: Dataset name.
        info: Its ``info_results`` rows over the pre-training checkpoints, with ``step``.
        n_datasets: Datasets in the study.
        seed: Seeds the surrogates.

    """
    curves = turn_curves(info)
    if not curves.keys:
        return []
    result = turn_verdict(curves.ixt, curves.ity, curves.ity_se, seed=seed)
    alpha = dataset_alpha(n_datasets)
    turns = result.turns(alpha)
    rows = []
    for j, (estimator, layer) in enumerate(curves.keys):
        index, series = int(result.turn_index[j]), curves.ixt[:, j]
        turned = 0 <= index < len(series) - 1
        rows.append({
            "suite": suite, "dataset": dataset, "layer": layer, "estimator": estimator,
            "turn_step": int(curves.steps[index]) if turned else None,
            "peak_value": float(series[index]) if turned else None,
            "fall": float(series[index] - np.min(series[index + 1:])) if turned else None,
            "final_value": float(series[-1]),
            "statistic": float(result.statistic[j]), "p_value": float(result.p_value[j]),
            "ity_falls": bool(result.ity_falls[j]), "distinguishable": bool(turns[j]),
            "params": {"rule": "turn_verdict", "values": "null-corrected", "alpha": alpha,
                       "n_surrogates": N_SURROGATES, "curves_tested": len(curves.keys)},
        })
    return rows


def helps_level(n_sources: int, n_datasets: int) -> float:
    """Return the one-sided level of one vector's "helps" test.

    :data:`ALPHA` is shared (Bonferroni) over a study's datasets and, within a dataset,
    over the pre-training sources compared with the random direction, so "some
    pre-training vector helps on this dataset" errs with probability at most
    ``dataset_alpha(n_datasets)``.
    """
    return dataset_alpha(n_datasets) / max(int(n_sources), 1)


def helps_verdict(p_value: float | None, guard_passed: bool | None, *, n_sources: int,
                  n_datasets: int) -> bool:
    """Return whether a steering vector helps: beats the same-norm random direction.

    Args:
        p_value: One-sided paired-bootstrap p-value of the vector's test gain over the
            random direction of the same applied norm (same layer, same items).
        guard_passed: Whether the setting kept perplexity within the guard (on dev,
            where it was chosen, and on test).
        n_sources: Vectors of the dataset tested this way (the family).
        n_datasets: Datasets of the study.

    """
    if p_value is None or not math.isfinite(p_value) or not guard_passed:
        return False
    return p_value <= helps_level(n_sources, n_datasets)
