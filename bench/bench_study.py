"""Benchmark: the default study end to end — wall time, when each part finished, peak memory.

Runs ``python -m precompute study --preset <preset>`` (what the README's first command
runs after installing packages) in a fresh ``TRUSTDYN_HOME``, so pre-training, the
SmolLM2 conversion and every stage are included, and reads from the study file when
each part was done and where the time went (pre-training, chat fine-tune, each stage of
each suite, conversion, the rest). Reported against the preset's goals: the default study
within 15 minutes and pre-training through its built-in probes within 8, the classroom
study within 45. The baseline is the goal itself: the ratio printed is goal / measured
(> 1 = goal met).

    python -m bench.bench_study                     # ~13 minutes on 2 cores
    python -m bench.bench_study --preset classroom  # ~40 minutes
    python -m bench.bench_study --preset smoke      # seconds: checks the script
"""

from __future__ import annotations

import argparse
import contextlib
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
from trustdyn.schema import PER_CHECKPOINT_STAGES
from trustdyn.store import Store
from trustdyn.timing import TIMINGS_ENV, summarise_timings

GOAL_TOTAL_S = {"default": 15 * 60, "classroom": 45 * 60}
"""Whole-study wall-time goal per preset (seconds)."""
GOAL_PROBES_S = {"default": 8 * 60}
"""Pre-training through the built-in suite's probe units, per preset (seconds)."""


def run_study(preset: str, home: Path, extra: list[str], timings: Path
              ) -> tuple[float, datetime, float, float]:
    """Run the study command; return (wall s, start time, peak child RSS in GB, child CPU s).

    Its timed parts (:mod:`trustdyn.timing`) are appended to ``timings``.
    """
    cmd = [sys.executable, "-m", "precompute", "study", "--preset", preset, "--quiet", *extra]
    env = {"TRUSTDYN_HOME": str(home), "PATH": "/usr/bin:/bin", TIMINGS_ENV: str(timings)}
    started = datetime.now(UTC).replace(tzinfo=None)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO_ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, started, usage.ru_maxrss / 2**20, usage.ru_utime + usage.ru_stime


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
    """Return where the wall time went, in seconds, as consecutive phases summing to ``wall``.

    Pre-training and the chat fine-tune are the built-in manifest's elapsed seconds; the
    suite is built when its manifest was last written ("tokenizer, corpus and start-up" is
    the rest until then). After that each suite's phases end when its last unit of the
    phase was written: its per-checkpoint stages (extraction, probes, information,
    vectors; loading and writing included) and its suite-level stages (turns, steering
    evaluation). A later suite's per-checkpoint phase includes loading (for SmolLM2 the
    one-off GGUF conversion); "finishing" is the summary printed after the last unit.
    """
    manifest_path = _built_in_manifest_path(home)
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    out = {"pre-training": float(manifest["checkpoints"][-1].get("elapsed_s", 0.0)),
           "chat fine-tune": float(manifest.get("chat", {}).get("elapsed_s", 0.0))}
    built = _since(pd.Timestamp(datetime.fromtimestamp(manifest_path.stat().st_mtime, UTC)
                                .replace(tzinfo=None)), started)
    out["tokenizer, corpus and start-up"] = max(built - sum(out.values()), 0.0)
    previous = built
    for suite in store.suites()["suite"]:
        units = store.units(suite)
        finished = pd.to_datetime(units["finished_at"])
        per_checkpoint = units["stage"].isin(PER_CHECKPOINT_STAGES)
        for label, rows in (("per-checkpoint stages", per_checkpoint),
                            ("turns and steering evaluation", ~per_checkpoint)):
            if rows.any():
                end = _since(finished[rows].max(), started)
                out[f"{suite}: {label}"] = max(end - previous, 0.0)
                previous = max(previous, end)
    out["finishing"] = max(wall - previous, 0.0)
    return {name: round(seconds, 1) for name, seconds in out.items()}


def compute_seconds(store: Store) -> dict[str, float]:
    """Return each suite's unit seconds per stage, summed over checkpoints (and workers).

    A probe unit carries its checkpoint's activation extraction for that dataset. With
    worker processes these sums exceed the wall time of their phase: they are the work
    done, not the time waited.
    """
    out: dict[str, float] = {}
    for suite in store.suites()["suite"]:
        units = store.units(suite)
        for stage, seconds in units.groupby("stage", sort=False)["seconds"].sum().items():
            label = "probe (incl. extraction)" if stage == "probe" else str(stage)
            out[f"{suite}: {label}"] = round(float(seconds), 1)
    return out


