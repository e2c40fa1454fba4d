"""Benchmark: dashboard read and figure times on a large SYNTHETIC study, and app start-up.

Writes (or reuses, with ``--db``) a synthetic study of 360 checkpoints × 32 layers × 5
datasets — the size of an LLM360 Amber study at every checkpoint — and times, median of
``--repeats`` runs each:

* the heatmap's first view: the pages' cached read of ``Store.probe_grid`` on a cache miss
  (file stamp, attaching the file, the query, the cache's copy), against the same with a
  new DuckDB database per read (the baseline: how every read worked before the store kept
  one in-memory database per process to attach files to). Goal: under 50 ms in every run;
  the benchmark exits with status 1 when the median misses it;
* ``store.reader()`` — attaching and detaching the file (every store read pays it), and
  starting a DuckDB database (what it cost before);
* the same read on a repeat view (cache hit);
* ``figures.probe_heatmap`` — building the heatmap figure from that frame, and
  ``figure.to_json`` — serialising it (what Streamlit sends to the browser);
* info-plane and steering-table reads, for scale.

and the app's start-up in a fresh interpreter: the first ``AppTest`` run of ``app.py``
(imports, first queries) against the second (warm caches). Ratios are printed against
the baseline measured in the same run. Wall-clock times; on a shared machine use more
``--repeats``.

    python -m bench.bench_dashboard --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb

from trustdyn import store as store_module
from trustdyn.dashboard import figures, study, tables
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store
from trustdyn.testing.synthetic import write_synthetic_study

SUITE = "synthetic"
DATASET = "truthfulqa"


def environment() -> dict[str, Any]:
    """Return what the numbers depend on: machine, load and library versions."""
    import plotly
    import streamlit

    return {
        "python": platform.python_version(), "machine": platform.machine(),
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "duckdb": duckdb.__version__, "plotly": plotly.__version__,
        "streamlit": streamlit.__version__,
    }


def median_ms(func: Callable[[], Any], repeats: int) -> float:
    """Return the median wall time of ``func()`` in milliseconds (one warm-up call first)."""
    func()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def ensure_study(path: Path, checkpoints: int, layers: int) -> tuple[Store, float | None]:
    """Return the study at ``path``, writing it first if needed (and how long that took)."""
    store = Store(path)
    if store.exists() and SUITE in set(store.suites()["suite"]):
        return store, None
    start = time.perf_counter()
    write_synthetic_study(path, n_checkpoints=checkpoints, n_layers=layers, hidden_size=64)
    return store, time.perf_counter() - start


BUDGET_MS = 50.0
"""The heatmap's first view must take less than this (median of the repeats, every run)."""
FIRST_VIEW = "heatmap first view (pages' read, cache miss)"
BASELINE = "same, a new DuckDB database per read (before)"


def _open_reader(store: Store) -> None:
    with store.reader():
        pass


def _pages_common(path: Path) -> ModuleType:
    """Return the pages' ``_common`` module reading ``path`` (``st.cache_data`` in bare mode)."""
    import logging

    os.environ[study.STUDY_ENV] = str(path)
    # Outside a server Streamlit warns on every cached call; the timing is what matters.
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    from pages import _common

    return _common


def _first_view(common: ModuleType) -> Any:
    """Read the heatmap's frame as a page does when nothing is cached yet."""
    common._cached.clear()
    return common.read(Store.probe_grid, SUITE, DATASET)


def _fresh_database() -> duckdb.DuckDBPyConnection:
    """Stand in for the store's shared read database with a new one (the old per-read cost)."""
    return duckdb.connect(":memory:")


def time_first_view(path: Path, repeats: int) -> dict[str, float]:
    """Time the heatmap's first view now and with a new database per read, in one run."""
    common = _pages_common(path)
    now = median_ms(lambda: _first_view(common), repeats)
    shared = store_module._read_cursor
    store_module._read_cursor = _fresh_database
    try:
        before = median_ms(lambda: _first_view(common), repeats)
    finally:
        store_module._read_cursor = shared
    return {FIRST_VIEW: now, BASELINE: before,
            "same, repeat view (cache hit)": median_ms(
                lambda: common.read(Store.probe_grid, SUITE, DATASET), repeats)}


