"""The study store: schema, atomic unit writes, version checks, merge, concurrent access."""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from trustdyn.schema import SCHEMA_VERSION, Unit
from trustdyn.store import Store, StoreError


def _checkpoints(suite: str = "s", n: int = 2) -> pd.DataFrame:
    return pd.DataFrame([
        {"suite": suite, "checkpoint": f"c{i}", "ordinal": i, "step": 10 * i, "tokens": 100 * i,
         "source": "/x", "revision": None, "weight_hash": None, "train_loss": 1.0,
         "heldout_loss": 1.0, "is_chat": False, "extra": {"i": i}}
        for i in range(n)
    ])


def _probe_rows(checkpoint: str, layers: int = 3, acc: float = 0.7) -> list[dict]:
    return [{"suite": "s", "checkpoint": checkpoint, "dataset": "d", "layer": layer,
             "accuracy": acc, "params": {"C": 1.0}} for layer in range(layers)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "study.duckdb", timeout_s=5)
    s.put_suite("s", description="test", chat_checkpoint=None, config={"seed": 0},
                checkpoints=_checkpoints())
    return s


def test_write_unit_and_read_back(store: Store) -> None:
    store.write_unit(Unit("s", "c1", "d", "probe"), {"probe_results": _probe_rows("c1")}, seconds=1)
    frame = store.probe_results("s")
    assert list(frame["layer"]) == [0, 1, 2]
    assert set(frame["step"]) == {10}
    assert store.finished_units("s") == {("s", "c1", "d", "probe")}


def test_rewriting_a_unit_replaces_rows(store: Store) -> None:
    unit = Unit("s", "c0", "d", "probe")
    store.write_unit(unit, {"probe_results": _probe_rows("c0", acc=0.6)}, seconds=1)
    store.write_unit(unit, {"probe_results": _probe_rows("c0", acc=0.8)}, seconds=1)
    frame = store.probe_results("s")
    assert len(frame) == 3 and (frame["accuracy"] == 0.8).all()
    assert store.table_counts()["units"] == 1


def test_writing_block_opens_the_file_once_and_keeps_each_unit_atomic(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    connect = duckdb.connect

    def counting_connect(path: str, **kwargs: object) -> duckdb.DuckDBPyConnection:
        opened.append(path)
        return connect(path, **kwargs)

    monkeypatch.setattr(duckdb, "connect", counting_connect)
    bad = [{"suite": "s", "checkpoint": "c1", "dataset": "d", "layer": "not a number"}]
    with pytest.raises(duckdb.Error), store.writing():
        store.update_checkpoint("s", "c0", weight_hash="abc")
        store.write_unit(Unit("s", "c0", "d", "probe"), {"probe_results": _probe_rows("c0")},
                         seconds=1)
        with store.writing():  # nested blocks reuse the same connection
            store.write_unit(Unit("s", "c1", "d", "probe"), {"probe_results": bad}, seconds=1)
    assert len(opened) == 1
    assert store.finished_units("s") == {("s", "c0", "d", "probe")}
    assert set(store.probe_results("s")["checkpoint"]) == {"c0"}
    assert store.checkpoints("s").set_index("checkpoint").loc["c0", "weight_hash"] == "abc"


def test_update_checkpoint_sets_the_given_columns_only(store: Store) -> None:
    store.update_checkpoint("s", "c1", weight_hash="h1", n_layers=4, hidden_size=128)
    store.update_checkpoint("s", "c1")  # nothing to set: nothing changes
    rows = store.checkpoints("s").set_index("checkpoint")
    assert (rows.loc["c1", "weight_hash"], rows.loc["c1", "n_layers"],
            rows.loc["c1", "hidden_size"]) == ("h1", 4, 128)
    assert pd.isna(rows.loc["c0", "weight_hash"]) and rows.loc["c1", "train_loss"] == 1.0
    with pytest.raises(ValueError, match="step"):
        store.update_checkpoint("s", "c1", step=3)


def test_failed_unit_leaves_nothing(store: Store) -> None:
    bad = [{"suite": "s", "checkpoint": "c0", "dataset": "d", "layer": "not a number"}]
    with pytest.raises(duckdb.Error):
        store.write_unit(Unit("s", "c0", "d", "probe"),
                         {"probe_results": _probe_rows("c0") + bad}, seconds=1)
    assert store.table_counts()["probe_results"] == 0
    assert store.finished_units("s") == set()


def test_unknown_table_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="cannot write"):
        store.write_unit(Unit("s", "c0", "d", "x"), {"checkpoints": []}, seconds=0)