def _built_in_manifest_path(home: Path) -> Path:
    from trustdyn.suites.builtin import MANIFEST

    found = sorted((home / "suites").glob(f"builtin-*/{MANIFEST}"))
    if not found:
        raise SystemExit(f"No built-in suite manifest under {home / 'suites'}: the study "
                         "did not pre-train")
    return found[0]


def _since(moment: pd.Timestamp, started: datetime) -> float:
    return round((moment.to_pydatetime() - started).total_seconds(), 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--workers", default=None,
                        help="passed to the study command (default: its own choice)")
    parser.add_argument("--home", type=Path, default=None,
                        help="an empty TRUSTDYN_HOME to build in and keep (default: a "
                        "temporary one, deleted after)")
    parser.add_argument("--no-smollm2", action="store_true",
                        help="built-in suite only (checks the script quickly)")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        home = args.home or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="trustdyn-study-")))
        if args.home is not None:
            args.home.mkdir(parents=True, exist_ok=True)
        if args.home is not None and any(args.home.iterdir()):
            raise SystemExit(f"--home {args.home} is not empty: the study must start from "
                             "nothing (give a new or empty folder)")
        extra = ([] if args.workers is None else ["--workers", args.workers]) + (
            ["--no-smollm2"] if args.no_smollm2 else [])
        timings = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "timings.jsonl"
        wall, started, peak_gb, cpu = run_study(args.preset, home, extra, timings)
        store = Store(home / "study.duckdb")
        marks = milestones(store, started)
        breakdown = stage_breakdown(store, started, wall, home)
        compute = compute_seconds(store)
        parts = summarise_timings(timings)
        counts = store.table_counts()
    builtin = f"builtin-{args.preset}: all probe units"
    result = {
        "preset": args.preset, "options": extra, "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "peak_rss_gb": round(peak_gb, 2),
        "milestones_s": marks, "stages_s": breakdown, "unit_compute_s": compute,
        "parts": {part: {"count": t.count, "wall_s": round(t.wall_s, 1),
                         "cpu_s": round(t.cpu_s, 1)} for part, t in parts.items()},
        "rows": counts,
    }
    total_goal, probes_goal = GOAL_TOTAL_S.get(args.preset), GOAL_PROBES_S.get(args.preset)
    if total_goal:
        result |= {"goal_total_s": total_goal, "total_goal_ratio": round(total_goal / wall, 2)}
    if probes_goal:
        result |= {"goal_probes_s": probes_goal,
                   "probes_goal_ratio": round(probes_goal / marks[builtin], 2)}
    print(f"{args.preset} study {' '.join(extra)} end to end: {wall / 60:.1f} min "
          f"wall, {cpu:.0f} CPU-s ({cpu / wall:.2f} cores busy on average), peak RSS "
          f"{peak_gb:.2f} GB; {contention_note()}")
    for name, seconds in marks.items():
        print(f"  {name:45s} {seconds / 60:6.1f} min")
    print("where the time went (consecutive phases):")
    for name, seconds in breakdown.items():
        print(f"  {name:55s} {seconds:7.1f} s  {100 * seconds / wall:5.1f}%")
    print("work inside the suites' phases (unit seconds, summed over worker processes):")
    for name, seconds in sorted(compute.items(), key=lambda kv: -kv[1]):
        print(f"  {name:55s} {seconds:7.1f} s")
    print("timed parts, every suite and process (a/b is inside a; wall s summed over "
          "processes, CPU s of all their threads):")
    for part, t in parts.items():
        print(f"  {part:55s} {t.wall_s:7.1f} s  {t.cpu_s:7.1f} CPU-s  x{t.count}")
    if total_goal:
        print(f"goal <= {total_goal // 60} min: x{result['total_goal_ratio']} "
              f"({'met' if wall <= total_goal else 'NOT met'})")
    if probes_goal:
        print(f"pre-training + probes <= {probes_goal // 60} min: "
              f"x{result['probes_goal_ratio']} "
              f"({'met' if marks[builtin] <= probes_goal else 'NOT met'})")
    name = "bench_study" if args.preset == "default" and not extra else (
        f"bench_study_{args.preset}" + "".join(f"_{part.strip('-')}" for part in extra))
    print(f"wrote {write_result(name, result, args.out)}")
    return result


if __name__ == "__main__":
    main()
