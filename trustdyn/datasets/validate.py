"""Validation: clean, check and deduplicate a table's rows (one path for files, hub and builtins).

After cleaning, exact duplicates (same statement, same label) are dropped with a warning,
and a statement that occurs with both labels is an error for users' files (or is dropped
entirely with ``on_conflict="drop"``, which the builtins use; their cards count what was
dropped).
"""

from __future__ import annotations

import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any, Literal

import numpy as np

from trustdyn.datasets.errors import _MAX_LISTED, DatasetError, DatasetWarning
from trustdyn.datasets.tables import _Row, _Table
from trustdyn.datasets.text import clean_text

OnConflict = Literal["error", "drop"]


@dataclass(frozen=True)
class TableFormat:
    """How to read statements, labels and groups out of a table.

    Attributes:
        text_column: Column holding the statement.
        label_column: Column holding the 0/1 label.
        group_column: Column holding a group key (rows of a group stay together), if any.
        group_fn: Alternative to ``group_column``: derives the group from the cleaned
            statement and raises ``ValueError`` for a statement it cannot parse.
        on_conflict: ``"error"`` (default) rejects a statement that occurs with both
            labels; ``"drop"`` removes all its rows with a warning.
        pre_clean: Extra repair applied to the raw statement before :func:`clean_text`
            (e.g. :func:`unescape_backslashes` for ToxiGen).

    """

    text_column: str = "statement"
    label_column: str = "label"
    group_column: str | None = None
    group_fn: Callable[[str], str] | None = None
    on_conflict: OnConflict = "error"
    pre_clean: Callable[[str], str] | None = None

    def __post_init__(self) -> None:
        if self.on_conflict not in ("error", "drop"):
            raise DatasetError(f"on_conflict must be 'error' or 'drop', got {self.on_conflict!r}")
        if self.group_column is not None and self.group_fn is not None:
            raise DatasetError("give group_column or group_fn, not both")


@dataclass(frozen=True)
class _Validated:
    texts: tuple[str, ...]
    labels: np.ndarray  # [n] int64
    groups: np.ndarray | None  # [n] str
    rows_raw: int
    duplicates_dropped: int
    conflicts_dropped: int
    texts_cleaned: int


_LABEL_STRINGS = {"0": 0, "1": 1, "0.0": 0, "1.0": 1, "false": 0, "true": 1}


def _parse_label(value: Any) -> int | None:
    """Return 0/1 for a binary label value (int, float, bool or their string forms)."""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, int | np.integer | float | np.floating):
        return int(value) if value in (0, 1) else None
    if isinstance(value, str):
        return _LABEL_STRINGS.get(value.strip().lower())
    return None


def _raise_row_problems(source: str, problems: list[str]) -> None:
    listed = "\n  ".join(problems[:_MAX_LISTED])
    more = (f"\n  … and {len(problems) - _MAX_LISTED} more"
            if len(problems) > _MAX_LISTED else "")
    raise DatasetError(f"{source}: {len(problems)} invalid row(s):\n  {listed}{more}")


def _parse_rows(table: _Table, fmt: TableFormat
                ) -> tuple[list[str], list[int], list[str] | None, int]:
    """Clean and check every row; returns texts, labels, groups and #texts changed."""
    texts: list[str] = []
    labels: list[int] = []
    groups: list[str] | None = [] if (fmt.group_column or fmt.group_fn) else None
    problems: list[str] = []
    changed = 0
    for row in table.rows:
        raw_text = row.values.get(fmt.text_column)
        raw_label = row.values.get(fmt.label_column)
        if fmt.text_column not in row.values or fmt.label_column not in row.values:
            problems.append(f"{row.where()}: missing key(s); keys found: {sorted(row.values)}")
            continue
        if not isinstance(raw_text, str):
            problems.append(f"{row.where()}: {fmt.text_column!r} is "
                            f"{type(raw_text).__name__} {raw_text!r}, expected text")
            continue
        text = clean_text(fmt.pre_clean(raw_text) if fmt.pre_clean else raw_text)
        label = _parse_label(raw_label)
        group = _row_group(row, text, fmt, problems)
        if not text:
            problems.append(f"{row.where()}: empty text in {fmt.text_column!r}")
        if label is None:
            problems.append(f"{row.where()}: label {raw_label!r} in {fmt.label_column!r} "
                            "is not 0 or 1")
        if not text or label is None or (groups is not None and group is None):
            continue
        changed += text != raw_text
        texts.append(text)
        labels.append(label)
        if groups is not None and group is not None:
            groups.append(group)
    if problems:
        _raise_row_problems(table.source, problems)
    return texts, labels, groups, changed


