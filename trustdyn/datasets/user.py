"""A user's probe dataset as a study names it: where its rows are, how to read them, what they mean.

A :class:`UserDataset` is plain data (JSON-ready through ``dataclasses.asdict``), so a study
config can carry it, store it with the suite and hash it into its digest. Its rows come
from a table file (:func:`~trustdyn.datasets.load_table`'s path) or a hub dataset
(:func:`~trustdyn.datasets.load_hub_dataset`), through the same validation as the builtins.
:func:`load_study_dataset` is the one place that turns a study's dataset name into rows:
a user dataset by its card name, otherwise a builtin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trustdyn.datasets.builtins import load_dataset
from trustdyn.datasets.cards import CardMeta
from trustdyn.datasets.errors import DatasetError
from trustdyn.datasets.loading import _load_file, load_hub_dataset
from trustdyn.datasets.probe_dataset import ProbeDataset
from trustdyn.datasets.validate import OnConflict, TableFormat

TABLE_KINDS = ("csv", "tsv", "json", "jsonl")
"""Values of :attr:`UserDataset.format`: how to read a file whatever its suffix."""


@dataclass(frozen=True)
class UserDataset:
    """A probe dataset of the user's, read from a file or the hub.

    Attributes:
        meta: What the dataset means: its name (the key of every result row), dimension,
            label meanings, desirable and harmful label, source, upstream, licence, notes.
        path: Absolute path of a CSV/TSV/JSON/JSONL file; empty for a hub dataset.
        format: Table type of ``path`` (one of :data:`TABLE_KINDS`); empty = from the suffix.
        hub: Hugging Face dataset as ``"<repo id>:<split>"``; empty for a file.
        revision: Hub revision of ``hub`` (empty = the default branch).
        text_column: Column holding the statements.
        label_column: Column holding the 0/1 labels.
        group_column: Column whose rows stay on one side of every split, if any.
        on_conflict: ``"error"`` rejects a statement that occurs with both labels,
            ``"drop"`` removes its rows.

    """

    meta: CardMeta
    path: str = ""
    format: str = ""
    hub: str = ""
    revision: str = ""
    text_column: str = "statement"
    label_column: str = "label"
    group_column: str | None = None
    on_conflict: OnConflict = "error"

    def __post_init__(self) -> None:
        if bool(self.path) == bool(self.hub):
            raise DatasetError(f"dataset {self.meta.name!r}: give a file path or a hub "
                               "dataset ('repo:split'), exactly one of them")
        if self.format and self.format not in TABLE_KINDS:
            raise DatasetError(f"dataset {self.meta.name!r}: format {self.format!r} is not "
                               f"one of {', '.join(TABLE_KINDS)}")
        if self.hub and self.hub.count(":") != 1:
            raise DatasetError(f"dataset {self.meta.name!r}: hub {self.hub!r} must be "
                               "'<repo id>:<split>', e.g. 'org/claims:train'")
        self.table_format()  # checks on_conflict

    @property
    def name(self) -> str:
        """The dataset's name in results (its card's)."""
        return self.meta.name

    def table_format(self) -> TableFormat:
        """Return how to read statements, labels and groups out of the rows."""
        return TableFormat(text_column=self.text_column, label_column=self.label_column,
                           group_column=self.group_column, on_conflict=self.on_conflict)

    def load(self) -> ProbeDataset:
        """Read, clean and validate the rows.

        Raises:
            DatasetError: naming the file (or hub source), the row and the problem.
        """
        if self.path:
            return _load_file(Path(self.path), self.meta, self.table_format(), warn=True,
                              kind=self.format or None)
        repo, split = self.hub.split(":")
        return load_hub_dataset(repo, split=split, text_column=self.text_column,
                                label_column=self.label_column,
                                group_column=self.group_column,
                                revision=self.revision or None, card=self.meta,
                                on_conflict=self.on_conflict)


def load_study_dataset(name: str, user: Sequence[UserDataset] = ()) -> ProbeDataset:
    """Return the full dataset a study calls ``name``: the user's of that name, else a builtin.

    Raises:
        DatasetError: an unknown name (listing the builtins) or invalid rows.
    """
    for spec in user:
        if spec.name == name:
            return spec.load()
    return load_dataset(name)