def time_reads(store: Store, repeats: int) -> dict[str, float]:
    """Time the heatmap path (reads, figure, serialisation) and other page reads."""
    grid = store.probe_grid(SUITE, DATASET)
    figure = figures.probe_heatmap(grid)
    info = store.info_grid(SUITE, DATASET)
    evals = store.steering_eval_table(SUITE)
    ckpts = store.checkpoints(SUITE)
    return {
        **time_first_view(store.path, repeats),
        "store.reader(): attach + detach": median_ms(lambda: _open_reader(store), repeats),
        "a new DuckDB database: start + close": median_ms(
            lambda: _fresh_database().close(), repeats),
        "Store.probe_grid (the query alone)": median_ms(
            lambda: store.probe_grid(SUITE, DATASET), repeats),
        "figures.probe_heatmap": median_ms(lambda: figures.probe_heatmap(grid), repeats),
        "figure.to_json": median_ms(figure.to_json, repeats),
        "Store.info_grid": median_ms(
            lambda: store.info_grid(SUITE, DATASET), repeats),
        "tables.info_plane": median_ms(
            lambda: tables.info_plane(info, grid, "renyi"), repeats),
        "Store.steering_eval_table": median_ms(
            lambda: store.steering_eval_table(SUITE), repeats),
        "tables.steering_table": median_ms(
            lambda: tables.steering_table(evals, ckpts, "chat", DATASET), repeats),
    }


_STARTUP_SCRIPT = """
import json, sys, time
start = time.perf_counter()
from streamlit.testing.v1 import AppTest
imported = time.perf_counter()
app = AppTest.from_file(sys.argv[1], default_timeout=600)
app.run()
first = time.perf_counter()
assert not app.exception, app.exception[0].value
app.run()
second = time.perf_counter()
app.switch_page("pages/probes.py").run()
probes = time.perf_counter()
print(json.dumps({"import streamlit.testing": imported - start,
                  "app first run (cold process)": first - imported,
                  "app rerun (warm, baseline)": second - first,
                  "probes page first view": probes - second}))
"""


def time_startup(path: Path) -> dict[str, float]:
    """Time the app's first AppTest run in a fresh process, and a warm rerun, in ms.

    A fresh interpreter, so the first run pays every import (plotly, pandas, DuckDB, the
    pages) as a newly started server does.
    """
    env = {**os.environ, study.STUDY_ENV: str(path)}
    result = subprocess.run([sys.executable, "-c", _STARTUP_SCRIPT, str(REPO_ROOT / "app.py")],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT,
                            check=True)
    seconds = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: value * 1000 for name, value in seconds.items()}


def main() -> None:
    """Run the benchmark and print a table with ratios to each section's baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=None,
                        help="study file to reuse (written there if missing)")
    parser.add_argument("--checkpoints", type=int, default=360)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-startup", action="store_true", help="skip the AppTest timing")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    env = environment()
    print("environment: " + ", ".join(f"{k}={v}" for k, v in env.items()))
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.duckdb"
        store, written = ensure_study(path, args.checkpoints, args.layers)
        counts = store.table_counts()
        print(f"study: {args.checkpoints} checkpoints × {args.layers} layers × 5 datasets, "
              f"{counts['probe_results']:,} probe rows, {counts['info_results']:,} info rows"
              + (f"; written in {written:.1f} s" if written is not None else " (reused)"))
        reads = time_reads(store, args.repeats)
        startup = {} if args.no_startup else time_startup(path)
    base = reads[BASELINE]
    print(f"\n{'read / build':48s} {'median ms':>10s} {'× baseline':>11s}")
    for name, value in reads.items():
        print(f"{name:48s} {value:10.1f} {value / base:11.2f}")
    first = reads[FIRST_VIEW]
    met = first < BUDGET_MS
    print(f"heatmap first view goal < {BUDGET_MS:.0f} ms: {'met' if met else 'NOT met'} "
          f"({first:.1f} ms; {base:.1f} ms with a new database per read; "
          f"{reads['figures.probe_heatmap']:.1f} ms more to build the figure)")
    if startup:
        warm = startup["app rerun (warm, baseline)"]
        print(f"\n{'start-up':40s} {'ms':>10s} {'× warm rerun':>13s}")
        for name, value in startup.items():
            print(f"{name:40s} {value:10.1f} {value / warm:13.2f}")
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "reads_ms": reads,
                                         "startup_ms": startup, "study_write_s": written,
                                         "first_view_budget_met": met}, indent=2))
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
