"""Benchmark: the default study end to end — wall time, when each part finished, peak memory.

Runs ``python -m precompute study --preset <preset>`` (what the README's first command
runs after installing packages) in a fresh ``TRUSTDYN_HOME``, so pre-training, the
SmolLM2 conversion and every stage are included, and reads from the study file when
each part was done. Reported against the goals (issues 3 and 5): everything within 15
minutes, pre-training through the built-in suite's probes within 8 minutes. The baseline
is the goal itself: the ratio printed is goal / measured (> 1 = goal met).

    python -m bench.bench_study                   # ~11 minutes on 2 cores
    python -m bench.bench_study --preset smoke    # seconds: checks the script
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import contention_note, write_result
from trustdyn.paths import REPO_ROOT
from trustdyn.store import Store

GOAL_TOTAL_S = 15 * 60
GOAL_PROBES_S = 8 * 60


def run_study(preset: str, home: Path) -> tuple[float, datetime, float]:
    """Run the study command; return (wall seconds, start time, peak child RSS in GB)."""
    cmd = [sys.executable, "-m", "precompute", "study", "--preset", preset, "--quiet"]
    env = {"TRUSTDYN_HOME": str(home), "PATH": "/usr/bin:/bin"}
    started = datetime.now(UTC).replace(tzinfo=None)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return wall, started, peak_gb


def milestones(store: Store, started: datetime) -> dict[str, float]:
    """Seconds from the start until each suite's per-checkpoint and suite-level stages ended."""
    out: dict[str, float] = {}
    for suite in store.suites()["suite"]:
        units = store.units(suite)
        finished = pd.to_datetime(units["finished_at"])
        per_checkpoint = units["stage"].isin(["probe", "info", "vectors"])
        out[f"{suite}: all probe units"] = _since(finished[units["stage"] == "probe"].max(),
                                                  started)
        out[f"{suite}: per-checkpoint stages"] = _since(finished[per_checkpoint].max(), started)
        out[f"{suite}: all stages"] = _since(finished.max(), started)
    return out


def _since(moment: pd.Timestamp, started: datetime) -> float:
    return round((moment.to_pydatetime() - started).total_seconds(), 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trustdyn-study-") as tmp:
        home = Path(tmp)
        wall, started, peak_gb = run_study(args.preset, home)
        store = Store(home / "study.duckdb")
        marks = milestones(store, started)
        counts = store.table_counts()
    builtin = f"builtin-{args.preset}: all probe units"
    result = {
        "preset": args.preset, "wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 2),
        "milestones_s": marks, "rows": counts,
        "goal_total_s": GOAL_TOTAL_S, "goal_probes_s": GOAL_PROBES_S,
        "total_goal_ratio": round(GOAL_TOTAL_S / wall, 2),
        "probes_goal_ratio": round(GOAL_PROBES_S / marks[builtin], 2),
    }
    print(f"default study ({args.preset}) end to end: {wall / 60:.1f} min wall, peak RSS "
          f"{peak_gb:.2f} GB; {contention_note()}")
    for name, seconds in marks.items():
        print(f"  {name:45s} {seconds / 60:6.1f} min")
    print(f"goal <= 15 min: x{result['total_goal_ratio']} "
          f"({'met' if wall <= GOAL_TOTAL_S else 'NOT met'}); pre-training + probes <= 8 min: "
          f"x{result['probes_goal_ratio']} "
          f"({'met' if marks[builtin] <= GOAL_PROBES_S else 'NOT met'})")
    name = "bench_study" if args.preset == "default" else f"bench_study_{args.preset}"
    print(f"wrote {write_result(name, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
