"""Compare study files by content, ignoring what legitimately differs between runs.

``python -m trustdyn.testing.compare A.duckdb B.duckdb`` checks that two builds of a study
hold the same rows (timings, dates and code versions aside) and exits 1 naming the first
table that differs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trustdyn.store import Store

# Columns that legitimately differ between two runs of the same study.
_VOLATILE = {"finished_at", "seconds", "created_at", "code_version"}
# Union of the tables' primary-key columns: sorting by them gives a canonical row order.
_KEY_COLUMNS = ("key", "suite", "checkpoint", "dataset", "stage", "layer", "estimator",
                "quantity", "target", "vector_source", "metric", "split", "alpha")


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the rows sorted by key, without run-specific columns, arrays rounded."""
    frame = frame.drop(columns=[c for c in frame.columns if c in _VOLATILE])
    # Directions are compared to 4 decimals: float32 sums may differ in the last bit
    # between processes; every scalar column is compared at pandas' rtol of 1e-5.
    frame = frame.map(lambda v: tuple(np.round(np.asarray(v, dtype=float), 4))
                      if hasattr(v, "__len__") and not isinstance(v, str) else v)
    key = [c for c in _KEY_COLUMNS if c in frame.columns]
    return frame.sort_values(key).reset_index(drop=True)


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame, name: str = "rows") -> None:
    """Assert two tables hold the same rows up to order and run-specific columns."""
    pd.testing.assert_frame_equal(canonical(left), canonical(right), obj=name,
                                  check_dtype=False)


def assert_same_study(a: Store, b: Store) -> None:
    """Assert both study files hold the same rows (up to row order and timings)."""
    tables = [t for t in a.table_counts() if t != "meta"]
    assert tables == [t for t in b.table_counts() if t != "meta"]
    for table in tables:
        query = f"SELECT * FROM {table}"
        assert_same_rows(a.query(query), b.query(query), table)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare two study files; print the verdict and return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m trustdyn.testing.compare",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("a", help="first study file")
    parser.add_argument("b", help="second study file")
    args = parser.parse_args(argv)
    a, b = Store(args.a), Store(args.b)
    try:
        assert_same_study(a, b)
    except AssertionError as exc:
        print(f"DIFFERENT: {exc}")
        return 1
    counts = a.table_counts()
    print("IDENTICAL: " + ", ".join(f"{t} {n}" for t, n in counts.items() if t != "meta"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
