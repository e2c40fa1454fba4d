"""The study file: the one module that speaks SQL (DuckDB schema, writes, reads).

A study is one DuckDB file holding tidy tables: suites and checkpoints (with provenance and
weight hashes), datasets (with their cards), a table of finished units of work, and one
table per result kind (probe results, probe directions, information estimates, detected
turns, steering vectors, steering evaluations). Everything else in the project goes through
:class:`Store`; no other module writes SQL, and every query here takes its values as
parameters.

Concurrency: DuckDB lets one process hold a file for writing and excludes readers from
other processes while it does. So the pipeline (the only writer) holds the file only while
it writes one checkpoint's computed units (a transaction each), and readers (the dashboard)
open it read-only for one query at a time; both retry briefly on a lock conflict. A reader
therefore never blocks the writer for more than one query, and sees only whole units.
Reads attach the file to one in-memory DuckDB database kept for the life of the process,
because starting a database costs more than most dashboard queries, while attaching a file
costs a few milliseconds (see :func:`_read_cursor`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd

from trustdyn.provenance import code_version
from trustdyn.schema import RESULT_TABLES, SCHEMA_VERSION, TABLES, Unit

# Each shard registers every checkpoint but learns load-time facts (hash, sizes) only for
# its own, so a merge fills those columns from whichever shard knows them.
_MERGE_CONFLICT = {"checkpoints": ""}
_MERGE_UPDATE = {
    "checkpoints": " ON CONFLICT (suite, checkpoint) DO UPDATE SET "
    + ", ".join(f"{c} = coalesce(checkpoints.{c}, excluded.{c})"
                for c in ("weight_hash", "n_layers", "hidden_size")),
}


# The last two markers are the in-process forms of the same conflict (a reader and a writer
# of one file in two threads of one process).
_LOCK_MARKERS = ("Could not set lock", "Conflicting lock", "database is locked",
                 "different configuration than existing connections",
                 "Unique file handle conflict")

T = TypeVar("T")

_READ_DATABASE: dict[int, duckdb.DuckDBPyConnection] = {}
"""This process's in-memory database that reads attach study files to, by process id."""
_READ_DATABASE_LOCK = threading.Lock()
_ATTACH_NUMBERS = itertools.count()
"""Numbers the attachments: each read attaches under its own name, so reads in several
threads (Streamlit sessions) never share one."""


_PROBE_GRID_COLUMNS = (
    "checkpoint, dataset, layer, accuracy, accuracy_lo, accuracy_hi, accuracy_se, "
    "balanced_accuracy, balanced_accuracy_se, auroc, auroc_lo, auroc_hi, control_accuracy, "
    "control_auroc, usable_info_bits, n_test, n_test_groups"
)
_INFO_GRID_COLUMNS = (
    "r.checkpoint, r.dataset, r.layer, r.estimator, r.quantity, r.value, r.null_mean, "
    "r.null_std, r.corrected, r.z, r.se, r.corrected_lo, r.corrected_hi, r.status, r.reason, "
    "r.unit, r.n"
)


_COPY_OPTIONS = {"parquet": "FORMAT parquet", "csv": "FORMAT csv, HEADER"}
"""DuckDB ``COPY`` options of each export format (:meth:`Store.copy_tables`)."""


class StoreError(RuntimeError):
    """A user-facing problem with a study file (wrong schema version, not a study, ...)."""




def json_object(value: Any) -> dict[str, Any]:
    """Parse a JSON column value (``params``, ``config``, ``card``, ``extra``) into a dict.

    NULL, malformed JSON and non-objects give an empty dict.
    """
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _is_lock_error(exc: BaseException) -> bool:
    return any(marker in str(exc) for marker in _LOCK_MARKERS)


def _jsonify(value: Any) -> Any:
    """Return ``value`` as a JSON string when it is a dict/list, else unchanged."""
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def _frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    frame = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    for column in frame.columns:
        if column in ("params", "extra", "config", "card"):
            frame[column] = frame[column].map(_jsonify)
        elif column == "direction":
            frame[column] = frame[column].map(lambda v: np.asarray(v, dtype=np.float32).tolist())
    return frame


