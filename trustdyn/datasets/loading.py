"""Loading a table file or a hub dataset into a :class:`ProbeDataset` with its card."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trustdyn import paths
from trustdyn.datasets.cards import CardMeta, DatasetCard
from trustdyn.datasets.errors import DatasetError
from trustdyn.datasets.probe_dataset import ProbeDataset
from trustdyn.datasets.tables import _read_table, _Row, _Table
from trustdyn.datasets.validate import OnConflict, TableFormat, _validate, _Validated


def _relative_to_data(path: Path) -> str:
    resolved = path.resolve()
    try:
        return resolved.relative_to(paths.DATA_DIR.resolve()).as_posix()
    except ValueError:
        return str(resolved)


def _make_card(meta: CardMeta, valid: _Validated, *, path: str, sha256: str) -> DatasetCard:
    n1 = int(valid.labels.sum())
    return DatasetCard(
        name=meta.name,
        dimension=meta.dimension,
        path=path,
        label1_meaning=meta.label1_meaning,
        label0_meaning=meta.label0_meaning,
        desirable_label=meta.desirable_label,
        harmful_label=meta.harmful_label,
        rows=len(valid.texts),
        n_label0=len(valid.texts) - n1,
        n_label1=n1,
        n_groups=None if valid.groups is None else len(np.unique(valid.groups)),
        rows_raw=valid.rows_raw,
        duplicates_dropped=valid.duplicates_dropped,
        conflicts_dropped=valid.conflicts_dropped,
        texts_cleaned=valid.texts_cleaned,
        source=meta.source,
        upstream=meta.upstream,
        license=meta.license,
        sha256=sha256,
        notes=meta.notes,
    )


def _sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_file(path: Path, meta: CardMeta, fmt: TableFormat, *, warn: bool,
               kind: str | None = None) -> ProbeDataset:
    valid = _validate(_read_table(path, kind), fmt, warn=warn)
    card = _make_card(meta, valid, path=_relative_to_data(path), sha256=_sha256_bytes(path))
    return ProbeDataset(meta.name, card, valid.texts, valid.labels, valid.groups)


def build_card(path: str | Path, meta: CardMeta, fmt: TableFormat | None = None) -> DatasetCard:
    """Load a table file and return its card (statistics after cleaning, file sha256).

    Args:
        path: CSV/TSV/JSON/JSONL file.
        meta: What the dataset means (name, dimension, label meanings, licence...).
        fmt: How to read it; defaults to ``statement,label`` columns.

    Returns:
        The card; drops are counted on it rather than warned about.

    """
    return _load_file(Path(path), meta, fmt or TableFormat(), warn=False).card


def load_table(
    path: str | Path,
    *,
    name: str,
    dimension: str = "custom",
    text_column: str = "statement",
    label_column: str = "label",
    group_column: str | None = None,
    label1_meaning: str = "",
    desirable_label: int | None = None,
    harmful_label: int | None = None,
    on_conflict: OnConflict = "error",
) -> ProbeDataset:
    """Load a user's own CSV, TSV, JSON or JSONL table of statements and 0/1 labels.

    Args:
        path: The file; the format is chosen by its suffix.
        name: Dataset name used in results.
        dimension: Trustworthiness dimension it probes.
        text_column: Column with the statements.
        label_column: Column with the labels (0/1, also ``true``/``false``, ``1.0``).
        group_column: Optional column whose rows must stay on one side of a split.
        label1_meaning: What label 1 means (shown in the dashboard).
        desirable_label: Label on the trustworthy side, if any (sets the steering sign).
        harmful_label: Label of the harmful class, if any.
        on_conflict: What to do with a statement that has both labels (see TableFormat).

    Raises:
        DatasetError: Unreadable file, missing columns, invalid rows (named by data row
            number and file line), conflicting labels, or a single class.

    """
    meta = CardMeta(name=name, dimension=dimension, label1_meaning=label1_meaning,
                    desirable_label=desirable_label, harmful_label=harmful_label,
                    source=str(path))
    fmt = TableFormat(text_column=text_column, label_column=label_column,
                      group_column=group_column, on_conflict=on_conflict)
    return _load_file(Path(path), meta, fmt, warn=True)


def _load_hub_table(repo_id: str, split: str, revision: str | None) -> Any:
    """Return a ``datasets.Dataset`` (anything with ``column_names`` and dict rows)."""
    try:
        import datasets as hf_datasets
    except ImportError:
        raise DatasetError(
            "loading from the Hugging Face hub needs the 'datasets' library: "
            "pip install datasets   (or pip install 'trustdyn[hub]')"
        ) from None
    try:
        return hf_datasets.load_dataset(repo_id, split=split, revision=revision)
    except Exception as exc:  # network, auth, unknown repo/split: all user-facing
        raise DatasetError(f"could not load {repo_id!r} (split {split!r}, revision "
                           f"{revision or 'default'}) from the hub: {exc}") from exc


def _content_sha256(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for values in rows:
        digest.update(json.dumps([values.get(c) for c in columns], default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def load_hub_dataset(
    repo_id: str,
    *,
    split: str = "train",
    text_column: str,
    label_column: str,
    group_column: str | None = None,
    name: str | None = None,
    revision: str | None = None,
    card: CardMeta | None = None,
    on_conflict: OnConflict = "error",
) -> ProbeDataset:
    """Load a probe dataset from the Hugging Face hub (optional ``datasets`` library).

    The rows go through exactly the validation used for files; errors name the source as
    ``hf://<repo_id>@<revision>[<split>]`` and the 1-based row. ``card`` gives what the
    dataset means (its name wins over ``name``); its empty ``source`` becomes the hub one.

    Raises:
        DatasetError: ``datasets`` is not installed (with the install line), loading
            failed, or the rows are invalid.

    """
    table = _load_hub_table(repo_id, split, revision)
    source = f"hf://{repo_id}@{revision or 'default'}[{split}]"
    rows = tuple(_Row(i + 1, None, dict(values)) for i, values in enumerate(table))
    fmt = TableFormat(text_column=text_column, label_column=label_column,
                      group_column=group_column, on_conflict=on_conflict)
    valid = _validate(_Table(source, tuple(table.column_names), rows), fmt)
    used = [c for c in (text_column, label_column, group_column) if c]
    info = getattr(table, "info", None)
    meta = (replace(card, source=card.source or source) if card is not None else
            CardMeta(name=name or repo_id.rsplit("/", 1)[-1], source=source,
                     license=str(getattr(info, "license", "") or "see the hub dataset card")))
    made = _make_card(meta, valid, path=f"hf://{repo_id}",
                      sha256=_content_sha256((r.values for r in rows), used))
    return ProbeDataset(meta.name, made, valid.texts, valid.labels, valid.groups)
