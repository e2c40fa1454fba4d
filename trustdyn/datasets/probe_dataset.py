"""The in-memory probe dataset: cleaned statements, 0/1 labels and optional groups."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trustdyn.datasets.cards import DatasetCard
from trustdyn.datasets.errors import DatasetError


def _readonly(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ProbeDataset:
    """Statements with binary labels (and optional groups) ready for probing.

    Attributes:
        name: Dataset name (the card's name for full datasets).
        card: Card of the file this dataset came from.
        texts: Cleaned statements, ``n`` of them.
        labels: ``[n]`` int64 array of 0/1 labels (read-only).
        groups: ``[n]`` array of group keys (str; e.g. the TruthfulQA question) or
            ``None``; splits and samples never cut a group.

    """

    name: str
    card: DatasetCard
    texts: tuple[str, ...]
    labels: np.ndarray
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or len(labels) != len(self.texts):
            raise DatasetError(
                f"{self.name}: labels have shape {labels.shape}, expected ({len(self.texts)},)"
            )
        if labels.size and not np.isin(labels, (0, 1)).all():
            raise DatasetError(f"{self.name}: labels must be 0 or 1")
        object.__setattr__(self, "texts", tuple(self.texts))
        object.__setattr__(self, "labels", _readonly(labels.astype(np.int64)))
        if self.groups is not None:
            groups = np.asarray(self.groups, dtype=str)
            if groups.shape != labels.shape:
                raise DatasetError(
                    f"{self.name}: groups have shape {groups.shape}, expected {labels.shape}"
                )
            object.__setattr__(self, "groups", _readonly(groups))

    def __len__(self) -> int:
        return len(self.texts)

    def __repr__(self) -> str:
        n0, n1 = self.label_counts()
        grouped = "" if self.groups is None else f", groups={len(np.unique(self.groups))}"
        return f"ProbeDataset(name={self.name!r}, n={len(self)}, labels=({n0}, {n1}){grouped})"

    def label_counts(self) -> tuple[int, int]:
        """Return ``(rows with label 0, rows with label 1)``."""
        n1 = int(self.labels.sum())
        return len(self) - n1, n1

    def subset(self, indices: Sequence[int] | np.ndarray) -> ProbeDataset:
        """Return the rows at ``indices`` (integer positions or a boolean mask), same card."""
        index = np.asarray(indices)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise DatasetError(f"{self.name}: mask has shape {index.shape}, "
                                   f"expected ({len(self)},)")
            index = np.flatnonzero(index)
        index = index.astype(np.int64, copy=False).reshape(-1)
        if index.size and (index.min() < -len(self) or index.max() >= len(self)):
            raise DatasetError(f"{self.name}: subset index out of range for {len(self)} rows")
        return ProbeDataset(
            name=self.name,
            card=self.card,
            texts=tuple(self.texts[i] for i in index),
            labels=self.labels[index],
            groups=None if self.groups is None else self.groups[index],
        )