def test_directions_round_trip(store: Store) -> None:
    direction = np.arange(5, dtype=np.float32) / 7
    store.write_unit(Unit("s", "c0", "d", "probe"), {"probe_directions": [
        {"suite": "s", "checkpoint": "c0", "dataset": "d", "layer": 1, "direction": direction}
    ]}, seconds=0)
    frame = store.probe_directions("s", "d", 1)
    np.testing.assert_array_equal(np.asarray(frame["direction"].iloc[0], np.float32), direction)


def test_missing_file_and_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="precompute run"):
        Store(tmp_path / "none.duckdb").suites()
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).execute("CREATE TABLE t (x INT)").close()
    with pytest.raises(StoreError, match="not a trustdyn study"):
        Store(foreign).suites()
    assert not Store(foreign).exists()


def test_other_schema_version_is_refused_and_untouched(store: Store) -> None:
    con = duckdb.connect(str(store.path))
    con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    con.close()
    before = store.path.read_bytes()
    with pytest.raises(StoreError, match="schema version"):
        store.write_unit(Unit("s", "c0", "d", "probe"), {"probe_results": _probe_rows("c0")},
                         seconds=0)
    with pytest.raises(StoreError, match="schema version"):
        store.suites()
    assert store.path.read_bytes() == before


def test_merge_deduplicates(store: Store, tmp_path: Path) -> None:
    other = Store(tmp_path / "other.duckdb")
    other.put_suite("s", description="test", chat_checkpoint=None, config={},
                    checkpoints=_checkpoints())
    store.write_unit(Unit("s", "c0", "d", "probe"), {"probe_results": _probe_rows("c0")}, seconds=0)
    other.write_unit(Unit("s", "c0", "d", "probe"), {"probe_results": _probe_rows("c0")}, seconds=0)
    other.write_unit(Unit("s", "c1", "d", "probe"), {"probe_results": _probe_rows("c1")}, seconds=0)
    merged = Store(tmp_path / "merged.duckdb")
    counts = merged.merge_from([store.path, other.path])
    assert counts["probe_results"] == 6
    assert counts["units"] == 2
    assert counts["checkpoints"] == 2


def test_query_values_are_parameters(store: Store) -> None:
    store.write_unit(Unit("s", "c0", "d", "probe"), {"probe_results": _probe_rows("c0")}, seconds=0)
    assert store.probe_results("s' OR '1'='1").empty
    assert len(store.probe_results("s", "d")) == 3


def _hold_writer(path: str, seconds: float, ready: mp.synchronize.Event) -> None:
    import time

    con = duckdb.connect(path)
    ready.set()
    time.sleep(seconds)
    con.close()


def test_reader_waits_for_a_short_writer(store: Store) -> None:
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=_hold_writer, args=(str(store.path), 1.0, ready))
    proc.start()
    try:
        assert ready.wait(30)
        assert len(store.suites()) == 1  # retried until the other process let go
    finally:
        proc.join()


def test_reads_leave_the_file_free_for_a_writer_in_another_process(store: Store) -> None:
    store.suites()  # this process's read database now exists and has attached the file
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=_hold_writer, args=(str(store.path), 0.0, ready))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 0  # it connected at once: no read kept the file locked


def test_reads_from_many_threads_beside_a_writer_in_the_same_process(store: Store) -> None:
    unit = Unit("s", "c0", "d", "probe")
    store.write_unit(unit, {"probe_results": _probe_rows("c0")}, seconds=0)

    def rewrite() -> None:  # one writer: a Store's writes are not for several threads
        for _ in range(5):
            store.write_unit(unit, {"probe_results": _probe_rows("c0")}, seconds=0)

    with ThreadPoolExecutor(4) as pool:
        writing = pool.submit(rewrite)
        sizes = set(pool.map(lambda _: len(store.probe_results("s")), range(40)))
        writing.result()
    assert sizes == {3}  # each read attached on its own, or waited for the writer


def test_reader_gives_a_clear_error_when_locked_too_long(store: Store) -> None:
    ready = mp.get_context("spawn").Event()
    proc = mp.get_context("spawn").Process(target=_hold_writer, args=(str(store.path), 3.0, ready))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StoreError, match="locked"):
            Store(store.path, timeout_s=0.5).suites()
    finally:
        proc.join()


def test_compare_command_tells_identical_from_different_studies(tmp_path, capsys):
    from trustdyn.testing.compare import main as compare
    from trustdyn.testing.synthetic import write_synthetic_study

    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_synthetic_study(tmp_path / f"{name}.duckdb", n_checkpoints=3, n_layers=2,
                              seed=seed)
    assert compare([str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")]) == 0
    assert "IDENTICAL" in capsys.readouterr().out
    assert compare([str(tmp_path / "a.duckdb"), str(tmp_path / "c.duckdb")]) == 1
    assert "DIFFERENT" in capsys.readouterr().out
