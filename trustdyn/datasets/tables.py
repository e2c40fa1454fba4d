"""Reading CSV/TSV/JSON/JSONL tables into numbered rows, with errors naming file, row and line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustdyn.datasets.errors import DatasetError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")


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


def _read_table(path: Path, kind: str | None = None) -> _Table:
    """Read ``path`` as the table type its suffix names, or as ``kind`` (``"csv"``...) if given."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    suffix = f".{kind}" if kind else path.suffix.lower()
    if suffix == ".csv":
        return _read_delimited(path, ",")
    if suffix == ".tsv":
        return _read_delimited(path, "\t")
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_json_rows(path, suffix)
    raise DatasetError(f"{path}: unsupported file type {suffix!r}; "
                       f"use one of {', '.join(TABLE_SUFFIXES)}")
