"""Results out: every table of a study file as Parquet or CSV files plus a manifest.

:func:`export_tables` checks everything first (the study file, the tables asked for, the
output folder), then has :meth:`trustdyn.store.Store.copy_tables` write one file per table
into a temporary folder next to the output and moves the files into place only when all
of them were written, so a failed export leaves the output folder as it was. The manifest
(``manifest.json``) records the study's schema version and, per table, its file, row count
and ``(column, type)`` pairs; :func:`read_table` uses it to read a table back into pandas
with the types the study file has (lists of floats, timestamps, booleans), whichever the
format. Column meanings are documented in the README's "Exported tables" section.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trustdyn.provenance import code_version
from trustdyn.schema import SCHEMA_VERSION, TABLES
from trustdyn.store import Store, StoreError

FORMATS: tuple[str, ...] = ("parquet", "csv")
"""File formats :func:`export_tables` writes."""

MANIFEST = "manifest.json"
"""Name of the manifest written next to the table files."""

_MANIFEST_FORMAT = "trustdyn.tables"


class ExportError(ValueError):
    """A user-facing problem with an export request (study file, table, folder, format)."""


@dataclass(frozen=True)
class TableExport:
    """What :func:`export_tables` wrote.

    Attributes:
        folder: The output folder.
        manifest: The manifest file.
        rows: Row count per table, in the order written.

    """

    folder: Path
    manifest: Path
    rows: dict[str, int]


def check_request(db: Path, out: Path, file_format: str, tables: Sequence[str] | None,
                  *, force: bool) -> tuple[Store, list[str]]:
    """Check an export request before anything is written; return the store and tables.

    Raises:
        ExportError: naming the problem and the fix: unknown format or table, a missing or
            foreign study file, an output path that is a file, or a non-empty output
            folder without ``force``.

    """
    if file_format not in FORMATS:
        raise ExportError(f"Unknown format {file_format!r}; use one of {', '.join(FORMATS)}.")
    chosen = list(TABLES) if not tables else list(dict.fromkeys(tables))
    unknown = [t for t in chosen if t not in TABLES]
    if unknown:
        raise ExportError(f"Unknown table(s) {', '.join(unknown)}; a study file has "
                          f"{', '.join(TABLES)}.")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} is a file; name a folder for the exported tables.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out} is not empty; name a new folder, or pass --force to "
                          "replace the table files and manifest in it.")
    store = Store(db)
    try:
        with store.reader():
            pass
    except StoreError as exc:
        raise ExportError(str(exc)) from exc
    return store, chosen


def export_tables(db: Path, out: Path, file_format: str = "parquet",
                  tables: Sequence[str] | None = None, *, force: bool = False) -> TableExport:
    """Write tables of the study file ``db`` into ``out``, one file per table, and a manifest.

    Args:
        db: The study file.
        out: Output folder (created; must be empty unless ``force``).
        file_format: ``"parquet"`` or ``"csv"``.
        tables: Tables to write (default: every table of :data:`trustdyn.schema.TABLES`).
        force: Replace same-named files in a non-empty folder (other files are kept).

    Raises:
        ExportError: see :func:`check_request`; nothing is written then.

    """
    store, chosen = check_request(db, out, file_format, tables, force=force)
    columns = store.table_columns()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        files = {table: staging / f"{table}.{file_format}" for table in chosen}
        rows = store.copy_tables(files, file_format)
        manifest = {
            "format": _MANIFEST_FORMAT, "schema_version": SCHEMA_VERSION,
            "file_format": file_format, "study": str(db), "code_version": code_version(),
            "tables": {table: {"file": files[table].name, "rows": rows[table],
                               "columns": [{"name": name, "type": kind}
                                           for name, kind in columns[table]]}
                       for table in chosen},
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        out.mkdir(exist_ok=True)
        for path in staging.iterdir():
            path.replace(out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return TableExport(out, out / MANIFEST, rows)


_TEXT_TYPES = ("VARCHAR", "JSON")
"""DuckDB types read from CSV as text (so ``"1"`` stays a string)."""


def _float_lists(column: pd.Series) -> pd.Series:
    """Parse DuckDB's ``[a, b, ...]`` text (a JSON array) into float32 arrays."""
    return column.map(lambda v: np.asarray(json.loads(v), dtype=np.float32)
                      if isinstance(v, str) else None)


def _booleans(column: pd.Series) -> pd.Series:
    return column.map({True: True, False: False, "true": True, "false": False})


def _timestamps(column: pd.Series) -> pd.Series:
    return pd.to_datetime(column)


_CSV_PARSERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "FLOAT[]": _float_lists, "BOOLEAN": _booleans, "TIMESTAMP": _timestamps}
"""How a CSV column of each DuckDB type becomes the pandas column the store reads (other
types: as pandas reads them)."""


def read_manifest(folder: Path) -> dict[str, Any]:
    """Return an export folder's manifest.

    Raises:
        ExportError: when the folder has no trustdyn manifest.

    """
    path = folder / MANIFEST
    if not path.is_file():
        raise ExportError(f"{folder} has no {MANIFEST}; export tables with `trustdyn export`.")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != _MANIFEST_FORMAT:
        raise ExportError(f"{path} is not a trustdyn table manifest.")
    return manifest


def read_table(folder: Path, table: str) -> pd.DataFrame:
    """Read one exported table back with the study file's types, Parquet or CSV alike.

    Raises:
        ExportError: when the folder has no manifest or the table was not exported.

    """
    manifest = read_manifest(folder)
    entry = manifest["tables"].get(table)
    if entry is None:
        raise ExportError(f"{folder} holds no {table!r} table; it has "
                          f"{', '.join(manifest['tables'])}.")
    path = folder / entry["file"]
    if manifest["file_format"] == "parquet":
        return pd.read_parquet(path)
    kinds = {c["name"]: c["type"] for c in entry["columns"]}
    frame = pd.read_csv(path, dtype={n: str for n, k in kinds.items() if k in _TEXT_TYPES},
                        keep_default_na=False, na_values={n: [""] for n in kinds})
    for name, kind in kinds.items():
        if kind in _CSV_PARSERS:
            frame[name] = _CSV_PARSERS[kind](frame[name])
    return frame
