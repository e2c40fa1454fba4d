"""End-to-end pipeline tests on the `smoke` built-in suite: completeness, resume, shards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from precompute.pipeline import Shard, merge_studies, missing_units, run_study
from precompute.study import study_config
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.suites import Suite

pytestmark = pytest.mark.integration

# Columns that legitimately differ between two runs of the same study.
_VOLATILE = {"finished_at", "seconds", "created_at", "code_version"}
# Union of the tables' primary-key columns: sorting by them gives a canonical row order.
_KEY_COLUMNS = ("key", "suite", "checkpoint", "dataset", "stage", "layer", "estimator",
                "quantity", "target", "vector_source", "metric", "split", "alpha")


def _contents(store: Store) -> dict[str, pd.DataFrame]:
    """Every table's rows, sorted and without run-specific columns, for comparison."""
    out = {}
    for table in store.table_counts():
        if table == "meta":
            continue
        frame = store.query(f"SELECT * FROM {table}")
        frame = frame.drop(columns=[c for c in frame.columns if c in _VOLATILE])
        # Directions are compared to 4 decimals: float32 sums may differ in the last bit
        # between processes; every scalar column is compared at pandas' rtol of 1e-5.
        frame = frame.map(lambda v: tuple(np.round(np.asarray(v, dtype=float), 4))
                          if hasattr(v, "__len__") and not isinstance(v, str) else v)
        key = [c for c in _KEY_COLUMNS if c in frame.columns]
        out[table] = frame.sort_values(key).reset_index(drop=True)
    return out


def _assert_same(a: Store, b: Store) -> None:
    left, right = _contents(a), _contents(b)
    assert left.keys() == right.keys()
    for table in left:
        pd.testing.assert_frame_equal(left[table], right[table], obj=table, check_dtype=False)


@pytest.fixture(scope="module")
def config():
    return study_config("smoke")


@pytest.fixture(scope="module")
def reference(smoke_suite: Suite, config, tmp_path_factory) -> Store:
    """An uninterrupted smoke study."""
    store = Store(tmp_path_factory.mktemp("ref") / "study.duckdb")
    report = run_study(smoke_suite, store, config, progress=False)
    assert not report.failures
    return store


def test_study_is_complete(reference: Store, smoke_suite: Suite, config) -> None:
    assert missing_units(smoke_suite, reference, config) == []
    n_refs = len(smoke_suite.all_refs())
    n_layers = int(reference.checkpoints(smoke_suite.name)["n_layers"].iloc[0])
    probes = reference.probe_results(smoke_suite.name)
    assert len(probes) == n_refs * n_layers * len(config.datasets)
    assert probes[["accuracy", "auroc", "control_accuracy"]].notna().all().all()
    assert ((probes["accuracy_lo"] <= probes["accuracy"])
            & (probes["accuracy"] <= probes["accuracy_hi"])).all()
    vectors = reference.steering_vectors(smoke_suite.name)
    assert len(vectors) == n_refs * n_layers * len(config.datasets)
    info = reference.info_results(smoke_suite.name)
    assert set(info["quantity"]) == {"I(X;T)", "I(T;Y)"}
    assert len(reference.info_turns(smoke_suite.name)) > 0
    hashes = reference.checkpoints(smoke_suite.name)["weight_hash"]
    assert hashes.notna().all()


def test_rerun_writes_nothing(reference: Store, smoke_suite: Suite, config) -> None:
    before = reference.table_counts()
    report = run_study(smoke_suite, reference, config, progress=False)
    assert report.written == 0
    assert reference.table_counts() == before


def test_shards_merge_to_the_same_study(reference: Store, smoke_suite: Suite, config,
                                        tmp_path: Path) -> None:
    shards = []
    for i in range(2):
        shard = Store(tmp_path / f"shard{i}.duckdb")
        run_study(smoke_suite, shard, config, shard=Shard(i, 2), progress=False)
        shards.append(shard.path)
    merged = Store(tmp_path / "merged.duckdb")
    merge_studies(merged.path, shards)
    merge_studies(merged.path, shards)  # merging twice adds nothing
    # Suite-level stages run after the merge, as documented.
    run_study(smoke_suite, merged, config, progress=False)
    _assert_same(reference, merged)


@pytest.mark.parametrize("kill_after_units", [3, 11])
def test_killed_run_resumes_to_identical_study(reference: Store, smoke_suite: Suite,
                                               smoke_root: Path, tmp_path: Path,
                                               kill_after_units: int) -> None:
    db = tmp_path / "killed.duckdb"
    cmd = [sys.executable, "-m", "precompute", "run", "--suite", "builtin", "--preset", "smoke",
           "--db", str(db), "--quiet"]
    env = {**os.environ, "TRUSTDYN_HOME": str(smoke_root.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    store = Store(db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        done = len(store.finished_units(smoke_suite.name)) if store.exists() else 0
        if done >= kill_after_units:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = store.table_counts()["units"]
    assert partial > 0
    rerun = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _assert_same(reference, store)


def test_reader_is_not_blocked_while_pipeline_writes(smoke_suite: Suite, config,
                                                     tmp_path: Path) -> None:
    store = Store(tmp_path / "live.duckdb", timeout_s=30)
    errors: list[BaseException] = []
    reads = 0
    stop = threading.Event()

    def read_loop() -> None:
        nonlocal reads
        reader = Store(store.path, timeout_s=30)
        while not stop.is_set():
            try:
                if reader.exists():
                    reader.probe_results(smoke_suite.name)
                    reads += 1
            except BaseException as exc:  # the test reports any failure
                errors.append(exc)
            time.sleep(0.01)

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        run_study(smoke_suite, store, config, progress=False)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert reads > 0
    assert missing_units(smoke_suite, store, config) == []
