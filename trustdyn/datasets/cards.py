"""Dataset cards: what a dataset means (:class:`CardMeta`), what its file holds (the card).

Every card says what label 1 means, which label (if any) is the desirable side and which
the harmful one; :meth:`DatasetCard.steering_sign` turns that into the sign to apply to a
mean-difference vector ``mean(label 1) - mean(label 0)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from trustdyn.datasets.errors import DatasetError

DIMENSIONS: dict[str, str] = {
    "reliability": "truthfulqa",
    "privacy": "confaide",
    "toxicity": "toxigen",
    "fairness": "stereoset",
    "robustness": "sst2",
    "fluency": "sentences",  # beyond the paper: the built-in chat model's task
}
CARDS_FILE = "probe/cards.json"


@dataclass(frozen=True)
class CardMeta:
    """What a dataset means, as opposed to what its file contains (see :class:`DatasetCard`).

    Attributes:
        name: Dataset name, e.g. ``"toxigen"``.
        dimension: Trustworthiness dimension, e.g. ``"toxicity"``; ``"custom"`` for users'.
        label1_meaning: What label 1 means, e.g. ``"toxic"``.
        label0_meaning: What label 0 means.
        desirable_label: The label on the trustworthy side (steer toward it), or ``None``
            if neither side is more trustworthy than the other.
        harmful_label: The label of the harmful/undesirable class, if there is one.
        source: Where the file was taken from.
        upstream: The benchmark the file derives from, with its licence terms.
        license: Licence of the file as vendored (SPDX-like identifier or a short note).
        notes: Known quirks and how loading handles them.

    """

    name: str
    dimension: str = "custom"
    label1_meaning: str = ""
    label0_meaning: str = ""
    desirable_label: int | None = None
    harmful_label: int | None = None
    source: str = ""
    upstream: str = ""
    license: str = "unknown"
    notes: str = ""

    def __post_init__(self) -> None:
        for attr in ("desirable_label", "harmful_label"):
            value = getattr(self, attr)
            if value not in (None, 0, 1) or isinstance(value, bool):
                raise DatasetError(f"{attr} must be 0, 1 or None, got {value!r}")
        if self.desirable_label is not None and self.desirable_label == self.harmful_label:
            raise DatasetError(
                f"{self.name}: desirable_label and harmful_label are both {self.harmful_label}"
            )
        if not self.name.strip():
            raise DatasetError("a dataset needs a non-empty name")


@dataclass(frozen=True)
class DatasetCard:
    """Provenance and statistics of one probe dataset (one row of ``cards.json``).

    Statistics describe the whole file after cleaning, also for a sampled or split
    :class:`ProbeDataset` that carries the card.

    Attributes:
        name: Dataset name.
        dimension: Trustworthiness dimension.
        path: File path relative to ``data/`` for vendored files, else as given
            (``hf://<repo>`` for hub datasets).
        label1_meaning: What label 1 means.
        label0_meaning: What label 0 means.
        desirable_label: Trustworthy side (0/1) or ``None``.
        harmful_label: Harmful/undesirable class (0/1) or ``None``.
        rows: Rows after cleaning, deduplication and conflict removal.
        n_label0: Rows with label 0 (after cleaning).
        n_label1: Rows with label 1 (after cleaning).
        n_groups: Distinct groups (e.g. TruthfulQA questions), or ``None`` if ungrouped.
        rows_raw: Data rows in the file.
        duplicates_dropped: Exact duplicates (same cleaned statement and label) dropped.
        conflicts_dropped: Rows dropped because their statement occurs with both labels.
        texts_cleaned: Rows whose statement :func:`clean_text` changed.
        source: Where the file was taken from.
        upstream: The benchmark it derives from.
        license: Licence of the file as vendored.
        sha256: Hex sha256 of the file's bytes (hub and generated datasets: of the rows'
            canonical JSON).
        notes: Known quirks.

    """

    name: str
    dimension: str
    path: str
    label1_meaning: str
    label0_meaning: str
    desirable_label: int | None
    harmful_label: int | None
    rows: int
    n_label0: int
    n_label1: int
    n_groups: int | None
    rows_raw: int
    duplicates_dropped: int
    conflicts_dropped: int
    texts_cleaned: int
    source: str
    upstream: str
    license: str
    sha256: str
    notes: str = ""

    @property
    def label1_fraction(self) -> float:
        """Share of label-1 rows (0.5 = balanced)."""
        return self.n_label1 / self.rows if self.rows else float("nan")

    def steering_sign(self) -> int:
        """Sign to apply to ``v = mean(label 1) - mean(label 0)`` to steer the right way.

        ``+1`` when label 1 is the desirable side, ``-1`` when label 0 is (e.g. steer away
        from toxic). When no label is desirable (robustness: perturbed vs original text)
        this is ``+1``, the reference study's convention of steering toward the concept
        direction; such a vector makes the concept more salient rather than the model
        more trustworthy, so evaluations should report both signs.
        """
        return -1 if self.desirable_label == 0 else 1

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of all fields (the ``cards.json`` format)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetCard:
        """Build a card from :meth:`to_dict` output; unknown or missing keys are errors."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DatasetError(f"dataset card has unknown keys {unknown}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise DatasetError(f"dataset card is incomplete: {exc}") from exc
