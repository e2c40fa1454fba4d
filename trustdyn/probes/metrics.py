"""Probe metrics on test scores: accuracy, balanced accuracy, AUROC, bootstrap intervals.

Bootstrap replicates are weights (how often each test row was drawn; whole groups when
rows are grouped), so every replicate's metric is a matrix product or a weighted
Mann-Whitney sum rather than a Python loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from trustdyn.stats import CI_LEVEL

# Bootstrap work is chunked so that [L, replicates, m] index/score tensors stay small.
_BOOTSTRAP_CHUNK_ELEMENTS = 4_000_000

def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return ``[...]`` accuracy of ``logits [..., m] > 0`` against 0/1 ``labels [..., m]``."""
    return ((logits > 0) == labels.bool()).to(torch.float64).mean(dim=-1)

def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return ``[...]`` mean per-class accuracy of ``logits [..., m] > 0`` (NaN: one class)."""
    ones = torch.ones((1, labels.shape[-1]), dtype=torch.float64)
    correct = ((logits > 0) == labels.bool()).to(torch.float64).reshape(-1, labels.shape[-1])
    return weighted_balanced_accuracy(correct, labels, ones)[:, 0].reshape(logits.shape[:-1])

def weighted_balanced_accuracy(correct: torch.Tensor, labels: torch.Tensor,
                                weights: torch.Tensor) -> torch.Tensor:
    """Balanced accuracy of each row of hits under each row of sample weights.

    Args:
        correct: ``[R, m]`` 1.0 where a score row classifies test row ``j`` correctly.
        labels: ``[m]`` 0/1 labels.
        weights: ``[B, m]`` sample weights (e.g. :func:`bootstrap_counts`).

    Returns:
        ``[R, B]`` float64; NaN where a weighting leaves a class empty.

    """
    positive = labels.bool().to(torch.float64)
    per_class = []
    for mask in (positive, 1.0 - positive):
        w = weights * mask  # [B, m]
        total = w.sum(dim=1)  # [B]
        hits = correct @ w.T  # [R, B]
        per_class.append(torch.where(total > 0, hits / total.clamp_min(1e-300),
                                     torch.full_like(hits, math.nan)))
    return 0.5 * (per_class[0] + per_class[1])

def bootstrap_counts(m: int, n_boot: int, rng: np.random.Generator,
                     groups: np.ndarray | None = None) -> tuple[torch.Tensor, int]:
    """Return ``[B, m]`` how often each of ``m`` rows is drawn per replicate, and the units.

    Without groups a replicate draws ``m`` rows with replacement. With groups it draws as
    many groups as there are, with replacement, and every row of a drawn group comes along:
    rows of one group (e.g. the answers to one TruthfulQA question) are not independent.
    """
    if groups is None:
        draws = torch.from_numpy(rng.integers(0, m, size=(n_boot, m)))
        counts = torch.zeros((n_boot, m), dtype=torch.float64).scatter_add_(
            1, draws, torch.ones(draws.shape, dtype=torch.float64))
        return counts, m
    _, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(group_of_row.max()) + 1 if m else 0
    drawn = rng.integers(0, n_groups, size=(n_boot, n_groups))
    per_group = np.stack([np.bincount(d, minlength=n_groups) for d in drawn]) if n_boot else \
        np.zeros((0, n_groups))
    return torch.from_numpy(per_group[:, group_of_row].astype(np.float64)), n_groups

def auroc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve along the last axis, ties counted half (as sklearn).

    Args:
        scores: ``[..., m]`` real scores (higher = more positive).
        labels: ``[m]`` 0/1 labels shared by every row.

    Returns:
        ``[...]`` float64 AUROC; NaN where the labels hold a single class.

    """
    rows = scores.reshape(-1, scores.shape[-1])  # [R, m]
    ones = torch.ones((1, scores.shape[-1]), dtype=torch.float64)
    return weighted_auroc(rows, labels, ones)[:, 0].reshape(scores.shape[:-1])

def weighted_auroc(scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
                   ) -> torch.Tensor:
    """AUROC of each score row under each row of non-negative sample weights.

    With integer weights (how often a bootstrap replicate drew each row) this is exactly
    ``roc_auc_score`` on the resampled data: the Mann-Whitney statistic counts every
    (positive, negative) pair ``w_i w_j`` times, a tie as half a pair. Scores are sorted
    once per row and tied scores grouped, so each weight row then costs a few linear
    passes (no sort per bootstrap replicate).

    Args:
        scores: ``[R, m]`` real scores.
        labels: ``[m]`` 0/1 labels.
        weights: ``[B, m]`` sample weights (e.g. bootstrap counts).

    Returns:
        ``[R, B]`` float64 AUROC; NaN where a weighting leaves a single class.

    """
    order = scores.argsort(dim=-1)  # [R, m]
    ordered = scores.gather(-1, order)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    group = (starts.cumsum(dim=-1) - 1)[:, None, :]  # [R, 1, m] tie-group id per position
    positive = labels.bool()[order][:, None, :]  # [R, 1, m]
    w = weights.to(torch.float64)[:, order].permute(1, 0, 2)  # [R, B, m] in score order
    w_pos = torch.where(positive, w, torch.zeros((), dtype=w.dtype))
    w_neg = w - w_pos
    if bool(starts.all()):  # no ties (the usual case for logits): groups are positions
        pos_by_group, neg_by_group = w_pos, w_neg
    else:
        index = group.expand_as(w)
        pos_by_group = torch.zeros_like(w).scatter_add_(-1, index, w_pos)  # [R, B, ≤ m]
        neg_by_group = torch.zeros_like(w).scatter_add_(-1, index, w_neg)
    neg_below = neg_by_group.cumsum(dim=-1) - neg_by_group
    pairs = (pos_by_group * (neg_below + 0.5 * neg_by_group)).sum(dim=-1)  # [R, B]
    total = w_pos.sum(dim=-1) * w_neg.sum(dim=-1)
    return torch.where(total > 0, pairs / total.clamp_min(1e-300),
                       torch.full_like(pairs, math.nan))

