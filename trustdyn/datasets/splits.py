"""Seeded train/test splits and samples, stratified by label and never cutting a group."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trustdyn.datasets.errors import DatasetError
from trustdyn.datasets.probe_dataset import ProbeDataset, _readonly


@dataclass(frozen=True, eq=False)
class Split:
    """Sorted row indices of a train/test split and the seed that made it.

    Attributes:
        train: ``[n_train]`` sorted int64 indices.
        test: ``[n_test]`` sorted int64 indices, disjoint from ``train``.
        seed: Seed of the split.

    """

    train: np.ndarray
    test: np.ndarray
    seed: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", _readonly(np.sort(np.asarray(self.train, np.int64))))
        object.__setattr__(self, "test", _readonly(np.sort(np.asarray(self.test, np.int64))))


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _select_rows(labels: np.ndarray, groups: np.ndarray | None, targets: Sequence[int],
                 rng: np.random.Generator) -> np.ndarray:
    """Pick rows so that each class c gets about ``targets[c]`` rows; whole groups only.

    Without groups the counts are exact. With groups, groups are visited in a seeded
    random order and a group is taken when it brings the per-class counts closer (in L1)
    to the targets (a greedy, StratifiedGroupKFold-like fill); :func:`_refine_groups`
    then adds, drops or swaps single groups while that still helps.

    Returns:
        ``[n]`` boolean mask of the selected rows.

    """
    target = np.asarray(targets, dtype=np.int64)
    mask = np.zeros(len(labels), dtype=bool)
    if groups is None:
        for cls in (0, 1):
            members = rng.permutation(np.flatnonzero(labels == cls))
            mask[members[: target[cls]]] = True
        return mask
    keys, codes = np.unique(groups, return_inverse=True)  # sorted keys: order-independent
    counts = np.zeros((len(keys), 2), dtype=np.int64)  # [n_groups, 2] rows per class
    np.add.at(counts, (codes, labels), 1)
    taken = np.zeros(len(keys), dtype=bool)
    current = np.zeros(2, dtype=np.int64)
    for g in rng.permutation(len(keys)):
        proposal = current + counts[g]
        if np.abs(proposal - target).sum() < np.abs(current - target).sum():
            taken[g] = True
            current = proposal
            if (current == target).all():
                break
    return _refine_groups(taken, counts, target)[codes]


def _refine_groups(taken: np.ndarray, counts: np.ndarray, target: np.ndarray,
                   max_moves: int = 100) -> np.ndarray:
    """Improve a group selection by single add/drop/swap moves (steepest descent in L1).

    Args:
        taken: ``[n_groups]`` bool, the greedy selection.
        counts: ``[n_groups, 2]`` rows per class in each group.
        target: ``[2]`` wanted rows per class.
        max_moves: Upper bound on moves (each strictly lowers the error, so it terminates).

    Returns:
        ``[n_groups]`` bool, the refined selection (ties keep the lowest group index, so
        the result is deterministic).

    """
    taken = taken.copy()
    for _ in range(max_moves):
        current = counts[taken].sum(axis=0)
        error = np.abs(current - target).sum()
        if error == 0:
            break
        inside, outside = np.flatnonzero(taken), np.flatnonzero(~taken)
        # [n_out, 2] after adding, [n_in, 2] after dropping, [n_in, n_out, 2] after swapping
        add = np.abs(current + counts[outside] - target).sum(axis=1)
        drop = np.abs(current - counts[inside] - target).sum(axis=1)
        swap = np.abs(current - counts[inside][:, None] + counts[outside][None] - target
                      ).sum(axis=2)
        best = min(add.min(initial=error), drop.min(initial=error), swap.min(initial=error))
        if best >= error:
            break
        if add.size and add.min() == best:
            taken[outside[np.argmin(add)]] = True
        elif drop.size and drop.min() == best:
            taken[inside[np.argmin(drop)]] = False
        else:
            i, o = np.unravel_index(np.argmin(swap), swap.shape)
            taken[inside[i]], taken[outside[o]] = False, True
    return taken


def _class_counts(labels: np.ndarray) -> tuple[int, int]:
    n1 = int(labels.sum())
    return len(labels) - n1, n1


def split_dataset(ds: ProbeDataset, *, test_fraction: float = 0.3, seed: int = 0) -> Split:
    """Split into train/test indices, stratified by label and, if grouped, by group.

    Each class contributes ``round(test_fraction * n_class)`` test rows (at least one,
    leaving at least one for training); grouped datasets (TruthfulQA: one group per
    question) keep every group on one side and approximate those counts.

    Raises:
        DatasetError: ``test_fraction`` not in (0, 1), a class with fewer than two rows,
            or too few groups to put both classes on both sides.

    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    counts = _class_counts(ds.labels)
    if min(counts) < 2:
        raise DatasetError(f"{ds.name}: cannot split {counts[0]} label-0 and {counts[1]} "
                           "label-1 rows; each class needs at least 2")
    targets = [min(max(_round_half_up(test_fraction * n), 1), n - 1) for n in counts]
    mask = _select_rows(ds.labels, ds.groups, targets, np.random.default_rng(seed))
    split = Split(train=np.flatnonzero(~mask), test=np.flatnonzero(mask), seed=seed)
    for side, index in (("train", split.train), ("test", split.test)):
        if min(_class_counts(ds.labels[index])) == 0:
            raise DatasetError(
                f"{ds.name}: the {side} side of a grouped split lacks a class "
                f"({len(np.unique(ds.groups)) if ds.groups is not None else 0} groups); "
                "use more data or a different test_fraction"
            )
    return split


def sample_dataset(ds: ProbeDataset, n: int, *, seed: int = 0) -> ProbeDataset:
    """Return a seeded, stratified sample of about ``n`` rows (whole groups when grouped).

    Each class keeps its share of ``n`` (at least one row); ``n >= len(ds)`` returns
    ``ds`` unchanged. Row order of the sample follows the original order.

    Raises:
        DatasetError: ``n < 2`` (a sample needs both classes).

    """
    if n >= len(ds):
        return ds
    if n < 2:
        raise DatasetError(f"sample size must be at least 2 (both labels), got {n}")
    counts = _class_counts(ds.labels)
    targets = [min(max(_round_half_up(n * c / len(ds)), 1), c) for c in counts]
    mask = _select_rows(ds.labels, ds.groups, targets, np.random.default_rng(seed))
    return ds.subset(np.flatnonzero(mask))
