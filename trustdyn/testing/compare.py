"""Compare study files by content, ignoring what legitimately differs between runs.

``python -m trustdyn.testing.compare A.duckdb B.duckdb`` checks that two builds of a study
hold the same rows (timings, dates and code versions aside) and exits 1 naming the first
table that differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trustdyn.store import Store

# Columns that legitimately differ between two runs of the same study.
_VOLATILE = {"finished_at", "seconds", "created_at", "code_version"}
# Keys of JSON columns that record how long something took.
_VOLATILE_KEYS = {"cpu_s", "elapsed_s", "seconds"}
_JSON_COLUMNS = ("params", "extra", "config", "card")
# Union of the tables' primary-key columns: sorting by them gives a canonical row order.
_KEY_COLUMNS = ("key", "suite", "checkpoint", "dataset", "stage", "layer", "estimator",
                "quantity", "target", "vector_source", "metric", "split", "alpha")


def canonical(frame: pd.DataFrame, strip: Sequence[str] = ()) -> pd.DataFrame:
    """Return the rows sorted by key, without run-specific columns, arrays rounded.

    Every prefix in ``strip`` (e.g. the ``TRUSTDYN_HOME`` each study was built in) is
    removed from string values, so paths to checkpoints compare equal across homes.
    """
    frame = frame.drop(columns=[c for c in frame.columns if c in _VOLATILE])
    for column in [c for c in _JSON_COLUMNS if c in frame.columns]:
        frame[column] = frame[column].map(_without_timings)
    for prefix in strip:
        frame = frame.map(lambda v, p=prefix: v.replace(p, "") if isinstance(v, str) else v)
    # Directions are compared to 4 decimals: float32 sums may differ in the last bit
    # between processes; every scalar column is compared at pandas' rtol of 1e-5.
    frame = frame.map(lambda v: tuple(np.round(np.asarray(v, dtype=float), 4))
                      if hasattr(v, "__len__") and not isinstance(v, str) else v)
    key = [c for c in _KEY_COLUMNS if c in frame.columns]
    return frame.sort_values(key).reset_index(drop=True)


def _without_timings(value: object) -> object:
    """Drop timing keys from a JSON object string (other values pass unchanged)."""
    if not isinstance(value, str) or not value.startswith("{"):
        return value
    parsed = json.loads(value)
    return json.dumps({k: v for k, v in parsed.items() if k not in _VOLATILE_KEYS},
                      sort_keys=True)


def assert_same_rows(left: pd.DataFrame, right: pd.DataFrame, name: str = "rows",
                     strip: Sequence[str] = ()) -> None:
    """Assert two tables hold the same rows up to order and run-specific columns."""
    pd.testing.assert_frame_equal(canonical(left, strip), canonical(right, strip), obj=name,
                                  check_dtype=False)


def assert_same_study(a: Store, b: Store, strip: Sequence[str] = ()) -> None:
    """Assert both study files hold the same rows (up to row order, timings and ``strip``)."""
    tables = [t for t in a.table_counts() if t != "meta"]
    assert tables == [t for t in b.table_counts() if t != "meta"]
    for table in tables:
        query = f"SELECT * FROM {table}"
        assert_same_rows(a.query(query), b.query(query), table, strip)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare two study files; print the verdict and return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m trustdyn.testing.compare",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("a", help="first study file")
    parser.add_argument("b", help="second study file")
    parser.add_argument("--strip", action="append", default=[], metavar="PREFIX",
                        help="remove PREFIX from every string (e.g. each study's "
                        "TRUSTDYN_HOME, so checkpoint paths compare equal); repeatable")
    args = parser.parse_args(argv)
    a, b = Store(args.a), Store(args.b)
    try:
        assert_same_study(a, b, args.strip)
    except AssertionError as exc:
        print(f"DIFFERENT: {exc}")
        return 1
    counts = a.table_counts()
    print("IDENTICAL: " + ", ".join(f"{t} {n}" for t, n in counts.items() if t != "meta"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