class Store:
    """A study file. Cheap to construct; every call opens (a read: attaches) and closes the file.

    Args:
        path: The DuckDB file. Created (with the schema) on the first write.
        timeout_s: How long a call waits for another process's lock before giving up.
    """

    def __init__(self, path: Path | str, *, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout_s = timeout_s
        self._held: duckdb.DuckDBPyConnection | None = None
        self._schema_checked = False

    # -- connections ---------------------------------------------------------------

    def _retry(self, open_file: Callable[[], T]) -> T:
        """Return ``open_file()``, retried while another connection holds the file's lock."""
        deadline = time.monotonic() + self.timeout_s
        delay = 0.01
        while True:
            try:
                return open_file()
            except duckdb.Error as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    if _is_lock_error(exc):
                        raise StoreError(
                            f"{self.path} stayed locked by another process for "
                            f"{self.timeout_s:.0f} s; is a second pipeline writing to it?"
                        ) from exc
                    raise StoreError(f"Cannot open study file {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    @contextlib.contextmanager
    def _writable(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file read-write for the block (its own database: writes are rare)."""
        con = self._retry(lambda: duckdb.connect(str(self.path)))
        try:
            yield con
        finally:
            con.close()

    @contextlib.contextmanager
    def _attached(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Attach the file read-only to the read database for the block, as its default.

        Detaching releases DuckDB's lock on the file, so a writer in another process waits
        for one read at most, exactly as with a connection of its own.
        """
        name = f"study_{next(_ATTACH_NUMBERS)}"
        cursor = _read_cursor()
        try:
            self._retry(lambda: cursor.execute(f"ATTACH ? AS {name} (READ_ONLY)",
                                               [str(self.path)]))
            try:
                cursor.execute(f"USE {name}")
                yield cursor
            finally:
                cursor.execute("USE memory")
                cursor.execute(f"DETACH {name}")
        finally:
            cursor.close()

    @contextlib.contextmanager
    def writer(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file for writing, creating or checking the schema first.

        Inside :meth:`writing`, the held connection is reused instead.
        """
        if self._held is not None:
            yield self._held
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Creating the schema costs a listing and a write per call; once this object has
        # done it, later calls only check the version (the file may have been replaced)
        # unless the file is gone.
        created = self._schema_checked and self.path.exists()
        with self._writable() as con:
            if created:
                self._check_version(con)
            else:
                self._ensure_schema(con)
                self._schema_checked = True
            yield con

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Hold one writer connection for the writes inside the block.

        Each write keeps its own transaction; only opening and closing the file (a
        checkpoint of DuckDB's log each time) is shared. Readers in other processes wait
        for the block, so hold it only around writes of results already computed. Not
        for use from several threads at once.
        """
        if self._held is not None:
            yield
            return
        with self.writer() as con:
            self._held = con
            try:
                yield
            finally:
                self._held = None

    @contextlib.contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file read-only (raises StoreError if it does not exist or is foreign)."""
        if not self.path.exists():
            raise StoreError(
                f"No study file at {self.path}. Build one with "
                "`python -m precompute run --suite builtin --preset default`."
            )
        with self._attached() as con:
            self._check_version(con)
            yield con

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection) -> None:
        listing = con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        tables = {row[0] for row in listing}
        if "meta" in tables:
            self._check_version(con)
        for name, columns in TABLES.items():
            if name not in tables:
                con.execute(f"CREATE TABLE {name} ({columns})")
        con.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('created_by', ?)",
            [str(SCHEMA_VERSION), code_version()],
        )

    def _check_version(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            rows = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
        except duckdb.CatalogException as exc:
            raise StoreError(
                f"{self.path} is a DuckDB file but not a trustdyn study (no meta table)."
            ) from exc
        found = int(rows[0][0]) if rows else None
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written with study schema version {found}; this trustdyn "
                f"reads version {SCHEMA_VERSION}. Rebuild it with `python -m precompute run` "
                "into a new file (the old file is left untouched)."
            )

    # -- writes ----------------------------------------------------------------------

    def put_suite(self, suite: str, *, description: str, chat_checkpoint: str | None,
                  config: Mapping[str, Any], checkpoints: pd.DataFrame) -> None:
        """Insert or replace a suite and its checkpoint rows (one transaction)."""
        frame = _frame(checkpoints)
        with self.writer() as con:
            con.execute("BEGIN")
            con.execute(
                "INSERT OR REPLACE INTO suites VALUES (?, ?, ?, ?, ?)",
                [suite, description, chat_checkpoint, _jsonify(dict(config)), _now()],
            )
            self._upsert(con, "checkpoints", frame)
            con.execute("COMMIT")

    def update_checkpoint(self, suite: str, checkpoint: str, **fields: Any) -> None:
        """Set a few columns of one checkpoint row (e.g. a weight hash found at load time)."""
        allowed = {"weight_hash", "n_layers", "hidden_size", "train_loss", "heldout_loss"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"Cannot update checkpoint columns {sorted(unknown)}")
        if not fields:
            return
        # One statement: each statement outside a transaction commits on its own.
        assignments = ", ".join(f"{column} = ?" for column in fields)
        with self.writer() as con:
            con.execute(f"UPDATE checkpoints SET {assignments} WHERE suite = ? AND checkpoint = ?",
                        [*fields.values(), suite, checkpoint])

    def put_datasets(self, cards: Sequence[Mapping[str, Any]]) -> None:
        """Insert or replace dataset rows from card dictionaries."""
        frame = pd.DataFrame(
            [
                {
                    "dataset": c["name"],
                    "dimension": c.get("dimension"),
                    "label1_meaning": c.get("label1_meaning"),
                    "desirable_label": c.get("desirable_label"),
                    "n_rows": c.get("rows"),
                    "sha256": c.get("sha256"),
                    "card": _jsonify(dict(c)),
                }
                for c in cards
            ]
        )
        with self.writer() as con:
            self._upsert(con, "datasets", frame)

    def write_unit(self, unit: Unit,
                   tables: Mapping[str, pd.DataFrame | Sequence[Mapping[str, Any]]],
                   *, seconds: float) -> None:
        """Write one unit's result rows and mark it finished, in one transaction.

        Rows already stored under the same keys are replaced, so rerunning a unit (for
        example after a schema-compatible code change) never duplicates rows.
        """
        self.write_units([unit], tables, seconds=seconds)

    def write_units(self, units: Sequence[Unit],
                    tables: Mapping[str, pd.DataFrame | Sequence[Mapping[str, Any]]],
                    *, seconds: float) -> None:
        """Write the rows of several units and mark them all finished, in one transaction.

        The bulk form of :meth:`write_unit` (a synthetic 360-checkpoint study has thousands
        of units); ``seconds`` is spread evenly over the units.
        """
        unknown = set(tables) - set(RESULT_TABLES)
        if unknown:
            raise ValueError(f"Units cannot write tables {sorted(unknown)}")
        frames = {name: _frame(rows) for name, rows in tables.items()}
        finished = pd.DataFrame([unit.key() for unit in units],
                                columns=["suite", "checkpoint", "dataset", "stage"])
        finished["finished_at"] = _now()
        finished["seconds"] = seconds / max(len(units), 1)
        finished["code_version"] = code_version()
        with self.writer() as con:
            con.execute("BEGIN")
            try:
                for name, frame in {**frames, "units": finished}.items():
                    if len(frame):
                        self._upsert(con, name, frame)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise

    @staticmethod
    def _upsert(con: duckdb.DuckDBPyConnection, table: str, frame: pd.DataFrame) -> None:
        con.register("_incoming", frame)
        try:
            con.execute(f"INSERT OR REPLACE INTO {table} BY NAME SELECT * FROM _incoming")
        finally:
            con.unregister("_incoming")

    def merge_from(self, shards: Sequence[Path]) -> dict[str, int]:
        """Combine shard files into this one; rows with an existing key are kept once.

        Returns:
            The number of rows each table holds after the merge.
        """
        with self.writer() as con:
            for i, shard in enumerate(shards):
                alias = f"shard{i}"
                Store(shard, timeout_s=self.timeout_s)._validate_file()
                con.execute(f"ATTACH ? AS {alias} (READ_ONLY)", [str(shard)])
                try:
                    con.execute("BEGIN")
                    for table in TABLES:
                        if table == "meta":
                            continue
                        con.execute(f"INSERT {_MERGE_CONFLICT.get(table, 'OR IGNORE')} INTO "
                                    f"{table} BY NAME SELECT * FROM {alias}.{table}"
                                    f"{_MERGE_UPDATE.get(table, '')}")
                    con.execute("COMMIT")
                finally:
                    con.execute(f"DETACH {alias}")
            return {
                table: int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                for table in TABLES
            }

    def _validate_file(self) -> None:
        with self.reader():
            pass

    # -- reads -----------------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Run a parameterised read-only query and return a DataFrame.

        Only this module's read helpers call it; it is public for tests and benchmarks.
        """
        with self.reader() as con:
            return con.execute(sql, list(params)).df()

    def exists(self) -> bool:
        """Return True if the file exists and is a study of this schema version."""
        if not self.path.exists():
            return False
        try:
            self._validate_file()
        except StoreError:
            return False
        return True

    def finished_units(self, suite: str) -> set[tuple[str, str, str, str]]:
        """Return the keys of all finished units of ``suite`` (empty if no file yet)."""
        if not self.path.exists():
            return set()
        frame = self.query(
            "SELECT suite, checkpoint, dataset, stage FROM units WHERE suite = ?", [suite]
        )
        return {(str(a), str(b), str(c), str(d))
                for a, b, c, d in frame.itertuples(index=False, name=None)}

    def suites(self) -> pd.DataFrame:
        """Return all suites with their number of checkpoints."""
        return self.query(
            "SELECT s.suite, s.description, s.chat_checkpoint, s.config, s.created_at, "
            "count(c.checkpoint) AS n_checkpoints "
            "FROM suites s LEFT JOIN checkpoints c USING (suite) "
            "GROUP BY ALL ORDER BY s.suite"
        )

    def checkpoints(self, suite: str) -> pd.DataFrame:
        """Return a suite's checkpoints in training order (chat model last)."""
        return self.query(
            "SELECT * FROM checkpoints WHERE suite = ? ORDER BY is_chat, ordinal", [suite]
        )

    def datasets(self) -> pd.DataFrame:
        """Return the dataset rows (with cards as JSON strings)."""
        return self.query("SELECT * FROM datasets ORDER BY dimension")

    def units(self, suite: str) -> pd.DataFrame:
        """Return a suite's finished units."""
        return self.query(
            "SELECT * FROM units WHERE suite = ? ORDER BY stage, checkpoint, dataset", [suite]
        )

    def datasets_with(self, suite: str, stage: str) -> list[str]:
        """Return the datasets with at least one finished ``stage`` unit, in dimension order."""
        units = self.units(suite)
        done = set(units.loc[units["stage"] == stage, "dataset"])
        order = list(self.datasets()["dataset"])
        return [d for d in order if d in done] + sorted(done - set(order))

    def probe_results(self, suite: str, dataset: str | None = None) -> pd.DataFrame:
        """Return probe metrics joined with checkpoint step/tokens, ordered by step, layer."""
        return self._with_steps("probe_results", suite, dataset)

    def info_results(self, suite: str, dataset: str | None = None) -> pd.DataFrame:
        """Return information estimates joined with checkpoint step/tokens."""
        return self._with_steps("info_results", suite, dataset)

    def _with_steps(self, table: str, suite: str, dataset: str | None,
                    columns: str = "r.*") -> pd.DataFrame:
        if table not in ("probe_results", "info_results"):
            raise ValueError(table)
        return self.query(
            f"SELECT {columns}, c.step, c.tokens, c.ordinal, c.is_chat FROM {table} r "
            "JOIN checkpoints c USING (suite, checkpoint) "
            "WHERE r.suite = ? AND (? IS NULL OR r.dataset = ?) "
            "ORDER BY c.is_chat, c.ordinal, r.dataset, r.layer",
            [suite, dataset, dataset],
        )

    def probe_grid(self, suite: str, dataset: str | None) -> pd.DataFrame:
        """Return one dataset's probe metrics (``None``: every dataset's), with positions.

        The dashboard's heatmap query (no JSON), ordered by checkpoint then layer: probe metric
        columns plus ``step``, ``tokens``, ``ordinal``, ``is_chat`` and
        ``accuracy_minus_control``.
        """
        frame = self._with_steps("probe_results", suite, dataset, _PROBE_GRID_COLUMNS)
        frame["accuracy_minus_control"] = frame["accuracy"] - frame["control_accuracy"]
        return frame

    def info_grid(self, suite: str, dataset: str) -> pd.DataFrame:
        """Return one dataset's information estimates, narrow, with checkpoint positions."""
        return self._with_steps("info_results", suite, dataset, _INFO_GRID_COLUMNS)

    def vector_directions(self, suite: str, dataset: str, layer: int) -> pd.DataFrame:
        """Return one layer's steering-vector directions across checkpoints, in order."""
        return self._layer_directions("steering_vectors", suite, dataset, layer)

    def steering_eval_table(self, suite: str) -> pd.DataFrame:
        """Return steering evaluation rows with the params fields the pages need as columns.

        ``higher_is_better`` (bool or None), ``role``, ``guard`` (the perplexity guard),
        ``guard_passed`` (the setting passed it on dev and, for a comparison with the
        random direction, on test), ``of`` (the metric a ``gain`` row is computed on),
        ``p_value`` (one-sided, of a gain over the random direction) and ``scaling`` are
        read from the JSON params.
        """
        frame = self.query(
            "SELECT target, vector_source, dataset, metric, split, layer, alpha, "
            "steer_direction, value, ci_lo, ci_hi, n, mde, applied_norm, norm_ratio, "
            "status, reason, "
            "TRY_CAST(params->>'p_value' AS DOUBLE) AS p_value, "
            "params->>'scaling' AS scaling, "
            "TRY_CAST(params->>'higher_is_better' AS BOOLEAN) AS higher_is_better, "
            "params->>'role' AS role, "
            "TRY_CAST(coalesce(params->>'guard', params->'selection'->>'guard') AS DOUBLE) "
            "AS guard, "
            "TRY_CAST(coalesce(params->>'guard_passed', params->'selection'->>'guard_passed') "
            "AS BOOLEAN) AS guard_passed, "
            "params->>'of' AS of "
            "FROM steering_evals WHERE suite = ? "
            "ORDER BY target, dataset, metric, split, vector_source, layer, alpha",
            [suite],
        )
        frame["higher_is_better"] = frame["higher_is_better"].astype(object).where(
            frame["higher_is_better"].notna(), None)
        return frame

    def steering_guard_rows(self, suite: str, target: str, dataset: str) -> pd.DataFrame:
        """Return what the steering evaluation of one (chat model, dataset) says of its guard.

        Every dev ``ppl_ratio`` row (each strength a source's ladder tried, per layer and
        sign) and every source's test ``gain`` row (the setting chosen on dev, or
        ``status = "no admissible setting"`` with the reason), ordered by source, metric,
        layer and strength. Besides ``vector_source``, ``metric``, ``layer``, ``alpha``,
        ``applied_norm``, ``value``, ``status``, ``reason`` and ``seed``, the params fields
        ``guard`` (the perplexity guard), ``scaling`` (the unit of ``alpha``) and
        ``positions`` (where the vector was added) are columns.
        """
        return self.query(
            "SELECT vector_source, metric, layer, alpha, applied_norm, value, status, reason, "
            "seed, "
            "TRY_CAST(coalesce(params->>'guard', params->'selection'->>'guard') AS DOUBLE) "
            "AS guard, "
            "params->>'scaling' AS scaling, params->>'positions' AS positions "
            "FROM steering_evals WHERE suite = ? AND target = ? AND dataset = ? "
            "AND ((metric = 'ppl_ratio' AND split = 'dev') "
            "OR (metric = 'gain' AND split = 'test')) "
            "ORDER BY vector_source, metric, layer, abs(alpha)",
            [suite, target, dataset],
        )

    def chat_checkpoints(self) -> pd.DataFrame:
        """Return ``suite``, ``checkpoint``, ``source`` of every suite's chat model."""
        return self.query(
            "SELECT suite, checkpoint, source FROM checkpoints WHERE is_chat ORDER BY suite")

    def vector_inventory(self) -> pd.DataFrame:
        """Return one row per (suite, checkpoint) with stored steering vectors.

        Columns: ``suite``, ``checkpoint``, ``hidden_size``, ``n_layers``, ``datasets``
        (list), ``step``, ``is_chat``, ``ordinal``.
        """
        return self.query(
            "SELECT v.suite, v.checkpoint, max(v.hidden_size) AS hidden_size, "
            "count(DISTINCT v.layer) AS n_layers, "
            "list(DISTINCT v.dataset ORDER BY v.dataset) AS datasets, "
            "any_value(c.step) AS step, bool_or(c.is_chat) AS is_chat, "
            "any_value(c.ordinal) AS ordinal "
            "FROM steering_vectors v LEFT JOIN checkpoints c USING (suite, checkpoint) "
            "GROUP BY v.suite, v.checkpoint ORDER BY v.suite, is_chat, ordinal"
        )

    def info_turns(self, suite: str) -> pd.DataFrame:
        """Return the detected fitting → compression turns of a suite."""
        return self.query(
            "SELECT * FROM info_turns WHERE suite = ? ORDER BY dataset, estimator, layer", [suite]
        )

    def probe_directions(self, suite: str, dataset: str, layer: int) -> pd.DataFrame:
        """Return probe directions of one (dataset, layer) across checkpoints, in order."""
        return self._layer_directions("probe_directions", suite, dataset, layer)

    def _layer_directions(self, table: str, suite: str, dataset: str, layer: int
                          ) -> pd.DataFrame:
        """Return ``checkpoint``, ``step``, ``is_chat``, ``direction`` of one layer."""
        if table not in ("probe_directions", "steering_vectors"):
            raise ValueError(table)
        return self.query(
            f"SELECT d.checkpoint, c.step, c.is_chat, d.direction FROM {table} d "
            "JOIN checkpoints c USING (suite, checkpoint) "
            "WHERE d.suite = ? AND d.dataset = ? AND d.layer = ? ORDER BY c.is_chat, c.ordinal",
            [suite, dataset, layer],
        )

    def steering_vectors(self, suite: str, dataset: str | None = None,
                         *, with_direction: bool = False) -> pd.DataFrame:
        """Return steering-vector rows (directions only when asked: they are wide)."""
        columns = "v.*" if with_direction else "v.* EXCLUDE (direction)"
        return self.query(
            f"SELECT {columns}, c.step, c.is_chat FROM steering_vectors v "
            "LEFT JOIN checkpoints c USING (suite, checkpoint) "
            "WHERE v.suite = ? AND (? IS NULL OR v.dataset = ?) "
            "ORDER BY c.is_chat, c.ordinal, v.layer",
            [suite, dataset, dataset],
        )

    def steering_vector(self, suite: str, checkpoint: str, dataset: str, layer: int
                        ) -> dict[str, Any] | None:
        """Return one stored steering vector as a dict (direction as a float32 array)."""
        frame = self.query(
            "SELECT * FROM steering_vectors WHERE suite = ? AND checkpoint = ? "
            "AND dataset = ? AND layer = ?",
            [suite, checkpoint, dataset, layer],
        )
        if frame.empty:
            return None
        row: dict[str, Any] = {str(k): v for k, v in frame.iloc[0].to_dict().items()}
        row["direction"] = np.asarray(row["direction"], dtype=np.float32)
        return row

    def steering_evals(self, suite: str) -> pd.DataFrame:
        """Return all steering evaluation rows of a suite."""
        return self.query(
            "SELECT * FROM steering_evals WHERE suite = ? "
            "ORDER BY target, dataset, metric, split, vector_source, layer, alpha",
            [suite],
        )

    def table_counts(self) -> dict[str, int]:
        """Return the number of rows of every table."""
        with self.reader() as con:
            return {
                table: int(con.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                for table in TABLES
            }

    def table_columns(self) -> dict[str, list[tuple[str, str]]]:
        """Return every table's ``(column, DuckDB type)`` pairs as the file declares them."""
        frame = self.query(
            # Other threads' attachments of the same file are listed too: keep this one's.
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() ORDER BY table_name, ordinal_position")
        return {table: [(str(c), str(t)) for c, t in
                        frame.loc[frame["table_name"] == table, ["column_name", "data_type"]]
                        .itertuples(index=False, name=None)]
                for table in TABLES}

    def copy_tables(self, files: Mapping[str, Path], file_format: str) -> dict[str, int]:
        """Write each named table to its file with DuckDB's ``COPY``; return the row counts.

        Args:
            files: Table name → file to write (rows sorted by every column, keys first).
            file_format: ``"parquet"`` or ``"csv"`` (with a header; NULL is an empty field).

        Raises:
            ValueError: for an unknown table or format (before anything is written).

        """
        unknown = sorted(set(files) - set(TABLES))
        if unknown or file_format not in _COPY_OPTIONS:
            raise ValueError(f"Cannot copy tables {unknown} as {file_format!r}; tables are "
                             f"{list(TABLES)}, formats {list(_COPY_OPTIONS)}.")
        with self.reader() as con:
            # COPY takes no parameter for its target, so the path is quoted as a literal.
            return {table: int(con.execute(
                f"COPY (SELECT * FROM {table} ORDER BY ALL) TO "
                f"'{str(path).replace(chr(39), chr(39) * 2)}' ({_COPY_OPTIONS[file_format]})"
            ).fetchone()[0])  # type: ignore[index]
                for table, path in files.items()}


def _read_cursor() -> duckdb.DuckDBPyConnection:
    """Return a new cursor on this process's in-memory read database (made on first use).

    Starting a DuckDB database (``duckdb.connect``) takes 20-40 ms, most of a dashboard
    read; a cursor on a running one takes microseconds. Keyed by process id because a
    forked child must not share its parent's database.
    """
    with _READ_DATABASE_LOCK:
        database = _READ_DATABASE.get(os.getpid())
        if database is None:
            database = _READ_DATABASE[os.getpid()] = duckdb.connect(":memory:")
        return database.cursor()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