@dataclass(frozen=True)
class BootstrapSummary:
    """Bootstrap intervals and standard errors of the test metrics, per layer.

    Attributes:
        accuracy_ci: ``[L, 2]`` percentile interval of the accuracy.
        accuracy_se: ``[L]`` standard error of the accuracy.
        balanced_accuracy_se: ``[L]`` standard error of the balanced accuracy.
        auroc_ci: ``[L, 2]`` percentile interval of the AUROC.

    """

    accuracy_ci: np.ndarray
    accuracy_se: np.ndarray
    balanced_accuracy_se: np.ndarray
    auroc_ci: np.ndarray

def bootstrap_intervals(logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor
                        ) -> BootstrapSummary:
    """Percentile 95% intervals and standard errors over bootstrap replicates of test items.

    A replicate is represented by how often it drew each test row (:func:`bootstrap_counts`),
    so accuracy over all replicates is one matrix product and AUROC a weighted
    Mann-Whitney sum (exactly the metrics of the resampled data). The same replicates
    serve every layer (paired), processed in chunks so memory stays bounded.

    Args:
        logits: ``[L, m]`` test scores per layer.
        labels: ``[m]`` 0/1 test labels.
        counts: ``[B, m]`` how often each replicate drew each row.

    Returns:
        NaN everywhere when ``B == 0``. Replicates holding a single class are skipped for
        the AUROC and the balanced accuracy.

    """
    n_layers, m = logits.shape
    n_boot = counts.shape[0]
    if n_boot == 0:
        nan = np.full(n_layers, np.nan)
        return BootstrapSummary(np.full((n_layers, 2), np.nan), nan, nan.copy(),
                                np.full((n_layers, 2), np.nan))
    counts = counts.to(torch.float64)
    correct = ((logits > 0) == labels.bool()).to(torch.float64)  # [L, m]
    acc = (correct @ counts.T / counts.sum(dim=1)).numpy()  # [L, B]
    bacc = weighted_balanced_accuracy(correct, labels, counts).numpy()  # [L, B]
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // max(1, n_layers * m))
    auc = torch.cat([weighted_auroc(logits, labels, counts[start:start + chunk])
                     for start in range(0, n_boot, chunk)], dim=1).numpy()  # [L, B]
    tail = 100 * (1 - CI_LEVEL) / 2
    quantiles = [tail, 100 - tail]
    auc_ci = np.full((n_layers, 2), np.nan)
    valid = ~np.isnan(auc).all(axis=1)
    if valid.any():
        auc_ci[valid] = np.nanpercentile(auc[valid], quantiles, axis=1).T
    with np.errstate(invalid="ignore"):
        bacc_se = np.nanstd(bacc, axis=1) if np.isfinite(bacc).any() else \
            np.full(n_layers, np.nan)
    return BootstrapSummary(accuracy_ci=np.percentile(acc, quantiles, axis=1).T,
                            accuracy_se=acc.std(axis=1), balanced_accuracy_se=bacc_se,
                            auroc_ci=auc_ci)

def cross_entropy_bits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return ``[...]`` mean binary cross-entropy in bits of ``logits [..., m]``."""
    nats = F.binary_cross_entropy_with_logits(
        logits.to(torch.float64), torch.broadcast_to(labels, logits.shape).to(torch.float64),
        reduction="none",
    ).mean(dim=-1)
    return nats / math.log(2)

def label_entropy_bits(labels: torch.Tensor) -> float:
    """Return the entropy in bits of a 0/1 label vector's empirical distribution."""
    p = float(labels.to(torch.float64).mean())
    return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)

def cosine_matrix(directions_a: np.ndarray, directions_b: np.ndarray) -> np.ndarray:
    """Per-layer cosine between two ``[L, d]`` direction sets; returns ``[L]``.

    Raises:
        ValueError: if the shapes differ.

    """
    a = np.asarray(directions_a, dtype=np.float64)
    b = np.asarray(directions_b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine_matrix needs two [L, d] arrays of one shape; got {a.shape} "
                         f"and {b.shape}")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norms > 0, (a * b).sum(axis=1) / norms, np.nan)
