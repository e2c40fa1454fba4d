"""Benchmark: the default study end to end — wall time, when each part finished, peak memory.

Runs ``python -m precompute study --preset <preset>`` (what the README's first command
runs after installing packages) in a fresh ``TRUSTDYN_HOME``, so pre-training, the
SmolLM2 conversion and every stage are included, and reads from the study file when
each part was done and where the time went (pre-training, chat fine-tune, each stage of
each suite, conversion, the rest). Reported against the goals (issues 3 and 5): everything within 15
minutes, pre-training through the built-in suite's probes within 8 minutes. The baseline
is the goal itself: the ratio printed is goal / measured (> 1 = goal met).

    python -m bench.bench_study                   # ~11 minutes on 2 cores
    python -m bench.bench_study --preset smoke    # seconds: checks the script
"""

from __future__ import annotations

import argparse
import json
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


def stage_breakdown(store: Store, started: datetime, wall: float, home: Path
                    ) -> dict[str, float]:
    """Return where the wall time went, in seconds, summing to ``wall``.

    Pre-training and the chat fine-tune come from the built-in suite's manifest (their
    elapsed seconds); the per-unit stages from the study file's unit times (a probe unit
    carries its checkpoint's activation extraction for that dataset); "tokenizer, corpus
    and start-up" is what precedes the first unit beyond those two; "SmolLM2 conversion"
    the gap between the built-in suite's last unit and SmolLM2's first; "between units"
    the rest (loading checkpoints, writing the study file, process start).
    """
    out: dict[str, float] = {}
    manifest = _built_in_manifest(home)
    out["pre-training"] = float(manifest["checkpoints"][-1].get("elapsed_s", 0.0))
    out["chat fine-tune"] = float(manifest.get("chat", {}).get("elapsed_s", 0.0))
    first_start = None
    for suite in store.suites()["suite"]:
        units = store.units(suite)
        starts = pd.to_datetime(units["finished_at"]) - pd.to_timedelta(units["seconds"], "s")
        first = _since(starts.min(), started)
        if first_start is None:
            first_start = first
            out["tokenizer, corpus and start-up"] = max(
                first - out["pre-training"] - out["chat fine-tune"], 0.0)
        else:
            previous_end = max(v for k, v in out.items() if k.startswith("end "))
            out[f"{suite}: conversion and loading"] = max(first - previous_end, 0.0)
        for stage, seconds in units.groupby("stage", sort=False)["seconds"].sum().items():
            label = "probe (incl. extraction)" if stage == "probe" else str(stage)
            out[f"{suite}: {label}"] = round(float(seconds), 1)
        out[f"end {suite}"] = _since(pd.to_datetime(units["finished_at"]).max(), started)
    ends = {k: v for k, v in out.items() if k.startswith("end ")}
    parts = {k: round(v, 1) for k, v in out.items() if k not in ends}
    parts["between units"] = round(wall - sum(parts.values()), 1)
    return parts


def _built_in_manifest(home: Path) -> dict[str, Any]:
    from trustdyn.suites.builtin import MANIFEST

    found = sorted((home / "suites").glob(f"builtin-*/{MANIFEST}"))
    if not found:
        return {"checkpoints": [{}]}
    manifest: dict[str, Any] = json.loads(found[0].read_text(encoding="utf-8"))
    return manifest


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
        breakdown = stage_breakdown(store, started, wall, home)
        counts = store.table_counts()
    builtin = f"builtin-{args.preset}: all probe units"
    result = {
        "preset": args.preset, "wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 2),
        "milestones_s": marks, "stages_s": breakdown, "rows": counts,
        "goal_total_s": GOAL_TOTAL_S, "goal_probes_s": GOAL_PROBES_S,
        "total_goal_ratio": round(GOAL_TOTAL_S / wall, 2),
        "probes_goal_ratio": round(GOAL_PROBES_S / marks[builtin], 2),
    }
    print(f"default study ({args.preset}) end to end: {wall / 60:.1f} min wall, peak RSS "
          f"{peak_gb:.2f} GB; {contention_note()}")
    for name, seconds in marks.items():
        print(f"  {name:45s} {seconds / 60:6.1f} min")
    print("where the time went:")
    for name, seconds in sorted(breakdown.items(), key=lambda kv: -kv[1]):
        print(f"  {name:45s} {seconds:7.1f} s  {100 * seconds / wall:5.1f}%")
    print(f"goal <= 15 min: x{result['total_goal_ratio']} "
          f"({'met' if wall <= GOAL_TOTAL_S else 'NOT met'}); pre-training + probes <= 8 min: "
          f"x{result['probes_goal_ratio']} "
          f"({'met' if marks[builtin] <= GOAL_PROBES_S else 'NOT met'})")
    name = "bench_study" if args.preset == "default" else f"bench_study_{args.preset}"
    print(f"wrote {write_result(name, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