def _row_group(row: _Row, text: str, fmt: TableFormat, problems: list[str]) -> str | None:
    """Return the row's group key, or record a problem and return ``None``."""
    if fmt.group_fn is not None:
        if not text:
            return None
        try:
            return fmt.group_fn(text)
        except ValueError as exc:
            problems.append(f"{row.where()}: {exc}")
            return None
    if fmt.group_column is None:
        return None
    raw = row.values.get(fmt.group_column)
    group = clean_text(str(raw)) if raw is not None else ""
    if not group:
        problems.append(f"{row.where()}: empty group in {fmt.group_column!r}")
        return None
    return group


def _find_conflicts(texts: Sequence[str], labels: Sequence[int]) -> dict[str, list[int]]:
    """Return ``{statement: positions}`` for statements that occur with both labels."""
    positions: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        positions[text].append(i)
    return {text: pos for text, pos in positions.items()
            if len({labels[i] for i in pos}) > 1}


def _shorten(text: str, width: int = 70) -> str:
    return repr(text if len(text) <= width else text[: width - 1] + "…")


def _validate(table: _Table, fmt: TableFormat, *, warn: bool = True) -> _Validated:
    """Clean, check and deduplicate a table; raise :class:`DatasetError` on any problem.

    The one validation path for vendored files, users' files and hub datasets.
    """
    required = [fmt.text_column, fmt.label_column]
    if fmt.group_column is not None:
        required.append(fmt.group_column)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DatasetError(
            f"{table.source}: missing column(s) {missing}; columns found: "
            f"{list(table.columns)}. Name yours with text_column=/label_column="
            + ("/group_column=" if fmt.group_column else "")
        )
    if not table.rows:
        raise DatasetError(f"{table.source}: no data rows")
    texts, labels, groups, changed = _parse_rows(table, fmt)
    row_of = table.rows  # parsing raised unless every row was valid, so positions align

    conflicts = _find_conflicts(texts, labels)
    if conflicts and fmt.on_conflict == "error":
        examples = "\n  ".join(
            "; ".join(f"{row_of[i].where()} label {labels[i]}" for i in pos[:4])
            + f": {_shorten(text)}"
            for text, pos in list(conflicts.items())[:3]
        )
        raise DatasetError(
            f"{table.source}: {len(conflicts)} statement(s) occur with both labels 0 and 1 "
            f"(after cleaning), e.g.\n  {examples}\nRelabel or remove them, or pass "
            "on_conflict='drop' to drop every row of such statements."
        )
    conflict_rows = {i for pos in conflicts.values() for i in pos}
    keep: list[int] = []
    seen: dict[tuple[str, int], int] = {}
    duplicate_examples: list[str] = []
    for i, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if i in conflict_rows:
            continue
        first = seen.setdefault((text, label), i)
        if first != i:
            duplicate_examples.append(f"row {row_of[i].row} repeats row {row_of[first].row}")
            continue
        keep.append(i)

    if warn and conflict_rows:
        _warn(f"{table.source}: dropped {len(conflict_rows)} row(s) of {len(conflicts)} "
              "statement(s) that occur with both labels")
    if warn and duplicate_examples:
        _warn(f"{table.source}: dropped {len(duplicate_examples)} duplicate row(s) (same "
              f"statement and label), e.g. {'; '.join(duplicate_examples[:3])}")

    kept_labels = np.asarray([labels[i] for i in keep], dtype=np.int64)
    _check_both_classes(table.source, kept_labels)
    return _Validated(
        texts=tuple(texts[i] for i in keep),
        labels=kept_labels,
        groups=None if groups is None else np.asarray([groups[i] for i in keep], dtype=str),
        rows_raw=len(table.rows),
        duplicates_dropped=len(duplicate_examples),
        conflicts_dropped=len(conflict_rows),
        texts_cleaned=changed,
    )


def _warn(message: str) -> None:
    """Emit a :class:`DatasetWarning` attributed to the first caller outside this package."""
    level = 1
    frame: FrameType | None = sys._getframe(0)
    while frame is not None and _in_package(frame.f_globals.get("__name__")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DatasetWarning, stacklevel=level)


def _in_package(module: object) -> bool:
    """Whether ``module`` (a module's ``__name__``) is this package or one of its modules."""
    package = __name__.rpartition(".")[0]
    return isinstance(module, str) and (module == package or module.startswith(package + "."))


def _check_both_classes(source: str, labels: np.ndarray) -> None:
    if labels.size == 0:
        raise DatasetError(f"{source}: no rows left after removing conflicting statements")
    n1 = int(labels.sum())
    if n1 in (0, labels.size):
        raise DatasetError(
            f"{source}: all {labels.size} rows have label {int(labels[0])}; "
            "a probe needs rows with label 0 and rows with label 1"
        )
