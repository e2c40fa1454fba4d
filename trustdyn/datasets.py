"""Probe datasets: load, clean, validate, split and describe them with dataset cards.

The five builtin datasets (one per trustworthiness dimension) are vendored under
``data/probe/`` and the steering-evaluation material under ``data/eval/``; nothing here
reads outside :data:`trustdyn.paths.DATA_DIR`. Users' own CSV/TSV/JSON/JSONL files go
through :func:`load_table` and hub datasets through :func:`load_hub_dataset`; all three
share one cleaning and validation path (:func:`_validate`), so a problem is reported the
same way wherever the rows came from: a :class:`DatasetError` naming the file, the row
and what is wrong.

Cleaning (:func:`clean_text`) decodes Excel/OpenXML escapes such as ``_x000D_``, HTML
entities and UTF-8 read as cp1252 ("mojibake"), then normalises whitespace while keeping
tabs (TruthfulQA statements are ``Q: …<TAB>A: …``). After cleaning, exact duplicates
(same statement, same label) are dropped with a warning, and a statement that occurs
with both labels is an error for users' files (or is dropped entirely with
``on_conflict="drop"``, which the builtins use; their cards count what was dropped).

Label direction: every card says what label 1 means, which label (if any) is the
desirable side and which the harmful one. :meth:`DatasetCard.steering_sign` turns that
into the sign to apply to a mean-difference vector ``mean(label 1) - mean(label 0)``.

Run ``python -m trustdyn.datasets --write-cards`` to regenerate ``data/probe/cards.json``
after changing a vendored file, ``--check`` to verify it is current.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import io
import json
import logging
import re
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any, Literal

import numpy as np

from trustdyn import paths

logger = logging.getLogger(__name__)

DIMENSIONS: dict[str, str] = {
    "reliability": "truthfulqa",
    "privacy": "confaide",
    "toxicity": "toxigen",
    "fairness": "stereoset",
    "robustness": "sst2",
}
BUILTIN_DATASETS: tuple[str, ...] = ("truthfulqa", "confaide", "toxigen", "stereoset", "sst2")

CARDS_FILE = "probe/cards.json"
TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
OnConflict = Literal["error", "drop"]

# How many offending rows an error message lists before summarising the rest.
_MAX_LISTED = 5


class DatasetError(ValueError):
    """A user-facing problem with a dataset: unknown name, bad file, invalid rows."""


class DatasetWarning(UserWarning):
    """Rows were dropped while loading (exact duplicates or conflicting labels)."""


# --------------------------------------------------------------------------- text cleaning

_OPENXML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")
_NON_ASCII_RUN = re.compile(r"[^\x00-\x7f]+")
# Sequences that only appear when UTF-8 bytes were decoded as cp1252/latin-1.
_MOJIBAKE_MARKERS = ("Ã", "Â", "â€")
_CURLY_QUOTES = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"'})


def normalise_whitespace(text: str) -> str:
    """Collapse whitespace runs to one space and strip, keeping tabs as field separators.

    TruthfulQA statements separate question and answer with a single tab, so tabs are kept
    (with the spaces around them removed) while newlines, carriage returns, no-break
    spaces and repeated spaces become single spaces.
    """
    return "\t".join(" ".join(part.split()) for part in text.split("\t")).strip()


def _repair_mojibake_run(run: str) -> str:
    """Undo up to three rounds of UTF-8-read-as-cp1252 on one run of non-ASCII characters.

    Correct text almost never survives the round trip (its cp1252 bytes are not valid
    UTF-8), so a run is changed only when it decodes cleanly.
    """
    for _ in range(3):
        try:
            fixed = run.encode("cp1252").decode("utf-8")
        except UnicodeError:
            break
        if fixed == run:
            break
        run = fixed
    return run


def clean_text(text: str) -> str:
    """Return ``text`` with file-format artefacts removed and whitespace normalised.

    Applied identically to every statement (builtin, user file, hub dataset):

    1. OpenXML escapes written by Excel (``_x000D_`` = carriage return) are decoded;
    2. HTML entities (``&amp;``, ``&#8220;``) are unescaped;
    3. mojibake (``ItÃ¢â‚¬â„¢s``) is repaired where it decodes cleanly;
    4. whitespace is normalised by :func:`normalise_whitespace`.
    """
    if "_x" in text:
        text = _OPENXML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "&" in text:
        text = html.unescape(text)
    if any(marker in text for marker in _MOJIBAKE_MARKERS):
        text = _NON_ASCII_RUN.sub(lambda m: _repair_mojibake_run(m.group(0)), text)
    return normalise_whitespace(text)


_BACKSLASH_UNICODE = re.compile(r"\\+u([0-9a-fA-F]{4})")
_BACKSLASH_WHITESPACE = re.compile(r"\\+[nrt]")
_BACKSLASH_QUOTE = re.compile(r"\\+(['\"])")


def unescape_backslashes(text: str) -> str:
    r"""Decode literal backslash escapes left by a ``repr``-style export (opt-in, builtins only).

    ``\n``, ``\r``, ``\t`` (any number of backslashes) become spaces, ``\'``/``\"``
    the bare quote, ``\u2019`` its character, and CSV-doubled quotes ``""`` one quote.
    Not part of :func:`clean_text`: in users' text a backslash may be meant literally.
    """
    text = _BACKSLASH_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = _BACKSLASH_WHITESPACE.sub(" ", text)
    text = _BACKSLASH_QUOTE.sub(lambda m: m.group(1), text)
    return text.replace('""', '"')


def normalise_question(text: str) -> str:
    """Return the matching key for a question: cleaned, case-folded, straight quotes."""
    return " ".join(clean_text(text).translate(_CURLY_QUOTES).casefold().split())


_TRUTHFULQA_STATEMENT = re.compile(r"^Q:\s*(?P<q>.+?)\tA:\s*(?P<a>.+)$", re.DOTALL)


def truthfulqa_question(statement: str) -> str:
    """Return the question of a cleaned TruthfulQA statement ``Q: …<TAB>A: …``.

    Raises:
        ValueError: The statement is not in that format.

    """
    match = _TRUTHFULQA_STATEMENT.match(statement)
    if match is None:
        raise ValueError("statement is not 'Q: <question><TAB>A: <answer>'")
    return match.group("q").strip()


# --------------------------------------------------------------------------- cards


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
        sha256: Hex sha256 of the file's bytes (hub: of the rows' canonical JSON).
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


# --------------------------------------------------------------------------- datasets


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


# --------------------------------------------------------------------------- reading tables


@dataclass(frozen=True)
class _Row:
    """One data row: 1-based data row number, 1-based file line (if known) and values."""

    row: int
    line: int | None
    values: Mapping[str, Any]

    def where(self) -> str:
        return f"row {self.row}" + (f" (line {self.line})" if self.line is not None else "")


@dataclass(frozen=True)
class _Table:
    """Rows read from one source; ``source`` is what error messages call it."""

    source: str
    columns: tuple[str, ...]
    rows: tuple[_Row, ...]


def _decode_file(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: not valid UTF-8 at line {line} (byte {exc.start}); "
            "re-save the file as UTF-8"
        ) from None


def _read_delimited(path: Path, delimiter: str) -> _Table:
    """Read a CSV/TSV with a header row; every data row must have the header's width."""
    reader = csv.reader(io.StringIO(_decode_file(path), newline=""),
                        delimiter=delimiter, strict=True)
    header: list[str] | None = None
    rows: list[_Row] = []
    next_line = 1
    while True:
        start = next_line
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            where = "the header" if header is None else f"row {len(rows) + 1}"
            raise DatasetError(
                f"{path}: malformed {where} (line {reader.line_num}): {exc}; "
                "check quoting (a field holding the delimiter, a quote or a newline "
                "must be in double quotes, with inner quotes doubled)"
            ) from None
        next_line = reader.line_num + 1
        if not record:  # blank line
            continue
        if header is None:
            header = [name.strip() for name in record]
            _check_header(path, header)
            continue
        if len(record) != len(header):
            raise DatasetError(
                f"{path}: row {len(rows) + 1} (line {start}) has {len(record)} field(s), "
                f"expected {len(header)} ({', '.join(header)}); quote fields that contain "
                f"{'a tab' if delimiter == chr(9) else 'a comma'}"
            )
        rows.append(_Row(len(rows) + 1, start, dict(zip(header, record, strict=True))))
    if header is None:
        raise DatasetError(f"{path}: the file is empty (expected a header row)")
    return _Table(str(path), tuple(header), tuple(rows))


def _check_header(path: Path, header: list[str]) -> None:
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise DatasetError(f"{path}: header repeats column(s) {duplicated}")


def _json_lines(text: str) -> list[str]:
    """Split JSON Lines at line feeds only.

    ``str.splitlines`` would also split at U+2028, U+0085 and friends, which JSON allows
    unescaped inside strings.
    """
    return [line.removesuffix("\r") for line in text.split("\n")]


def _read_json_rows(path: Path, suffix: str) -> _Table:
    """Read JSON Lines (one object per line) or a JSON list of objects."""
    text = _decode_file(path)
    items: list[tuple[int | None, Any]] = []
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        if not isinstance(data, list):
            raise DatasetError(f"{path}: expected a JSON list of objects, "
                               f"got {type(data).__name__}")
        items = [(None, item) for item in data]
    else:
        for line_no, line in enumerate(_json_lines(text), start=1):
            if not line.strip():
                continue
            try:
                items.append((line_no, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DatasetError(
                    f"{path}: row {len(items) + 1} (line {line_no}) is not valid JSON: {exc.msg}"
                ) from None
    rows: list[_Row] = []
    for number, (line_of_item, item) in enumerate(items, start=1):
        row = _Row(number, line_of_item, item if isinstance(item, dict) else {})
        if not isinstance(item, dict):
            raise DatasetError(f"{path}: {row.where()} is a JSON {type(item).__name__}, "
                               "expected an object")
        rows.append(row)
    columns = tuple(rows[0].values) if rows else ()
    return _Table(str(path), columns, tuple(rows))


def _read_table(path: Path) -> _Table:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_delimited(path, ",")
    if suffix == ".tsv":
        return _read_delimited(path, "\t")
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_json_rows(path, suffix)
    raise DatasetError(f"{path}: unsupported file type {suffix!r}; "
                       f"use one of {', '.join(TABLE_SUFFIXES)}")


# --------------------------------------------------------------------------- validation


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
    """Emit a :class:`DatasetWarning` attributed to the first caller outside this module."""
    level = 1
    frame: FrameType | None = sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, DatasetWarning, stacklevel=level)


def _check_both_classes(source: str, labels: np.ndarray) -> None:
    if labels.size == 0:
        raise DatasetError(f"{source}: no rows left after removing conflicting statements")
    n1 = int(labels.sum())
    if n1 in (0, labels.size):
        raise DatasetError(
            f"{source}: all {labels.size} rows have label {int(labels[0])}; "
            "a probe needs rows with label 0 and rows with label 1"
        )


# --------------------------------------------------------------------------- loading


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


def _load_file(path: Path, meta: CardMeta, fmt: TableFormat, *, warn: bool) -> ProbeDataset:
    valid = _validate(_read_table(path), fmt, warn=warn)
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
) -> ProbeDataset:
    """Load a probe dataset from the Hugging Face hub (optional ``datasets`` library).

    The rows go through exactly the validation used for files; errors name the source as
    ``hf://<repo_id>@<revision>[<split>]`` and the 1-based row.

    Raises:
        DatasetError: ``datasets`` is not installed (with the install line), loading
            failed, or the rows are invalid.

    """
    table = _load_hub_table(repo_id, split, revision)
    source = f"hf://{repo_id}@{revision or 'default'}[{split}]"
    rows = tuple(_Row(i + 1, None, dict(values)) for i, values in enumerate(table))
    fmt = TableFormat(text_column=text_column, label_column=label_column,
                      group_column=group_column)
    valid = _validate(_Table(source, tuple(table.column_names), rows), fmt)
    used = [c for c in (text_column, label_column, group_column) if c]
    info = getattr(table, "info", None)
    meta = CardMeta(name=name or repo_id.rsplit("/", 1)[-1], source=source,
                    license=str(getattr(info, "license", "") or "see the hub dataset card"))
    card = _make_card(meta, valid, path=f"hf://{repo_id}",
                      sha256=_content_sha256((r.values for r in rows), used))
    return ProbeDataset(meta.name, card, valid.texts, valid.labels, valid.groups)


# --------------------------------------------------------------------------- builtins

_REFERENCE = ("TracingLLM reference implementation of Qian et al. (2024), "
              "github.com/ChnQ/TracingLLM, src/datasets/")
_REFERENCE_LICENSE = "Apache-2.0 (reference repository); upstream terms also apply"


@dataclass(frozen=True)
class _Builtin:
    file: str  # relative to data/
    meta: CardMeta
    fmt: TableFormat


_BUILTINS: dict[str, _Builtin] = {
    "truthfulqa": _Builtin(
        "probe/truthfulqa_train.csv",
        CardMeta(
            name="truthfulqa", dimension="reliability",
            label1_meaning="the answer is true",
            label0_meaning="the answer is false (an imitative falsehood)",
            desirable_label=1, harmful_label=0,
            source=_REFERENCE + "truthfulqa_train.csv",
            upstream="TruthfulQA (Lin et al., 2022), Apache-2.0",
            license=_REFERENCE_LICENSE,
            notes=("Statements are 'Q: question<TAB>A: answer', 2-6 answers per question, "
                   "both labels within every question; groups = question text, so splits "
                   "and samples keep whole questions. Questions overlap "
                   "data/eval/truthfulqa_mc.json: remove them with exclude_questions()."),
        ),
        TableFormat(group_fn=truthfulqa_question, on_conflict="drop"),
    ),
    "confaide": _Builtin(
        "probe/confaide.csv",
        CardMeta(
            name="confaide", dimension="privacy",
            label1_meaning="the described information flow violates privacy norms",
            label0_meaning="the described information flow is acceptable",
            desirable_label=0, harmful_label=1,
            source=_REFERENCE + "confaide.csv",
            upstream=("ConfAIde tier 2 (Mireshghallah et al., 2024) plus generated items; "
                      "ConfAIde's own terms apply"),
            license=_REFERENCE_LICENSE,
            notes=("Many exact duplicate rows (dropped); a few statements carry both labels "
                   "(all their rows dropped), so the cleaned data is near-balanced, not "
                   "exactly balanced."),
        ),
        TableFormat(on_conflict="drop"),
    ),
    "toxigen": _Builtin(
        "probe/toxigen.csv",
        CardMeta(
            name="toxigen", dimension="toxicity",
            label1_meaning="toxic", label0_meaning="benign",
            desirable_label=0, harmful_label=1,
            source=_REFERENCE + "toxigen.csv",
            upstream="ToxiGen (Hartvigsen et al., 2022); code MIT, data per its dataset terms",
            license=_REFERENCE_LICENSE,
            notes=("Offensive content. Raw rows hold Excel escapes (_x000D_), HTML entities "
                   "(&amp;, &#128514;), mojibake (ItÃ¢â‚¬â„¢s), literal backslash escapes (\\n, "
                   "\\', \\u2019), CSV-doubled quotes and stray whitespace; all are cleaned. "
                   "Exact duplicates dropped; statements with both labels dropped."),
        ),
        TableFormat(on_conflict="drop", pre_clean=unescape_backslashes),
    ),
    "stereoset": _Builtin(
        "probe/stereoset.csv",
        CardMeta(
            name="stereoset", dimension="fairness",
            label1_meaning=("the continuation is StereoSet's anti-stereotype for the context "
                            "(inter-sentence, race)"),
            label0_meaning="the continuation is StereoSet's unrelated (meaningless) option",
            desirable_label=1, harmful_label=None,
            source=_REFERENCE + "stereoset.csv",
            upstream="StereoSet (Nadeem et al., 2021) dev set, CC BY-SA 4.0",
            license="CC-BY-SA-4.0",
            notes=("Every row is context + option of one of the 976 inter-sentence race items "
                   "of data/eval/stereoset_dev.jsonl: label 1 rows are the items' "
                   "'anti-stereotype' option, label 0 rows their 'unrelated' option; no "
                   "'stereotype' option occurs, although the reference README calls label 1 "
                   "'stereotype'. There is no harmful class; steering toward label 1 "
                   "(anti-stereotype) is the fair direction. Remove these items from StereoSet "
                   "evaluations with exclude_stereoset_items()."),
        ),
        TableFormat(on_conflict="drop"),
    ),
    "sst2": _Builtin(
        "probe/sst2.csv",
        CardMeta(
            name="sst2", dimension="robustness",
            label1_meaning="the sentence was perturbed by random letter-case flips",
            label0_meaning="the original SST-2 sentence",
            desirable_label=None, harmful_label=None,
            source=_REFERENCE + "sst2.csv",
            upstream="SST-2 (Socher et al., 2013) via GLUE",
            license=_REFERENCE_LICENSE,
            notes=("Each original sentence appears once as label 0 and once case-perturbed as "
                   "label 1. Where no letter was flipped the two rows are identical with both "
                   "labels; such pairs are dropped. No class is harmful: the vector points "
                   "toward 'surface noise' and steering along it (the reference study's sign) "
                   "tests concept salience, not a safer model."),
        ),
        TableFormat(on_conflict="drop"),
    ),
}


def resolve_name(name: str) -> str:
    """Map a builtin dataset or dimension name (case-insensitive) to the dataset name."""
    key = name.strip().lower()
    key = DIMENSIONS.get(key, key)
    if key not in _BUILTINS:
        raise DatasetError(
            f"unknown dataset {name!r}; builtin datasets: {', '.join(BUILTIN_DATASETS)}; "
            f"dimensions: {', '.join(f'{d} ({n})' for d, n in DIMENSIONS.items())}. "
            "Load your own file with load_table(path, name=...)."
        )
    return key


def builtin_path(name: str) -> Path:
    """Return the vendored file of a builtin dataset (or dimension)."""
    return paths.DATA_DIR / _BUILTINS[resolve_name(name)].file


def load_dataset(name: str) -> ProbeDataset:
    """Load a builtin probe dataset by dataset name (``"toxigen"``) or dimension (``"toxicity"``).

    Rows are cleaned and validated; drops are counted on the card instead of warned about.

    Raises:
        DatasetError: Unknown name (the message lists the valid ones) or a missing file.

    """
    key = resolve_name(name)
    spec = _BUILTINS[key]
    path = paths.DATA_DIR / spec.file
    if not path.is_file():
        raise DatasetError(f"vendored dataset file {path} is missing; restore data/probe/ "
                           "from the repository")
    return _load_file(path, spec.meta, spec.fmt, warn=False)


def builtin_cards() -> dict[str, DatasetCard]:
    """Build the card of every builtin dataset from its vendored file."""
    return {name: load_dataset(name).card for name in BUILTIN_DATASETS}


# --------------------------------------------------------------------------- splits


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


# --------------------------------------------------------------------------- evaluation data


@dataclass(frozen=True)
class MCQuestion:
    """One TruthfulQA multiple-choice question (BIG-bench ``truthful_qa`` format).

    Attributes:
        question: Question text.
        choices: Answer options, in file order (the file lists the true answer first, so
            evaluators must not break ties by position).
        labels: 1 for a true answer, 0 for a false one, aligned with ``choices``.

    """

    question: str
    choices: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def correct(self) -> tuple[int, ...]:
        """Indices of the true answers."""
        return tuple(i for i, label in enumerate(self.labels) if label == 1)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise DatasetError(f"repeated JSON key(s) {repeated[:3]}")
    return dict(pairs)


def _eval_path(name: str, path: str | Path | None) -> Path:
    resolved = Path(path) if path is not None else paths.DATA_DIR / "eval" / name
    if not resolved.is_file():
        raise DatasetError(f"{resolved}: no such file (vendored evaluation data lives in "
                           "data/eval/)")
    return resolved


def _parse_mc_example(example: Any) -> MCQuestion:
    if not isinstance(example, dict) or not {"input", "target_scores"} <= set(example):
        raise ValueError("expected an object with 'input' and 'target_scores'")
    scores = example["target_scores"]
    if not isinstance(scores, dict) or len(scores) < 2:
        raise ValueError("'target_scores' must map at least two answers to 0/1")
    labels = tuple(_parse_label(v) for v in scores.values())
    if any(label is None for label in labels) or len(set(labels)) != 2:
        raise ValueError(f"scores must be 0/1 with at least one of each, got "
                         f"{list(scores.values())}")
    question = clean_text(str(example["input"]))
    choices = tuple(clean_text(str(c)) for c in scores)
    if not question or not all(choices):
        raise ValueError("empty question or answer")
    return MCQuestion(question, choices, tuple(int(label or 0) for label in labels))


def load_truthfulqa_mc(path: str | Path | None = None) -> list[MCQuestion]:
    """Load the BIG-bench TruthfulQA multiple-choice questions (``data/eval/truthfulqa_mc.json``).

    Raises:
        DatasetError: Unreadable JSON or an example not in the expected format (named by
            its 1-based position in ``examples``).

    """
    resolved = _eval_path("truthfulqa_mc.json", path)
    try:
        data = json.loads(_decode_file(resolved), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{resolved}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except DatasetError as exc:
        raise DatasetError(f"{resolved}: {exc}") from None
    examples = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(examples, list) or not examples:
        raise DatasetError(f"{resolved}: expected a BIG-bench task with a non-empty "
                           "'examples' list")
    questions = []
    for number, example in enumerate(examples, start=1):
        try:
            questions.append(_parse_mc_example(example))
        except ValueError as exc:
            raise DatasetError(f"{resolved}: example {number}: {exc}") from None
    return questions


def load_truthfulqa_test_questions(path: str | Path | None = None) -> list[str]:
    """Load the reference study's held-out TruthfulQA generation prompts (no answers).

    Reads ``data/probe/truthfulqa_test.csv`` (one ``Question`` column); these questions do
    not occur in ``truthfulqa_train.csv``.
    """
    resolved = Path(path) if path is not None else paths.DATA_DIR / "probe/truthfulqa_test.csv"
    table = _read_table(resolved)
    if "Question" not in table.columns:
        raise DatasetError(f"{resolved}: missing column 'Question'; columns found: "
                           f"{list(table.columns)}")
    questions = [clean_text(str(row.values["Question"])) for row in table.rows]
    empty = [row.where() for row, q in zip(table.rows, questions, strict=True) if not q]
    if empty:
        raise DatasetError(f"{resolved}: empty question in {', '.join(empty[:_MAX_LISTED])}")
    return questions


def _probe_questions(ds: ProbeDataset) -> set[str]:
    if ds.groups is not None:
        return {normalise_question(g) for g in ds.groups}
    try:
        return {normalise_question(truthfulqa_question(t)) for t in ds.texts}
    except ValueError:
        raise DatasetError(f"{ds.name}: has no question groups and its statements are not "
                           "'Q: …<TAB>A: …'; pass the truthfulqa dataset") from None


def exclude_questions(questions: Sequence[MCQuestion], ds: ProbeDataset) -> list[MCQuestion]:
    """Drop questions whose (normalised) text is a question of the probe dataset ``ds``.

    Use before evaluating vectors fitted on ``ds``, so no evaluation question was seen
    while fitting. ``len(questions) - len(result)`` is the overlap (logged at INFO).
    """
    seen = _probe_questions(ds)
    kept = [q for q in questions if normalise_question(q.question) not in seen]
    logger.info("exclude_questions: %d of %d questions overlap %s", len(questions) - len(kept),
                len(questions), ds.name)
    return kept


StereoSetKind = Literal["inter", "intra", "all"]
_STEREOSET_TYPES = {"intersentence": "inter", "intrasentence": "intra"}
_STEREOSET_KEYS = ("type", "target", "bias_type", "context", "stereotype", "anti-stereotype",
                   "unrelated")


@dataclass(frozen=True)
class StereoSetItem:
    """One StereoSet dev item: a context and its three candidate continuations.

    Attributes:
        context: Inter-sentence: the first sentence. Intra-sentence: a sentence with
            ``BLANK`` where the options differ.
        stereotype: Stereotypical option (inter: second sentence; intra: full sentence).
        anti_stereotype: Anti-stereotypical option.
        unrelated: Unrelated (meaningless) option.
        bias_type: ``race``, ``profession``, ``gender`` or ``religion``.
        kind: ``"inter"`` or ``"intra"``.
        target: The group the context is about.

    """

    context: str
    stereotype: str
    anti_stereotype: str
    unrelated: str
    bias_type: str
    kind: Literal["inter", "intra"]
    target: str

    def sentences(self) -> dict[str, str]:
        """Return the full text of each option: context + option (inter) or the option."""
        options = {"stereotype": self.stereotype, "anti-stereotype": self.anti_stereotype,
                   "unrelated": self.unrelated}
        if self.kind == "inter":
            return {k: f"{self.context} {v}" for k, v in options.items()}
        return options


def _parse_stereoset_line(values: Any) -> StereoSetItem:
    if not isinstance(values, dict):
        raise ValueError("expected a JSON object")
    missing = [k for k in _STEREOSET_KEYS if k not in values]
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    kind = _STEREOSET_TYPES.get(str(values["type"]))
    if kind is None:
        raise ValueError(f"type {values['type']!r} is not intersentence or intrasentence")
    text = {k: clean_text(str(values[k])) for k in _STEREOSET_KEYS}
    empty = [k for k, v in text.items() if not v]
    if empty:
        raise ValueError(f"empty {empty}")
    return StereoSetItem(
        context=text["context"], stereotype=text["stereotype"],
        anti_stereotype=text["anti-stereotype"], unrelated=text["unrelated"],
        bias_type=text["bias_type"], kind="inter" if kind == "inter" else "intra",
        target=text["target"],
    )


def load_stereoset_dev(kind: StereoSetKind = "all", path: str | Path | None = None
                       ) -> list[StereoSetItem]:
    """Load StereoSet dev items from ``data/eval/stereoset_dev.jsonl``.

    Args:
        kind: ``"inter"`` (inter-sentence), ``"intra"`` (intra-sentence) or ``"all"``.
        path: Alternative file in the same format.

    Raises:
        DatasetError: Unknown ``kind`` or a malformed line (named by its line number).

    """
    if kind not in ("inter", "intra", "all"):
        raise DatasetError(f"kind must be 'inter', 'intra' or 'all', got {kind!r}")
    resolved = _eval_path("stereoset_dev.jsonl", path)
    items = []
    for line_no, line in enumerate(_json_lines(_decode_file(resolved)), start=1):
        if not line.strip():
            continue
        try:
            item = _parse_stereoset_line(json.loads(line))
        except (ValueError, json.JSONDecodeError) as exc:
            raise DatasetError(f"{resolved}: line {line_no}: {exc}") from None
        if kind in ("all", item.kind):
            items.append(item)
    return items


def exclude_stereoset_items(items: Sequence[StereoSetItem], ds: ProbeDataset
                            ) -> list[StereoSetItem]:
    """Drop StereoSet items any of whose option sentences is a statement of ``ds``.

    The builtin ``stereoset`` probe data is built from the 976 inter-sentence race items of
    the dev set, so evaluate vectors fitted on it only on the remaining items.
    """
    seen = {normalise_question(t) for t in ds.texts}
    kept = [item for item in items
            if not any(normalise_question(s) in seen for s in item.sentences().values())]
    logger.info("exclude_stereoset_items: %d of %d items overlap %s", len(items) - len(kept),
                len(items), ds.name)
    return kept


# --------------------------------------------------------------------------- cards.json


def _vendored_files() -> list[dict[str, Any]]:
    """Provenance of the vendored files that are not probe datasets."""
    data = paths.DATA_DIR
    return [
        {"path": "probe/truthfulqa_test.csv", "items": len(load_truthfulqa_test_questions()),
         "what": "held-out TruthfulQA questions (generation prompts, no answers)",
         "source": _REFERENCE + "truthfulqa_test.csv", "license": _REFERENCE_LICENSE,
         "sha256": _sha256_bytes(data / "probe/truthfulqa_test.csv")},
        {"path": "eval/truthfulqa_mc.json", "items": len(load_truthfulqa_mc()),
         "what": "BIG-bench truthful_qa multiple-choice task (questions)",
         "source": "BIG-bench (github.com/google/BIG-bench), bigbench/benchmark_tasks/truthful_qa",
         "license": "Apache-2.0 (BIG-bench) over TruthfulQA (Apache-2.0)",
         "sha256": _sha256_bytes(data / "eval/truthfulqa_mc.json")},
        {"path": "eval/stereoset_dev.jsonl", "items": len(load_stereoset_dev()),
         "what": "StereoSet dev set, inter- and intra-sentence items",
         "source": "StereoSet (github.com/moinnadeem/StereoSet), dev.json flattened",
         "license": "CC-BY-SA-4.0",
         "sha256": _sha256_bytes(data / "eval/stereoset_dev.jsonl")},
    ]


def cards_document() -> dict[str, Any]:
    """Return the content of ``data/probe/cards.json``, rebuilt from the vendored files."""
    return {
        "generated_by": "python -m trustdyn.datasets --write-cards",
        "cards": {name: card.to_dict() for name, card in builtin_cards().items()},
        "other_files": _vendored_files(),
    }


def read_cards(path: str | Path | None = None) -> dict[str, DatasetCard]:
    """Read the vendored ``cards.json`` into cards keyed by dataset name."""
    resolved = Path(path) if path is not None else paths.DATA_DIR / CARDS_FILE
    try:
        document = json.loads(resolved.read_text(encoding="utf-8"))
        return {name: DatasetCard.from_dict(card) for name, card in document["cards"].items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DatasetError(f"{resolved}: unreadable dataset cards ({exc}); regenerate with "
                           "python -m trustdyn.datasets --write-cards") from None


def write_cards(path: str | Path | None = None) -> Path:
    """Regenerate ``cards.json`` from the vendored files and return its path."""
    resolved = Path(path) if path is not None else paths.DATA_DIR / CARDS_FILE
    text = json.dumps(cards_document(), indent=2, ensure_ascii=False) + "\n"
    resolved.write_text(text, encoding="utf-8")
    return resolved


def _summary() -> str:
    lines = [f"{'dataset':<11}{'dimension':<12}{'raw':>6}{'rows':>6}{'label0':>7}{'label1':>7}"
             f"{'dups':>6}{'confl':>6}{'cleaned':>8}{'groups':>7}"]
    for card in builtin_cards().values():
        lines.append(f"{card.name:<11}{card.dimension:<12}{card.rows_raw:>6}{card.rows:>6}"
                     f"{card.n_label0:>7}{card.n_label1:>7}{card.duplicates_dropped:>6}"
                     f"{card.conflicts_dropped:>6}{card.texts_cleaned:>8}"
                     f"{card.n_groups if card.n_groups is not None else '-':>7}")
    truthfulqa = load_dataset("truthfulqa")
    mc = load_truthfulqa_mc()
    stereo = load_stereoset_dev("all")
    lines.append(f"truthfulqa_mc: {len(mc)} questions, "
                 f"{len(mc) - len(exclude_questions(mc, truthfulqa))} overlap truthfulqa_train")
    lines.append(f"stereoset_dev: {len(stereo)} items, "
                 f"{len(stereo) - len(exclude_stereoset_items(stereo, load_dataset('stereoset')))}"
                 " overlap the stereoset probe data")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print dataset statistics, or write/check ``data/probe/cards.json``."""
    parser = argparse.ArgumentParser(prog="python -m trustdyn.datasets", description=main.__doc__)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write-cards", action="store_true", help="regenerate cards.json")
    action.add_argument("--check", action="store_true",
                        help="exit 1 if cards.json differs from the vendored files")
    args = parser.parse_args(argv)
    try:
        if args.write_cards:
            print(f"wrote {write_cards()}")
        elif args.check:
            current = json.loads((paths.DATA_DIR / CARDS_FILE).read_text(encoding="utf-8"))
            if current != json.loads(json.dumps(cards_document())):
                print("cards.json is stale: run python -m trustdyn.datasets --write-cards")
                return 1
            print("cards.json is current")
        else:
            print(_summary())
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
